"""Re-estimating BatchNorm statistics for the final weights ("precise BatchNorm")."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gbdt2nn_core.host.device import module_device, rows_on
from gbdt2nn_core.student.disk_rows import DiskRows
from gbdt2nn_core.student.distributed import shard_batches, synchronised_batchnorm, world

__all__ = ["recalibrate_batchnorm", "row_batches"]


def row_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """``order`` cut into batches of ``batch_size`` rows; a last batch of one row joins the one before it.

    BatchNorm cannot train on one row (it has no variance), and skipping it would drop that row from the epoch,
    or every row when the batch size is 1 (the config refuses that).
    """
    batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


@torch.no_grad()
def recalibrate_batchnorm(module: nn.Module, z: np.ndarray | torch.Tensor | DiskRows, batch_size: int = 512) -> None:
    """Re-estimate every BatchNorm layer's running mean and variance on rows ``z`` with the current weights.

    The rows go through in their order, in batches of ``batch_size`` (a last batch of one row is skipped: it has
    no variance); the statistics are the plain average over the batches (``momentum=None``), so the result does
    not depend on what the running statistics were. The module's training flag is restored afterwards. When
    several processes train (:mod:`gbdt2nn_core.student.distributed`), ``z`` is this process's shard and the
    batches' moments are all-reduced.
    """
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    was_training = module.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    module.train()
    # on the module's device, copied there once (rows kept on disk are read a batch at a time)
    rows = z if isinstance(z, DiskRows) else rows_on(z, module_device(module), torch.float32)
    try:
        if world().distributed:
            # every process passes its shard in as many batches as the others, each normalised with the global
            # batch's moments: the statistics are those of all the training rows, equal on every process
            with synchronised_batchnorm(module):
                for batch in shard_batches(torch.arange(len(rows)), batch_size):
                    module(rows[batch])
            return
        for start in range(0, len(rows), batch_size):
            if len(rows[start : start + batch_size]) > 1:
                module(rows[start : start + batch_size])
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        module.train(was_training)
