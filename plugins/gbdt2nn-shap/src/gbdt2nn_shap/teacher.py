"""Interventional TreeSHAP of a teacher against a background sample, through ``shap.TreeExplainer``.

shap 0.51 has two multi-output slips that this module works around, and one limit it reports:

- LightGBM multiclass: shap adds every class's trees into one output; we hand it the parsed trees again, each
  writing to its own class column.
- XGBoost multiclass: shap takes one base score for all classes, so its ``expected_value`` is off by a
  constant per class (the values themselves are right); we take the expected value as the teacher's mean
  margin on the background, which is what interventional TreeSHAP's expected value is by definition.
- Categorical splits are not supported for interventional TreeSHAP: a :class:`DataError` says to use the native
  path-dependent TreeSHAP instead.

Every result is checked for additivity against the teacher's own margins before it is returned.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from gbdt2nn_core.errors import DataError
from gbdt2nn_core.host.interfaces import TreeShap

__all__ = ["interventional_tree_shap"]

_FALLBACK = "use the native path-dependent TreeSHAP (teacher.shap_values) instead"


def interventional_tree_shap(
    teacher: Any, X: pd.DataFrame | np.ndarray, background: pd.DataFrame | np.ndarray
) -> TreeShap:
    """Interventional TreeSHAP values of ``teacher`` on rows ``X``, against rows ``background``, in margin space.

    ``teacher`` is a :class:`~gbdt2nn_core.Teacher` (or any object) whose ``native_model`` is a LightGBM or
    XGBoost ``Booster``. The result has ``values`` ``(n, d)`` or ``(n, k, d)``, ``expected_value`` ``(k,)`` (the
    mean margin on ``background``) and ``method="interventional"``; ``values.sum(-1) + expected_value`` equals
    the margin. Cost grows with ``len(X) × len(background) × trees × leaves``: keep the background to ~100 rows.
    """
    import shap

    booster = getattr(teacher, "native_model", None)
    if booster is None:
        raise DataError(
            problem=f"{type(teacher).__name__} has no native_model to explain",
            fix="pass a teacher whose native_model is a LightGBM or XGBoost Booster",
        )
    if len(background) == 0:
        raise DataError(problem="the background sample is empty", fix="pass some training rows as background")
    is_xgboost = type(booster).__module__.startswith("xgboost")
    rows, reference = _numeric(X, float32=is_xgboost), _numeric(background, float32=is_xgboost)
    if rows.shape[1] != reference.shape[1]:
        raise DataError(
            problem=f"X has {rows.shape[1]} columns but the background has {reference.shape[1]}",
            fix="pass rows with the teacher's columns for both",
        )
    margins = _margins(teacher, booster, X)
    expected = _margins(teacher, booster, background).mean(axis=0)
    try:
        model = _multiclass_lightgbm(shap, booster, reference) or booster
        explainer = shap.TreeExplainer(model, data=reference, feature_perturbation="interventional", model_output="raw")
        raw = explainer.shap_values(rows, check_additivity=False)
    except DataError:
        raise
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            problem=f"shap cannot compute interventional TreeSHAP for this model ({reason})", fix=_FALLBACK
        ) from exc

    values = np.asarray(raw, dtype=np.float64)
    if values.ndim == 3:  # shap gives (n, d, k); gbdt2nn puts outputs before features
        values = values.transpose(0, 2, 1)
    if margins.ndim == 2 and values.ndim == 2:
        raise DataError(problem=f"shap explained one output but the teacher has {margins.shape[1]}", fix=_FALLBACK)
    error = np.abs(values.sum(axis=-1) + expected - margins).max(initial=0.0)
    tolerance = 1e-4 * (1.0 + np.abs(margins).max(initial=0.0))
    if not error <= tolerance:
        # shap 0.51 silently misreads LightGBM splits on several categories; anything else would be a new shap bug.
        categorical = isinstance(X, pd.DataFrame) and any(isinstance(t, pd.CategoricalDtype) for t in X.dtypes)
        cause = "shap does not handle this model's categorical splits" if categorical else "shap misread the model"
        raise DataError(
            problem=f"interventional TreeSHAP values miss the teacher's margins by up to {error:.3g} ({cause})",
            fix=_FALLBACK,
        )
    return TreeShap(values=values, expected_value=np.atleast_1d(expected), method="interventional")


def _numeric(frame: pd.DataFrame | np.ndarray, *, float32: bool) -> np.ndarray:
    """Rows as a float64 matrix: categories become their codes (NaN for missing), as the boosters see them."""
    if isinstance(frame, pd.DataFrame):
        matrix = np.empty(frame.shape, dtype=np.float64)
        for j, column in enumerate(frame.columns):
            series = frame[column]
            if isinstance(series.dtype, pd.CategoricalDtype):
                codes = series.cat.codes.to_numpy()
                matrix[:, j] = np.where(codes < 0, np.nan, codes)
            else:
                matrix[:, j] = series.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        matrix = np.array(frame, dtype=np.float64, ndmin=2)
    # XGBoost compares float32 inputs with float32 thresholds; round the same way so no row changes side.
    return matrix.astype(np.float32).astype(np.float64) if float32 else matrix


def _margins(teacher: Any, booster: Any, X: pd.DataFrame | np.ndarray) -> np.ndarray:
    """Raw scores ``(n,)`` or ``(n, k)``: the teacher's own, or the booster's when only a booster is at hand."""
    if hasattr(teacher, "predict_margin"):
        return np.asarray(teacher.predict_margin(X), dtype=np.float64)
    if type(booster).__module__.startswith("xgboost"):
        import xgboost

        matrix = xgboost.DMatrix(X, enable_categorical=isinstance(X, pd.DataFrame))
        return np.asarray(booster.predict(matrix, output_margin=True), dtype=np.float64)
    return np.asarray(booster.predict(X, raw_score=True), dtype=np.float64)


def _multiclass_lightgbm(shap: Any, booster: Any, reference: np.ndarray) -> dict[str, Any] | None:
    """A LightGBM multiclass booster as a shap tree dictionary with one output per class; else ``None``."""
    if not type(booster).__module__.startswith("lightgbm") or booster.num_model_per_iteration() == 1:
        return None
    k = booster.num_model_per_iteration()
    parsed = shap.TreeExplainer(booster, data=reference, feature_perturbation="interventional", model_output="raw")
    trees = []
    for i, tree in enumerate(parsed.model.trees):
        if np.any(tree.threshold_types == 1):  # 1 marks a categorical split, -1 a leaf
            raise DataError(problem="the LightGBM model has categorical splits", fix=_FALLBACK)
        values = np.zeros((len(tree.values), k))
        values[:, i % k] = tree.values[:, 0]  # LightGBM stores the trees of one round class by class
        trees.append(
            {
                "children_left": tree.children_left,
                "children_right": tree.children_right,
                "children_default": tree.children_default,
                "features": tree.features,
                "thresholds": tree.thresholds,
                "values": values,
                "node_sample_weight": tree.node_sample_weight,
            }
        )
    return {"trees": trees, "base_offset": np.zeros(k), "tree_output": "raw_value"}
