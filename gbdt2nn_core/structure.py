"""The structure-based attributor: explain a GBDT2NN prediction through the network's own tree-group structure.

GBDT2NN is additive over groups, ``f(x) = Σ_j y_j(x[I_j])``, and group ``j`` sees only its selected columns
``I_j``. So each group's deviation from its average, ``y_j(x) − E[y_j]``, is attributed to that group's own
columns only, and the per-column attributions are summed over groups. Like TreeSHAP:

- the attributions add up exactly to ``f(x) − E[f]`` (``E`` over a background sample of training rows);
- a column that no group selected — a feature no tree of the teacher splits on — gets exactly 0.

Within a group, the deviation is split by gradient × input (first-order share of each encoded input, measured
from the training mean ``z = 0``) and the part that first order misses — the group's curvature plus the gap
between ``y_j(mean row)`` and ``E[y_j]`` — is spread over the group's inputs in proportion to the size of
their first-order shares (equally when all are zero). One forward and one backward pass serve every group at
once, so it costs about as much as gradient × input and can be back-propagated through for joint training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch

from gbdt2nn_core.attribution import check_encoded_rows
from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.interfaces import Attributor, Reference
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

    def fit(self, model: Callable[[torch.Tensor], torch.Tensor], background: torch.Tensor) -> StructureAttributor:
        """Keep (up to ``background_rows``) encoded training rows; ``E[y_j]`` is their mean group output."""
        self._background = check_encoded_rows(background, name="background")[: self.background_rows].detach()
        return self

    def attribute(
        self, model: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, *, create_graph: bool = False
    ) -> torch.Tensor:
        if not isinstance(model, GBDT2NNModule):
            raise ConfigError(
                setting="attributor",
                value="structure",
                fix="the structure attributor explains GBDT2NN students only; choose another attributor",
            )
        z = check_encoded_rows(z)
        background = self._background if self._background is not None else torch.zeros_like(z[:1])
        with torch.no_grad():
            # the current model's average group outputs (recomputed per call: the model changes while training)
            expected = model.group_outputs(model.embeddings(background.to(z.dtype))).mean(dim=0)

        with torch.enable_grad():
            inputs = model.group_inputs(z)
            if not inputs.requires_grad:
                inputs = inputs.detach().requires_grad_(True)
            outputs = model.group_outputs(model.mlp(inputs))  # (n, k)
            # group j depends only on inputs[:, j, :], so one backward yields every group's own gradient
            (gradient,) = torch.autograd.grad(outputs.sum(), inputs, create_graph=create_graph)
        first_order = gradient * inputs  # (n, k, W)
        pad = model.group_input_index == z.shape[1]  # padded slots carry no column
        first_order = first_order.masked_fill(pad, 0.0)
        residual = (outputs - expected) - first_order.sum(dim=-1)  # (n, k)
        size = first_order.abs()
        total = size.sum(dim=-1, keepdim=True)
        uniform = (~pad).to(z.dtype) / (~pad).sum(dim=-1, keepdim=True).clamp_min(1).to(z.dtype)
        share = torch.where(total > 1e-12, size / total.clamp_min(1e-12), uniform.expand_as(size))
        per_group = first_order + residual.unsqueeze(-1) * share  # (n, k, W), sums to y_j − E[y_j]

        # back to encoded columns, one slice per output (groups belong to exactly one output)
        n, k, width = per_group.shape
        index = model.group_input_index.clamp_max(z.shape[1] - 1)
        outputs_of_group = model.output_map.argmax(dim=1)  # (k,)
        result = z.new_zeros(n, model.n_outputs, z.shape[1])
        flat_target = (outputs_of_group[:, None] * z.shape[1] + index).reshape(-1)  # (k * W,)
        values = per_group.masked_fill(pad, 0.0).reshape(n, k * width)
        result = result.reshape(n, -1).index_add(1, flat_target, values).reshape(n, model.n_outputs, z.shape[1])
        if not create_graph:
            result = result.detach()
        return result[:, 0] if model.n_outputs == 1 else result
