"""The GBDT2NN network itself (DeepGBM step 5), as one batched computation over all tree groups."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from gbdt2nn_core.student._layers import GroupMLP

__all__ = ["GBDT2NNModule"]

#: The first layer runs as one dense matmul over all encoded columns when the encoded width ``D`` is at most this
#: multiple of the group width ``W`` (it does ``D / W`` times the work of the per-group gather, but skips copying
#: an ``(n, k, W)`` tensor: about 1.3x faster on one CPU core, and on an H200 from 100k rows up, at adult's shapes,
#: where ``D = W``; BENCHMARKS.md).
DENSE_FIRST_LAYER_MAX_RATIO = 1.5


class GBDT2NNModule(nn.Module):
    """Maps encoded rows ``z`` (``(n, D)``) to margins (``(n,)``, or ``(n, c)`` with ``c`` outputs).

    Group ``j`` sees only the encoded values of its selected columns ``I_j`` (gathered through
    ``group_input_index``; index ``D`` is a constant-zero pad column), runs its MLP ``N_j`` to a 20-dim
    embedding, and maps it with the frozen leaf-embedding head: ``y_j = w_j · N_j(z[I_j]) + b_j``. The margin
    of output ``c`` is the sum of ``y_j`` over the groups that belong to ``c``.
    """

    if TYPE_CHECKING:
        # The buffers registered in __init__, typed for mypy (nn.Module.__getattr__ says `Tensor | Module`). Only
        # for the checker: TorchScript reads class annotations and cannot resolve postponed (string) ones.
        group_input_index: torch.Tensor
        output_map: torch.Tensor
        head_weight: torch.Tensor
        head_bias: torch.Tensor

    def __init__(
        self,
        *,
        group_input_index: torch.Tensor,
        group_output: torch.Tensor,
        n_outputs: int,
        hidden: tuple[int, ...] = (100, 100, 100, 50),
        embedding_dim: int = 20,
    ) -> None:
        super().__init__()
        groups, width = group_input_index.shape
        self.n_outputs = n_outputs
        self.hidden_sizes = tuple(hidden)
        self.embedding_dim = embedding_dim
        self.register_buffer("group_input_index", group_input_index.long().clone())
        self.register_buffer("output_map", nn.functional.one_hot(group_output.long(), n_outputs).float())
        # the frozen 20 -> 1 head from the leaf embedding (DeepGBM freezes it after step 4)
        self.register_buffer("head_weight", torch.zeros(groups, embedding_dim))
        self.register_buffer("head_bias", torch.zeros(groups))
        self.mlp = GroupMLP(groups, width, self.hidden_sizes, embedding_dim)
        # the dense first layer maps each encoded column to its slot in every group; that needs each group to list a
        # column once (only the pad column, the largest index, may repeat, and only when it really is the pad)
        index = self.group_input_index
        self.largest_index = int(index.max()) if index.numel() else 0
        rows = [[value for value in row if value != self.largest_index] for row in index.tolist()]
        self.columns_distinct = all(len(row) == len(set(row)) for row in rows)
        self.largest_index_repeats = any(len(row) < width - 1 for row in rows)
        self.dense_max_ratio = float(DENSE_FIRST_LAYER_MAX_RATIO)  # an attribute: TorchScript reads no globals

    @property
    def n_groups(self) -> int:
        return int(self.group_input_index.shape[0])

    def group_inputs(self, z: torch.Tensor) -> torch.Tensor:
        """``(n, k, W)``: each group's slice of ``z``, zero-padded to the widest group."""
        padded = nn.functional.pad(z, (0, 1))
        return padded[:, self.group_input_index]

    def embeddings(self, z: torch.Tensor) -> torch.Tensor:
        """``N_j(z[I_j])`` for every group: ``(n, k, embedding_dim)``."""
        if self._dense_first_layer_applies(z):
            return self.mlp.after_first_linear(self.dense_first_layer(z))  # type: ignore[no-any-return]
        return self.mlp(self.group_inputs(z))  # type: ignore[no-any-return]

    def _dense_first_layer_applies(self, z: torch.Tensor) -> bool:
        width = self.group_input_index.shape[1]
        if not self.columns_distinct or z.shape[1] > self.dense_max_ratio * width:
            return False
        # a repeated largest index is the pad column only if it equals D
        return not self.largest_index_repeats or z.shape[1] == self.largest_index

    def dense_first_layer(self, z: torch.Tensor) -> torch.Tensor:
        """The first linear map of every group as one ``(n, D) @ (D, k·h)`` matmul: ``(n, k, h)``.

        Equal to ``mlp.hidden[0](group_inputs(z))``: group ``j``'s weight row for slot ``i`` moves to encoded column
        ``I_j[i]``; columns the group does not see get zero weights.
        """
        first_weight, first_bias = self.mlp.first_linear_parameters()
        n, columns = z.shape
        groups, width, out = first_weight.shape
        slots = torch.arange(width, device=z.device).expand(groups, width)
        # slot of encoded column c in group j, or `width` (a zero row appended below) where the group lacks c
        slot_of = torch.full((groups, columns + 1), width, dtype=torch.long, device=z.device)
        slot_of = slot_of.scatter(1, self.group_input_index, slots)[:, :columns]
        padded = torch.cat([first_weight, first_weight.new_zeros(groups, 1, out)], dim=1)
        dense = padded.gather(1, slot_of.unsqueeze(-1).expand(groups, columns, out))  # (k, D, h)
        weight = dense.permute(1, 0, 2).reshape(columns, groups * out)
        return (z @ weight).reshape(n, groups, out) + first_bias

    def group_outputs(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``y_j`` for every group: ``(n, k)``."""
        return (embeddings * self.head_weight).sum(-1) + self.head_bias

    def combine(self, group_outputs: torch.Tensor) -> torch.Tensor:
        """Sum group outputs into margins ``(n,)`` or ``(n, c)``."""
        margin = group_outputs @ self.output_map
        return margin[:, 0] if self.n_outputs == 1 else margin

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.combine(self.group_outputs(self.embeddings(z)))
