"""Reading XGBoost model files (JSON or UBJSON) with one-line errors.

XGBoost trusts the trees in a model file: a split on a feature index past the last column, a child index out
of range or arrays shorter than the node count make it read memory it does not own. So a file is parsed here
first (JSON, or UBJSON by :mod:`gbdt2nn_xgboost._ubjson`) and its trees checked; only a consistent model
reaches ``Booster.load_model``. A bad file is a one-line ``ModelFileError`` naming what is wrong.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xgboost as xgb

from gbdt2nn_core.errors import ModelFileError
from gbdt2nn_core.model_files import read_model_file
from gbdt2nn_xgboost._ubjson import UBJSONError, parse_ubjson

__all__ = ["check_model", "clean_message", "load_booster", "read_model_bytes"]

_FIX = "save the model again (Booster.save_model or teacher.save), or pass model=None to train a new one"
# XGBoost prefixes its messages with a time stamp and the C++ source line: noise for a user.
_PREFIX = re.compile(r"^\s*\[[\d:]+\]\s+\S+:\d+:\s*")
# XGBoost's node and feature indices are 32-bit, its values float32 (a larger number would load as infinity).
_INT_LIMIT = 2**31 - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Per-node arrays of a tree.
_NODE_ARRAYS = (
    "left_children",
    "right_children",
    "parents",
    "split_indices",
    "split_conditions",
    "default_left",
    "loss_changes",
    "sum_hessian",
)


class _Bad(Exception):
    """What is wrong with the model (becomes the ``problem`` of the ``ModelFileError``)."""


def clean_message(exc: BaseException) -> str:
    """The first line of an XGBoost error without its time stamp and source location."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return _PREFIX.sub("", lines[0]).strip() if lines else type(exc).__name__


def read_model_bytes(path: str | os.PathLike[str]) -> bytes:
    """The content of a model file, checked by :func:`check_model`; ``ModelFileError`` when it is missing,
    unreadable, empty, or not a consistent XGBoost model."""
    data = read_model_file(path)
    if not data:
        raise ModelFileError(path=str(path), problem="the file is empty", fix=_FIX)
    check_model(data, where=str(path))
    return data


def load_booster(data: bytes | bytearray, *, where: str) -> xgb.Booster:
    """A ``Booster`` from the bytes of a JSON or UBJSON model (XGBoost tells the two apart by content)."""
    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(data))
    except (xgb.core.XGBoostError, ValueError, MemoryError) as exc:
        raise ModelFileError(
            path=where, problem=f"not a readable XGBoost model ({clean_message(exc)})", fix=_FIX
        ) from None
    return booster


def check_model(data: bytes | bytearray, *, where: str) -> None:
    """Parse a JSON or UBJSON model and check its header and trees; ``ModelFileError`` naming the first problem."""
    try:
        document = _parse(bytes(data))
        _check_document(document)
    except _Bad as bad:
        raise ModelFileError(path=where, problem=str(bad), fix=_FIX) from None


def _parse(data: bytes) -> Any:
    if data.lstrip()[:1] == b"{" and data.lstrip()[1:2] in (b'"', b" ", b"\n", b"\r", b"\t", b"}"):
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise _Bad(f"not a readable XGBoost JSON model ({str(exc).splitlines()[0][:120]})") from None
    try:
        return parse_ubjson(data)
    except UBJSONError as exc:
        raise _Bad(f"not a readable XGBoost model (neither JSON nor UBJSON: {exc})") from None


# ---------------------------------------------------------------------------------------------- checks
def _get(mapping: object, key: str, what: str) -> Any:
    if not isinstance(mapping, Mapping) or key not in mapping:
        raise _Bad(f"{what} has no {key!r}")
    return mapping[key]


def _integer(value: object, what: str, low: int, high: int) -> int:
    try:
        number = int(str(value)) if not isinstance(value, (int, np.integer)) else int(value)
    except ValueError:
        raise _Bad(f"{what} is {str(value)[:30]!r}, not a whole number") from None
    if not low <= number <= high:
        raise _Bad(f"{what} is {number}, outside {low}..{high}")
    return number


def _numbers(values: object, what: str, length: int | None = None) -> np.ndarray:
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, (Sequence, np.ndarray)):
        raise _Bad(f"{what} is not a list of numbers")
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise _Bad(f"{what} is not a list of numbers") from None
    if array.ndim != 1:
        raise _Bad(f"{what} is not a flat list")
    if length is not None and len(array) != length:
        raise _Bad(f"{what} has {len(array)} values, expected {length}")
    if not np.isfinite(array).all():
        raise _Bad(f"{what} holds NaN or infinite values")
    if len(array) and np.abs(array).max() > _FLOAT32_MAX:
        raise _Bad(f"{what} holds values too large for XGBoost's float32")
    return array


def _indices(values: object, what: str, low: int, high: int, length: int | None = None) -> np.ndarray:
    array = _numbers(values, what, length)
    if len(array) and (array.min() < low or array.max() > high or (array != np.round(array)).any()):
        raise _Bad(f"{what} holds values outside {low}..{high}")
    return array.astype(np.int64)


