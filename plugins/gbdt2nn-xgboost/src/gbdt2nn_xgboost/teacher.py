"""The XGBoost teacher: trains a booster or wraps an existing one, and shows it in gbdt2nn's normalised form."""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from gbdt2nn_core import teacher_checks as checks
from gbdt2nn_core.errors import ConfigError, DataError
from gbdt2nn_core.interfaces import Task, Teacher, Tree, TreeEnsemble, TreeShap
from gbdt2nn_core.model_files import write_atomic
from gbdt2nn_xgboost._modelfile import clean_message, load_booster, read_model_bytes

__all__ = ["DEFAULT_PARAMS", "XGBoostTeacher"]

#: Training defaults (DeepGBM's teacher size, grown leaf-wise like LightGBM); factory parameters override them.
DEFAULT_PARAMS: dict[str, Any] = {
    "n_estimators": 100,
    "max_leaves": 64,
    "max_depth": 0,
    "grow_policy": "lossguide",
    "tree_method": "hist",
    "learning_rate": 0.1,
}
_ALIASES: dict[str, tuple[str, ...]] = {
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
# Characters XGBoost refuses in feature names.
_FORBIDDEN = "[]<"
# XGBoost marks nodes removed by pruning with this split index; they are neither splits nor reachable leaves.
_DELETED = 2**31 - 1


class XGBoostTeacher(Teacher):
    """An XGBoost booster as a gbdt2nn teacher.

    Parameters
    ----------
    model:
        ``None`` to train a booster in :meth:`fit`; otherwise a trained ``xgboost.Booster``, a fitted
        ``XGBModel`` (``XGBRegressor``, ``XGBClassifier``...) or the path of a JSON / UBJSON model file. A
        wrapped booster is copied; a scikit-learn model that early-stopped is cut at its best iteration, as
        its own ``predict`` does (a bare ``Booster`` keeps all its trees, as ``Booster.predict`` does).
    **params:
        Training parameters (only with ``model=None``): ``n_estimators`` (100), ``max_leaves`` (64),
        ``max_depth`` (0), ``grow_policy`` ("lossguide"), ``tree_method`` ("hist"), ``learning_rate`` (0.1)
        and any other XGBoost parameter, passed through unchanged. The objective follows the task unless
        given; ``num_class`` defaults to ``max(y) + 1``. Pass the seed to :meth:`fit`.
    """

    def __init__(self, model: object = None, **params: Any) -> None:
        self._params = dict(params)
        self._wrapped = model is not None
        self._booster: xgb.Booster | None = None
        self._task: Task | None = None
        self._structure: TreeEnsemble | None = None
        self._node_to_leaf: np.ndarray | None = None
        self._fingerprint: str | None = None
        if model is not None:
            checks.check_no_training_params(params)
            self._adopt(_copy_booster(model))

    def __repr__(self) -> str:
        state = "unfitted" if self._booster is None else f"{self._booster.num_boosted_rounds()} rounds"
        return f"{type(self).__name__}({state}, task={self._task!r})"

    # ------------------------------------------------------------------ properties
    @property
    def native_model(self) -> xgb.Booster:
        """The underlying ``xgboost.Booster`` (a private copy: do not train it further)."""
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
        """The booster's input columns, in order."""
        booster = self._require("feature_names")
        if booster.feature_names is None:
            raise checks.not_fitted_error(type(self).__name__, "feature_names (the booster has no column names)")
        return tuple(booster.feature_names)

    # ------------------------------------------------------------------ training / wrapping
    def fit(self, X: pd.DataFrame, y: np.ndarray, *, task: Task, seed: int = 0) -> XGBoostTeacher:
        """Train a booster on ``(X, y)``; a wrapped booster is not retrained, only checked against X and task."""
        task = checks.check_task(task)
        X = checks.check_frame(X, forbidden=_FORBIDDEN, library="XGBoost")
        if self._wrapped:
            return self._check_wrapped(X, y, task)
        params = dict(self._params)
        n_classes = checks.pop_n_classes(params, _ALIASES["num_class"], task=task)
        labels, k = checks.check_target(y, n_rows=len(X), task=task, n_classes=n_classes)
        train_params, n_rounds = _training_params(params, task=task, k=k, seed=seed)
        try:
            dtrain = xgb.DMatrix(X, label=labels, enable_categorical=True)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                booster = xgb.train(train_params, dtrain, num_boost_round=n_rounds)
        except xgb.core.XGBoostError as exc:
            raise ConfigError(
                setting="params", value=self._params, fix=f"XGBoost refused them: {clean_message(exc)}"
            ) from None
        _refuse_unused(caught)
        # Through the serialised model: the copy holds no training caches, and it is the form a
        # saved-and-loaded teacher has, so fingerprints agree.
        self._adopt(load_booster(booster.save_raw("ubj"), where="(trained booster)"))
        self._task = task
        return self

    def _check_wrapped(self, X: pd.DataFrame, y: object, task: Task) -> XGBoostTeacher:
        if task != self._objective_task:
            raise ConfigError(
                setting="task",
                value=task,
                fix=f"the booster's objective {self._objective!r} solves {self._objective_task}; "
                f"pass task={self._objective_task!r} or wrap another model",
            )
        self._check_input(X)
        if y is not None:
            checks.check_target(
                y, n_rows=len(X), task=task, n_classes=self._k if task == "multiclass" else None, training=False
            )
        booster = self._require("fit")
        if booster.feature_names is None:
            # A booster trained on a bare array: the columns it was checked against become its names.
            booster.feature_names = list(X.columns)
            self._fingerprint = None
        self._task = task
        return self

    def _adopt(self, booster: xgb.Booster) -> None:
        """Make ``booster`` (already a private copy) the model, and read what the teacher needs from it."""
        learner = json.loads(booster.save_config())["learner"]
        gradient_booster = learner["gradient_booster"]
        if gradient_booster["name"] not in ("gbtree", "dart"):
            raise ConfigError(
                setting="model",
                value=gradient_booster["name"],
                fix="only tree boosters (gbtree, dart) have leaves to distil; retrain with booster='gbtree'",
            )
        model_param = learner["learner_model_param"]
        k = max(1, int(model_param.get("num_class", "0")))
        if int(model_param.get("num_target", "1")) > 1:
            raise ConfigError(
                setting="num_target",
                value=int(model_param["num_target"]),
                fix="multi-target boosters are not supported; train one teacher per target",
            )
        # A loaded model keeps no training parameters, so vector-leaf trees (multi_strategy="multi_output_tree")
        # show as one tree per round where scalar trees need one per class.
        counts = gradient_booster.get("gbtree", gradient_booster)["gbtree_model_param"]
        per_round = k * int(counts.get("num_parallel_tree", "1"))
        if int(counts["num_trees"]) != booster.num_boosted_rounds() * per_round:
            raise ConfigError(
                setting="multi_strategy",
                value="multi_output_tree",
                fix="vector-leaf trees are not supported; retrain with multi_strategy='one_output_per_tree'",
            )
        self._objective = learner["objective"]["name"]
        objective_task = OBJECTIVE_TASKS.get(self._objective)
        if objective_task is None:
            raise ConfigError(
                setting="objective",
                value=self._objective,
                fix="wrap a regression, binary or multiclass booster (ranking and other objectives are not supported)",
            )
        self._objective_task: Task = objective_task
        self._booster = booster
        self._task = objective_task
        self._k = k
        self._structure = None
        self._node_to_leaf = None
        self._fingerprint = None

    # ------------------------------------------------------------------ predictions
    def _require(self, method: str) -> xgb.Booster:
        if self._booster is None:
            raise checks.not_fitted_error(type(self).__name__, method)
        return self._booster

    def _check_input(self, X: object) -> pd.DataFrame:
        booster = self._require("predict")
        frame = checks.check_frame(X, forbidden=_FORBIDDEN, library="XGBoost")
        if booster.feature_names is not None:
            checks.check_columns(frame, booster.feature_names)
        elif frame.shape[1] != booster.num_features():
            raise DataError(
                problem=f"X has {frame.shape[1]} columns, the booster takes {booster.num_features()}",
                fix="pass the columns the booster was trained on, in its order",
            )
        # A booster without feature types was trained on a bare numeric array: no categorical features.
        kinds = booster.feature_types or ["float"] * frame.shape[1]
        checks.check_kinds(frame, [kind == "c" for kind in kinds])
        return frame

    def _predict(self, method: str, X: object, **kind: bool) -> np.ndarray:
        booster = self._require(method)
        frame = self._check_input(X)
        try:
            matrix = xgb.DMatrix(frame, enable_categorical=True)
            return np.asarray(booster.predict(matrix, **kind))
        except (xgb.core.XGBoostError, ValueError) as exc:
            raise DataError(
                problem=f"XGBoost cannot predict on X: {clean_message(exc)}", fix="pass data like the training data"
            ) from None

    def predict_margin(self, X: pd.DataFrame) -> np.ndarray:
        """Raw scores (``output_margin=True``): shape ``(n,)``, or ``(n, k)`` for ``k`` classes."""
        margin = self._predict("predict_margin", X, output_margin=True).astype(np.float64)
        return margin.reshape(len(X), self._k) if self._k > 1 else margin.reshape(len(X))

    def leaf_indices(self, X: pd.DataFrame) -> np.ndarray:
        """``(n, n_trees)`` int32 leaf ordinals: XGBoost's node ids (``pred_leaf``) renumbered 0..n_leaves-1."""
        nodes = self._predict("leaf_indices", X, pred_leaf=True).astype(np.int64).reshape(len(X), -1)
        self.structure()
        table = self._node_to_leaf
        assert table is not None
        leaves = table[np.arange(table.shape[0])[None, :], nodes]
        if leaves.size and leaves.min() < 0:
            raise RuntimeError("XGBoost returned an internal node as a leaf; please report this with the model")
        return leaves

    def shap_values(self, X: pd.DataFrame) -> TreeShap:
        """Path-dependent TreeSHAP from XGBoost (``pred_contribs=True``), in margin space."""
        contrib = self._predict("shap_values", X, pred_contribs=True).astype(np.float64)
        contrib = contrib.reshape(len(X), self._k, -1)
        values = contrib[:, :, :-1]
        return TreeShap(
            values=values[:, 0, :] if self._k == 1 else values,
            expected_value=contrib[0, :, -1],
            method="path-dependent",
        )

    # ------------------------------------------------------------------ structure, identity, saving
    def structure(self) -> TreeEnsemble:
        """Leaf values, split features and gains of every tree, from the JSON model (computed once).

        Leaves are numbered in node-id order. ``base_margin`` is the booster's intercept in margin space
        (``base_score`` after the objective's link: logit for ``binary:logistic``, log for ``count:poisson``,
        one value per class for multiclass in XGBoost 3); it is measured on a probe row rather than
        recomputed from the configuration, so it stays right whatever the objective and XGBoost version.
        """
        booster = self._require("structure")
        if self._structure is None:
            gradient_booster = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]
            weights = gradient_booster.get("weight_drop") if gradient_booster["name"] == "dart" else None
            model = (
                gradient_booster["gbtree"]["model"] if gradient_booster["name"] == "dart" else gradient_booster["model"]
            )
            trees, tables = [], []
            for index, (tree, output) in enumerate(zip(model["trees"], model["tree_info"], strict=True)):
                parsed, table = _tree(
                    tree, output=int(output), weight=1.0 if weights is None else float(weights[index])
                )
                trees.append(parsed)
                tables.append(table)
            width = max((len(table) for table in tables), default=1)
            node_to_leaf = np.full((len(tables), width), -1, dtype=np.int32)
            for row, table in enumerate(tables):
                node_to_leaf[row, : len(table)] = table
            first_iteration = self._k * int(model["gbtree_model_param"].get("num_parallel_tree", "1"))
            base = _base_margin(booster, trees[:first_iteration], node_to_leaf[:first_iteration], self._k)
            self._node_to_leaf = node_to_leaf
            self._structure = TreeEnsemble(
                trees=trees,
                n_features=booster.num_features(),
                n_outputs=self._k,
                base_margin=base,
                split_rule="<",
            )
        return self._structure

    def fingerprint(self) -> str:
        """SHA-256 of the UBJSON model."""
        booster = self._require("fingerprint")
        if self._fingerprint is None:
            self._fingerprint = hashlib.sha256(booster.save_raw("ubj")).hexdigest()
        return self._fingerprint

    def save(self, path: Path) -> None:
        """Write the model to ``path`` atomically: JSON for a ``.json`` suffix, UBJSON otherwise."""
        booster = self._require("save")
        raw_format = "json" if Path(path).suffix.lower() == ".json" else "ubj"
        write_atomic(path, bytes(booster.save_raw(raw_format)))


