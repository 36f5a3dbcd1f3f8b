"""Online updates of a distilled GBDT2NN student: new labelled rows, no trees (DeepGBM's reason to exist).

A GBDT2NN student is an ordinary network once distilled, so new data can train it end to end with the task
loss alone: the teacher's leaves and embedding targets describe the *old* data and take no part. The input
encoder stays as it was fitted (its means, category frequencies and the teacher's split thresholds), and so
do the frozen leaf-embedding heads ``w_j, b_j``; the group networks and their BatchNorm statistics move.

When the teacher's attributions of the new rows are at hand, the alignment term can be kept as well
(``alignment=...``), so the student keeps explaining itself like the teacher while it adapts.

:meth:`gbdt2nn_core.pipeline.estimator.GBDT2NNClassifier.partial_fit` is the user-facing entry point.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch

from gbdt2nn_core.errors import ConfigError, DataError, TrainingError
from gbdt2nn_core.host.device import module_device, rows_on
from gbdt2nn_core.host.interfaces import Task
from gbdt2nn_core.kit.alignment import Alignment
from gbdt2nn_core.student.disk_rows import select_rows
from gbdt2nn_core.student.kit import TargetScaling, alignment_loss, row_batches, target_scale, task_loss
from gbdt2nn_core.validators import is_whole_number

__all__ = ["online_update"]


def online_update(
    module: torch.nn.Module,
    z: np.ndarray,
    y: np.ndarray,
    *,
    task: Task,
    optimizer: torch.optim.Optimizer,
    epochs: int = 1,
    batch_size: int = 512,
    generator: torch.Generator | None = None,
    alignment: Alignment | None = None,
    aggregation: np.ndarray | None = None,
    scaling: TargetScaling | None = None,
) -> list[dict[str, Any]]:
    """Train ``module`` on encoded rows ``z`` and targets ``y`` for ``epochs`` passes; returns one record per pass.

    ``y`` holds floats (regression) or class indices. ``optimizer`` must be built over ``module.parameters()``;
    reusing one across calls carries its moment estimates from batch to batch, as a stream would. A last batch of
    one row joins the batch before it (BatchNorm needs two), so ``z`` must have at least two rows. With
    ``alignment`` (its ``teacher_attributions`` are the teacher's attributions of these rows) and the encoder's
    ``aggregation`` matrix, the loss is ``L_task + λ · L_align`` on the share ``alignment.fraction`` of batches.
    Regression targets are trained, and their ``task_loss`` reported, in the student's training units
    (``scaling``: its :class:`~gbdt2nn_core.student.kit.TargetScaling`, standardised by default), and so are the
    attributions of the alignment term; without ``scaling``, targets far from 1 in the power-of-two unit of
    :func:`~gbdt2nn_core.student.kit.target_scale`.
    """
    n = int(z.shape[0])
    if n < 2:
        raise DataError(problem=f"an online update needs at least 2 rows, got {n}", fix="pass a larger batch")
    if len(y) != n:
        raise DataError(problem=f"y has {len(y)} values for {n} rows", fix="pass one target per row")
    if not is_whole_number(epochs, 1):
        raise ConfigError(setting="online_epochs", value=epochs, fix="use a whole number of at least 1")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    # the rows go to the network's device whole, once (see gbdt2nn_core.host.device)
    device = module_device(module)
    z_t = rows_on(z, device, torch.float32)
    if scaling is None or task != "regression":
        # large regression targets: the loss in a power-of-two unit (exact; 1 for ordinary targets)
        scaling = TargetScaling(scale=target_scale(task, y))
    y_t = scaling.targets(task, y).to(device)
    loss_fn = task_loss(task)
    align_targets = aggregation_t = None
    if alignment is not None:
        if aggregation is None:
            raise ConfigError(setting="aggregation", value=None, fix="pass the encoder's aggregation() matrix")
        align_targets = rows_on(np.asarray(alignment.teacher_attributions), device, torch.float32)
        if align_targets.shape[0] != n:
            raise DataError(
                problem=f"{align_targets.shape[0]} rows of teacher attributions for {n} rows",
                fix="pass the teacher's attributions of exactly these rows",
            )
        aggregation_t = rows_on(aggregation, device, torch.float32)
    batches = math.ceil(n / batch_size)
    records: list[dict[str, Any]] = []
    module.train()
    try:
        for epoch in range(epochs):
            started = time.perf_counter()
            order = torch.randperm(n, generator=generator).to(device)
            carry = torch.rand(batches, generator=generator) < (alignment.fraction if alignment else 0.0)
            task_sum = align_sum = 0.0
            seen = aligned = 0
            for b, rows in enumerate(row_batches(order, batch_size)):
                zb = select_rows(z_t, rows)
                margin, target = scaling.apply(module(zb)), select_rows(y_t, rows)
                loss_task = loss_fn(margin, target)
                loss = loss_task
                if alignment is not None and carry[b]:
                    assert align_targets is not None
                    assert aggregation_t is not None
                    loss_align = alignment_loss(
                        alignment, module, zb, aggregation_t, select_rows(align_targets, rows), scale=scaling.scale
                    )
                    loss = loss + alignment.weight * loss_align
                    align_sum += float(loss_align.detach()) * len(rows)
                    aligned += len(rows)
                if not bool(torch.isfinite(loss)):  # stop before the NaN reaches the weights
                    raise TrainingError(
                        stage=f"pass {epoch + 1} of the online update",
                        loss="the loss",
                        fix="lower the online learning rate (online_lr) or the alignment weight, or check the rows",
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                task_sum += float(loss_task.detach()) * len(rows)
                seen += len(rows)
            records.append(
                {
                    "epoch": epoch,
                    "task_loss": task_sum / max(seen, 1),
                    "alignment_loss": align_sum / aligned if aligned else None,
                    "rows": n,
                    "seconds": time.perf_counter() - started,
                }
            )
    finally:
        module.eval()
    return records
