"""Training pieces that every student shares: task losses, logit matching, the alignment term of a batch,
per-epoch checkpoints (:func:`save_checkpoint` / :func:`load_checkpoint`) and the final BatchNorm pass.

A student plugin builds its training loop from these, so that "aligned" means the same thing for every
architecture: ``λ · loss(column_attributions(student), teacher_attributions)`` with BatchNorm on running
statistics (per-row attributions).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import types
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import attrs
import numpy as np
import torch
from torch import nn

from gbdt2nn_core.data.rowfile import update_digest
from gbdt2nn_core.errors import ConfigError, TrainingError
from gbdt2nn_core.host.attribution import independent_column_attributions
from gbdt2nn_core.host.device import in_chunks, module_device, rng_devices, rows_on
from gbdt2nn_core.host.interfaces import Task, Teacher, ValidationRows
from gbdt2nn_core.kit.alignment import Alignment, column_attributions, frozen_batchnorm
from gbdt2nn_core.student.batchnorm import recalibrate_batchnorm, row_batches
from gbdt2nn_core.student.calibration import fit_temperature
from gbdt2nn_core.student.checkpoint import load_checkpoint, save_checkpoint
from gbdt2nn_core.student.disk_rows import DiskRows
from gbdt2nn_core.student.distributed import all_reduce_sum, world
from gbdt2nn_core.student.gradient_clip import GradientClip
from gbdt2nn_core.student.learning_rate import (
    epoch_learning_rate,
    learning_rate_choice,
    learning_rate_for_batch,
    set_learning_rate,
)
from gbdt2nn_core.student.training_controls import TrainingControls
from gbdt2nn_core.student.weight_average import WeightAverage
from gbdt2nn_core.validators import (
    batch_size,
    batch_size_or_auto,
    boolean,
    learning_rate_schedule,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_float_or_auto,
    positive_int,
    unit_interval,
    unit_interval_or_auto,
)

__all__ = [
    "EVAL_CHUNK_ROWS",
    "MONITOR_BATCHNORM_ROWS",
    "AlignmentTargets",
    "AlignmentWeight",
    "EarlyStopping",
    "GradientClip",
    "TargetScaling",
    "TrainingControls",
    "WeightAverage",
    "adamw",
    "alignment_loss",
    "attribution_unit",
    "batch_size",
    "batch_size_for_rows",
    "batch_size_or_auto",
    "boolean",
    "check_finite_loss",
    "config_from_options",
    "epoch_learning_rate",
    "learning_rate_choice",
    "learning_rate_for_batch",
    "learning_rate_schedule",
    "load_checkpoint",
    "monitor_batchnorm_rows",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_float_or_auto",
    "positive_int",
    "recalibrate_batchnorm",
    "require_differentiable",
    "restore_training_state",
    "row_batches",
    "save_checkpoint",
    "set_learning_rate",
    "soft_loss",
    "soft_targets",
    "target_scale",
    "target_scaling",
    "task_loss",
    "training_fingerprint",
    "training_state",
    "unit_interval",
    "unit_interval_or_auto",
    "validation_loss",
    "validation_temperature",
]


Config = TypeVar("Config")


def config_from_options(config_type: type[Config], options: Mapping[str, Any]) -> Config:
    """A student's attrs config from its options; an unknown option is a :class:`ConfigError` that names the
    closest known one ("did you mean") and lists them all."""
    known = [field.name for field in attrs.fields(config_type)]  # type: ignore[arg-type]
    for name in options:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(setting="student option", value=name, fix=f"{hint}use one of {', '.join(known)}")
    return config_type(**options)


#: ``batch_size="auto"``: an epoch of at least this many steps, in batches of these sizes at most and at least.
_STEPS_PER_EPOCH, _LARGEST_AUTO_BATCH, _SMALLEST_AUTO_BATCH = 100, 512, 64


def batch_size_for_rows(rows: int) -> int:
    """The batch size ``"auto"`` resolves to for ``rows`` training rows (per process): the largest power of two that
    still gives an epoch about 100 steps, between 64 and 512.

    A fixed 512 gives small data very few steps: 3 per epoch on digits' 1,300 rows, 29 on California housing's
    14,800 (60 and 580 in a 20-epoch budget), and the student stops far from its teacher; 512 stays from 51,200 rows
    on, where the step count is no longer short.
    """
    target = max(rows // _STEPS_PER_EPOCH, 1)
    size = 1 << (target.bit_length() - 1)  # the largest power of two not above the target
    return min(max(size, _SMALLEST_AUTO_BATCH), _LARGEST_AUTO_BATCH)


def batch_size_choice(batch_size: int | str, rows: int) -> tuple[int, dict[str, Any]]:
    """The rows per step for a student's ``batch_size`` option (a number, or ``"auto"``: :func:`batch_size_for_rows`)
    and ``rows`` training rows per process, with its record for the run's ``student_choices``."""
    if batch_size == "auto":
        size = batch_size_for_rows(rows)
        return size, {"rows": size, "why": f"auto: about 100 steps an epoch over {rows} rows, 64 to 512 rows"}
    return int(batch_size), {"rows": int(batch_size), "why": "as configured"}


