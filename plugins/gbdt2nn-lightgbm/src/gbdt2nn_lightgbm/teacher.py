"""The LightGBM teacher: trains a booster or wraps an existing one, and shows it in gbdt2nn's normalised form."""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from gbdt2nn_core import teacher_checks as checks
from gbdt2nn_core.booster_teacher import BoosterFacts, BoosterTeacher
from gbdt2nn_core.errors import ConfigError, ModelFileError
from gbdt2nn_core.interfaces import Task, Tree, TreeEnsemble
from gbdt2nn_lightgbm._modelfile import read_model_text

__all__ = ["DEFAULT_PARAMS", "LightGBMTeacher"]

#: Training defaults (DeepGBM's teacher size); any LightGBM parameter given to the factory overrides them.
DEFAULT_PARAMS: dict[str, Any] = {"n_estimators": 100, "num_leaves": 64, "learning_rate": 0.1}

# LightGBM resolves two spellings of one parameter silently, so ours are matched against all of them.
_ALIASES: dict[str, tuple[str, ...]] = {
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
_CUSTOM_OBJECTIVES = frozenset({"", "custom", "none", "null", "na"})
# LightGBM's names for columns of unnamed (numpy) training data.
_AUTO_NAME = re.compile(r"^Column_\d+$")


def _objective(name: str) -> str:
    return _OBJECTIVE_ALIASES.get(name, name)


class LightGBMTeacher(BoosterTeacher[lgb.Booster]):
    """A LightGBM booster as a gbdt2nn teacher.

    Parameters
    ----------
    model:
        ``None`` to train a booster in :meth:`fit`; otherwise a trained ``lightgbm.Booster``, any fitted
        ``LGBMModel`` (``LGBMRegressor``, ``LGBMClassifier``...) or the path of a LightGBM text model file.
        A wrapped booster is copied (so later changes to the original do not leak in) and cut at its best
        iteration when it has one, as LightGBM's own ``predict`` does.
    **params:
        Training parameters (only with ``model=None``): ``n_estimators`` (100), ``num_leaves`` (64),
        ``learning_rate`` (0.1) and any other LightGBM parameter, passed through unchanged; a name LightGBM
        does not know is an error. The objective follows the task unless given; ``num_class`` defaults to
        ``max(y) + 1``. Pass the seed to :meth:`fit`.
    """

    library = "LightGBM"
    # LightGBM refuses these in feature names ("Do not support special JSON characters in feature name").
    forbidden_characters = '",:[]{}'
    default_params = DEFAULT_PARAMS
    aliases = _ALIASES
    native_errors = (lgb.basic.LightGBMError, ValueError)

    # ------------------------------------------------------------------ training / wrapping
    def train(
        self,
        X: pd.DataFrame,
        labels: np.ndarray,
        *,
        task: Task,
        n_outputs: int,
        n_rounds: int,
        seed: int,
        params: dict[str, Any],
    ) -> lgb.Booster:
        """``lgb.train`` with our defaults, then the user's parameters, then what the task and seed fix."""
        dataset = lgb.Dataset(X, label=labels, categorical_feature="auto", free_raw_data=True)
        try:
            booster = lgb.train(_training_params(params, task=task, k=n_outputs, seed=seed), dataset, n_rounds)
        except lgb.basic.LightGBMError as exc:
            raise ConfigError(
                setting="params", value=self._params, fix=f"LightGBM refused them: {self.error_message(exc)}"
            ) from None
        # Through the text model: the copy holds no reference to the training data, and it is the form a
        # saved-and-loaded teacher has, so fingerprints agree.
        return lgb.Booster(model_str=booster.model_to_string())

    def known_params(self) -> Collection[str]:
        """LightGBM's parameters and all their aliases (it ignores an unknown one with a warning)."""
        known = {name for names in _ALIASES.values() for name in names}
        for name, aliases in lgb.basic._ConfigAliases._get_all_param_aliases().items():
            known.update((name, *aliases))
        return known

    def copy_model(self, model: object) -> lgb.Booster | None:
        """A private ``Booster`` from a booster or a fitted ``LGBMModel``, cut at its best iteration."""
        if isinstance(model, lgb.LGBMModel):
            try:
                model = model.booster_
            except (AttributeError, ValueError, lgb.basic.LightGBMError):
                raise ConfigError(
                    setting="model",
                    value=type(model).__name__,
                    fix="fit the LightGBM model first, or pass model=None to train a new booster",
                ) from None
        if isinstance(model, lgb.Booster):
            # model_to_string cuts at the best iteration when early stopping found one, like Booster.predict.
            return lgb.Booster(model_str=model.model_to_string())
        return None

    def models_accepted(self) -> str:
        return "pass a lightgbm.Booster, a fitted LGBMModel, a model file path, or None to train a new booster"

    def load_model_file(self, path: str | os.PathLike[str]) -> lgb.Booster:
        """A ``Booster`` from a LightGBM text model file, checked to be complete first."""
        text = read_model_text(path)
        try:
            return lgb.Booster(model_str=text)
        except (lgb.basic.LightGBMError, ValueError) as exc:
            raise ModelFileError(
                path=str(path),
                problem=f"LightGBM cannot read it: {self.error_message(exc)}",
                fix="save the model again",
            ) from None

    def describe(self, booster: lgb.Booster) -> BoosterFacts:
        """Objective, outputs, trees and columns from the text model's header; refuses linear and ranking trees."""
        text = booster.model_to_string()
        if "\nis_linear=1\n" in text:
            raise ConfigError(
                setting="model",
                value="linear_tree",
                fix="gbdt2nn needs constant leaf values; retrain the booster without linear_tree",
            )
        header = dict(line.split("=", 1) for line in text.split("\n\n", 1)[0].splitlines() if "=" in line)
        objective = header.get("objective", "").split(" ")[0]
        if objective.startswith(("lambdarank", "rank_xendcg")):
            raise ConfigError(
                setting="model",
                value=objective,
                fix="ranking boosters are not supported; wrap a regression, binary or multiclass model",
            )
        known = _objective(objective)
        if known not in OBJECTIVE_TASKS and objective not in _CUSTOM_OBJECTIVES:
            raise ConfigError(
                setting="model",
                value=objective,
                fix=f"objective not supported; use one of {', '.join(sorted(OBJECTIVE_TASKS))}",
            )
        names = tuple(booster.feature_name())
        categorical = _categorical_indices(booster.params.get("categorical_feature"))
        return BoosterFacts(
            task=OBJECTIVE_TASKS.get(known),
            objective=objective,
            n_outputs=int(header.get("num_tree_per_iteration", "1")),
            n_trees=booster.num_trees(),
            n_features=len(names),
            feature_names=names,
            # A booster trained on a numpy array has made-up names; any column names then do, in that number.
            names_checked=not all(_AUTO_NAME.match(name) for name in names),
            categorical=None if categorical is None else tuple(i in categorical for i in range(len(names))),
        )

    # ------------------------------------------------------------------ predictions
    def predict_raw(self, booster: lgb.Booster, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(booster.predict(X, num_iteration=self._n_iterations(booster), raw_score=True))

    def predict_leaves(self, booster: lgb.Booster, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(booster.predict(X, num_iteration=self._n_iterations(booster), pred_leaf=True))

    def predict_contribs(self, booster: lgb.Booster, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(booster.predict(X, num_iteration=self._n_iterations(booster), pred_contrib=True))

    def _n_iterations(self, booster: lgb.Booster) -> int:
        return int(booster.num_trees() // self.n_outputs)

    def normalise_name(self, column: str) -> str:
        """LightGBM turns whitespace in column names into underscores."""
        return re.sub(r"\s", "_", column)

    # ------------------------------------------------------------------ structure, saving
    def dump_structure(self, booster: lgb.Booster) -> TreeEnsemble:
        """Leaf values, split features, gains and thresholds of every tree, from ``Booster.dump_model``.

        LightGBM folds its initial score into the first trees' leaves, so ``base_margin`` is zero.
        """
        k = self.n_outputs
        dump = booster.dump_model(num_iteration=self._n_iterations(booster))
        return TreeEnsemble(
            trees=[_tree(info, output=index % k) for index, info in enumerate(dump["tree_info"])],
            n_features=len(booster.feature_name()),
            n_outputs=k,
            base_margin=np.zeros(k),
            split_rule="<=",
        )

    def model_bytes(self, booster: lgb.Booster, *, suffix: str = "") -> bytes:
        """The LightGBM text model (whatever the suffix)."""
        return booster.model_to_string().encode("utf-8")


def _training_params(params: dict[str, Any], *, task: Task, k: int, seed: int) -> dict[str, Any]:
    """LightGBM parameters for training: our defaults, then the user's, then what the task and seed fix."""
    num_leaves = checks.pop_param(params, _ALIASES["num_leaves"], DEFAULT_PARAMS["num_leaves"])
    learning_rate = checks.pop_param(params, _ALIASES["learning_rate"], DEFAULT_PARAMS["learning_rate"])
    objective = checks.pop_param(params, _ALIASES["objective"], _DEFAULT_OBJECTIVE[task])
    if not isinstance(objective, str) or OBJECTIVE_TASKS.get(_objective(objective)) != task:
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


def _categorical_indices(value: object) -> set[int] | None:
    """The categorical feature indices a loaded booster's parameters list (``None`` if they cannot be read)."""
    if value is None or value == "":
        return set()
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    try:
        return {int(item) for item in items}
    except (TypeError, ValueError):
        return None  # given by name ("name:..."); LightGBM still checks the columns itself


def _tree(info: dict[str, Any], *, output: int) -> Tree:
    """One tree of ``dump_model()``: leaf values by leaf index, split features and gains by split index."""
    n_leaves = int(info["num_leaves"])
    leaf_values = np.empty(n_leaves)
    split_features = np.empty(n_leaves - 1, dtype=np.int64)
    split_gains = np.empty(n_leaves - 1)
    split_thresholds = np.full(n_leaves - 1, np.nan)  # NaN marks a categorical split
    stack = [info["tree_structure"]]
    while stack:  # iterative: a leaf-wise tree can be deeper than Python's recursion limit
        node = stack.pop()
        if "split_index" in node:
            split = node["split_index"]
            split_features[split] = node["split_feature"]
            split_gains[split] = node["split_gain"]
            if node.get("decision_type") == "<=":
                split_thresholds[split] = float(node["threshold"])
            stack.extend((node["left_child"], node["right_child"]))
        else:
            leaf_values[node.get("leaf_index", 0)] = node["leaf_value"]
    return Tree(
        leaf_values=leaf_values,
        split_features=split_features,
        split_gains=split_gains,
        split_thresholds=split_thresholds,
        output=output,
    )
