"""XGBoost training parameters: gbdt2nn's defaults, the objectives it supports, and the user's options."""

from __future__ import annotations

import json
import re
import warnings
from typing import Any

import xgboost as xgb

from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.host.interfaces import Task
from gbdt2nn_core.kit import teacher_checks as checks

__all__ = ["ALIASES", "DEFAULT_PARAMS", "OBJECTIVE_TASKS", "refuse_unused", "training_params"]

#: Training defaults (DeepGBM's teacher size, grown leaf-wise like LightGBM); factory parameters override them.
DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 100,
    "max_leaves": 64,
    "max_depth": 0,
    "grow_policy": "lossguide",
    "tree_method": "hist",
    "learning_rate": 0.1,
}
#: XGBoost's spellings of the settings gbdt2nn resolves itself.
ALIASES: dict[str, tuple[str, ...]] = {
    "n_estimators": ("n_estimators", "num_boost_round"),
    "learning_rate": ("learning_rate", "eta"),
    "seed": ("seed", "random_state"),
    "num_class": ("num_class",),
}
#: Names users bring from LightGBM or scikit-learn, and XGBoost's own name for the same setting.
_RENAMES: dict[str, str] = {"num_threads": "nthread", "n_jobs": "nthread", "num_leaves": "max_leaves"}

#: Which task each built-in objective solves. ``reg:logistic`` has a log-odds margin like ``binary:logistic``.
OBJECTIVE_TASKS: dict[str, Task] = {
    **dict.fromkeys(
        (
            "reg:squarederror",
            "reg:squaredlogerror",
            "reg:pseudohubererror",
            "reg:absoluteerror",
            "reg:quantileerror",
            "reg:gamma",
            "reg:tweedie",
            "count:poisson",
            "survival:cox",
            "survival:aft",
            "reg:linear",
        ),
        "regression",
    ),
    **dict.fromkeys(("binary:logistic", "binary:logitraw", "binary:hinge", "reg:logistic"), "binary"),
    **dict.fromkeys(("multi:softprob", "multi:softmax"), "multiclass"),
}
_DEFAULT_OBJECTIVE: dict[Task, str] = {
    "regression": "reg:squarederror",
    "binary": "binary:logistic",
    "multiclass": "multi:softprob",
}


def training_params(params: dict[str, Any], *, task: Task, k: int, seed: int) -> dict[str, Any]:
    """XGBoost parameters for training: our defaults, then the user's, then what the task and seed fix.

    ``params`` are the user's options without the number of rounds, the class count and the seed.
    """
    for ours, theirs in _RENAMES.items():
        if ours in params:
            params[theirs] = params.pop(ours)
    learning_rate = checks.pop_param(params, ALIASES["learning_rate"], DEFAULT_PARAMS["learning_rate"])
    objective = params.pop("objective", _DEFAULT_OBJECTIVE[task])
    if OBJECTIVE_TASKS.get(objective) != task:
        raise ConfigError(
            setting="objective",
            value=objective,
            fix=f"choose a {task} objective ({', '.join(o for o, t in OBJECTIVE_TASKS.items() if t == task)})",
        )
    result: dict[str, Any] = {
        key: value for key, value in DEFAULT_PARAMS.items() if key not in ("n_estimators", "learning_rate")
    }
    result.update(objective=objective, learning_rate=learning_rate)
    result.update(params)
    if task == "multiclass":
        result["num_class"] = k
    result["seed"] = seed
    return result


def refuse_unused(caught: list[warnings.WarningMessage], booster: xgb.Booster) -> None:
    """XGBoost only warns about parameters it does not know; a silently ignored setting is a user mistake.

    The names it does know, for the "did you mean", are those in the trained booster's configuration.
    """
    for warning in caught:
        unused = re.search(r"Parameters: \{(.*?)\} are not used", str(warning.message), flags=re.S)
        if unused:
            names = [name.strip() for name in unused.group(1).replace('"', "").split(",") if name.strip()]
            known = _config_keys(json.loads(booster.save_config())) | set(DEFAULT_PARAMS) | set(_RENAMES)
            checks.check_known_params(
                dict.fromkeys(names), known - set(names), library="XGBoost", examples=tuple(DEFAULT_PARAMS)
            )
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def _config_keys(config: object) -> set[str]:
    """Every key of a nested JSON configuration."""
    if isinstance(config, dict):
        return set(config).union(*(_config_keys(value) for value in config.values()))
    if isinstance(config, list):
        return set().union(*(_config_keys(value) for value in config))
    return set()
