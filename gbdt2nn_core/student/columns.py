"""GBDT2NN's first layer per input column, for the attributors' first-layer fast paths.

:class:`GroupColumns` is what :meth:`GBDT2NNModule.column_first_layer` returns (the
:class:`~gbdt2nn_core.host.attribution.FirstLayerColumns` of a batch). With the module's lookup on
(:meth:`GBDT2NNModule.use_lookup`) and the batch an exact encoding, a one-hot block's share of group ``j``'s first
layer is one row of the lookup table (the active slot's weights minus the block's centring constant), so a column's
share of the gradient is one dot product per row, block and group: ``n × B × k·h`` multiply-adds, where the product
with the ``(D, k·h)`` weight that the dense form needs is ``n × D × k·h`` (``D`` = every slot of every block) —
then multiplied by ``z`` and summed per column, each with its backward. :class:`_SlotDots` reads the rows one group
at a time (a group's table and rows stay in cache; gathering every group's rows at once wrote ``n × B × k·h``
values and measured 3× slower than the dense product) and writes its backward by hand: an ``embedding_bag`` for the
gradient and an ``index_add`` into the table, where autograd would make two more passes over the gathered rows.
A joint training step with the structure attributor took 85 → 69 ms on adult (512 rows, one CPU core; BENCHMARKS.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch.autograd.function import once_differentiable
from torch.nn import functional

from gbdt2nn_core.host.attribution import LinearColumns, check_aggregation

if TYPE_CHECKING:
    from gbdt2nn_core.student.module import GBDT2NNModule

__all__ = ["GroupColumns"]


class GroupColumns:
    """The first layer of a GBDT2NN batch ``z`` per input column; ``first`` is ``(n, k, h)``, from the lookup table
    where that is exact (``slots`` is then the batch's active slots, else ``None`` and the dense matmul applies).

    Besides :meth:`contract` it offers :meth:`contract_groups`, the contraction of each group's own gradient (the
    structure attributor's first-order share of every column in every group).
    """

    def __init__(self, module: GBDT2NNModule, z: torch.Tensor, aggregation: torch.Tensor) -> None:
        check_aggregation(aggregation, z.shape[1])
        self.module = module
        self.z = z.detach()
        self.slots: torch.Tensor | None = None
        if module.lookup_enabled and z.shape[1] == module.lookup_n_encoded:
            self.slots = module.active_slots(self.z)
        self._dense: LinearColumns | None = None
        if self.slots is None:
            _, first_bias = module.mlp.first_linear_parameters()
            weight = module.summed_first_weight(z.shape[1]).to(z.dtype)  # shared within a training step
            self._dense = LinearColumns(z, aggregation, weight, first_bias.to(z.dtype).reshape(-1), first_bias.shape)
            self.first = self._dense.first
            return
        other = self.z.index_select(1, module.lookup_other_columns)  # (n, D - S)
        self.first = module.lookup_first_layer(other, self.slots)
        # the contractions run in the tables' dtype, as the lookup's first layer does
        self.other = other.to(self.first.dtype)
        aggregation = aggregation.to(self.first.dtype)
        #: ``(B, d)`` and ``(D - S, d)``: the column of each one-hot block and of each encoded value outside them
        self.block_columns = aggregation.index_select(0, module.lookup_slot_columns[module.lookup_block_offsets])
        self.other_columns = aggregation.index_select(0, module.lookup_other_columns)

    def contract(self, gradient: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """``Σ_j gradient_j · H_cj`` for gradients ``(m, k, h)`` or ``(m, outputs, k, h)`` (rows ``rows`` of the batch
        when given, else ``m = n``): ``(m, d)`` or ``(m, outputs, d)``; see
        :class:`~gbdt2nn_core.host.attribution.FirstLayerColumns`."""
        if self._dense is not None:
            return self._dense.contract(gradient, rows)
        outputs = gradient.ndim == 4
        m = gradient.shape[0]
        per_output = gradient.shape[1] if outputs else 1
        slots, other = self.slots, self.other
        assert slots is not None
        if rows is not None:
            slots, other = slots.index_select(0, rows), other.index_select(0, rows)
        if per_output > 1:  # every output's gradient against the same row's shares
            slots, other = slots.repeat_interleave(per_output, 0), other.repeat_interleave(per_output, 0)
        flat = gradient.reshape(m * per_output, *self.first.shape[1:])  # (m·o, k, h)
        result = self._lookup_by_group(flat, slots, other).sum(dim=1)  # (m·o, d)
        return result.reshape(m, per_output, -1) if outputs else result

    def contract_groups(self, gradient: torch.Tensor) -> torch.Tensor:
        """``(n, k, d)``: group ``j``'s gradient ``(n, k, h)`` (with respect to its own first-layer output) against
        each column's share of that group's first layer."""
        n, groups, hidden = gradient.shape
        by_group = gradient.transpose(0, 1)  # (k, n, h)
        if self._dense is not None:
            encoded = self._dense.weight.shape[0]
            # group-major throughout, so that every product is one contiguous batched matmul: an (n, k, D) view with
            # the groups in the middle made the ⊙ z a strided pass and "@ aggregation" an n-batch product (1.6x the
            # time of this whole contraction on one CPU core at adult's shapes)
            weight = self._dense.weight.reshape(encoded, groups, hidden).permute(1, 2, 0)  # (k, h, D)
            per_value = torch.bmm(by_group, weight) * self.z  # (k, n, D)
            columns = per_value.reshape(groups * n, encoded) @ self._dense.aggregation  # (k·n, d)
            return columns.reshape(groups, n, -1).transpose(0, 1)
        assert self.slots is not None
        return self._lookup_by_group(gradient, self.slots, self.other)

    def _lookup_by_group(self, gradient: torch.Tensor, slots: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """``(m, k, d)``: gradients ``(m, k, h)`` against the column shares of rows with active ``slots`` ``(m, B)``
        and values ``other`` ``(m, D - S)`` outside the blocks, group by group, through the lookup tables."""
        _, groups, hidden = gradient.shape
        by_group = gradient.transpose(0, 1)  # (k, m, h)
        tables, other_weight = self.module.group_lookup_tables()
        blocks = _slot_dots(tables, by_group.contiguous(), slots)  # (k, m, B)
        outside_weight = other_weight.reshape(-1, groups, hidden).permute(1, 2, 0)  # (k, h, D - S)
        outside = torch.bmm(by_group, outside_weight) * other  # (k, m, D - S)
        columns = blocks @ self.block_columns + outside @ self.other_columns  # (k, m, d)
        return columns.transpose(0, 1)


def _slot_dots(tables: torch.Tensor, gradient: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """:class:`_SlotDots` applied: ``(k, m, B)``."""
    result: torch.Tensor = _SlotDots.apply(tables, gradient, slots)  # type: ignore[no-untyped-call]
    return result


class _SlotDots(torch.autograd.Function):
    """``out[j, i, b] = tables[j, slots[i, b]] · gradient[j, i]``: each row's gradient in group ``j`` against the
    table row of every block's active slot, ``(k, m, B)`` from ``tables`` ``(k, S + 1, h)``, ``gradient`` ``(k, m, h)``
    and ``slots`` ``(m, B)`` (see the module docs for why by hand). Differentiable once: joint training
    differentiates the attributions once, and the gathered rows reuse one buffer across the groups."""

    @staticmethod
    def forward(ctx: Any, tables: torch.Tensor, gradient: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        groups, m, hidden = gradient.shape
        flat = slots.reshape(-1)
        out = gradient.new_empty(groups, m, slots.shape[1])
        rows = gradient.new_empty(flat.shape[0], hidden)
        for j in range(groups):
            torch.index_select(tables[j], 0, flat, out=rows)
            gathered = rows.view(m, -1, hidden).mul_(gradient[j].unsqueeze(1))  # (m, B, h)
            torch.sum(gathered, dim=-1, out=out[j])
        ctx.save_for_backward(tables, gradient, slots)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, out_gradient: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        tables, gradient, slots = ctx.saved_tensors
        groups, m, hidden = gradient.shape
        flat = slots.reshape(-1)
        d_tables = torch.zeros_like(tables)
        d_gradient = torch.empty_like(gradient)
        spread = gradient.new_empty(m, slots.shape[1], hidden)
        for j in range(groups):
            weights = out_gradient[j].contiguous()  # (m, B)
            # Σ_b weights[i, b] · tables[j, slots[i, b]]: a weighted bag of table rows per row
            d_gradient[j] = functional.embedding_bag(slots, tables[j], per_sample_weights=weights, mode="sum")
            torch.mul(weights.unsqueeze(-1), gradient[j].unsqueeze(1), out=spread)
            d_tables[j].index_add_(0, flat, spread.view(-1, hidden))
        return d_tables, d_gradient, None
