"""The GBDT2NN network itself (DeepGBM step 5), as one batched computation over all tree groups."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from gbdt2nn_core.student._layers import GroupMLP

__all__ = ["GBDT2NNModule"]


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

    @property
    def n_groups(self) -> int:
        return int(self.group_input_index.shape[0])

    def group_inputs(self, z: torch.Tensor) -> torch.Tensor:
        """``(n, k, W)``: each group's slice of ``z``, zero-padded to the widest group."""
        padded = nn.functional.pad(z, (0, 1))
        return padded[:, self.group_input_index]

    def embeddings(self, z: torch.Tensor) -> torch.Tensor:
        """``N_j(z[I_j])`` for every group: ``(n, k, embedding_dim)``."""
        return self.mlp(self.group_inputs(z))  # type: ignore[no-any-return]

    def group_outputs(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``y_j`` for every group: ``(n, k)``."""
        return (embeddings * self.head_weight).sum(-1) + self.head_bias

    def combine(self, group_outputs: torch.Tensor) -> torch.Tensor:
        """Sum group outputs into margins ``(n,)`` or ``(n, c)``."""
        margin = group_outputs @ self.output_map
        return margin[:, 0] if self.n_outputs == 1 else margin

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.combine(self.group_outputs(self.embeddings(z)))