def _refuse_unused(caught: list[warnings.WarningMessage]) -> None:
    """XGBoost only warns about parameters it does not know; a silently ignored setting is a user mistake."""
    for warning in caught:
        unused = re.search(r"Parameters: \{(.*?)\} are not used", str(warning.message), flags=re.S)
        if unused:
            names = unused.group(1).replace('"', "").strip()
            raise ConfigError(
                setting="teacher option",
                value=names,
                fix="XGBoost does not know it; see the XGBoost parameter list (e.g. max_leaves, nthread)",
            )
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)


def _training_params(params: dict[str, Any], *, task: Task, k: int, seed: int) -> tuple[dict[str, Any], int]:
    """XGBoost parameters for training: our defaults, then the user's, then what the task and seed fix."""
    for ours, theirs in _RENAMES.items():
        if ours in params:
            params[theirs] = params.pop(ours)
    checks.check_no_seed(params, _ALIASES["seed"])
    n_rounds = checks.pop_n_rounds(params, _ALIASES["n_estimators"], DEFAULT_PARAMS["n_estimators"])
    learning_rate = checks.pop_param(params, _ALIASES["learning_rate"], DEFAULT_PARAMS["learning_rate"])
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
    return result, n_rounds


def _copy_booster(model: object) -> xgb.Booster:
    """A private ``Booster`` from a booster, a fitted ``XGBModel`` or a model file path."""
    if isinstance(model, (str, os.PathLike)):
        return load_booster(read_model_bytes(model), where=str(model))
    if isinstance(model, xgb.XGBModel):
        try:
            booster = model.get_booster()
        except (AttributeError, ValueError, xgb.core.XGBoostError):
            raise ConfigError(
                setting="model",
                value=type(model).__name__,
                fix="fit the XGBoost model first, or pass model=None to train a new booster",
            ) from None
        try:
            best = model.best_iteration
        except AttributeError:  # no early stopping: predict uses every tree
            best = None
        model = booster if best is None else booster[: best + 1]
    if isinstance(model, xgb.Booster):
        return load_booster(model.save_raw("ubj"), where="(booster)")
    raise ConfigError(
        setting="model",
        value=type(model).__name__,
        fix="pass an xgboost.Booster, a fitted XGBModel, a JSON/UBJ model path, or None to train a new booster",
    )