def _check_document(document: object) -> None:
    learner = _get(document, "learner", "the model")
    parameters = _get(learner, "learner_model_param", "the learner")
    n_features = _integer(_get(parameters, "num_feature", "learner_model_param"), "num_feature", 0, _INT_LIMIT)
    n_classes = _integer(parameters.get("num_class", 0), "num_class", 0, _INT_LIMIT)
    n_targets = _integer(parameters.get("num_target", 1), "num_target", 1, _INT_LIMIT)
    base_score = str(parameters.get("base_score", "0"))
    try:
        scores = [float(part) for part in base_score.strip("[]").split(",")]
    except ValueError:
        raise _Bad(f"base_score {base_score[:40]!r} is not a number") from None
    if not all(math.isfinite(score) and abs(score) <= _FLOAT32_MAX for score in scores):
        raise _Bad(f"base_score {base_score[:40]!r} is not a finite float32")
    n_outputs = max(n_classes, n_targets, 1)
    if len(scores) not in (1, n_outputs):
        raise _Bad(f"base_score has {len(scores)} values for {n_outputs} outputs")
    for key in ("feature_names", "feature_types"):
        listed = learner.get(key, [])
        if not isinstance(listed, Sequence) or len(listed) not in (0, n_features):
            raise _Bad(f"{key} does not list num_feature={n_features} columns")
    booster = _get(learner, "gradient_booster", "the learner")
    name = _get(booster, "name", "gradient_booster")
    if name == "dart":
        booster = _get(booster, "gbtree", "the dart booster")
    elif name == "gblinear":
        weights = _get(_get(booster, "model", "gradient_booster"), "weights", "the linear model")
        _numbers(weights, "the linear weights", (n_features + 1) * n_outputs)
        return
    elif name != "gbtree":
        raise _Bad(f"unknown gradient booster {str(name)[:30]!r}")
    _check_trees(_get(booster, "model", "gradient_booster"), n_features, n_outputs)


def _check_trees(model: Mapping[str, Any], n_features: int, n_outputs: int) -> None:
    trees = _get(model, "trees", "the tree model")
    if not isinstance(trees, Sequence):
        raise _Bad("trees is not a list")
    header = _get(model, "gbtree_model_param", "the tree model")
    n_trees = _integer(_get(header, "num_trees", "gbtree_model_param"), "num_trees", 0, _INT_LIMIT)
    _integer(header.get("num_parallel_tree", 1), "num_parallel_tree", 1, max(n_trees, 1))
    if n_trees != len(trees):
        raise _Bad(f"num_trees says {n_trees} trees, the file holds {len(trees)}")
    if n_outputs > max(n_trees, 1):
        raise _Bad(f"{n_outputs} outputs (num_class / num_target) for {n_trees} trees")
    _indices(_get(model, "tree_info", "the tree model"), "tree_info", 0, n_outputs - 1, n_trees)
    if "iteration_indptr" in model:
        bounds = _indices(model["iteration_indptr"], "iteration_indptr", 0, n_trees)
        if len(bounds) == 0 or bounds[0] != 0 or bounds[-1] != n_trees or (np.diff(bounds) < 0).any():
            raise _Bad("iteration_indptr does not cut the trees into boosting rounds in order")
    counts = _check_category_encodings(model["cats"], n_features) if "cats" in model else []
    for index, tree in enumerate(trees):
        try:
            _check_tree(tree, n_features, counts)
        except _Bad as bad:
            raise _Bad(f"tree {index}: {bad}") from None


def _check_tree(tree: Mapping[str, Any], n_features: int, counts: list[int]) -> None:
    parameters = _get(tree, "tree_param", "the tree")
    n_nodes = _integer(_get(parameters, "num_nodes", "tree_param"), "num_nodes", 1, _INT_LIMIT)
    if "num_feature" in parameters:
        _integer(parameters["num_feature"], "the tree's num_feature", n_features, n_features)
    leaf_size = _integer(parameters.get("size_leaf_vector", 1), "size_leaf_vector", 0, _INT_LIMIT)
    arrays = {key: _get(tree, key, "the tree") for key in _NODE_ARRAYS}
    left = _indices(arrays["left_children"], "left_children", -1, n_nodes - 1, n_nodes)
    right = _indices(arrays["right_children"], "right_children", -1, n_nodes - 1, n_nodes)
    parents = _indices(arrays["parents"], "parents", 0, _INT_LIMIT, n_nodes)
    features = _indices(arrays["split_indices"], "split_indices", 0, max(n_features - 1, 0), n_nodes)
    _numbers(arrays["split_conditions"], "split_conditions", n_nodes)
    _indices(arrays["default_left"], "default_left", 0, 1, n_nodes)
    # Models from before categorical support (XGBoost < 1.6) have no split_type: every split is numeric.
    kinds = _indices(tree.get("split_type", [0] * n_nodes), "split_type", 0, 1, n_nodes)
    _numbers(arrays["loss_changes"], "loss_changes", n_nodes)
    hessians = _numbers(arrays["sum_hessian"], "sum_hessian", n_nodes)
    if (hessians < 0).any() or (hessians[left >= 0] == 0).any():
        raise _Bad("sum_hessian is negative, or zero at a split (TreeSHAP divides by it)")
    _numbers(_get(tree, "base_weights", "the tree"), "base_weights", n_nodes * max(leaf_size, 1))
    if n_features == 0 and (left >= 0).any():
        raise _Bad("the model has no features to split on")
    _check_links(left, right, parents)
    _check_categories(tree, kinds, left, [counts[f] if counts else 0 for f in features])


