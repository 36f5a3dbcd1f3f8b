"""Reading LightGBM text models safely.

LightGBM trusts its model files: a tree that names a feature index past the last column, a child index out
of range or arrays of the wrong length make it read and free memory it does not own, and the process dies
("double free or corruption", exit 134) after first giving constant margins. A file cut inside a tree aborts
it too, and a file cut after its trees silently loses its categorical mapping. So every file is checked here,
section by section and tree by tree, before LightGBM sees it; a bad one is a one-line ``ModelFileError``.
"""

from __future__ import annotations

import os
import re

import numpy as np

from gbdt2nn_core.errors import ModelFileError
from gbdt2nn_core.model_files import read_model_file

__all__ = ["read_model_text"]

_FIX = "save the model again (Booster.save_model or teacher.save), or pass model=None to train a new one"
# LightGBM reads counts and indices into C ints.
_INT_LIMIT = 2**31
# Bits of a LightGBM decision_type: 1 = categorical split, 2 = default left, 12 = the missing-value type
# (0 none, 1 zero, 2 NaN; 3 does not exist).
_CATEGORICAL, _MISSING_SHIFT, _MISSING_MASK = 1, 2, 3
# Per-split and per-leaf arrays, with whether each must be there.
_SPLIT_ARRAYS = {
    "split_feature": True,
    "threshold": True,
    "decision_type": True,
    "left_child": True,
    "right_child": True,
    "split_gain": False,
    "internal_value": False,
    "internal_weight": False,
    "internal_count": False,
}
_LEAF_ARRAYS = {"leaf_value": True, "leaf_weight": False, "leaf_count": False}


class _Bad(Exception):
    """What is wrong with the file (becomes the ``problem`` of the ``ModelFileError``)."""


