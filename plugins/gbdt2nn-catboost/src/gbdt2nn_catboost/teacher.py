"""The CatBoost teacher: the core's :class:`~gbdt2nn_core.booster_teacher.BoosterTeacher` with CatBoost's hooks."""

from __future__ import annotations

import json
import os
from collections.abc import Collection
from typing import Any

import catboost as cb
import numpy as np
import pandas as pd

from gbdt2nn_catboost._modelfile import copy_model, load_model_file
from gbdt2nn_catboost._params import (
    ALIASES,
    DEFAULT_PARAMS,
    LOSS_TASKS,
    catboost_pool,
    known_params,
    training_options,
)
from gbdt2nn_catboost._structure import ensemble_from_json
from gbdt2nn_core.booster_teacher import BoosterFacts, BoosterTeacher
from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.interfaces import Task, TreeEnsemble

__all__ = ["CatBoostTeacher"]


class CatBoostTeacher(BoosterTeacher[cb.CatBoost]):
    """A CatBoost model as a gbdt2nn teacher: native categorical features, symmetric trees, CatBoost's SHAP.

    ``model=None`` trains on :meth:`fit` (options: :data:`DEFAULT_PARAMS` and any CatBoost parameter);
    otherwise ``model`` is a fitted ``CatBoost``/``CatBoostClassifier``/``CatBoostRegressor`` or a ``.cbm``
    file, copied. See :mod:`gbdt2nn_catboost._structure` for how the trees are shown to the student.
    """

    library = "CatBoost"
    default_params = DEFAULT_PARAMS
    aliases = ALIASES
    native_errors = (cb.CatBoostError, ValueError, TypeError)

    def __init__(self, model: object = None, **params: Any) -> None:
        threads = params.get("threads", params.get("thread_count", DEFAULT_PARAMS["threads"]))
        # Predictions use the training thread count; CatBoost itself refuses a bad one when training.
        self._threads = threads if isinstance(threads, int) else -1
        self._json: tuple[cb.CatBoost, dict[str, Any]] | None = None
        super().__init__(model, **params)

    # ------------------------------------------------------------------ training and wrapping
    def known_params(self) -> Collection[str]:
        return known_params()

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
    ) -> cb.CatBoost:
        options = training_options(params, task=task, n_outputs=n_outputs, n_rounds=n_rounds, seed=seed)
        pool = catboost_pool(X, labels if task == "regression" else labels.astype(np.int64))
        try:
            model = cb.CatBoost(options).fit(pool)
        except cb.CatBoostError as exc:
            raise ConfigError(
                setting="params", value=params, fix=f"CatBoost refused them: {self.error_message(exc)}"
            ) from None
        # A copy through the .cbm bytes: the form a saved-and-loaded teacher has, so fingerprints agree.
        return self._remember(*copy_model(model, where="(trained model)"))

    def copy_model(self, model: object) -> cb.CatBoost | None:
        if not isinstance(model, cb.CatBoost):
            return None
        if not model.is_fitted():
            raise ConfigError(
                setting="model", value=type(model).__name__, fix="fit the CatBoost model first, or pass model=None"
            )
        return self._remember(*copy_model(model, where="(model)"))

    def load_model_file(self, path: str | os.PathLike[str]) -> cb.CatBoost:
        return self._remember(*load_model_file(path))

    def models_accepted(self) -> str:
        return "pass a fitted CatBoost, CatBoostClassifier or CatBoostRegressor, a .cbm file, or None to train one"

    def _remember(self, model: cb.CatBoost, document: dict[str, Any]) -> cb.CatBoost:
        self._json = (model, document)
        return model

    def _document(self, booster: cb.CatBoost) -> dict[str, Any]:
        if self._json is None or self._json[0] is not booster:
            raise AssertionError("a CatBoost model reached the teacher without its JSON export")
        return self._json[1]

    # ------------------------------------------------------------------ what the base class needs
    def describe(self, booster: cb.CatBoost) -> BoosterFacts:
        document = self._document(booster)
        loss = document["model_info"].get("params", {}).get("loss_function", {}).get("type", "")
        if loss not in LOSS_TASKS:
            raise ConfigError(
                setting="model", value=loss, fix=f"loss not supported; use one of {', '.join(LOSS_TASKS)}"
            )
        names = tuple(booster.feature_names_)
        k = len(np.atleast_1d(document["scale_and_bias"][1]))
        categorical = set(booster.get_cat_feature_indices())
        return BoosterFacts(
            task=LOSS_TASKS[loss],
            objective=loss,
            n_outputs=k,
            n_trees=booster.tree_count_ * k,
            n_features=len(names),
            feature_names=names,
            names_checked=names != tuple(str(i) for i in range(len(names))),
            categorical=tuple(i in categorical for i in range(len(names))),
        )

    def predict_raw(self, booster: cb.CatBoost, X: pd.DataFrame) -> np.ndarray:
        return np.asarray(
            booster.predict(catboost_pool(X), prediction_type="RawFormulaVal", thread_count=self._threads)
        )

    def predict_leaves(self, booster: cb.CatBoost, X: pd.DataFrame) -> np.ndarray:
        leaves = np.asarray(booster.calc_leaf_indexes(catboost_pool(X), thread_count=self._threads))
        # A k-class tree is shown as k trees with the same leaves (see _structure).
        return np.repeat(leaves, self.n_outputs, axis=1)

    def predict_contribs(self, booster: cb.CatBoost, X: pd.DataFrame) -> np.ndarray:
        pool = catboost_pool(X)
        return np.asarray(booster.get_feature_importance(pool, type="ShapValues", thread_count=self._threads))

    def dump_structure(self, booster: cb.CatBoost) -> TreeEnsemble:
        return ensemble_from_json(self._document(booster), len(booster.feature_names_))

    def model_bytes(self, booster: cb.CatBoost, *, suffix: str = "") -> bytes:
        if suffix:
            data: bytes = booster._serialize_model()  # CatBoost's in-memory .cbm save
            return data
        # The fingerprint: the JSON export without what differs between two identical trainings (id, time).
        document = dict(self._document(booster))
        info = document.pop("model_info", {})
        document["model_info"] = {k: v for k, v in info.items() if k not in ("model_guid", "train_finish_time")}
        return json.dumps(document, sort_keys=True).encode()
