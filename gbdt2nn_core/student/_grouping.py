"""DeepGBM steps 2 and 3: deal trees into groups, then pick each group's most useful input columns."""

from __future__ import annotations

import numpy as np

from gbdt2nn_core.host.interfaces import TreeEnsemble


def group_trees(ensemble: TreeEnsemble, n_groups: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """Shuffle tree indices with ``seed`` and deal them into groups of (almost) equal size.

    Multiclass ensembles are grouped *per class*: each class gets ``max(1, n_groups // n_outputs)`` groups
    made only of its own trees, so a group's output adds to exactly one class margin (returned as the second
    value, one output index per group).
    """
    rng = np.random.default_rng(seed)
    outputs = np.asarray([tree.output for tree in ensemble.trees])
    per_output = max(1, n_groups // ensemble.n_outputs)
    groups: list[np.ndarray] = []
    group_output: list[int] = []
    for output in range(ensemble.n_outputs):
        trees = rng.permutation(np.flatnonzero(outputs == output))
        count = min(per_output, len(trees))
        for chunk in np.array_split(trees, count):
            groups.append(np.sort(chunk))
            group_output.append(output)
    return groups, np.asarray(group_output, dtype=np.int64)


def select_group_features(ensemble: TreeEnsemble, groups: list[np.ndarray], features_per_group: int) -> np.ndarray:
    """``(k, k_f)`` column indices: per group, the columns with the largest summed split gain (``-1`` pads).

    Columns the group's trees never split on are left out even when fewer than ``k_f`` columns remain, so
    that a group network cannot depend on a feature its trees ignore.
    """
    width = min(features_per_group, ensemble.n_features)
    selected = np.full((len(groups), width), -1, dtype=np.int64)
    for g, trees in enumerate(groups):
        gain = np.zeros(ensemble.n_features)
        for t in trees:
            tree = ensemble.trees[t]
            np.add.at(gain, tree.split_features, np.maximum(tree.split_gains, 0.0) + 1e-12)
        used = np.flatnonzero(gain > 0)
        order = used[np.argsort(-gain[used], kind="stable")][:width]
        selected[g, : len(order)] = np.sort(order)
    return selected
