"""Reading LightGBM's model dump into gbdt2nn's normalised trees."""

from __future__ import annotations

from typing import Any

import numpy as np

from gbdt2nn_core.host.interfaces import Tree

__all__ = ["categorical_indices", "tree"]


def categorical_indices(value: object) -> set[int] | None:
    """The categorical feature indices a loaded booster's parameters list (``None`` if they cannot be read)."""
    if value is None or value == "":
        return set()
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    try:
        return {int(item) for item in items}
    except (TypeError, ValueError):
        return None  # given by name ("name:..."); LightGBM still checks the columns itself


def tree(info: dict[str, Any], *, output: int) -> Tree:
    """One tree of ``dump_model()``: leaf values by leaf index, split features and gains by split index."""
    n_leaves = int(info["num_leaves"])
    leaf_values = np.empty(n_leaves)
    split_features = np.empty(n_leaves - 1, dtype=np.int64)
    split_gains = np.empty(n_leaves - 1)
    split_thresholds = np.full(n_leaves - 1, np.nan)  # NaN marks a categorical split
    split_categories: list[tuple[int, ...]] = [()] * (n_leaves - 1)
    stack = [info["tree_structure"]]
    while stack:  # iterative: a leaf-wise tree can be deeper than Python's recursion limit
        node = stack.pop()
        if "split_index" in node:
            split = node["split_index"]
            split_features[split] = node["split_feature"]
            split_gains[split] = node["split_gain"]
            if node.get("decision_type") == "<=":
                split_thresholds[split] = float(node["threshold"])
            elif node.get("decision_type") == "==":  # the category codes sent left, as "1||5||7"
                split_categories[split] = tuple(int(code) for code in str(node["threshold"]).split("||"))
            stack.extend((node["left_child"], node["right_child"]))
        else:
            leaf_values[node.get("leaf_index", 0)] = node["leaf_value"]
    return Tree(
        leaf_values=leaf_values,
        split_features=split_features,
        split_gains=split_gains,
        split_thresholds=split_thresholds,
        split_categories=split_categories,
        output=output,
    )
