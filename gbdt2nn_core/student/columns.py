"""GBDT2NN's first layer per input column, for the attributors' first-layer fast paths.

:class:`GroupColumns` is what :meth:`GBDT2NNModule.column_first_layer` returns (the
:class:`~gbdt2nn_core.host.attribution.FirstLayerColumns` of a batch). With the module's lookup on
(:meth:`GBDT2NNModule.use_lookup`) and the batch an exact encoding, the first layer's output is a sum of lookup-table
rows (``embedding_bag``, as the lookup forward computes it), and so is its backward. Contracting gradients with
the column shares stays :class:`LinearColumns`' one product with the ``(D, k·h)`` weight: reading each block's
table row instead (``B`` rows of ``k·h`` values per row) writes ``n × B × k·h`` values and measured 3× slower on
one CPU core at adult's shapes than the matmul it replaces.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from gbdt2nn_core.host.attribution import LinearColumns

if TYPE_CHECKING:
    from gbdt2nn_core.student.module import GBDT2NNModule

__all__ = ["GroupColumns"]


class GroupColumns(LinearColumns):
    """The first layer of a GBDT2NN batch ``z`` per input column; ``first`` is ``(n, k, h)``, from the lookup table
    where that is exact.

    Besides :meth:`contract` it offers :meth:`contract_groups`, the contraction of each group's own gradient (the
    structure attributor's first-order share of every column in every group).
    """

    def __init__(self, module: GBDT2NNModule, z: torch.Tensor, aggregation: torch.Tensor) -> None:
        first_weight, first_bias = module.mlp.first_linear_parameters()
        groups, _, hidden = first_weight.shape
        weight = module.summed_first_weight(z.shape[1]).to(z.dtype)  # shared within a training step
        self.module = module
        #: the active one-hot slots of the batch where the lookup applies (``None``: the dense matmul)
        self.slots = None
        if module.lookup_enabled and z.shape[1] == module.lookup_n_encoded:
            self.slots = module.active_slots(z.detach())
        super().__init__(z, aggregation, weight, first_bias.to(z.dtype).reshape(-1), (groups, hidden))

    def _first_layer(self) -> torch.Tensor:
        if self.slots is None:
            return super()._first_layer()
        other = self.z.index_select(1, self.module.lookup_other_columns)
        return self.module.lookup_first_layer(other, self.slots)

    def contract_groups(self, gradient: torch.Tensor) -> torch.Tensor:
        """``(n, k, d)``: group ``j``'s gradient ``(n, k, h)`` (with respect to its own first-layer output) against
        each column's share of that group's first layer."""
        n, groups, hidden = gradient.shape
        encoded = self.weight.shape[0]
        # group-major throughout, so that every product is one contiguous batched matmul: an (n, k, D) view with
        # the groups in the middle made the ⊙ z a strided pass and "@ aggregation" an n-batch product (1.6x the
        # time of this whole contraction on one CPU core at adult's shapes)
        weight = self.weight.reshape(encoded, groups, hidden).permute(1, 2, 0)  # (k, h, D)
        per_value = torch.bmm(gradient.transpose(0, 1), weight) * self.z  # (k, n, D)
        columns = per_value.reshape(groups * n, encoded) @ self.aggregation  # (k·n, d)
        return columns.reshape(groups, n, -1).transpose(0, 1)