def read_model_text(path: str | os.PathLike[str]) -> str:
    """The text of a LightGBM model file, checked to be complete and consistent; ``ModelFileError`` otherwise."""
    where = str(path)
    data = read_model_file(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFileError(path=where, problem="not a LightGBM text model (binary content)", fix=_FIX) from None
    problem = _incomplete(text)
    if problem is None:
        try:
            _check_model(text)
        except _Bad as bad:
            problem = f"corrupt: {bad}"
    if problem:
        raise ModelFileError(path=where, problem=problem, fix=_FIX)
    return text


def _incomplete(text: str) -> str | None:
    """Why ``text`` is not a complete LightGBM model, or ``None`` when it looks whole."""
    if not text.startswith("tree\n"):
        return "not a LightGBM text model (it does not start with 'tree')"
    end = text.find("\nend of trees\n")
    if end < 0:
        return "truncated or corrupt: the 'end of trees' marker is missing"
    sizes = re.search(r"^tree_sizes=(.*)$", text[:end], flags=re.MULTILINE)
    if sizes:
        # LightGBM itself cuts the tree section by these byte counts; a mismatch means a damaged tree.
        try:
            lengths = [int(size) for size in sizes.group(1).split()]
        except ValueError:
            return "corrupt header: tree_sizes is not a list of numbers"
        start = text.find("\nTree=0\n") + 1 if lengths else end + 1
        section = text[start : end + 1].encode("utf-8") if start > 0 else b""
        if sum(lengths) != len(section):
            return "truncated or corrupt: the trees do not add up to the sizes in the header"
        offset = 0
        for index, length in enumerate(lengths):
            if not section.startswith(f"Tree={index}\n".encode(), offset):
                return f"corrupt: tree {index} is not where the header says"
            offset += length
    if "\nparameters:\n" in text and "\nend of parameters\n" not in text:
        return "truncated: the parameter section does not end"
    return None


# ---------------------------------------------------------------------------------------------- structure
def _fields(block: str) -> dict[str, str]:
    """``key=value`` lines of a section (the first of a repeated key wins, as in LightGBM)."""
    fields: dict[str, str] = {}
    for line in block.split("\n"):
        key, sep, value = line.partition("=")
        if sep:
            fields.setdefault(key, value)
    return fields


def _integer(value: str, what: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise _Bad(f"{what} is {value[:30]!r}, not a whole number") from None
    if not low <= number <= high:
        raise _Bad(f"{what} is {number}, outside {low}..{high}")
    return number


def _parsed(values: list[str], what: str) -> np.ndarray:
    """``values`` as float64 in one numpy call (a large model has millions); the first unreadable one named."""
    try:
        return np.array(values, dtype=np.float64)
    except ValueError:
        for index, value in enumerate(values):
            try:
                float(value)
            except ValueError:
                raise _Bad(f"{what}[{index}] is {value[:30]!r}, not a number") from None
        raise  # pragma: no cover - numpy refused what float() reads


def _integers(values: list[str], what: str, low: int, high: int) -> np.ndarray:
    numbers = _parsed(values, what)
    with np.errstate(invalid="ignore"):
        whole = np.isfinite(numbers) & (numbers == np.round(numbers))
        inside = whole & (numbers >= low) & (numbers <= high)
    if not inside.all():
        index = int(np.argmin(inside))
        shown = values[index][:30]
        problem = f"outside {low}..{high}" if whole[index] else "not a whole number"
        raise _Bad(f"{what}[{index}] is {shown}, {problem}")
    return numbers.astype(np.int64)


def _finite(values: list[str], what: str) -> list[float]:
    numbers = _parsed(values, what)
    finite = np.isfinite(numbers)
    if not finite.all():
        index = int(np.argmin(finite))
        raise _Bad(f"{what}[{index}] is {values[index][:30]}, not a finite number")
    return numbers.tolist()  # type: ignore[no-any-return]


def _check_model(text: str) -> None:
    """Raise ``_Bad`` naming the first inconsistency of the header or of a tree."""
    trees_start = text.find("\nTree=")
    end = text.find("\nend of trees\n")
    header = _fields(text[: trees_start if trees_start >= 0 else end])
    for key in ("max_feature_idx", "num_class", "num_tree_per_iteration"):
        if key not in header:
            raise _Bad(f"the header has no {key}")
    n_features = _integer(header["max_feature_idx"], "max_feature_idx", 0, _INT_LIMIT - 2) + 1
    n_classes = _integer(header["num_class"], "num_class", 1, _INT_LIMIT - 1)
    per_iteration = _integer(header["num_tree_per_iteration"], "num_tree_per_iteration", 1, _INT_LIMIT - 1)
    if n_classes != per_iteration:
        raise _Bad(f"num_class={n_classes} differs from num_tree_per_iteration={per_iteration}")
    for key in ("feature_names", "feature_infos"):
        if key in header and len(header[key].split(" ")) != n_features:
            raise _Bad(f"{key} lists {len(header[key].split(' '))} features, max_feature_idx says {n_features}")
    blocks = re.split(r"\n(?=Tree=\d+\n)", text[trees_start + 1 : end]) if trees_start >= 0 else []
    if len(blocks) % per_iteration:
        raise _Bad(f"{len(blocks)} trees is not a multiple of num_tree_per_iteration={per_iteration}")
    for index, block in enumerate(blocks):
        try:
            _check_tree(_fields(block), n_features)
        except _Bad as bad:
            raise _Bad(f"tree {index}: {bad}") from None


def _array(tree: dict[str, str], key: str, length: int, required: bool) -> list[str] | None:
    if key not in tree:
        if required and length:
            raise _Bad(f"{key} is missing")
        return None
    values = tree[key].split(" ") if tree[key] else []
    if len(values) != length:
        raise _Bad(f"{key} has {len(values)} values, expected {length}")
    return values


def _check_tree(tree: dict[str, str], n_features: int) -> None:
    if "num_leaves" not in tree:
        raise _Bad("num_leaves is missing")
    n_leaves = _integer(tree["num_leaves"], "num_leaves", 1, _INT_LIMIT - 1)
    n_splits = n_leaves - 1
    arrays = {key: _array(tree, key, n_splits, required) for key, required in _SPLIT_ARRAYS.items()}
    arrays.update({key: _array(tree, key, n_leaves, required) for key, required in _LEAF_ARRAYS.items()})
    if "shrinkage" in tree:
        _finite([tree["shrinkage"]], "shrinkage")
    for key in ("leaf_value", "threshold", "split_gain", "leaf_weight", "internal_value", "internal_weight"):
        _finite(arrays[key] or [], key)
    if not n_splits:
        return
    _integers(arrays["split_feature"] or [], "split_feature", 0, n_features - 1)
    left = _integers(arrays["left_child"] or [], "left_child", -n_leaves, n_splits - 1)
    right = _integers(arrays["right_child"] or [], "right_child", -n_leaves, n_splits - 1)
    _check_links(left, right, n_leaves)
    # LightGBM's TreeSHAP divides by these counts (its covers): whole, positive at splits, and adding up.
    splits = _integers(arrays["internal_count"] or [], "internal_count", 1, _INT_LIMIT - 1)
    counts = _integers(arrays["leaf_count"] or [], "leaf_count", 0, _INT_LIMIT - 1)
    if len(splits) and len(counts):
        below = _below(splits, counts, left) + _below(splits, counts, right)
        if (below != splits).any():
            node = int(np.argmax(below != splits))
            raise _Bad(f"internal_count[{node}] = {splits[node]}, its children hold {below[node]}")
    kinds = _integers(arrays["decision_type"] or [], "decision_type", 0, 127)
    if ((kinds >> _MISSING_SHIFT) & _MISSING_MASK == _MISSING_MASK).any():
        node = int(np.argmax((kinds >> _MISSING_SHIFT) & _MISSING_MASK == _MISSING_MASK))
        raise _Bad(f"decision_type[{node}] = {kinds[node]} names no missing-value rule")
    n_categorical = _integer(tree.get("num_cat", "0"), "num_cat", 0, n_splits)
    thresholds = _parsed(arrays["threshold"] or [], "threshold")
    for node in np.flatnonzero(kinds & _CATEGORICAL).tolist():
        cut = float(thresholds[node])
        if cut != int(cut) or not 0 <= cut < n_categorical:
            raise _Bad(f"categorical split {node} points to category set {cut:g}, the tree has {n_categorical}")
    if n_categorical:
        _check_categories(tree, n_categorical)


def _below(splits: np.ndarray, counts: np.ndarray, children: np.ndarray) -> np.ndarray:
    """The count of each split's child on one side (a split's ``internal_count``, a leaf's ``leaf_count``)."""
    below: np.ndarray = np.where(children >= 0, splits[np.maximum(children, 0)], counts[np.maximum(~children, 0)])
    return below


def _check_links(left: np.ndarray, right: np.ndarray, n_leaves: int) -> None:
    """Children (``>= 0``: a split; ``~leaf``: a leaf) must form one binary tree rooted at split 0: every split
    but the root and every leaf reached exactly once, and every split's chain of parents ending at the root."""
    n_splits = len(left)
    children = np.concatenate([left, right])
    reached = np.bincount(children[children >= 0], minlength=n_splits)
    reached[0] += 1  # the root is where every row starts
    leaves = np.bincount(~children[children < 0], minlength=n_leaves)
    for name, times in (("split", reached), ("leaf", leaves)):
        if (times > 1).any():
            raise _Bad(f"{name} {int(np.argmax(times > 1))} is reached twice (the children do not form a tree)")
        if (times == 0).any():
            raise _Bad(f"{name} {int(np.argmax(times == 0))} cannot be reached from the root")
    # Each split now has one parent; pointer jumping finds each one's topmost ancestor: the root, unless a loop.
    parent = np.zeros(n_splits, dtype=np.int64)
    for side in (left, right):
        inner = side >= 0
        parent[side[inner]] = np.flatnonzero(inner)
    for _ in range(n_splits.bit_length()):
        parent = parent[parent]
    if (parent != 0).any():
        raise _Bad(f"split {int(np.argmax(parent != 0))} cannot be reached from the root (a loop of splits)")


def _check_categories(tree: dict[str, str], n_categorical: int) -> None:
    boundaries = _array(tree, "cat_boundaries", n_categorical + 1, True) or []
    bounds = _integers(boundaries, "cat_boundaries", 0, _INT_LIMIT - 1)
    words = tree.get("cat_threshold", "")
    bitsets = _integers(words.split(" ") if words else [], "cat_threshold", 0, 2**32 - 1)
    if bounds[0] != 0 or bounds[-1] != len(bitsets) or (np.diff(bounds) < 0).any():
        shown = bounds[:8].tolist()
        raise _Bad(f"cat_boundaries {shown} do not cut the {len(bitsets)} words of cat_threshold in order")
