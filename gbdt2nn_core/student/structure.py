"""The structure-based attributor: explain a GBDT2NN prediction through the network's own tree-group structure.

GBDT2NN is additive over groups, ``f(x) = Σ_j y_j(x[I_j])``, and group ``j`` sees only its selected columns
``I_j``. So each group's deviation from its average, ``y_j(x) − E[y_j]``, is attributed to that group's own
columns only, and the per-column attributions are summed over groups. Like TreeSHAP:

- the attributions add up exactly to ``f(x) − E[f]`` (``E`` over a background sample of training rows);
- a column that no group selected — a feature no tree of the teacher splits on — gets exactly 0.

Within a group, the deviation is split by gradient × input (first-order share of each input, measured from the
training mean ``z = 0``) and the part that first order misses — the group's curvature plus the gap between
``y_j(mean row)`` and ``E[y_j]`` — is spread over the group's inputs in proportion to the size of their
first-order shares (equally over the inputs the group sees when all are zero). One forward and one backward
pass serve every group at once, so it costs about as much as gradient × input and can be back-propagated
through for joint training.

**Which inputs share the residual.** Per input *column* (what the core reports and aligns:
:func:`~gbdt2nn_core.host.attribution.column_attributions`), the inputs are the columns: column ``c``'s
first-order share in group ``j`` is its gradient × input summed over its encoded values, ``Σ_{s ∈ c} z_s
∂y_j/∂z_s``, and the residual is spread in proportion to ``|that sum|`` (:meth:`StructureAttributor.attribute_columns`,
computed from the first layer's output, as gradient × input's fast path is). :meth:`StructureAttributor.attribute`
gives the same definition with every encoded value as its own input, so its values summed over a column's block
differ from the column attribution by how the residual is shared (both add up to ``f(x) − E[f]``; up to 0.1.0 the
column attribution was that sum, sharing by ``|z_s ∂y_j/∂z_s|`` per encoded value).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.host.attribution import check_aggregation, check_encoded_rows
from gbdt2nn_core.host.interfaces import Attributor, Reference
from gbdt2nn_core.student.module import GBDT2NNModule

__all__ = ["StructureAttributor"]


class StructureAttributor(Attributor):
    """Per-group attribution of a GBDT2NN student, exact against ``f(x) − E[f]``; see the module docs."""

    differentiable: ClassVar[bool] = True
    reference: ClassVar[Reference] = "expectation"
    #: It reads GBDT2NN's tree groups.
    students: ClassVar[tuple[str, ...] | None] = ("gbdt2nn",)

    def __init__(self, *, background_rows: int = 256) -> None:
        if not isinstance(background_rows, int) or background_rows < 1:
            raise ConfigError(setting="background_rows", value=background_rows, fix="use a whole number ≥ 1")
        self.background_rows = background_rows
        self._background: torch.Tensor | None = None
        #: the background's lookup inputs for one module, its lookup and a dtype and device (see _background_first)
        self._background_lookup: tuple[Any, ...] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(background_rows={self.background_rows})"

    def __getstate__(self) -> dict[str, Any]:
        # the cached background slots hold a weak reference to a module: never pickled, found again after loading
        return {**self.__dict__, "_background_lookup": None}

    def fit(self, model: Callable[[torch.Tensor], torch.Tensor], background: torch.Tensor) -> StructureAttributor:
        """Keep (up to ``background_rows``) encoded training rows; ``E[y_j]`` is their mean group output."""
        self._background = check_encoded_rows(background, name="background")[: self.background_rows].detach()
        self._background_lookup = None
        return self

    def attribute(
        self, model: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, *, create_graph: bool = False
    ) -> torch.Tensor:
        """Attributions of every encoded value of ``z`` ``(n, D)`` (each its own input): ``(n, D)`` or ``(n, k, D)``."""
        module = self._gbdt2nn(model)
        z = check_encoded_rows(z)
        expected = self._expected_group_outputs(module, z)
        with torch.enable_grad():
            inputs = module.group_inputs(z)
            if not inputs.requires_grad:
                inputs = inputs.detach().requires_grad_(True)
            outputs = module.group_outputs(module.mlp(inputs))  # (n, k)
            # group j depends only on inputs[:, j, :], so one backward yields every group's own gradient
            (gradient,) = torch.autograd.grad(outputs.sum(), inputs, create_graph=create_graph)
        first_order = gradient * inputs  # (n, k, W)
        pad = module.group_input_index == z.shape[1]  # padded slots carry no column
        per_group = _spread_residual(first_order, outputs - expected, ~pad)  # (n, k, W), sums to y_j − E[y_j]

        # back to encoded columns, one slice per output (groups belong to exactly one output)
        n, k, width = per_group.shape
        index = module.group_input_index.clamp_max(z.shape[1] - 1)
        outputs_of_group = module.output_map.argmax(dim=1)  # (k,)
        result = z.new_zeros(n, module.n_outputs, z.shape[1])
        flat_target = (outputs_of_group[:, None] * z.shape[1] + index).reshape(-1)  # (k * W,)
        values = per_group.masked_fill(pad, 0.0).reshape(n, k * width)
        result = result.reshape(n, -1).index_add(1, flat_target, values).reshape(n, module.n_outputs, z.shape[1])
        if not create_graph:
            result = result.detach()
        return result[:, 0] if module.n_outputs == 1 else result

    def attribute_columns(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        z: torch.Tensor,
        aggregation: torch.Tensor,
        *,
        create_graph: bool = False,
    ) -> torch.Tensor:
        """Attributions of the input columns of ``z`` (``aggregation``: the encoder's ``(D, d)`` 0/1 matrix), each
        column one input (see the module docs): ``(n, d)`` or ``(n, k, d)``. Reads the network's first layer per
        column, so the double backward of joint training never runs through it."""
        module = self._gbdt2nn(model)
        z = check_encoded_rows(z)
        column_of = check_aggregation(aggregation, z.shape[1])
        expected = self._expected_group_outputs(module, z)
        with torch.enable_grad():
            layer = module.column_first_layer(z, aggregation)
            # (n, k) and (n, k, h): group j depends only on first[:, j, :], so one pass yields every group's own
            # gradient (with BatchNorm frozen, differentiable without a double backward)
            outputs, gradient = module.group_outputs_and_gradient(layer.first, create_graph=create_graph)
            first_order = layer.contract_groups(gradient)  # (n, k, d)
        # the columns each group sees: those of its encoded inputs (index D is the pad)
        index = module.group_input_index
        real = index < z.shape[1]
        columns_seen = column_of.to(index.device)[index.clamp_max(z.shape[1] - 1)]
        sees = torch.zeros(module.n_groups, aggregation.shape[1] + 1, dtype=torch.bool, device=index.device)
        sees = sees.scatter(1, torch.where(real & (columns_seen >= 0), columns_seen, aggregation.shape[1]), True)
        per_group = _spread_residual(first_order, outputs - expected, sees[:, :-1])  # (n, k, d)
        result = torch.einsum("nkc,ko->noc", per_group, module.output_map.to(per_group.dtype))
        if not create_graph:
            result = result.detach()
        return result[:, 0] if module.n_outputs == 1 else result

    def _gbdt2nn(self, model: Callable[[torch.Tensor], torch.Tensor]) -> GBDT2NNModule:
        if not isinstance(model, GBDT2NNModule):
            raise ConfigError(
                setting="attributor",
                value="structure",
                fix="the structure attributor explains GBDT2NN students only; choose another attributor",
            )
        return model

    def _expected_group_outputs(self, model: GBDT2NNModule, z: torch.Tensor) -> torch.Tensor:
        """``E[y_j]`` over the background, ``(k,)``, of the current model (per call: the model changes in training)."""
        background = self._background if self._background is not None else torch.zeros_like(z[:1])
        background = background.to(dtype=z.dtype, device=z.device)
        with torch.no_grad():
            # through the cheapest exact forward: the lookup first layer (no input gradients are needed here) and,
            # with BatchNorm frozen as in alignment, the folded layers
            return model.group_outputs_after_first_layer(self._background_first(model, background)).mean(dim=0)

    def _background_first(self, model: GBDT2NNModule, background: torch.Tensor) -> torch.Tensor:
        """``model.first_layer(background)``, with the background's lookup slots found once per module and lookup
        (the background is fixed; checking it cost a millisecond of every aligned step)."""
        key = (model._lookup_generation, background.dtype, background.device)
        held = self._background_lookup
        if held is None or held[0]() is not model or held[1] != key:
            slots = model.rows_slots(background)
            other = background.index_select(1, model.lookup_other_columns) if slots is not None else None
            held = self._background_lookup = (weakref.ref(model), key, other, slots)
        _, _, other, slots = held
        if other is None or slots is None:
            return model.first_layer(background)
        return model.lookup_first_layer(other, slots)


def _spread_residual(first_order: torch.Tensor, deviation: torch.Tensor, sees: torch.Tensor) -> torch.Tensor:
    """Each group's first-order shares ``(n, k, m)`` of its ``m`` inputs plus what they miss of its ``deviation``
    ``(n, k)``, spread in proportion to their size (equally over the inputs the group ``sees`` ``(k, m)`` when all
    are zero): ``(n, k, m)``, summing to ``deviation``; 0 for inputs a group does not see."""
    first_order = first_order.masked_fill(~sees, 0.0)
    residual = deviation - first_order.sum(dim=-1)  # (n, k)
    size = first_order.abs()
    total = size.sum(dim=-1, keepdim=True)
    uniform = sees.to(first_order.dtype) / sees.sum(dim=-1, keepdim=True).clamp_min(1).to(first_order.dtype)
    share = torch.where(total > 1e-12, size / total.clamp_min(1e-12), uniform.expand_as(size))
    return first_order + residual.unsqueeze(-1) * share