def _tree(tree: dict[str, Any], *, output: int, weight: float) -> tuple[Tree, np.ndarray]:
    """One tree of the JSON model, and its map from node id to leaf ordinal (-1 for other nodes)."""
    left = np.asarray(tree["left_children"], dtype=np.int64)
    split_index = np.asarray(tree["split_indices"], dtype=np.int64)
    deleted = split_index == _DELETED
    is_leaf = (left == -1) & ~deleted
    is_split = (left != -1) & ~deleted
    if int(tree["tree_param"].get("size_leaf_vector", "1")) > 1:
        raise ConfigError(
            setting="multi_strategy",
            value="multi_output_tree",
            fix="vector-leaf trees are not supported; retrain with multi_strategy='one_output_per_tree'",
        )
    # For a leaf, split_conditions holds its value (learning rate included).
    values = np.asarray(tree["split_conditions"], dtype=np.float64)[is_leaf] * weight
    table = np.full(len(left), -1, dtype=np.int32)
    table[is_leaf] = np.arange(int(is_leaf.sum()), dtype=np.int32)
    # For a split, split_conditions holds its threshold (``x < t`` goes left); categorical splits get NaN.
    thresholds = np.asarray(tree["split_conditions"], dtype=np.float64)[is_split]
    split_type = np.asarray(tree.get("split_type", np.zeros(len(left))), dtype=np.int64)[is_split]
    parsed = Tree(
        leaf_values=values,
        split_features=split_index[is_split],
        split_gains=np.asarray(tree["loss_changes"], dtype=np.float64)[is_split],
        split_thresholds=np.where(split_type == 0, thresholds, np.nan),
        output=output,
    )
    return parsed, table


def _base_margin(booster: xgb.Booster, first: list[Tree], tables: np.ndarray, k: int) -> np.ndarray:
    """The intercept per output: the first round's margin on an all-missing row, minus its trees' leaves."""
    probe = xgb.DMatrix(
        np.full((1, booster.num_features()), np.nan, dtype=np.float32),
        feature_names=booster.feature_names,
        feature_types=booster.feature_types,
        enable_categorical=True,
    )
    if not first:
        return np.asarray(booster.predict(probe, output_margin=True), dtype=np.float64).reshape(k)
    margin = np.asarray(booster.predict(probe, output_margin=True, iteration_range=(0, 1)), dtype=np.float64)
    nodes = np.asarray(booster.predict(probe, pred_leaf=True, iteration_range=(0, 1))).astype(np.int64).reshape(-1)
    base = margin.reshape(k).copy()
    for tree, table, node in zip(first, tables, nodes, strict=True):
        base[tree.output] -= tree.leaf_values[table[node]]
    return base