#: An alignment weight above this is the likely cause when training diverges (the default is 1).
_LARGE_ALIGNMENT_WEIGHT = 1e3


def check_finite_loss(
    loss: torch.Tensor, which: str, epoch: int | None, lr: float, alignment: Alignment | None
) -> None:
    """Stop at the first non-finite loss with a :class:`TrainingError` naming the setting to lower (training on
    would only spread the NaN). ``epoch`` is 0-based, ``None`` for a stage before the epochs."""
    if bool(torch.isfinite(loss).all()):
        return
    rate = f"the learning rate (--student-option lr, now {lr:g})"
    if alignment is not None and (which == "the alignment loss" or alignment.weight > _LARGE_ALIGNMENT_WEIGHT):
        fix = f"lower the alignment weight (--alignment-weight, now {alignment.weight:g}) or {rate}"
    else:
        fix = f"lower {rate}"
    stage = "the leaf embedding" if epoch is None else f"epoch {epoch + 1} of the student training"
    raise TrainingError(stage=stage, loss=which, fix=fix)


#: Regression targets whose root mean square exceeds this train in units of a power of two near it.
_TARGET_SCALE_FROM = 2.0**10


def target_scale(task: Task, y: np.ndarray) -> float:
    """The unit regression losses are computed in: 1, or for large targets a power of two near their size.

    A target in the billions would make the squared errors overflow 32-bit floats and the first steps
    of AdamW (about ``lr`` per weight) far too small to reach it. The network still outputs the target's own
    units; only the losses are divided by it, exactly, being a power of two. Targets of ordinary size are
    untouched (scale 1).
    """
    if task != "regression":
        return 1.0
    values = np.asarray(y, dtype=np.float64)
    if world().distributed:  # y is this process's shard: the scale of every shard's rows
        summed = all_reduce_sum(torch.tensor([float(np.sum(values**2)), float(values.size)], dtype=torch.float64))
        rms = math.sqrt(float(summed[0]) / float(summed[1])) if float(summed[1]) else 0.0
        return 2.0 ** round(math.log2(rms)) if rms > _TARGET_SCALE_FROM else 1.0
    rms = float(np.sqrt(np.mean(values**2))) if values.size else 0.0
    return 2.0 ** round(math.log2(rms)) if rms > _TARGET_SCALE_FROM else 1.0


@attrs.frozen(kw_only=True)
class TargetScaling:
    """The units a student trains regression targets in: ``(value - offset) / scale``.

    Losses on targets and margins (labels, the teacher's margins, validation) are computed in these units, and
    attributions (differences of margins, so without the offset) are divided by ``scale`` on both sides of the
    alignment term. The network itself predicts in the target's own units: its output layer maps back. Classes
    are never scaled (offset 0, scale 1).
    """

    offset: float = 0.0
    scale: float = 1.0
    #: Why these values: recorded with the student's choices (``history["choices"]``, the run folder's config).
    reason: str = "classification: margins are trained as they are"

    def apply(self, values: torch.Tensor) -> torch.Tensor:
        """The network's margins (in the target's units) in training units."""
        if self.offset == 0.0 and self.scale == 1.0:
            return values
        return (values - self.offset) / self.scale

    def targets(self, task: Task, y: np.ndarray) -> torch.Tensor:
        """Labels as a student trains on them: class indices (multiclass), 0/1 floats (binary), or regression
        targets in training units (scaled in float64 first, so that a large mean costs no precision)."""
        if task == "multiclass":
            return torch.tensor(np.asarray(y), dtype=torch.long)
        return self.margins(y) if task == "regression" else torch.tensor(np.asarray(y), dtype=torch.float32)

    def margins(self, values: np.ndarray) -> torch.Tensor:
        """Margins given as numbers (e.g. the teacher's, as soft targets) in training units, float32 (scaled in
        float64 first)."""
        return torch.tensor((np.asarray(values, dtype=np.float64) - self.offset) / self.scale, dtype=torch.float32)

    def describe(self) -> dict[str, Any]:
        """The resolved values, JSON-ready."""
        return {"offset": self.offset, "scale": self.scale, "why": self.reason}


