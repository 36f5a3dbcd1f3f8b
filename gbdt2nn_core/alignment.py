"""The explanation-imitation term of the joint loss and the helpers that compute student attributions."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from gbdt2nn_core.attribution import column_attributions

# Alignment is part of the student contract (StudentInputs.alignment), so it lives with the interfaces
from gbdt2nn_core.interfaces import Alignment

__all__ = ["Alignment", "column_attributions", "frozen_batchnorm"]


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
