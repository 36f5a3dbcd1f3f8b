"""The LightGBM teacher: trains a booster or wraps an existing one, and shows it in gbdt2nn's normalised form."""

from __future__ import annotations

import contextlib
import io
import os
import re
import warnings
from collections.abc import Collection
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from gbdt2nn_core.errors import ConfigError, ModelFileError
from gbdt2nn_core.host.interfaces import Task, TreeEnsemble
from gbdt2nn_core.kit.booster_teacher import BoosterFacts, BoosterTeacher
from gbdt2nn_lightgbm._modelfile import read_model_text
from gbdt2nn_lightgbm.params import (
    ALIASES,
    CUSTOM_OBJECTIVES,
    DEFAULT_PARAMS,
    OBJECTIVE_TASKS,
    objective_task,
    parameter_names,
    training_params,
)
from gbdt2nn_lightgbm.trees import categorical_indices, tree

__all__ = ["DEFAULT_PARAMS", "LightGBMTeacher"]

# LightGBM's names for columns of unnamed (numpy) training data.
_AUTO_NAME = re.compile(r"^Column_\d+$")


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
    aliases = ALIASES
    native_errors = (lgb.basic.LightGBMError, ValueError)
    thread_options = ("num_threads", "num_thread", "nthread", "nthreads", "n_jobs")

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
            booster = lgb.train(training_params(params, task=task, k=n_outputs, seed=seed), dataset, n_rounds)
        except lgb.basic.LightGBMError as exc:
            raise ConfigError(
                setting="params", value=self._params, fix=f"LightGBM refused them: {self.error_message(exc)}"
            ) from None
        # Through the text model: the copy holds no reference to the training data, and it is the form a
        # saved-and-loaded teacher has, so fingerprints agree.
        return lgb.Booster(model_str=booster.model_to_string())

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
    ) -> lgb.Booster:
        """``lightgbm.dask`` (LightGBM's own distributed training) with the parameters :meth:`train` uses."""
        import lightgbm.dask as lgb_dask  # needs the dask extra; imported only for a distributed fit

        # The regressor wrapper passes the objective through unchanged (the classifier would re-encode labels
        # and pick its own objective); the booster is all we keep.
        model = lgb_dask.DaskLGBMRegressor(
            client=client, n_estimators=n_rounds, **training_params(params, task=task, k=n_outputs, seed=seed)
        )
        try:
            # The scikit-learn wrapper always passes n_jobs (lightgbm.dask sets the threads from each worker), and
            # lightgbm.dask prints its port search to stdout, where `gbdt2nn distill --json` writes.
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
                model.fit(X, labels, categorical_feature="auto")
        except lgb.basic.LightGBMError as exc:
            raise ConfigError(
                setting="params", value=self._params, fix=f"LightGBM refused them: {self.error_message(exc)}"
            ) from None
        return lgb.Booster(model_str=model.booster_.model_to_string())

    def known_params(self) -> Collection[str] | None:
        """LightGBM's parameters and all their aliases (it ignores an unknown one, with a warning at most)."""
        return parameter_names()

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
        task = objective_task(objective)
        if task is None and objective not in CUSTOM_OBJECTIVES:
            raise ConfigError(
                setting="model",
                value=objective,
                fix=f"objective not supported; use one of {', '.join(sorted(OBJECTIVE_TASKS))}",
            )
        names = tuple(booster.feature_name())
        categorical = categorical_indices(booster.params.get("categorical_feature"))
        return BoosterFacts(
            task=task,
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

    def predict_contribs_threaded(self, booster: lgb.Booster, X: pd.DataFrame, threads: int) -> np.ndarray:
        """``pred_contrib`` with LightGBM's ``num_threads`` set (its rows run in parallel, each computed alone)."""
        return np.asarray(
            booster.predict(X, num_iteration=self._n_iterations(booster), pred_contrib=True, num_threads=threads)
        )

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
            trees=[tree(info, output=index % k) for index, info in enumerate(dump["tree_info"])],
            n_features=len(booster.feature_name()),
            n_outputs=k,
            base_margin=np.zeros(k),
            split_rule="<=",
        )

    def model_bytes(self, booster: lgb.Booster, *, suffix: str = "") -> bytes:
        """The LightGBM text model (whatever the suffix)."""
        return booster.model_to_string().encode("utf-8")
