"""Reading LightGBM text models safely.

LightGBM trusts its model files: a tree that names a feature index past the last column, a child index out
of range or arrays of the wrong length make it read and free memory it does not own, and the process dies
("double free or corruption", exit 134) after first giving constant margins. A file cut inside a tree aborts
it too, and a file cut after its trees silently loses its categorical mapping. So every file is checked here,
section by section and tree by tree, before LightGBM sees it; a bad one is a one-line ``ModelFileError``.
"""

from __future__ import annotations

import math
import os
import re

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


def _integers(values: list[str], what: str, low: int, high: int) -> list[int]:
    return [_integer(value, f"{what}[{index}]", low, high) for index, value in enumerate(values)]


def _finite(values: list[str], what: str) -> list[float]:
    numbers = []
    for index, value in enumerate(values):
        try:
            number = float(value)
        except ValueError:
            raise _Bad(f"{what}[{index}] is {value[:30]!r}, not a number") from None
        if not math.isfinite(number):
            raise _Bad(f"{what}[{index}] is {value}, not a finite number")
        numbers.append(number)
    return numbers


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
    _finite(arrays["leaf_value"] or [], "leaf_value")
    if "shrinkage" in tree:
        _finite([tree["shrinkage"]], "shrinkage")
    for key in ("split_gain", "leaf_weight", "leaf_count", "internal_value", "internal_weight", "internal_count"):
        _finite(arrays[key] or [], key)
    if not n_splits:
        return
    _integers(arrays["split_feature"] or [], "split_feature", 0, n_features - 1)
    left = _integers(arrays["left_child"] or [], "left_child", -n_leaves, n_splits - 1)
    right = _integers(arrays["right_child"] or [], "right_child", -n_leaves, n_splits - 1)
    _check_links(left, right, n_leaves)
    if arrays["internal_count"] is not None and arrays["leaf_count"] is not None:
        _check_counts(arrays["internal_count"], arrays["leaf_count"], left, right)
    kinds = _integers(arrays["decision_type"] or [], "decision_type", 0, 127)
    thresholds = _finite(arrays["threshold"] or [], "threshold")
    n_categorical = _integer(tree.get("num_cat", "0"), "num_cat", 0, n_splits)
    for node, kind in enumerate(kinds):
        if (kind >> _MISSING_SHIFT) & _MISSING_MASK == _MISSING_MASK:
            raise _Bad(f"decision_type[{node}] = {kind} names no missing-value rule")
        if kind & _CATEGORICAL:
            cut = thresholds[node]
            if cut != int(cut) or not 0 <= cut < n_categorical:
                raise _Bad(f"categorical split {node} points to category set {cut:g}, the tree has {n_categorical}")
    if n_categorical:
        _check_categories(tree, n_categorical)


def _check_links(left: list[int], right: list[int], n_leaves: int) -> None:
    """Children (``>= 0``: a split; ``~leaf``: a leaf) must form one binary tree rooted at split 0."""
    seen_splits, seen_leaves = {0}, set()
    stack = [0]
    while stack:
        node = stack.pop()
        for child in (left[node], right[node]):
            if child >= 0:
                if child in seen_splits:
                    raise _Bad(f"split {child} is reached twice (the children do not form a tree)")
                seen_splits.add(child)
                stack.append(child)
            else:
                leaf = ~child
                if leaf in seen_leaves:
                    raise _Bad(f"leaf {leaf} is reached twice (the children do not form a tree)")
                seen_leaves.add(leaf)
    if len(seen_splits) != len(left) or len(seen_leaves) != n_leaves:
        raise _Bad("some splits or leaves cannot be reached from the root")


def _check_counts(internal: list[str], leaves: list[str], left: list[int], right: list[int]) -> None:
    """LightGBM's TreeSHAP divides by these counts (its covers): whole, positive at splits, and adding up."""
    splits = _integers(internal, "internal_count", 1, _INT_LIMIT - 1)
    counts = _integers(leaves, "leaf_count", 0, _INT_LIMIT - 1)
    for node, children in enumerate(zip(left, right, strict=True)):
        below = sum(splits[child] if child >= 0 else counts[~child] for child in children)
        if below != splits[node]:
            raise _Bad(f"internal_count[{node}] = {splits[node]}, its children hold {below}")


def _check_categories(tree: dict[str, str], n_categorical: int) -> None:
    boundaries = _array(tree, "cat_boundaries", n_categorical + 1, True) or []
    bounds = _integers(boundaries, "cat_boundaries", 0, _INT_LIMIT - 1)
    words = tree.get("cat_threshold", "")
    bitsets = _integers(words.split(" ") if words else [], "cat_threshold", 0, 2**32 - 1)
    if bounds[0] != 0 or bounds[-1] != len(bitsets) or any(b > a for a, b in zip(bounds[1:], bounds, strict=False)):
        raise _Bad(f"cat_boundaries {bounds[:8]} do not cut the {len(bitsets)} words of cat_threshold in order")
