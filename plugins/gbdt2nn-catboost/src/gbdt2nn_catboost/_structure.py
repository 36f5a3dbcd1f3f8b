"""CatBoost's symmetric trees in gbdt2nn's normalised form, read from the model's JSON export.

A CatBoost tree of depth ``D`` is *oblivious*: one split per level, shared by every node of that level, and
``2**D`` leaves whose index has bit ``j`` set when the row goes right at ``splits[j]`` (``x > border``). It
is shown as the equivalent binary tree: split ``D - 1`` at the root down to split 0 above the leaves, so the
leaves come out in CatBoost's own leaf order and every level repeats its split ``2**level`` times.

Split columns: a float split is its column; a one-hot split (``x == category``) is its categorical column;
a CTR split (a border on a target statistic of categorical values) is the categorical column the statistic
is computed from, or for a combination of several columns, the first of them (our trained teachers set
``max_ctr_complexity=1``, so they have no combinations). A split's gain, which CatBoost does not store, is
the reduction in the training-weighted squared error of the leaf values it brings: with ``W`` the summed
leaf weights below a node and ``S`` the weighted sum of their values, ``S_L²/W_L + S_R²/W_R − S²/W``; that
is LightGBM's and XGBoost's gain when the weights are hessians.

With ``k`` classes, each CatBoost tree holds a vector per leaf; it becomes ``k`` trees (one per class, same
splits), in the order tree 0 class 0, tree 0 class 1, ..., which is how the teacher repeats its leaf indices.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from gbdt2nn_core.interfaces import Tree, TreeEnsemble

__all__ = ["StructureError", "ensemble_from_json", "model_json"]


class StructureError(ValueError):
    """The JSON export describes an inconsistent model (the message says what)."""


def model_json(booster: Any) -> dict[str, Any]:
    """The JSON export of a CatBoost model (``save_model(format="json")``, through a temporary file)."""
    with tempfile.TemporaryDirectory(prefix="gbdt2nn-catboost-") as folder:
        path = Path(folder) / "model.json"
        booster.save_model(str(path), format="json")
        document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def _split_columns(features: dict[str, Any]) -> tuple[list[int], list[int], list[int]]:
    """Flat column index of each float feature, each categorical feature, and each CTR's source column."""
    floats = [int(item["flat_feature_index"]) for item in features.get("float_features", [])]
    categorical = [int(item["flat_feature_index"]) for item in features.get("categorical_features", [])]
    ctrs = []
    for ctr in features.get("ctrs", []):
        sources = [e["cat_feature_index"] for e in ctr.get("elements", []) if "cat_feature_index" in e]
        if not sources:
            raise StructureError("a CTR is computed from no categorical column")
        ctrs.append(categorical[int(sources[0])])
    return floats, categorical, ctrs


def _ctr_by_split_index(features: dict[str, Any], ctrs: list[int]) -> dict[int, int]:
    """CatBoost numbers binary features as float borders, then one-hot values, then CTR borders."""
    index = sum(len(item.get("borders", [])) for item in features.get("float_features", []))
    index += sum(len(item.get("values", [])) for item in features.get("categorical_features", []))
    columns = {}
    for ctr, column in zip(features.get("ctrs", []), ctrs, strict=True):
        for _ in ctr.get("borders", []):
            columns[index] = column
            index += 1
    return columns


def _split(split: dict[str, Any], floats: list[int], categorical: list[int], ctrs: dict[int, int]) -> tuple[int, float]:
    """The flat column a split tests and its threshold (NaN for categorical splits)."""
    kind = split.get("split_type")
    try:
        if kind == "FloatFeature":
            border = float(split["border"])
            if not math.isfinite(border):
                raise StructureError(f"a float split has border {border}")
            return floats[int(split["float_feature_index"])], border
        if kind == "OneHotFeature":
            return categorical[int(split["cat_feature_index"])], math.nan
        if kind == "OnlineCtr":
            return ctrs[int(split["split_index"])], math.nan
    except (KeyError, IndexError, TypeError, ValueError):
        raise StructureError(f"a {kind} split names a feature the model does not have") from None
    raise StructureError(f"unknown split type {kind!r}")


def _gains(values: np.ndarray, weights: np.ndarray, depth: int) -> np.ndarray:
    """Gain of every node of the binary tree, level by level from the root (split ``depth - 1``)."""
    gains = []
    for bit in range(depth - 1, -1, -1):
        shape = (2 ** (depth - 1 - bit), 2, 2**bit)
        w = weights.reshape(shape).sum(-1)
        s = (weights * values).reshape(shape).sum(-1)
        with np.errstate(all="ignore"):
            parts = np.where(w > 0, s**2 / np.where(w > 0, w, 1), 0.0)
            total_w, total_s = w.sum(-1), s.sum(-1)
            whole = np.where(total_w > 0, total_s**2 / np.where(total_w > 0, total_w, 1), 0.0)
        gains.append(np.maximum(parts.sum(-1) - whole, 0.0))
    # Leaf values near the float limit overflow the squares: such a split gained as much as any can.
    return np.nan_to_num(np.concatenate(gains), nan=0.0, posinf=np.finfo(np.float64).max) if gains else np.zeros(0)


def ensemble_from_json(document: dict[str, Any], n_features: int) -> TreeEnsemble:
    """The normalised ensemble of a CatBoost JSON export; ``StructureError`` when the export is inconsistent."""
    features = document.get("features_info", {})
    floats, categorical, ctr_sources = _split_columns(features)
    ctrs = _ctr_by_split_index(features, ctr_sources)
    scale, bias = document.get("scale_and_bias", [1.0, [0.0]])
    base = np.atleast_1d(np.asarray(bias, dtype=np.float64))
    k = len(base)
    trees = []
    for number, tree in enumerate(document.get("oblivious_trees", [])):
        splits = tree.get("splits") or []
        depth = len(splits)
        values = np.asarray(tree.get("leaf_values", []), dtype=np.float64) * float(scale)
        weights = np.asarray(tree.get("leaf_weights", []), dtype=np.float64)
        if values.shape != (k * 2**depth,) or weights.shape != (2**depth,):
            raise StructureError(f"tree {number} has {values.size} leaf values for depth {depth} and {k} outputs")
        if not (np.isfinite(weights).all() and (weights >= 0).all()):
            raise StructureError(f"tree {number} has negative or non-finite leaf weights")
        tested = [_split(split, floats, categorical, ctrs) for split in splits]
        # Level ``t`` of the binary tree (2**t nodes) tests split ``depth - 1 - t``.
        per_level = [tested[depth - 1 - t] for t in range(depth)]
        repeats = [2**t for t in range(depth)]
        node_columns = np.repeat(np.array([c for c, _ in per_level], dtype=np.int64), repeats)
        node_thresholds = np.repeat(np.array([b for _, b in per_level], dtype=np.float64), repeats)
        by_class = values.reshape(2**depth, k)
        for output in range(k):
            trees.append(
                Tree(
                    leaf_values=by_class[:, output],
                    split_features=node_columns,
                    split_gains=_gains(by_class[:, output], weights, depth),
                    split_thresholds=node_thresholds,
                    output=output,
                )
            )
    if any(not (0 <= column < n_features) for tree in trees for column in tree.split_features):
        raise StructureError(f"a split names a column outside 0..{n_features - 1}")
    if not np.isfinite(base).all() or not all(np.isfinite(tree.leaf_values).all() for tree in trees):
        raise StructureError("leaf values or the bias are not finite")
    return TreeEnsemble(trees=trees, n_features=n_features, n_outputs=k, base_margin=base, split_rule="<=")
