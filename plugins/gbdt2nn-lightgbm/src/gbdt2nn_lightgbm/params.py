"""LightGBM training parameters: gbdt2nn's defaults, the objectives it supports, and the user's options."""

from __future__ import annotations

import functools
from typing import Any

import lightgbm as lgb

from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.host.interfaces import Task
from gbdt2nn_core.kit import teacher_checks as checks

__all__ = [
    "ALIASES",
    "CUSTOM_OBJECTIVES",
    "DEFAULT_PARAMS",
    "OBJECTIVE_TASKS",
    "objective_task",
    "parameter_names",
    "training_params",
]

#: Training defaults (DeepGBM's teacher size); any LightGBM parameter given to the factory overrides them.
DEFAULT_PARAMS: dict[str, Any] = {"n_estimators": 100, "num_leaves": 64, "learning_rate": 0.1}

# LightGBM resolves two spellings of one parameter silently, so ours are matched against all of them.
ALIASES: dict[str, tuple[str, ...]] = {
    "n_estimators": (
        "n_estimators",
        "num_boost_round",
        "num_iterations",
        "num_iteration",
        "n_iter",
        "num_tree",
        "num_trees",
        "num_round",
        "num_rounds",
        "nrounds",
        "max_iter",
    ),
    "num_leaves": ("num_leaves", "num_leaf", "max_leaves", "max_leaf", "max_leaf_nodes"),
    "learning_rate": ("learning_rate", "shrinkage_rate", "eta"),
    "objective": ("objective", "objective_type", "app", "application", "loss"),
    "num_class": ("num_class", "num_classes"),
    "seed": ("seed", "random_seed", "random_state"),
}

#: Which task each built-in objective solves (the first word of LightGBM's objective string).
OBJECTIVE_TASKS: dict[str, Task] = {
    **dict.fromkeys(
        ("regression", "regression_l1", "huber", "fair", "poisson", "quantile", "mape", "gamma", "tweedie"),
        "regression",
    ),
    **dict.fromkeys(("binary", "cross_entropy"), "binary"),
    **dict.fromkeys(("multiclass", "multiclassova"), "multiclass"),
}
_OBJECTIVE_ALIASES = {
    "regression_l2": "regression",
    "l2": "regression",
    "mean_squared_error": "regression",
    "mse": "regression",
    "l2_root": "regression",
    "root_mean_squared_error": "regression",
    "rmse": "regression",
    "l1": "regression_l1",
    "mean_absolute_error": "regression_l1",
    "mae": "regression_l1",
    "mean_absolute_percentage_error": "mape",
    "xentropy": "cross_entropy",
    "softmax": "multiclass",
    "multiclass_ova": "multiclassova",
    "ova": "multiclassova",
    "ovr": "multiclassova",
}
_DEFAULT_OBJECTIVE: dict[Task, str] = {"regression": "regression", "binary": "binary", "multiclass": "multiclass"}
# A user-defined objective: the margin means whatever the user made it mean, so the task is taken on trust.
CUSTOM_OBJECTIVES = frozenset({"", "custom", "none", "null", "na"})


def objective_task(name: str) -> Task | None:
    """The task a LightGBM objective (any of its spellings) solves; ``None`` for one gbdt2nn does not know."""
    return OBJECTIVE_TASKS.get(_OBJECTIVE_ALIASES.get(name, name))


def training_params(params: dict[str, Any], *, task: Task, k: int, seed: int) -> dict[str, Any]:
    """LightGBM parameters for training: our defaults, then the user's, then what the task and seed fix."""
    num_leaves = checks.pop_param(params, ALIASES["num_leaves"], DEFAULT_PARAMS["num_leaves"])
    learning_rate = checks.pop_param(params, ALIASES["learning_rate"], DEFAULT_PARAMS["learning_rate"])
    objective = checks.pop_param(params, ALIASES["objective"], _DEFAULT_OBJECTIVE[task])
    if not isinstance(objective, str) or objective_task(objective) != task:
        raise ConfigError(
            setting="objective",
            value=objective,
            fix=f"choose a {task} objective ({', '.join(o for o, t in OBJECTIVE_TASKS.items() if t == task)})",
        )
    result: dict[str, Any] = {
        "objective": objective,
        "num_leaves": num_leaves,
        "learning_rate": learning_rate,
        "deterministic": True,
        "verbose": -1,
    }
    # LightGBM otherwise picks row- or column-wise histograms by timing them, which breaks reproducibility.
    if not any(name in params for name in ("force_row_wise", "force_col_wise")):
        result["force_col_wise"] = True
    result.update(params)
    if task == "multiclass":
        result["num_class"] = k
    result["seed"] = seed
    return result


@functools.cache
def parameter_names() -> frozenset[str] | None:
    """Every name LightGBM accepts (from its C library's alias table), and our own; ``None`` if it cannot say."""
    # LightGBM's own table; a LightGBM without it gets no check rather than a crash.
    table = getattr(getattr(lgb.basic, "_ConfigAliases", None), "_get_all_param_aliases", None)
    if table is None:
        return None
    known = {name for names in ALIASES.values() for name in names}
    for name, aliases in table().items():
        known.update((name, *aliases))
    return frozenset(known)
