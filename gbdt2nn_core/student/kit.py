"""Training pieces that every student shares: task losses, logit matching, the alignment term of a batch,
per-epoch checkpoints (:func:`save_checkpoint` / :func:`load_checkpoint`) and the final BatchNorm pass.

A student plugin builds its training loop from these, so that "aligned" means the same thing for every
architecture: ``λ · loss(column_attributions(student), teacher_attributions)`` with BatchNorm on running
statistics (per-row attributions).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from gbdt2nn_core.alignment import Alignment, column_attributions, frozen_batchnorm
from gbdt2nn_core.interfaces import Task
from gbdt2nn_core.student._batchnorm import recalibrate_batchnorm
from gbdt2nn_core.student._checkpoint import load_checkpoint, save_checkpoint

__all__ = [
    "alignment_loss",
    "load_checkpoint",
    "recalibrate_batchnorm",
    "save_checkpoint",
    "soft_loss",
    "soft_targets",
    "task_loss",
]


def task_loss(task: Task) -> nn.Module:
    """MSE (regression), BCE with logits (binary) or cross-entropy (multiclass) on margins."""
    if task == "regression":
        return nn.MSELoss()
    if task == "binary":
        return nn.BCEWithLogitsLoss()
    return nn.CrossEntropyLoss()


def soft_targets(task: Task, margin: np.ndarray) -> np.ndarray:
    """The teacher's margins as regression targets (logit matching; per-row centred for softmax outputs)."""
    if task == "multiclass":
        centred: np.ndarray = margin - margin.mean(axis=1, keepdims=True)
        return centred
    return margin


def soft_loss(task: Task) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss between a student's margins and :func:`soft_targets` (softmax outputs compared centred)."""
    if task == "multiclass":
        return lambda prediction, target: nn.functional.mse_loss(prediction - prediction.mean(1, keepdim=True), target)
    return nn.functional.mse_loss


def alignment_loss(
    alignment: Alignment,
    module: nn.Module,
    z: torch.Tensor,
    aggregation: torch.Tensor,
    teacher_attributions: torch.Tensor,
) -> torch.Tensor:
    """``L_align`` of a batch: the student's per-column attributions of ``z`` against the teacher's, differentiable.

    ``teacher_attributions`` are the teacher's of the same rows, ``(n, d)`` or ``(n, k, d)``.
    """
    with frozen_batchnorm(module):
        student = column_attributions(alignment.attributor, module, z, aggregation, create_graph=True)
    return alignment.loss(
        student.reshape(-1, student.shape[-1]), teacher_attributions.reshape(-1, teacher_attributions.shape[-1])
    )