def target_scaling(task: Task, y: np.ndarray, *, standardize: bool) -> TargetScaling:
    """How a student trains on ``y``: standardised regression targets (mean 0, standard deviation 1 over the
    training rows) when ``standardize``, else only the overflow guard of :func:`target_scale`.

    Standardising makes training independent of the target's unit (a price in cents trains as the same price in
    dollars: the same initial steps of AdamW, the same balance between task, embedding and alignment losses).
    """
    if task != "regression":
        return TargetScaling()
    values = np.asarray(y, dtype=np.float64)
    if not standardize:
        scale = target_scale(task, values)
        reason = "standardize_targets off: the target's own units" + (
            f", losses divided by {scale:g} (a large target)" if scale != 1.0 else ""
        )
        return TargetScaling(scale=scale, reason=reason)
    if world().distributed:  # y is this process's shard: the mean and spread of every shard's rows
        moments = torch.tensor([values.sum(), (values**2).sum(), float(values.size)], dtype=torch.float64)
        total, squares, count = all_reduce_sum(moments).tolist()
        mean = total / count if count else 0.0
        std = math.sqrt(max(squares / count - mean**2, 0.0)) if count else 0.0
    else:
        mean = float(values.mean()) if values.size else 0.0
        std = float(values.std()) if values.size else 0.0
    if not (math.isfinite(std) and std > 0):
        # a constant target: any unit fits it; keep the offset so that the loss starts at the constant
        return TargetScaling(offset=mean, reason="standardised: constant training target, scale kept at 1")
    return TargetScaling(offset=mean, scale=std, reason="standardised: (y - mean) / std of the training targets")


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


def require_differentiable(alignment: Alignment) -> None:
    """Joint training back-propagates through the attributor: refuse one that cannot (before any training)."""
    if not alignment.attributor.differentiable:
        raise ConfigError(
            setting="attributor",
            value=type(alignment.attributor).__name__,
            fix="joint training needs a differentiable attributor (e.g. structure or gradient-x-input)",
        )


def alignment_loss(
    alignment: Alignment,
    module: nn.Module,
    z: torch.Tensor,
    aggregation: torch.Tensor,
    teacher_attributions: torch.Tensor,
    *,
    scale: float = 1.0,
) -> torch.Tensor:
    """``L_align`` of a batch: the student's per-column attributions of ``z`` against the teacher's, differentiable.

    ``teacher_attributions`` are the teacher's of the same rows, ``(n, d)`` or ``(n, k, d)``, in units of
    ``scale`` (:attr:`TargetScaling.scale`: attributions are differences of margins, so no offset); the student's
    are divided by it here, so that both sides are compared in the same training units.

    A :attr:`~gbdt2nn_core.host.interfaces.Attributor.monte_carlo` attributor is called twice, for independent
    estimates ``a₁, a₂`` of the student's attributions ``a``, and the loss compares their mean with the teacher's
    ``φ``. The squared error of a noisy estimate is biased: ``E‖â − φ‖² = ‖a − φ‖² + Var(â)``, and the variance
    term's gradient trains the network to make its gradients the same along every path and baseline, a smoothness
    penalty that costs accuracy (california, expected gradients, seeds 0–1: test RMSE 6–11 % above the plain
    student's at 8 draws a step). For a quadratic loss the core therefore subtracts the estimates' own noise,
    ``L(φ + a₁ − a₂, φ) / 4``, which leaves ``⟨a₁ − φ, a₂ − φ⟩`` (weighted as the loss weighs): an unbiased
    estimate of the exact term with an unbiased gradient (RMSE −0.7 to +2.8 % from the plain student's at 8 draws).
    """
    teacher = teacher_attributions.reshape(-1, teacher_attributions.shape[-1])
    attributor = alignment.attributor
    with frozen_batchnorm(module):
        if not attributor.monte_carlo:
            student = column_attributions(attributor, module, z, aggregation, create_graph=True) / scale
            return alignment.loss(student.reshape(-1, student.shape[-1]), teacher)
        first, second = (
            estimate.reshape(-1, estimate.shape[-1]) / scale
            for estimate in independent_column_attributions(
                attributor, module, z, aggregation, estimates=2, create_graph=True
            )
        )
    value = alignment.loss((first + second) / 2, teacher)
    if getattr(alignment.loss, "quadratic", False) is True:
        value = value - alignment.loss(teacher + (first - second), teacher) / 4
    return value


