"""The explanation-imitation term of the joint loss and the helpers that compute student attributions."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import attrs
import numpy as np
import torch
from torch import nn

from gbdt2nn_core.interfaces import Attributor

__all__ = ["Alignment", "column_attributions", "frozen_batchnorm"]


@attrs.frozen(kw_only=True)
class Alignment:
    """``λ · loss(column_attributions(student), teacher_attributions)``, added to the distillation loss.

    ``teacher_attributions`` holds one row per training row: ``(n, d)``, or ``(n, c, d)`` for ``c`` outputs.
    ``fraction`` is the share of batches that carry the term (the rest train on the distillation loss only).
    """

    attributor: Attributor
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    teacher_attributions: np.ndarray = attrs.field(eq=False, repr=False)
    weight: float = 1.0
    fraction: float = 1.0


@contextlib.contextmanager
def frozen_batchnorm(module: nn.Module) -> Iterator[None]:
    """Use running statistics in every BatchNorm layer for the duration of the block.

    In training mode a row's output depends on the other rows of the batch through the batch statistics, so
    the gradient of the summed outputs with respect to one row is *not* that row's own gradient (the mean
    gradient of the batch is subtracted from it). Attributions must be per-row, hence running statistics.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for norm in norms:
        norm.eval()
    try:
        yield
    finally:
        for norm in norms:
            norm.train()


def column_attributions(
    attributor: Attributor,
    model: Callable[[torch.Tensor], torch.Tensor],
    z: torch.Tensor,
    aggregation: torch.Tensor,
    *,
    create_graph: bool = False,
) -> torch.Tensor:
    """Attributions summed over each input column's encoded block: ``(n, d)`` or ``(n, c, d)``."""
    encoded = attributor.attribute(model, z, create_graph=create_graph)
    return encoded @ aggregation
