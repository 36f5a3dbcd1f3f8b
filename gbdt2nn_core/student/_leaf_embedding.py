"""DeepGBM step 4: learn a 20-dim embedding of each group's leaves that predicts the group's summed leaf value.

A bias-free linear map of concatenated one-hot leaf indices is a sum of one learned vector per (tree, leaf),
so it is computed as an embedding lookup summed over each group's trees, for all groups at once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from gbdt2nn_core.host.interfaces import TreeEnsemble
from gbdt2nn_core.student._layers import GroupBatchNorm
from gbdt2nn_core.student.batchnorm import row_batches
from gbdt2nn_core.student.disk_rows import RowSource, select_rows
from gbdt2nn_core.student.distributed import (
    all_reduce_sum,
    batch_shares,
    broadcast_buffers,
    data_parallel,
    global_mean_var,
    shard_batches,
    synchronised_batchnorm,
    world,
)
from gbdt2nn_core.student.kit import adamw


def group_leaf_sums(ensemble: TreeEnsemble, leaves: np.ndarray, groups: list[np.ndarray]) -> np.ndarray:
    """``(n, k)``: for every row, the sum of leaf values the row reaches in each group's trees."""
    per_tree = np.stack([ensemble.trees[t].leaf_values[leaves[:, t]] for t in range(ensemble.n_trees)], axis=1)
    return np.stack([per_tree[:, trees].sum(axis=1) for trees in groups], axis=1)


class LeafEmbedding(nn.Module):
    """Leaf one-hots → (bias-free linear) → BatchNorm → dropout → ``w_j · e + b_j`` per group."""

    if TYPE_CHECKING:
        # The buffers registered in __init__, typed for mypy (nn.Module.__getattr__ says `Tensor | Module`). Only
        # for the checker: TorchScript reads class annotations and cannot resolve postponed (string) ones.
        tree_offset: torch.Tensor
        members: torch.Tensor

    def __init__(
        self, ensemble: TreeEnsemble, groups: list[np.ndarray], embedding_dim: int, dropout: float, bias: np.ndarray
    ) -> None:
        super().__init__()
        offsets = np.concatenate([[0], np.cumsum([tree.n_leaves for tree in ensemble.trees])])
        self.register_buffer("tree_offset", torch.as_tensor(offsets[:-1], dtype=torch.long))
        total = int(offsets[-1])
        longest = max(len(trees) for trees in groups)
        # pad with a tree id whose embedding row is the all-zero padding row (index `total`)
        members = np.full((len(groups), longest), ensemble.n_trees, dtype=np.int64)
        for g, trees in enumerate(groups):
            members[g, : len(trees)] = trees
        self.register_buffer("members", torch.as_tensor(members))
        self.table = nn.Embedding(total + 1, embedding_dim, padding_idx=total)
        nn.init.normal_(self.table.weight, std=1.0 / np.sqrt(longest))
        with torch.no_grad():
            self.table.weight[total].zero_()
        self.pad_leaf = total
        self.norm = GroupBatchNorm(len(groups), embedding_dim)
        self.dropout = nn.Dropout(dropout)
        self.weight = nn.Parameter(torch.empty(len(groups), embedding_dim).uniform_(-0.1, 0.1))
        self.bias = nn.Parameter(torch.as_tensor(bias, dtype=torch.float32).clone())

    def embed(self, leaves: torch.Tensor) -> torch.Tensor:
        """Post-BatchNorm embeddings ``(n, k, embedding_dim)`` of leaf-index rows ``(n, n_trees)``."""
        ids = leaves + self.tree_offset
        ids = torch.cat([ids, torch.full_like(ids[:, :1], self.pad_leaf)], dim=1)
        vectors = self.table(ids[:, self.members])  # (n, k, T, E)
        return self.norm(vectors.sum(dim=2))  # type: ignore[no-any-return]

    def forward(self, leaves: torch.Tensor) -> torch.Tensor:
        dropped: torch.Tensor = self.dropout(self.embed(leaves))
        return (dropped * self.weight).sum(-1) + self.bias


def fit_leaf_embedding(
    module: LeafEmbedding,
    leaves: RowSource,
    targets: torch.Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    generator: torch.Generator,
    on_step: Callable[[], None] | None = None,
    sync_batchnorm: bool = True,
) -> list[float]:
    """Fit the embedding with MSE to the group leaf sums; returns the mean loss of each epoch.

    When several processes train (:mod:`gbdt2nn_core.student.distributed`), ``leaves`` and ``targets`` are this
    process's shard: the embedding trains data-parallel (the same weights on every process after each step).
    """
    optimizer = adamw(module.parameters(), lr=lr, weight_decay=weight_decay)
    # scale the loss by the per-group target variance so groups with large leaf values don't dominate
    scale = targets.var(dim=0).clamp_min(1e-12)
    history = []
    module.train()
    if world().distributed:
        with synchronised_batchnorm(module, sync_batchnorm):
            history = _fit_data_parallel(
                module, leaves, targets, scale, epochs, batch_size, optimizer, generator, on_step
            )
        if not sync_batchnorm:  # each process tracked its own rows' statistics: use rank 0's everywhere
            broadcast_buffers(module)
        module.eval()
        return history
    for _ in range(epochs):
        order = torch.randperm(leaves.shape[0], generator=generator).to(leaves.device)  # CPU draw, one copy
        total, count = 0.0, 0
        for rows in row_batches(order, batch_size):
            prediction = module(select_rows(leaves, rows))
            loss = (((prediction - select_rows(targets, rows)) ** 2) / scale).mean()
            if not bool(torch.isfinite(loss)):
                # diverged (e.g. a huge learning rate): a further AdamW step can overflow inside torch; the caller's
                # check of the history reports it as a TrainingError
                module.eval()
                return [*history, math.nan]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(rows)
            count += len(rows)
            if on_step:
                on_step()
        history.append(total / max(count, 1))
    module.eval()
    return history


def _fit_data_parallel(
    module: LeafEmbedding,
    leaves: RowSource,
    targets: torch.Tensor,
    scale: torch.Tensor,
    epochs: int,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    on_step: Callable[[], None] | None,
) -> list[float]:
    """:func:`fit_leaf_embedding`'s epochs on this process's shard, the module under ``DistributedDataParallel``."""
    _, variance, _ = global_mean_var(targets)
    scale = variance.clamp_min(1e-12)
    parallel = data_parallel(module)
    history = []
    bound = int(all_reduce_sum(torch.tensor([len(leaves)])).item())  # above every shard's length, on every process
    for _ in range(epochs):
        # the same draws on every process, so that the shared generator stays in step; positions past this
        # process's shard are dropped
        order = torch.randperm(bound, generator=generator)
        order = order[order < len(leaves)]
        total = torch.zeros(2, dtype=torch.float64)
        batches = shard_batches(order, batch_size)
        shares = batch_shares([len(rows) for rows in batches], [0] * len(batches))  # one collective per epoch
        for rows, (share, _) in zip(batches, shares, strict=True):
            prediction = parallel(select_rows(leaves, rows))
            loss = (((prediction - select_rows(targets, rows)) ** 2) / scale).mean()
            optimizer.zero_grad(set_to_none=True)
            (share * loss).backward()
            optimizer.step()
            total += torch.tensor([float(loss.detach()) * len(rows), len(rows)], dtype=torch.float64)
            if on_step:
                on_step()
        summed = all_reduce_sum(total)
        history.append(float(summed[0] / summed[1].clamp_min(1)))
    return history