def adamw(parameters: Any, *, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """The students' optimizer: AdamW, as one fused kernel over every parameter where torch has one (CPU and CUDA
    floating-point tensors; torch ≥ 2.4 on CPU). The default for-loop implementation costs 3.4 ms a step on one CPU
    thread for GBDT2NN's ~600k parameters, the fused one 0.5 ms (one plain training step: ~15 ms)."""
    listed = list(parameters)
    fusable = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in listed)
    return torch.optim.AdamW(listed, lr=lr, weight_decay=weight_decay, fused=True if fusable and listed else None)


def attribution_unit(teacher_attributions: np.ndarray) -> float:
    """The size of the teacher's attributions of the aligned rows: their root mean square over rows, outputs and
    columns (1 when they are all 0).

    The alignment term measured in this unit is a *relative* error, the same size on every dataset for an equally
    good imitation. In the target's own units it is not: a per-column attribution shrinks with the number of
    columns and outputs it is spread over (TreeSHAP's RMS was 0.32 on digits' 10 classes × 64 pixels, 0.80 on
    adult, 0.91 on diamonds' cut), so one λ meant a 6× weaker term on digits than on adult, where the term's
    loss, 0.10, was 5 % of the task loss and alignment moved Spearman by 0.02.
    """
    squares, count = float(np.sum(np.square(teacher_attributions, dtype=np.float64))), float(teacher_attributions.size)
    if world().distributed:  # these are this process's aligned rows: the size of every process's rows
        squares, count = all_reduce_sum(torch.tensor([squares, count], dtype=torch.float64)).tolist()
    size = math.sqrt(squares / count) if count else 0.0
    return size if size > 0 and math.isfinite(size) else 1.0


class AlignmentTargets:
    """The alignment term of a batch, over the batch's aligned rows (:attr:`Alignment.rows`).

    Holds the teacher's attributions of the aligned training rows, looked up by training-row position, so that a
    student's loop asks for the term of a batch by the batch's training-row positions (:meth:`batch_loss`).
    """

    def __init__(
        self,
        alignment: Alignment,
        n_rows: int,
        aggregation: torch.Tensor,
        *,
        scale: float = 1.0,
        teacher_units: bool = False,
    ) -> None:
        # with teacher_units, both sides are further divided by the teacher attributions' size (attribution_unit)
        self.unit = attribution_unit(alignment.teacher_attributions / scale) if teacher_units else 1.0
        # every tensor lives where ``aggregation`` does (the training device), copied there once
        self.alignment, self.aggregation, self.scale = alignment, aggregation, scale * self.unit
        device = aggregation.device
        self.attributions = rows_on(alignment.teacher_attributions / self.scale, device, torch.float32)
        aligned = alignment.training_rows(n_rows)
        if len(aligned) != len(self.attributions) or (len(aligned) and aligned[-1] >= n_rows):
            raise ConfigError(
                setting="Alignment.rows",
                value=aligned.shape,
                fix=f"give one teacher attribution per aligned row, at positions below {n_rows} (the training rows)",
            )
        # every row aligned: the batch is used as it is (no gather), which keeps the arithmetic of a full alignment
        self.every_row = len(aligned) == n_rows
        position = np.full(n_rows, -1, dtype=np.int64)
        position[aligned] = np.arange(len(aligned))
        self.position = rows_on(position, device)

    def batch_loss(self, module: nn.Module, z: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, int] | None:
        """``(L_align, m)``: the term over the ``m`` aligned rows of the batch of training rows ``rows`` (encoded
        as ``z``, one row each), back-propagatable; ``None`` when no row of the batch is aligned."""
        if self.every_row:
            teacher = self.attributions[rows]
        else:
            positions = self.position[rows]
            which = torch.nonzero(positions >= 0).squeeze(1)
            if len(which) == 0:
                return None
            teacher = self.attributions[positions[which]]
            if len(which) < len(rows):  # a batch of aligned rows only (the default layout) is used as it is
                z = z[which]
        loss = alignment_loss(self.alignment, module, z, self.aggregation, teacher, scale=self.scale)
        return loss, len(z)

    def aligned_count(self, rows: torch.Tensor) -> int:
        """How many of the training rows ``rows`` are aligned: the ``m`` that :meth:`batch_loss` would return."""
        return len(rows) if self.every_row else int((self.position[rows] >= 0).sum())

    def empty_loss(self, module: nn.Module, z: torch.Tensor) -> torch.Tensor:
        """A term of value 0 for a batch without aligned rows, through the same graph as :meth:`batch_loss`.

        Under ``DistributedDataParallel`` every process must run the same backward graph (collectives are matched
        by their order): when another process's batch carries the term, this one computes it on its first row and
        multiplies it by zero.
        """
        teacher = torch.zeros((1, *self.attributions.shape[1:]))  # the shape of one row's, even with none
        return 0.0 * alignment_loss(self.alignment, module, z[:1], self.aggregation, teacher, scale=self.scale)