def _check_links(left: np.ndarray, right: np.ndarray, parents: np.ndarray) -> None:
    """Children must form one binary tree rooted at node 0, and ``parents`` must agree with them."""
    n_nodes = len(left)
    if parents[0] < n_nodes:
        raise _Bad(f"the root's parent is node {parents[0]}")
    reached = np.zeros(n_nodes, dtype=bool)
    reached[0] = True
    stack = [0]
    while stack:
        node = stack.pop()
        children = (int(left[node]), int(right[node]))
        if (children[0] < 0) != (children[1] < 0):
            raise _Bad(f"node {node} has one child")
        for child in children:
            if child < 0:
                continue
            if reached[child]:
                raise _Bad(f"node {child} is reached twice (the children do not form a tree)")
            if parents[child] != node:
                raise _Bad(f"node {child} names node {parents[child]} as its parent, not {node}")
            reached[child] = True
            stack.append(child)
    if not reached.all():
        raise _Bad("some nodes cannot be reached from the root")


def _check_categories(tree: Mapping[str, Any], kinds: np.ndarray, left: np.ndarray, known: list[int]) -> None:
    """Category sets in range; ``known[node]`` is how many categories the node's column has (0: not recorded)."""
    nodes = tree.get("categories_nodes", [])
    n_sets = len(nodes) if isinstance(nodes, (Sequence, np.ndarray)) else -1
    categorical = _indices(nodes, "categories_nodes", 0, len(kinds) - 1)
    values = _indices(tree.get("categories", []), "categories", 0, _INT_LIMIT)
    starts = _indices(tree.get("categories_segments", []), "categories_segments", 0, len(values), n_sets)
    sizes = _indices(tree.get("categories_sizes", []), "categories_sizes", 0, len(values), n_sets)
    if (starts + sizes > len(values)).any():
        raise _Bad("categories_segments and categories_sizes point past the categories")
    splits = set(np.flatnonzero((kinds == 1) & (left >= 0)).tolist())
    if splits - set(categorical.tolist()) or (kinds[categorical] != 1).any():
        raise _Bad("categorical splits and categories_nodes do not match")
    for node, start, size in zip(categorical.tolist(), starts.tolist(), sizes.tolist(), strict=True):
        if known[node] and size and values[start : start + size].max() >= known[node]:
            raise _Bad(f"node {node} names a category its column does not have")


def _check_category_encodings(cats: object, n_features: int) -> list[int]:
    """Check the categories recorded per column (names cut by ``offsets``, ``feature_segments`` and the
    ``sorted_idx`` permutation of each column); return how many categories each column has."""
    if not isinstance(cats, Mapping):
        raise _Bad("the category encodings are not a record")
    encodings = cats.get("enc", [])
    if not isinstance(encodings, Sequence) or len(encodings) not in (0, n_features):
        raise _Bad(f"the category encodings do not list num_feature={n_features} columns")
    counts: list[int] = []
    for index, encoding in enumerate(encodings):
        if not isinstance(encoding, Mapping):
            raise _Bad(f"the category encoding of column {index} is not a record")
        values = encoding.get("values", [])
        count = len(values) if isinstance(values, (Sequence, np.ndarray)) else 0
        if "offsets" in encoding:
            offsets = _indices(encoding["offsets"], f"category offsets of column {index}", 0, count)
            if len(offsets) and (offsets[0] != 0 or offsets[-1] != count or (np.diff(offsets) < 0).any()):
                raise _Bad(f"category offsets of column {index} do not cut its names in order")
            count = max(len(offsets) - 1, 0)
        counts.append(count)
    if "feature_segments" in cats or "sorted_idx" in cats:
        order = _indices(cats.get("sorted_idx", []), "sorted_idx", 0, _INT_LIMIT)
        bounds = _indices(cats.get("feature_segments", []), "feature_segments", 0, len(order))
        if not counts:  # a model without categorical columns records none
            if len(order) or bounds.any():
                raise _Bad("sorted_idx orders categories of a model without categorical columns")
            return counts
        if len(bounds) != len(counts) + 1 or bounds[0] != 0 or bounds[-1] != len(order):
            raise _Bad("feature_segments do not cut sorted_idx into one segment per column")
        for column, count in enumerate(counts):
            segment = order[bounds[column] : bounds[column + 1]]
            if len(segment) != count or not np.array_equal(np.sort(segment), np.arange(count)):
                raise _Bad(f"sorted_idx of column {column} is not an order of its {count} categories")
    return counts
