"""Reading XGBoost's JSON model into gbdt2nn's normalised trees."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import xgboost as xgb

from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.host.interfaces import Tree, TreeEnsemble

__all__ = ["ensemble"]

# XGBoost marks nodes removed by pruning with this split index; they are neither splits nor reachable leaves.
_DELETED = 2**31 - 1


def ensemble(booster: xgb.Booster, k: int) -> tuple[TreeEnsemble, np.ndarray]:
    """The booster's trees in normalised form, and the ``(n_trees, n_nodes)`` map from node id to leaf ordinal.

    Leaves are numbered in node-id order. ``base_margin`` is the booster's intercept in margin space
    (``base_score`` after the objective's link: logit for ``binary:logistic``, log for ``count:poisson``,
    one value per class for multiclass in XGBoost 3); it is measured on a probe row rather than
    recomputed from the configuration, so it stays right whatever the objective and XGBoost version.
    """
    gradient_booster = json.loads(booster.save_raw("json"))["learner"]["gradient_booster"]
    weights = gradient_booster.get("weight_drop") if gradient_booster["name"] == "dart" else None
    model = gradient_booster["gbtree"]["model"] if gradient_booster["name"] == "dart" else gradient_booster["model"]
    trees, tables = [], []
    for index, (tree, output) in enumerate(zip(model["trees"], model["tree_info"], strict=True)):
        parsed, table = _tree(tree, output=int(output), weight=1.0 if weights is None else float(weights[index]))
        trees.append(parsed)
        tables.append(table)
    width = max((len(table) for table in tables), default=1)
    node_to_leaf = np.full((len(tables), width), -1, dtype=np.int32)
    for row, table in enumerate(tables):
        node_to_leaf[row, : len(table)] = table
    first_iteration = k * int(model["gbtree_model_param"].get("num_parallel_tree", "1"))
    base = _base_margin(booster, trees[:first_iteration], node_to_leaf[:first_iteration], k)
    structure = TreeEnsemble(
        trees=trees, n_features=booster.num_features(), n_outputs=k, base_margin=base, split_rule="<"
    )
    return structure, node_to_leaf


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
    category_sets = _category_sets(tree)
    parsed = Tree(
        leaf_values=values,
        split_features=split_index[is_split],
        split_gains=np.asarray(tree["loss_changes"], dtype=np.float64)[is_split],
        split_thresholds=np.where(split_type == 0, thresholds, np.nan),
        split_categories=[category_sets.get(int(node), ()) for node in np.flatnonzero(is_split)],
        output=output,
    )
    return parsed, table


def _category_sets(tree: dict[str, Any]) -> dict[int, tuple[int, ...]]:
    """Node id -> the category codes its categorical split lists (those sent right), from the JSON model."""
    codes = [int(code) for code in tree.get("categories", [])]
    return {
        int(node): tuple(codes[int(start) : int(start) + int(size)])
        for node, start, size in zip(
            tree.get("categories_nodes", []),
            tree.get("categories_segments", []),
            tree.get("categories_sizes", []),
            strict=True,
        )
    }


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