class AlignmentWeight:
    """λ of each aligned batch: the configured weight, capped so that the alignment term stays at most ``cap``
    times the rest of the loss (task, plus GBDT2NN's embedding term), so that alignment never outweighs the task.

    The two losses are tracked as exponential moving averages of their batch values (detached, in training units,
    from the first aligned batch on), so the cap follows training without a second backward pass; ``cap = 0``
    turns it off (λ as configured). Every student's loop asks :meth:`weight` once per aligned batch and reports
    the mean λ of each epoch (:meth:`epoch_mean`); :meth:`describe` is the resolved choice for the run's record.
    """

    #: Weight of the newest batch in the moving averages (about the last 20 batches count).
    SMOOTHING = 0.05

    #: What a back-off multiplies λ by.
    BACKOFF = 0.5

    def __init__(self, weight: float, cap: float, *, backoff: bool = False) -> None:
        self.configured, self.cap, self.backoff = weight, cap, backoff
        self.task: float | None = None
        self.alignment: float | None = None
        self.used: list[float] = []  # this epoch's λ per aligned batch
        self.epochs: list[float] = []  # mean λ of every finished epoch
        #: What λ (after the cap) is multiplied by: halved by every back-off (:meth:`end_epoch`).
        self.factor = 1.0
        self.backoff_epochs: list[int] = []
        # the previous epoch's validation task loss and mean alignment loss, which :meth:`end_epoch` compares with
        self.last: tuple[float, float] | None = None

    def weight(self, rest_loss: torch.Tensor, alignment_loss: torch.Tensor) -> float:
        """λ for a batch whose non-alignment loss is ``rest_loss`` and alignment loss ``alignment_loss``."""
        rest, aligned = float(rest_loss.detach()), float(alignment_loss.detach())
        if self.task is None or self.alignment is None:
            self.task, self.alignment = rest, aligned
        else:
            self.task += self.SMOOTHING * (rest - self.task)
            self.alignment += self.SMOOTHING * (aligned - self.alignment)
        weight = self.configured
        if self.cap > 0 and self.alignment > 0 and math.isfinite(self.alignment):
            weight = min(weight, self.cap * self.task / self.alignment)
        weight *= self.factor
        self.used.append(weight)
        return weight

    def end_epoch(self, epoch: int, validation_loss: float | None, alignment_loss: float | None) -> None:
        """With ``backoff``: halve λ for the epochs to come when this ``epoch``'s validation task loss rose above the
        previous epoch's while its (training) alignment loss fell — alignment then gains at the task's cost.

        Without validation rows or aligned batches nothing changes.
        """
        if validation_loss is None or alignment_loss is None:
            return
        if self.backoff and self.last is not None:
            last_validation, last_alignment = self.last
            if validation_loss > last_validation and alignment_loss < last_alignment:
                self.factor *= self.BACKOFF
                self.backoff_epochs.append(epoch)
        self.last = (validation_loss, alignment_loss)

    def epoch_mean(self) -> float | None:
        """The mean λ of the epoch's aligned batches (``None`` without any); starts the next epoch's record."""
        mean = sum(self.used) / len(self.used) if self.used else None
        if mean is not None:
            self.epochs.append(mean)
        self.used = []
        return mean

    def describe(self) -> dict[str, Any]:
        """The resolved choice: the configured λ, the cap and the λ actually used (mean over the epochs)."""
        used = sum(self.epochs) / len(self.epochs) if self.epochs else None
        if self.cap <= 0:
            why = "alignment_cap off: the configured weight on every aligned batch"
        else:
            why = f"capped at {self.cap:g}x the rest of the loss (task and embedding terms; moving averages)"
        if self.backoff:
            why += "; halved after every epoch whose validation task loss rose while the alignment loss fell"
        return {
            "configured": self.configured,
            "cap": self.cap,
            "mean_used": used,
            "backoff": self.backoff,
            "backoff_epochs": list(self.backoff_epochs),
            "final_factor": self.factor,
            "why": why,
        }

    def checkpoint(self) -> dict[str, Any]:
        """What a per-epoch checkpoint needs to continue exactly."""
        return {
            "task": self.task,
            "alignment": self.alignment,
            "epochs": list(self.epochs),
            "factor": self.factor,
            "backoff_epochs": list(self.backoff_epochs),
            "last": self.last,
        }

    def resume(self, state: Mapping[str, Any]) -> None:
        """Put :meth:`checkpoint`'s content back."""
        self.task, self.alignment, self.epochs = state["task"], state["alignment"], list(state["epochs"])
        self.factor, self.backoff_epochs = float(state["factor"]), list(state["backoff_epochs"])
        last = state["last"]
        self.last = None if last is None else (float(last[0]), float(last[1]))


