"""The LightGBM teacher: trains a booster or wraps an existing one, and shows it in gbdt2nn's normalised form."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from gbdt2nn_core import teacher_checks as checks
from gbdt2nn_core.errors import ConfigError, DataError, ModelFileError
from gbdt2nn_core.interfaces import Task, Teacher, Tree, TreeEnsemble, TreeShap
from gbdt2nn_core.model_files import write_atomic
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
# Characters LightGBM refuses in feature names ("Do not support special JSON characters in feature name").
_FORBIDDEN = '",:[]{}'
# LightGBM's names for columns of unnamed (numpy) training data.
_AUTO_NAME = re.compile(r"^Column_\d+$")


def _lightgbm_name(column: str) -> str:
    """The spelling LightGBM stores for a column name: it turns whitespace into underscores."""
    return re.sub(r"\s", "_", column)


def _objective(name: str) -> str:
    return _OBJECTIVE_ALIASES.get(name, name)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class LightGBMTeacher(Teacher):
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
        ``learning_rate`` (0.1) and any other LightGBM parameter, passed through unchanged. The objective
        follows the task unless given; ``num_class`` defaults to ``max(y) + 1``. Pass the seed to :meth:`fit`.
    """

    def __init__(self, model: object = None, **params: Any) -> None:
        self._params = dict(params)
        self._wrapped = model is not None
        self._booster: lgb.Booster | None = None
        self._text = ""
        self._task: Task | None = None
        self._columns: tuple[str, ...] | None = None
        self._structure: TreeEnsemble | None = None
        self._fingerprint: str | None = None
        if model is not None:
            checks.check_no_training_params(params)
            self._adopt(_copy_booster(model))

    def __repr__(self) -> str:
        state = "unfitted" if self._booster is None else f"{self._n_trees} trees, task={self._task!r}"
        return f"{type(self).__name__}({state})"

    # ------------------------------------------------------------------ properties
    @property
    def native_model(self) -> lgb.Booster:
        """The underlying ``lightgbm.Booster`` (a private copy: do not train it further)."""
        return self._require("native_model")

    @property
    def task(self) -> Task:
        """The task the booster solves: set by :meth:`fit`, or read from a wrapped booster's objective."""
        if self._task is None:
            raise checks.not_fitted_error(type(self).__name__, "task")
        return self._task

    @property
    def n_outputs(self) -> int:
        """1 for regression and binary, the number of classes for multiclass."""
        self._require("n_outputs")
        return self._k

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The booster's input columns, in order (as spelled in the data given to :meth:`fit`)."""
        self._require("feature_names")
        return self._columns if self._columns is not None else self._names

    # ------------------------------------------------------------------ training / wrapping
    def fit(self, X: pd.DataFrame, y: np.ndarray, *, task: Task, seed: int = 0) -> LightGBMTeacher:
        """Train a booster on ``(X, y)``; a wrapped booster is not retrained, only checked against X and task."""
        task = checks.check_task(task)
        X = checks.check_frame(X, forbidden=_FORBIDDEN, library="LightGBM")
        if self._wrapped:
            return self._check_wrapped(X, y, task)
        params = dict(self._params)
        n_classes = checks.pop_n_classes(params, _ALIASES["num_class"], task=task)
        labels, k = checks.check_target(y, n_rows=len(X), task=task, n_classes=n_classes)
        train_params, n_rounds = _training_params(params, task=task, k=k, seed=seed)
        dataset = lgb.Dataset(X, label=labels, categorical_feature="auto", free_raw_data=True)
        try:
            booster = lgb.train(train_params, dataset, num_boost_round=n_rounds)
        except lgb.basic.LightGBMError as exc:
            raise ConfigError(
                setting="params", value=self._params, fix=f"LightGBM refused them: {_first_line(exc)}"
            ) from None
        # Through the text model: the copy holds no reference to the training data, and it is the form a
        # saved-and-loaded teacher has, so fingerprints agree.
        self._adopt(lgb.Booster(model_str=booster.model_to_string()))
        self._task = task
        self._columns = tuple(X.columns)
        return self

    def _check_wrapped(self, X: pd.DataFrame, y: object, task: Task) -> LightGBMTeacher:
        if self._objective_task is not None and task != self._objective_task:
            raise ConfigError(
                setting="task",
                value=task,
                fix=f"the booster's objective {self._objective_name!r} solves {self._objective_task}; "
                f"pass task={self._objective_task!r} or wrap another model",
            )
        if (task == "multiclass") != (self._k > 1):
            raise ConfigError(
                setting="task", value=task, fix=f"the booster has {self._k} output(s); it is not a {task} model"
            )
        self._check_input(X)
        if y is not None:
            checks.check_target(
                y, n_rows=len(X), task=task, n_classes=self._k if task == "multiclass" else None, training=False
            )
        self._task = task
        self._columns = tuple(X.columns)
        return self

    def _adopt(self, booster: lgb.Booster) -> None:
        """Make ``booster`` (already a private copy) the model, and read what the teacher needs from it."""
        text = booster.model_to_string()
        if "\nis_linear=1\n" in text:
            raise ConfigError(
                setting="model",
                value="linear_tree",
                fix="gbdt2nn needs constant leaf values; retrain the booster without linear_tree",
            )
        header = dict(line.split("=", 1) for line in text.split("\n\n", 1)[0].splitlines() if "=" in line)
        self._objective_name = header.get("objective", "").split(" ")[0]
        if self._objective_name.startswith(("lambdarank", "rank_xendcg")):
            raise ConfigError(
                setting="model",
                value=self._objective_name,
                fix="ranking boosters are not supported; wrap a regression, binary or multiclass model",
            )
        known = _objective(self._objective_name)
        if known not in OBJECTIVE_TASKS and self._objective_name not in _CUSTOM_OBJECTIVES:
            raise ConfigError(
                setting="model",
                value=self._objective_name,
                fix=f"objective not supported; use one of {', '.join(sorted(OBJECTIVE_TASKS))}",
            )
        self._booster = booster
        self._text = text
        self._objective_task = OBJECTIVE_TASKS.get(known)
        self._task = self._objective_task
        self._k = int(header.get("num_tree_per_iteration", "1"))
        self._n_trees = booster.num_trees()
        self._n_iterations = self._n_trees // self._k
        self._names = tuple(booster.feature_name())
        # A booster trained on a numpy array has made-up names; any column names then do, in that number.
        self._auto_names = all(_AUTO_NAME.match(name) for name in self._names)
        categorical = _categorical_indices(booster.params.get("categorical_feature"))
        self._categorical = None if categorical is None else [i in categorical for i in range(len(self._names))]
        self._structure = None
        self._fingerprint = None

    # ------------------------------------------------------------------ predictions
    def _require(self, method: str) -> lgb.Booster:
        if self._booster is None:
            raise checks.not_fitted_error(type(self).__name__, method)
        return self._booster

    def _check_input(self, X: object) -> pd.DataFrame:
        frame = checks.check_frame(X, forbidden=_FORBIDDEN, library="LightGBM")
        if self._auto_names and self._columns is None:
            if frame.shape[1] != len(self._names):
                raise DataError(
                    problem=f"X has {frame.shape[1]} columns, the booster takes {len(self._names)}",
                    fix="pass the columns the booster was trained on, in its order",
                )
        elif self._columns is not None:
            checks.check_columns(frame, self._columns)
        else:
            checks.check_columns(frame, self._names, normalise=_lightgbm_name)
        if self._categorical is not None:
            checks.check_kinds(frame, self._categorical)
        return frame

    def _predict(self, method: str, X: object, **kind: bool) -> np.ndarray:
        booster = self._require(method)
        frame = self._check_input(X)
        try:
            return np.asarray(booster.predict(frame, num_iteration=self._n_iterations, **kind))
        except (lgb.basic.LightGBMError, ValueError) as exc:
            # LightGBM checks categorical columns against the ones it was trained with; say it in one line.
            raise DataError(
                problem=f"LightGBM cannot predict on X: {_first_line(exc)}", fix="pass data like the training data"
            ) from None

    def predict_margin(self, X: pd.DataFrame) -> np.ndarray:
        """Raw scores (``raw_score=True``): shape ``(n,)``, or ``(n, k)`` for ``k`` classes."""
        margin = self._predict("predict_margin", X, raw_score=True).astype(np.float64, copy=False)
        return margin.reshape(len(X), self._k) if self._k > 1 else margin.reshape(len(X))

    def leaf_indices(self, X: pd.DataFrame) -> np.ndarray:
        """``(n, n_trees)`` int32: LightGBM's leaf index of each row in each tree, in boosting order."""
        leaves = self._predict("leaf_indices", X, pred_leaf=True)
        return leaves.astype(np.int32, copy=False).reshape(len(X), self._n_trees)

    def shap_values(self, X: pd.DataFrame) -> TreeShap:
        """Path-dependent TreeSHAP from LightGBM (``pred_contrib=True``), in margin space."""
        contrib = self._predict("shap_values", X, pred_contrib=True).astype(np.float64, copy=False)
        d = len(self._names)
        contrib = contrib.reshape(len(X), self._k, d + 1)
        values = contrib[:, :, :d]
        return TreeShap(
            values=values[:, 0, :] if self._k == 1 else values,
            expected_value=contrib[0, :, d],
            method="path-dependent",
        )

    # ------------------------------------------------------------------ structure, identity, saving
    def structure(self) -> TreeEnsemble:
        """Leaf values, split features, gains and thresholds of every tree, from ``Booster.dump_model`` (computed once).

        LightGBM folds its initial score into the first trees' leaves, so ``base_margin`` is zero.
        """
        booster = self._require("structure")
        if self._structure is None:
            dump = booster.dump_model(num_iteration=self._n_iterations)
            trees = [_tree(info, output=index % self._k) for index, info in enumerate(dump["tree_info"])]
            self._structure = TreeEnsemble(
                trees=trees,
                n_features=len(self._names),
                n_outputs=self._k,
                base_margin=np.zeros(self._k),
                split_rule="<=",
            )
        return self._structure

    def fingerprint(self) -> str:
        """SHA-256 of the LightGBM text model."""
        self._require("fingerprint")
        if self._fingerprint is None:
            self._fingerprint = hashlib.sha256(self._text.encode("utf-8")).hexdigest()
        return self._fingerprint

    def save(self, path: Path) -> None:
        """Write the LightGBM text model to ``path`` (atomically); ``factory(model=path)`` loads it back."""
        self._require("save")
        write_atomic(path, self._text.encode("utf-8"))


def _training_params(params: dict[str, Any], *, task: Task, k: int, seed: int) -> tuple[dict[str, Any], int]:
    """LightGBM parameters for training: our defaults, then the user's, then what the task and seed fix."""
    checks.check_no_seed(params, _ALIASES["seed"])
    n_rounds = checks.pop_n_rounds(params, _ALIASES["n_estimators"], DEFAULT_PARAMS["n_estimators"])
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
    return result, n_rounds


def _copy_booster(model: object) -> lgb.Booster:
    """A private ``Booster`` from a booster, a fitted ``LGBMModel`` or a model file path."""
    if isinstance(model, (str, os.PathLike)):
        text = read_model_text(model)
        try:
            return lgb.Booster(model_str=text)
        except (lgb.basic.LightGBMError, ValueError) as exc:
            raise ModelFileError(
                path=str(model), problem=f"LightGBM cannot read it: {_first_line(exc)}", fix="save the model again"
            ) from None
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
    raise ConfigError(
        setting="model",
        value=type(model).__name__,
        fix="pass a lightgbm.Booster, a fitted LGBMModel, a model file path, or None to train a new booster",
    )


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
