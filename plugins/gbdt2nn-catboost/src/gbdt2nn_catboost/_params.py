"""CatBoost's training options as the teacher sets them, and the data it gives CatBoost."""

from __future__ import annotations

import inspect
from collections.abc import Collection
from typing import Any

import catboost as cb
import numpy as np
import pandas as pd

from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.interfaces import Task

__all__ = ["ALIASES", "DEFAULT_PARAMS", "LOSS_TASKS", "catboost_pool", "known_params", "training_options"]

#: Training defaults; any CatBoost parameter given to the factory overrides them. ``threads`` is CatBoost's
#: ``thread_count`` (-1: every core). One-column CTRs keep every split on one input column.
DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 100,
    "depth": 6,
    "learning_rate": 0.1,
    "threads": -1,
    "max_ctr_complexity": 1,
}
#: Which task each supported loss function solves.
LOSS_TASKS: dict[str, Task] = {
    **dict.fromkeys(
        ("RMSE", "MAE", "Quantile", "MAPE", "Poisson", "Tweedie", "Huber", "Expectile", "Lq"), "regression"
    ),
    **dict.fromkeys(("Logloss", "CrossEntropy"), "binary"),
    **dict.fromkeys(("MultiClass", "MultiClassOneVsAll"), "multiclass"),
}
#: CatBoost's spellings of the settings the base class handles itself.
ALIASES: dict[str, tuple[str, ...]] = {
    "n_estimators": ("n_estimators", "iterations", "num_boost_round", "num_trees"),
    "num_class": ("num_class", "classes_count"),
    "seed": ("seed", "random_seed", "random_state"),
}
_DEFAULT_LOSS: dict[Task, str] = {"regression": "RMSE", "binary": "Logloss", "multiclass": "MultiClass"}
# Settings the teacher owns: its files, its logging, its categorical columns (from the frame's dtypes).
_OWNED = frozenset({"allow_writing_files", "train_dir", "verbose", "silent", "logging_level", "cat_features"})
# Our defaults yield to any spelling of the same setting the user gives.
_SAME_SETTING = {"depth": ("max_depth",), "learning_rate": ("eta",), "threads": ("thread_count",)}
_MISSING = "<missing>"


def catboost_pool(X: pd.DataFrame, label: np.ndarray | None = None) -> cb.Pool:
    """A CatBoost ``Pool`` of the teacher-ready frame: categorical columns as strings (missing: ``<missing>``)."""
    categorical = [i for i, dtype in enumerate(X.dtypes) if isinstance(dtype, pd.CategoricalDtype)]
    frame = X.copy(deep=False)
    for i in categorical:
        column = X.iloc[:, i]
        frame.isetitem(i, column.astype(object).where(column.notna(), _MISSING).astype(str))
    return cb.Pool(frame, label=label, cat_features=categorical)


def known_params() -> Collection[str]:
    """Every option the teacher accepts: CatBoost's constructor arguments (aliases included) and ours,
    except those the teacher sets itself."""
    names = {*inspect.signature(cb.CatBoostClassifier).parameters, *inspect.signature(cb.CatBoostRegressor).parameters}
    return (names | set(DEFAULT_PARAMS)) - _OWNED


def training_options(params: dict[str, Any], *, task: Task, n_outputs: int, n_rounds: int, seed: int) -> dict[str, Any]:
    """CatBoost parameters for training: our defaults, then the user's, then what the task and seed fix."""
    options = {key: value for key, value in DEFAULT_PARAMS.items() if key != "n_estimators"}
    for ours, spellings in _SAME_SETTING.items():
        if any(name in params for name in spellings):
            options.pop(ours)
    options.update(params)
    options["thread_count"] = options.pop("threads", options.pop("thread_count", -1))
    loss = options.pop("loss_function", options.pop("objective", _DEFAULT_LOSS[task]))
    if LOSS_TASKS.get(str(loss).split(":")[0]) != task:
        choices = ", ".join(name for name, solves in LOSS_TASKS.items() if solves == task)
        raise ConfigError(setting="loss_function", value=loss, fix=f"choose a {task} loss ({choices})")
    if task == "multiclass":
        options["classes_count"] = n_outputs
    options.update(loss_function=loss, iterations=n_rounds, random_seed=seed)
    # The teacher writes no files (CatBoost's default is a catboost_info folder) and logs nothing.
    options.update(allow_writing_files=False, logging_level="Silent")
    return options