def training_fingerprint(
    config: Any,
    teacher: Teacher,
    z: np.ndarray,
    y: np.ndarray,
    alignment: Alignment | None,
    validation: ValidationRows | None = None,
    *,
    world_size: int = 1,
) -> str:
    """Identifies a training setup (an attrs ``config``, the teacher, the rows, the alignment, the validation
    rows, the number of processes), so that a checkpoint is only resumed by the run that wrote it."""
    digest = hashlib.sha256()
    if world_size > 1:  # the rows are then rank 0's shard: the same shard of another split is another run
        digest.update(f"world_size:{world_size}".encode())
    digest.update(json.dumps(attrs.asdict(config), sort_keys=True, default=str).encode())
    digest.update(teacher.fingerprint().encode())
    update_digest(digest, z)  # a chunk at a time: z may be larger than memory would like (an on-disk matrix)
    update_digest(digest, y)
    if alignment is not None:
        described = (
            component_settings(alignment.attributor),
            component_settings(alignment.loss),
            alignment.weight,
            alignment.fraction,
            alignment.batches,
        )
        digest.update(repr(described).encode())
        update_digest(digest, alignment.teacher_attributions)
        if alignment.rows is not None:
            digest.update(b"rows:" + np.ascontiguousarray(alignment.rows, dtype=np.int64).tobytes())
    if validation is not None:
        digest.update(b"validation:")  # the same digest as one update of the prefix and the rows' bytes
        update_digest(digest, validation.z)
        update_digest(digest, validation.y)
    return digest.hexdigest()


