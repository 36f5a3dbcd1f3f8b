"""The XGBoost teacher: trains a booster or wraps an existing one, and shows it in gbdt2nn's normalised form."""

from __future__ import annotations

import json
import os
import warnings
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.host.interfaces import Task, TreeEnsemble
from gbdt2nn_core.kit.booster_teacher import BoosterFacts, BoosterTeacher
from gbdt2nn_xgboost._modelfile import clean_message, load_booster, read_model_bytes
from gbdt2nn_xgboost.params import ALIASES, DEFAULT_PARAMS, OBJECTIVE_TASKS, refuse_unused, training_params
from gbdt2nn_xgboost.trees import ensemble

__all__ = ["DEFAULT_PARAMS", "XGBoostTeacher"]


class XGBoostTeacher(BoosterTeacher[xgb.Booster]):
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
        and any other XGBoost parameter, passed through unchanged; a name XGBoost does not use is an error.
        The objective follows the task unless given; ``num_class`` defaults to ``max(y) + 1``. Pass the seed
        to :meth:`fit`.
    """

    library = "XGBoost"
    forbidden_characters = "[]<"
    default_params = DEFAULT_PARAMS
    aliases = ALIASES
    native_errors = (xgb.core.XGBoostError, ValueError)
    thread_options = ("nthread", "n_jobs", "num_threads")

    def __init__(self, model: object = None, **params: Any) -> None:
        self._node_to_leaf: np.ndarray | None = None
        super().__init__(model, **params)

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
    ) -> xgb.Booster:
        """``xgb.train`` with our defaults, then the user's parameters; refuses parameters XGBoost did not use."""
        train_params = training_params(params, task=task, k=n_outputs, seed=seed)
        try:
            dtrain = xgb.DMatrix(X, label=labels, enable_categorical=True)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                booster = xgb.train(train_params, dtrain, num_boost_round=n_rounds)
        except xgb.core.XGBoostError as exc:
            raise ConfigError(
                setting="params", value=self._params, fix=f"XGBoost refused them: {clean_message(exc)}"
            ) from None
        refuse_unused(caught, booster)
        # Through the serialised model: the copy holds no training caches, and it is the form a
        # saved-and-loaded teacher has, so fingerprints agree.
        return load_booster(booster.save_raw("ubj"), where="(trained booster)")

    def train_distributed(
        self,
        client: Any,
        X: Any,
        labels: Any,
        *,
        task: Task,
        n_outputs: int,
        n_rounds: int,
        seed: int,
        params: dict[str, Any],
    ) -> xgb.Booster:
        """``xgboost.dask.train`` (XGBoost's own distributed training) with the parameters :meth:`train` uses.

        Unlike :meth:`train`, a parameter XGBoost does not use is not refused: its warning is raised on the
        workers, where it cannot be caught.
        """
        import xgboost.dask as xgb_dask  # needs the dask extra; imported only for a distributed fit

        train_params = training_params(params, task=task, k=n_outputs, seed=seed)
        try:
            dtrain = xgb_dask.DaskDMatrix(client, X, labels, enable_categorical=True)
            output = xgb_dask.train(client, train_params, dtrain, num_boost_round=n_rounds)
        except xgb.core.XGBoostError as exc:
            raise ConfigError(
                setting="params", value=self._params, fix=f"XGBoost refused them: {clean_message(exc)}"
            ) from None
        return load_booster(output["booster"].save_raw("ubj"), where="(trained booster)")

    def copy_model(self, model: object) -> xgb.Booster | None:
        """A private ``Booster`` from a booster or a fitted ``XGBModel`` (cut at its best iteration)."""
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
        return None

    def models_accepted(self) -> str:
        return "pass an xgboost.Booster, a fitted XGBModel, a JSON/UBJ model path, or None to train a new booster"

    def load_model_file(self, path: str | os.PathLike[str]) -> xgb.Booster:
        """A ``Booster`` from a JSON or UBJSON model file."""
        return load_booster(read_model_bytes(path), where=str(path))

    def describe(self, booster: xgb.Booster) -> BoosterFacts:
        """What the configuration says; refuses linear, multi-target and vector-leaf boosters."""
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
        objective = learner["objective"]["name"]
        if objective not in OBJECTIVE_TASKS:
            raise ConfigError(
                setting="objective",
                value=objective,
                fix="wrap a regression, binary or multiclass booster (ranking and other objectives are not supported)",
            )
        n_features = booster.num_features()
        # A booster without feature types was trained on a bare numeric array: no categorical features.
        kinds = booster.feature_types or ["float"] * n_features
        self._node_to_leaf = None
        return BoosterFacts(
            task=OBJECTIVE_TASKS[objective],
            objective=objective,
            n_outputs=k,
            n_trees=int(counts["num_trees"]),
            n_features=n_features,
            feature_names=None if booster.feature_names is None else tuple(booster.feature_names),
            categorical=tuple(kind == "c" for kind in kinds),
        )

    def name_columns(self, booster: xgb.Booster, columns: tuple[str, ...]) -> bool:
        """A booster trained on a bare array: the columns it was checked against become its names."""
        booster.feature_names = list(columns)
        return True

    def error_message(self, exc: BaseException) -> str:
        return clean_message(exc)

    # ------------------------------------------------------------------ predictions
    def predict_raw(self, booster: xgb.Booster, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(booster.predict(xgb.DMatrix(X, enable_categorical=True), output_margin=True))

    def predict_leaves(self, booster: xgb.Booster, X: pd.DataFrame) -> np.ndarray:
        """XGBoost's node ids (``pred_leaf``) renumbered 0..n_leaves-1."""
        matrix = xgb.DMatrix(X, enable_categorical=True)
        nodes = np.asarray(booster.predict(matrix, pred_leaf=True)).astype(np.int64).reshape(len(X), -1)
        self.structure()
        table = self._node_to_leaf
        assert table is not None
        leaves = table[np.arange(table.shape[0])[None, :], nodes]
        if leaves.size and leaves.min() < 0:
            raise RuntimeError("XGBoost returned an internal node as a leaf; please report this with the model")
        return leaves

    def predict_contribs(self, booster: xgb.Booster, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(booster.predict(xgb.DMatrix(X, enable_categorical=True), pred_contribs=True))

    def predict_contribs_cuda(self, booster: xgb.Booster, X: pd.DataFrame, device: str) -> np.ndarray:
        """``pred_contribs`` with the booster's ``device`` set to the CUDA ``device`` for this call: XGBoost then
        computes them with GPUTreeShap (Mitchell et al. 2022). The booster's own setting is restored afterwards, so
        that its fingerprint and saved model do not change. A build of XGBoost without CUDA warns and computes on
        the CPU."""
        previous = json.loads(booster.save_config())["learner"]["generic_param"].get("device", "cpu")
        booster.set_param({"device": device})
        try:
            return np.asarray(booster.predict(xgb.DMatrix(X, enable_categorical=True), pred_contribs=True))
        finally:
            booster.set_param({"device": previous})

    def predict_contribs_threaded(self, booster: xgb.Booster, X: pd.DataFrame, threads: int) -> np.ndarray:
        """``pred_contribs`` with XGBoost's ``nthread`` set for this call (the booster's own setting is restored)."""
        previous = json.loads(booster.save_config())["learner"]["generic_param"].get("nthread", "0")
        booster.set_param({"nthread": threads})
        try:
            matrix = xgb.DMatrix(X, enable_categorical=True, nthread=threads)
            return np.asarray(booster.predict(matrix, pred_contribs=True))
        finally:
            booster.set_param({"nthread": previous})

    # ------------------------------------------------------------------ structure, saving
    def dump_structure(self, booster: xgb.Booster) -> TreeEnsemble:
        """Leaf values, split features and gains of every tree, from the JSON model (see :func:`.trees.ensemble`)."""
        structure, self._node_to_leaf = ensemble(booster, self.n_outputs)
        return structure

    def model_bytes(self, booster: xgb.Booster, *, suffix: str = "") -> bytes:
        """JSON for a ``.json`` suffix, UBJSON otherwise (the fingerprint hashes UBJSON)."""
        return bytes(booster.save_raw("json" if suffix == ".json" else "ubj"))