def component_settings(component: object) -> str:
    """An attributor or alignment loss with its options, the same text in every process that builds it alike: its
    own ``repr`` (every plugin's names its options, e.g. ``PairwiseRankLoss(temperature=1.0, ...)``), a function's
    qualified name, else the class's name — never an address, which would make every run another setup."""
    if isinstance(component, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return f"{component.__module__}.{component.__qualname__}"
    if type(component).__repr__ is not object.__repr__:
        return _ADDRESS.sub("", repr(component))
    return f"{type(component).__module__}.{type(component).__qualname__}"


#: The `` at 0x7f...`` of a default ``repr`` nested inside a component's own (e.g. a function option).
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def training_state(module: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator) -> dict[str, Any]:
    """What a per-epoch checkpoint needs to continue exactly: weights, optimizer moments, both random streams (and
    the GPU's, for a module on one: its dropout draws there)."""
    state = {
        "module": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
    }
    device = module_device(module)
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def restore_training_state(
    state: Mapping[str, Any], module: nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> None:
    """Put :func:`training_state`'s content back."""
    module.load_state_dict(state["module"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    device = module_device(module)
    if device.type == "cuda" and "cuda_rng" in state:  # written on a GPU, resumed on one
        torch.cuda.set_rng_state(state["cuda_rng"], device)


#: The most training rows (over every process) on which the validation monitor re-estimates BatchNorm's statistics
#: after an epoch (:func:`validation_loss`): a seeded sample when there are more. The monitor only ranks epochs for
#: early stopping, and a loss measured after a smaller sample moves nearly alike every epoch (0.02–2.5 % off the
#: 16,384-row one), so the ranking survives: replayed on plain students of six suite datasets, 17 runs
#: (benchmarks/monitor_rows.py, BENCHMARKS.md), 4,096 rows kept the epoch 16,384 kept in 16, the other within
#: 0.02 % of its validation loss (8,192: 16 too; 2,048: 12), for 0.16 s an epoch on adult instead of
#: 0.43 s. A forward over every row cost 1 s of a 3.4 s plain epoch there. The BatchNorm pass after the last epoch
#: still uses every row.
MONITOR_BATCHNORM_ROWS = 4_096


#: Rows per forward pass where a student scores rows in eval mode during a fit (:func:`validation_loss` after every
#: epoch, :func:`validation_temperature`). Each pass's activations are freed right after it, but 4,096-row passes (16
#: MiB a hidden layer for GBDT2NN's default 10 groups × 100) left their freed blocks in the C allocator's heap, which
#: grew epoch after epoch: a plain distillation of adult peaked at 853 MiB, about 816 MiB with 2,048-row passes
#: (BENCHMARKS.md), no slower (the serving path's chunk, ``pipeline.margins.SERVING_CHUNK``, is 2,048 rows for speed).
EVAL_CHUNK_ROWS = 2_048


def monitor_batchnorm_rows(rows: torch.Tensor | DiskRows, most_rows: int | None = None) -> torch.Tensor | DiskRows:
    """``rows``, or a seeded sample of them (in their order) when this process holds more than its share of
    ``most_rows`` (:data:`MONITOR_BATCHNORM_ROWS` when not given)."""
    limit = math.ceil((MONITOR_BATCHNORM_ROWS if most_rows is None else most_rows) / world().size)
    if len(rows) <= limit:
        return rows
    sample = np.sort(np.random.default_rng(0).choice(len(rows), size=limit, replace=False))
    return rows[torch.as_tensor(sample, device=rows.device if isinstance(rows, torch.Tensor) else None)]


def validation_loss(
    task: Task,
    module: nn.Module,
    z: torch.Tensor,
    y: torch.Tensor,
    *,
    scaling: TargetScaling | None = None,
    batchnorm_rows: torch.Tensor | DiskRows | None = None,
    batch_size: int = 512,
) -> float:
    """The task loss (labels only: never the embedding or alignment term) of ``module`` on validation rows, in eval
    mode; ``y`` is in training units (:meth:`TargetScaling.targets`) and the margins are put in them by
    ``scaling``, as in training.

    With ``batchnorm_rows`` (the training rows), the loss is that of the network as it will be served: BatchNorm
    statistics re-estimated on those rows first (:func:`recalibrate_batchnorm`, as after the last epoch; on a sample
    of at most :data:`MONITOR_BATCHNORM_ROWS` of them), then put back, so that training goes on unchanged. Without
    it a joint student's lagging running statistics make the loss misleading (California, structure + mse: the best
    epoch came out as epoch 2 of 20).
    """
    if batchnorm_rows is not None:
        saved = {name: buffer.clone() for name, buffer in module.named_buffers()}
        try:
            with torch.random.fork_rng(devices=rng_devices(module_device(module))):
                recalibrate_batchnorm(module, monitor_batchnorm_rows(batchnorm_rows), batch_size)
            return validation_loss(task, module, z, y, scaling=scaling)
        finally:
            with torch.no_grad():
                for name, buffer in module.named_buffers():
                    buffer.copy_(saved[name])
    was_training = module.training
    module.eval()
    loss = task_loss(task)
    scaling = scaling or TargetScaling()
    with torch.no_grad():
        margin = scaling.apply(in_chunks(module, z, EVAL_CHUNK_ROWS))
        loss_value = float(loss(margin, y)) if len(z) else 0.0
    module.train(was_training)
    if world().distributed:
        # every process holds the same validation rows and weights; the mean makes the value (and early stopping's
        # decision) bit-identical everywhere, which a process stopping alone would turn into a deadlock
        loss_value = float(all_reduce_sum(torch.tensor([loss_value], dtype=torch.float64))[0]) / world().size
    return loss_value


class EarlyStopping:
    """Stop when the validation task loss has not improved for ``patience`` epochs; keep the best epoch's weights.

    Every student's loop calls :meth:`update` after an epoch and :meth:`should_stop`, then :meth:`finish` once,
    which puts the best weights back (before the BatchNorm pass). The best epoch is the first one with the lowest
    validation loss; without validation rows (``loss None``) nothing is monitored and the budget is trained.
    """

    def __init__(self, *, enabled: bool, patience: int, budget: int, warmup: int = 0) -> None:
        # ``warmup``: epochs in which the loss itself still changes (GBDT2NN's β schedule moves weight from the
        # embedding loss to the task loss); the patience counts from the end of the warm-up at the earliest, so
        # that a flat validation loss while the task loss is still starved does not stop training
        self.enabled, self.patience, self.budget, self.warmup = enabled, patience, budget, warmup
        self.best_epoch: int | None = None
        self.best_loss = math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.epochs_run = 0

    def update(self, epoch: int, loss: float | None, module: nn.Module) -> None:
        """Record ``epoch`` (0-based) and its validation ``loss``; copy the weights when it is the best so far."""
        self.epochs_run = epoch + 1
        if loss is not None and loss < self.best_loss:
            self.best_epoch, self.best_loss = epoch, loss
            self.best_state = {name: tensor.detach().clone() for name, tensor in module.state_dict().items()}

    def should_stop(self) -> bool:
        """Whether ``patience`` epochs have passed since the best one and the warm-up (only when enabled and
        monitoring)."""
        if not self.enabled or self.best_epoch is None:
            return False
        return self.epochs_run - 1 - max(self.best_epoch, self.warmup - 1) >= self.patience

    def finish(self, module: nn.Module) -> dict[str, Any]:
        """Restore the best epoch's weights (when enabled) and describe the outcome for the history."""
        restored = self.enabled and self.best_state is not None
        if restored:
            assert self.best_state is not None
            module.load_state_dict(self.best_state)
        if self.best_epoch is None:
            reason = "no validation rows: trained the whole budget"
        elif self.enabled and self.epochs_run < self.budget:
            reason = f"no improvement of the validation loss for {self.patience} epochs"
        else:
            reason = "epoch budget reached"
        return {
            "early_stopping": self.enabled,
            "patience": self.patience,
            "warmup": self.warmup,
            "budget": self.budget,
            "epochs_run": self.epochs_run,
            "best_epoch": self.best_epoch,
            "best_validation_loss": None if self.best_epoch is None else self.best_loss,
            "restored_best": restored,
            "stopped": reason,
        }

    def checkpoint(self) -> dict[str, Any]:
        """What a per-epoch checkpoint needs to continue early stopping exactly."""
        return {
            "best_epoch": self.best_epoch,
            "best_loss": self.best_loss,
            "best_state": self.best_state,
            "epochs_run": self.epochs_run,
        }

    def resume(self, state: Mapping[str, Any]) -> None:
        """Put :meth:`checkpoint`'s content back."""
        self.best_epoch, self.best_loss = state["best_epoch"], float(state["best_loss"])
        self.best_state, self.epochs_run = state["best_state"], int(state["epochs_run"])


def validation_temperature(task: Task, module: nn.Module, validation: ValidationRows | None) -> float:
    """Temperature scaling of a trained classifier, fitted on its validation rows (1 for regression or without
    validation rows); see :mod:`gbdt2nn_core.student.calibration`."""
    if task == "regression" or validation is None:
        return 1.0
    module.eval()
    z = rows_on(validation.z, module_device(module), torch.float32)
    with torch.no_grad():
        margin = in_chunks(module, z, EVAL_CHUNK_ROWS)
    return fit_temperature(task, margin.double().cpu().numpy(), np.asarray(validation.y))
