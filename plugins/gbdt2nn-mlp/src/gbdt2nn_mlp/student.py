"""The ``mlp`` student: one plain MLP from the encoded row to the margins, trained like GBDT2NN minus the trees.

It sees exactly what GBDT2NN sees (the core's encoded, centred rows ``z``), learns from the labels and the
teacher's margins (``teacher_weight`` mixes the two, as GBDT2NN's option of that name does), and is aligned
with the teacher's explanations through the core's alignment term. What it lacks is the tree structure: no
grouping, no per-group feature selection, no leaf embeddings. Comparing it with GBDT2NN at equal training
budget shows what that structure is worth.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Literal

import attrs
import numpy as np
import torch
from torch import nn

from gbdt2nn_core.errors import ConfigError, NotFittedError
from gbdt2nn_core.host.attribution import LinearColumns
from gbdt2nn_core.host.device import rng_devices, rows_on
from gbdt2nn_core.host.interfaces import Student, StudentInputs, Task
from gbdt2nn_core.kit.alignment import Alignment
from gbdt2nn_core.progress import NullProgress
from gbdt2nn_core.student.calibration import saved_temperature, temperature_state
from gbdt2nn_core.student.distributed import (
    all_reduce_sum,
    broadcast_state,
    data_parallel,
    synchronised_batchnorm,
    world,
)
from gbdt2nn_core.student.joint_step import JointStep, data_parallel_loss, epoch_plan, epoch_shares, fitting_rows
from gbdt2nn_core.student.kit import (
    AlignmentTargets,
    AlignmentWeight,
    EarlyStopping,
    TargetScaling,
    TrainingControls,
    adamw,
    batch_size_choice,
    batch_size_or_auto,
    boolean,
    check_finite_loss,
    config_from_options,
    learning_rate_schedule,
    load_checkpoint,
    monitor_batchnorm_rows,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    recalibrate_batchnorm,
    require_differentiable,
    restore_training_state,
    save_checkpoint,
    soft_loss,
    soft_targets,
    target_scaling,
    task_loss,
    training_fingerprint,
    training_state,
    unit_interval,
    validation_loss,
    validation_temperature,
)

__all__ = ["MLPConfig", "MLPModule", "MLPStudent"]


def _dropout(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0.0 <= value < 1.0):
        raise ConfigError(setting=attribute.name, value=value, fix="use a number in [0, 1), e.g. 0.1")


def _hidden(value: Any) -> tuple[int, ...]:
    sizes = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes):
        raise ConfigError(setting="hidden", value=value, fix="give one or more positive layer widths, e.g. [256, 128]")
    return sizes


@attrs.frozen(kw_only=True)
class MLPConfig:
    """Settings of the MLP student. The defaults give it about GBDT2NN's default training budget."""

    hidden: tuple[int, ...] = attrs.field(default=(256, 128, 64), converter=_hidden)
    dropout: float = attrs.field(default=0.0, validator=_dropout)
    batch_norm: bool = attrs.field(default=True, validator=boolean)
    #: The epoch budget: training stops earlier when ``early_stopping`` sees no progress (see ``patience``).
    epochs: int = attrs.field(default=20, validator=positive_int)
    #: Stop when the task loss on the validation rows has not improved for ``patience`` epochs and restore the
    #: best epoch's weights (as GBDT2NN does; :class:`~gbdt2nn_core.student.kit.EarlyStopping`).
    early_stopping: bool = attrs.field(default=True, validator=boolean)
    patience: int = attrs.field(default=3, validator=positive_int)
    #: Monitor, keep and serve an exponential moving average of the weights over about this many epochs of steps
    #: (as GBDT2NN's option of that name; :class:`~gbdt2nn_core.student.kit.WeightAverage`); 0 = the last step's.
    weight_average_epochs: float = attrs.field(default=0.5, validator=non_negative_float)
    #: Clip each step's gradient at this multiple of the median gradient norm of the steps before it (as GBDT2NN's
    #: option of that name; :class:`~gbdt2nn_core.student.kit.GradientClip`); 0 = off.
    clip_gradients: float = attrs.field(default=2.0, validator=non_negative_float)
    #: Fit a temperature on the validation rows after training (classification), so that probabilities are as
    #: confident as they are right; margins stay uncalibrated.
    calibrate: bool = attrs.field(default=True, validator=boolean)
    #: Rows per training step; ``"auto"`` chooses it from the number of training rows as GBDT2NN does
    #: (:func:`~gbdt2nn_core.student.kit.batch_size_for_rows`: about 100 steps an epoch, 64 to 512 rows), recorded in
    #: ``history["choices"]["batch_size"]``; 512 was the fixed default before.
    batch_size: int | Literal["auto"] = attrs.field(default="auto", validator=batch_size_or_auto)
    lr: float = attrs.field(default=1e-3, validator=positive_float)
    #: The learning rate over the epochs (as GBDT2NN's option of that name): ``"constant"`` keeps ``lr``,
    #: ``"cosine"`` anneals it towards 0 over the epoch budget; each epoch's rate is in its history record.
    lr_schedule: Literal["constant", "cosine"] = attrs.field(default="constant", validator=learning_rate_schedule)
    weight_decay: float = attrs.field(default=1e-6, validator=non_negative_float)
    #: Train regression targets standardised, ``(y - mean) / std`` of the training rows; the output layer maps back
    #: to the target's units (``False``: the target's own units; see
    #: :func:`~gbdt2nn_core.student.kit.target_scaling`).
    standardize_targets: bool = attrs.field(default=True, validator=boolean)
    #: Cap λ on each aligned batch so that the alignment term is at most this multiple of the task loss (as
    #: GBDT2NN's option of that name; :class:`~gbdt2nn_core.student.kit.AlignmentWeight`); 0 = off.
    alignment_cap: float = attrs.field(default=1.0, validator=non_negative_float)
    #: Halve λ after an epoch whose validation task loss rose while the alignment loss fell (as GBDT2NN's option of
    #: that name; :meth:`~gbdt2nn_core.student.kit.AlignmentWeight.end_epoch`); ``False`` keeps λ (capped).
    alignment_backoff: bool = attrs.field(default=True, validator=boolean)
    #: Measure the alignment term in units of the teacher's attribution size (as GBDT2NN's option of that name;
    #: :func:`~gbdt2nn_core.student.kit.attribution_unit`); ``False``: the margins' training units.
    alignment_in_teacher_units: bool = attrs.field(default=True, validator=boolean)
    #: Share of the loss that fits the teacher's margins (logit matching) instead of the labels.
    teacher_weight: float = attrs.field(default=0.5, validator=unit_interval)
    #: Re-estimate BatchNorm statistics on the training rows after the last epoch (as GBDT2NN does).
    recalibrate_batchnorm: bool = attrs.field(default=True, validator=boolean)
    seed: int = attrs.field(default=0, validator=non_negative_int)


class MLPModule(nn.Module):
    """``z (n, D) → margins (n,)`` or ``(n, k)``: Linear → [BatchNorm] → ReLU → [Dropout] per hidden layer, then a
    linear output layer whose values are mapped to the target's units (``output · output_scale + output_offset``:
    the training units of :class:`~gbdt2nn_core.student.kit.TargetScaling` back to the target's)."""

    if TYPE_CHECKING:  # the buffers registered in __init__, typed for mypy
        output_scale: torch.Tensor
        output_offset: torch.Tensor

    def __init__(self, n_inputs: int, n_outputs: int, hidden: tuple[int, ...], *, dropout: float, batch_norm: bool):
        super().__init__()
        self.register_buffer("output_scale", torch.tensor(1.0))
        self.register_buffer("output_offset", torch.tensor(0.0))
        self.n_inputs, self.n_outputs = n_inputs, n_outputs
        layers: list[nn.Module] = []
        width = n_inputs
        for size in hidden:
            layers.append(nn.Linear(width, size))
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, n_outputs))
        self.layers = nn.Sequential(*layers)

    def map_back(self, scaling: TargetScaling) -> None:
        """Make the output layer map training units back to the target's units."""
        with torch.no_grad():
            self.output_scale.fill_(scaling.scale)
            self.output_offset.fill_(scaling.offset)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.layers(z) * self.output_scale + self.output_offset
        return out[:, 0] if self.n_outputs == 1 else out

    def column_first_layer(self, z: torch.Tensor, aggregation: torch.Tensor) -> LinearColumns:
        """The first linear map of rows ``z`` known per input column: the
        :class:`~gbdt2nn_core.host.attribution.FirstLayerModel` capability that attributors' fast paths use."""
        first = self.layers[0]
        assert isinstance(first, nn.Linear)  # __init__ always starts with one
        return LinearColumns(
            z, aggregation, first.weight.to(z.dtype).t(), first.bias.to(z.dtype), (first.out_features,)
        )

    def after_first_layer(self, first: torch.Tensor) -> torch.Tensor:
        """Margins from the first linear map's output ``(n, hidden[0])``: the layers after it."""
        out: torch.Tensor = self.layers[1:](first) * self.output_scale + self.output_offset
        return out[:, 0] if self.n_outputs == 1 else out


class MLPStudent(Student):
    """A plain MLP distilled from a teacher; options are the fields of :class:`MLPConfig`."""

    supports_data_parallel = True

    def __init__(self, **options: Any) -> None:
        self.config = config_from_options(MLPConfig, options)
        self.module_: MLPModule | None = None
        self.history_: list[dict[str, Any]] = []
        self.stopping_: dict[str, Any] = {}
        #: What the student chose for itself and why (``history["choices"]``, the run folder's config.json).
        self.choices_: dict[str, Any] = {}

    # ------------------------------------------------------------------ the Student contract
    @property
    def module(self) -> MLPModule:
        if self.module_ is None:
            raise NotFittedError(component="MLPStudent", method="module", fix="call fit() first, or load a saved one")
        return self.module_

    @property
    def n_outputs(self) -> int:
        return self.module.n_outputs

    @property
    def history(self) -> dict[str, Any]:
        return {
            "epochs": [dict(record) for record in self.history_],
            "stopping": dict(self.stopping_),
            "choices": dict(self.choices_),
        }

    def options(self) -> dict[str, Any]:
        return attrs.asdict(self.config)

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        module = self.module
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in module.state_dict().items()}
        description = {
            "n_inputs": module.n_inputs,
            "n_outputs": module.n_outputs,
            "calibration": temperature_state(self.temperature),
        }
        return description, tensors

    def load_state(self, description: dict[str, Any], tensors: dict[str, torch.Tensor]) -> MLPStudent:
        module = self._new_module(int(description["n_inputs"]), int(description["n_outputs"]))
        # a student saved before the output mapping existed predicted in the target's units directly
        unmapped = {"output_scale": torch.tensor(1.0), "output_offset": torch.tensor(0.0)}
        module.load_state_dict({**unmapped, **tensors}, strict=True)
        self.module_ = module.eval()
        self.temperature = saved_temperature(description)
        return self

    def _new_module(self, n_inputs: int, n_outputs: int) -> MLPModule:
        cfg = self.config
        return MLPModule(n_inputs, n_outputs, cfg.hidden, dropout=cfg.dropout, batch_norm=cfg.batch_norm)

    # ------------------------------------------------------------------ training
    def fit(self, inputs: StudentInputs) -> MLPStudent:
        """Train on ``inputs``: labels and the teacher's margins, plus the alignment term when there is one.

        With several processes (``gbdt2nn distill --nproc``, torchrun) ``inputs`` holds this process's shard and
        the network trains data-parallel as GBDT2NN does (:mod:`gbdt2nn_core.student.joint_step`): the same step as
        one process on the global batch, BatchNorm on its moments, checkpoints written by rank 0.
        """
        # seed torch for this fit only: the caller's global random state is restored afterwards
        with torch.random.fork_rng(devices=rng_devices(inputs.device)):
            return self._fit(inputs)

    def _fit(self, inputs: StudentInputs) -> MLPStudent:
        cfg, task, alignment = self.config, inputs.task, inputs.alignment
        progress = inputs.progress or NullProgress()
        # with several processes the rows are this process's shard (see gbdt2nn_core.student.distributed)
        processes = world()
        n_all = fitting_rows(len(inputs.z))
        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        margin = np.asarray(inputs.teacher_margin, dtype=np.float64)
        # the network and every matrix a step reads live on the run's device, copied there whole, once
        device = torch.device(inputs.device)
        module = self._new_module(inputs.z.shape[1], margin.shape[1] if margin.ndim == 2 else 1)
        if not processes.leader:
            # the network starts from rank 0's weights (DistributedDataParallel broadcasts them); every other process
            # draws its own dropout masks, so that rows at the same position of two shards do not share one
            torch.manual_seed(cfg.seed + processes.rank)
        scaling = target_scaling(task, inputs.y, standardize=cfg.standardize_targets)  # over every shard's rows
        module.map_back(scaling)  # before the move: the mapping's buffers go to the device with the weights
        module.to(device)
        self.choices_ = {"targets": scaling.describe()}
        z = rows_on(inputs.z, device, torch.float32)
        loss = _TaskLoss(cfg, task, module, scaling, inputs.y, margin, device)
        targets = None
        weight = (
            AlignmentWeight(alignment.weight, cfg.alignment_cap, backoff=cfg.alignment_backoff)
            if alignment is not None
            else None
        )
        if alignment is not None:
            require_differentiable(alignment)
            aggregation = rows_on(inputs.aggregation, device, torch.float32)
            targets = AlignmentTargets(
                alignment, len(z), aggregation, scale=scaling.scale, teacher_units=cfg.alignment_in_teacher_units
            )
            self.choices_["alignment_unit"] = {"teacher_units": cfg.alignment_in_teacher_units, "unit": targets.unit}
            alignment.attributor.fit(module, rows_on(inputs.background, device, torch.float32))
        optimizer = adamw(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        controls = TrainingControls.from_config(module, optimizer, cfg)
        self.module_, self.history_ = module, []
        validation = inputs.validation
        fingerprint = training_fingerprint(
            cfg, inputs.teacher, inputs.z, inputs.y, alignment, validation, world_size=processes.size
        )
        stopper = EarlyStopping(enabled=cfg.early_stopping, patience=cfg.patience, budget=cfg.epochs)
        first_epoch = 0
        checkpoint = inputs.checkpoint
        resumed = load_checkpoint(checkpoint, fingerprint) if checkpoint is not None and processes.leader else None
        if processes.distributed:  # rank 0's checkpoint (or none) on every process, so that all resume alike
            resumed = broadcast_state(resumed)
        if resumed is not None:
            restore_training_state(resumed, module, optimizer, generator)
            self.history_ = json.loads(resumed["history"])
            first_epoch = int(resumed["epochs_done"])
            stopper.resume(resumed["early_stopping"])
            if weight is not None:
                weight.resume(resumed["alignment_weight"])
            controls.load_state_dict(resumed)
        if validation is not None:
            z_valid = rows_on(validation.z, device, torch.float32)
            y_valid = rows_on(scaling.targets(task, validation.y), device)
        # the monitor's BatchNorm pass reads the same sample of the training rows after every epoch: drawn once
        recalibrate = validation is not None and cfg.batch_norm and cfg.recalibrate_batchnorm
        served_statistics = monitor_batchnorm_rows(z) if recalibrate else None

        rows_per_step, self.choices_["batch_size"] = batch_size_choice(cfg.batch_size, n_all // processes.size)
        epoch_of = _Epochs(rows_per_step, cfg, module, z, n_all, loss, targets, optimizer, generator, alignment, weight)
        # one DistributedDataParallel over the joint loss (built after a resume: it broadcasts rank 0's weights)
        if processes.distributed:
            epoch_of.parallel = data_parallel(JointStep(module, loss.terms, targets))
        with progress.step("student training (mlp)", total=cfg.epochs), synchronised_batchnorm(module):
            progress.advance(first_epoch)
            for epoch in range(first_epoch, cfg.epochs):
                if stopper.should_stop():
                    break
                started = time.perf_counter()
                rate = controls.start_epoch(epoch)
                sums = epoch_of.train(epoch)
                held_out = None
                extra = None
                controls.end_epoch()
                with controls.served():  # the network as it would be served (the weight average, when averaging)
                    if validation is not None:
                        held_out = validation_loss(
                            task,
                            module,
                            z_valid,
                            y_valid,
                            scaling=scaling,
                            batchnorm_rows=served_statistics,
                            batch_size=rows_per_step,
                        )
                    stopper.update(epoch, held_out, module)
                    if inputs.on_epoch_end is not None:
                        module.eval()
                        extra = inputs.on_epoch_end(self, epoch)
                self.history_.append(
                    {
                        "epoch": epoch,
                        "task_loss": sums["task"] / max(sums["rows"], 1.0),
                        "validation_loss": held_out,
                        "alignment_loss": sums["align"] / sums["aligned"] if sums["aligned"] else None,
                        "seconds": time.perf_counter() - started,
                        "alignment_weight": weight.epoch_mean() if weight is not None else None,
                        "learning_rate": rate,
                        "extra": dict(extra or {}),
                    }
                )
                if weight is not None:
                    weight.end_epoch(epoch, held_out, self.history_[-1]["alignment_loss"])
                if checkpoint is not None and processes.leader:
                    save_checkpoint(
                        checkpoint,
                        {
                            "fingerprint": fingerprint,
                            "epochs_done": epoch + 1,
                            **training_state(module, optimizer, generator),
                            "history": json.dumps(self.history_),
                            "early_stopping": stopper.checkpoint(),
                            "alignment_weight": weight.checkpoint() if weight is not None else None,
                            **controls.state_dict(),
                        },
                    )
                progress.advance(1)
        self.stopping_ = stopper.finish(module)
        controls.finish(self.stopping_)
        if weight is not None:
            self.choices_["alignment_weight"] = weight.describe()
        if validation is not None:
            self.stopping_["validation_rows"] = len(validation.y)
        if cfg.batch_norm and cfg.recalibrate_batchnorm:
            recalibrate_batchnorm(module, z, rows_per_step)
        module.eval()
        self.temperature = validation_temperature(task, module, validation) if cfg.calibrate else 1.0
        self.stopping_["temperature"] = self.temperature
        return self


class _TaskLoss:
    """The mlp's task loss of a batch: labels, mixed with the teacher's margins by ``teacher_weight``."""

    def __init__(
        self,
        cfg: MLPConfig,
        task: Task,
        module: MLPModule,
        scaling: TargetScaling,
        y: np.ndarray,
        margin: np.ndarray,
        device: torch.device,
    ) -> None:
        self.cfg, self.module, self.scaling = cfg, module, scaling
        self.y = rows_on(scaling.targets(task, y), device)
        self.soft = rows_on(scaling.margins(soft_targets(task, margin)), device, torch.float32)
        self.hard_loss, self.matching_loss = task_loss(task), soft_loss(task)

    def __call__(self, z: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The task loss of the batch ``z`` (training rows ``rows``), in training units."""
        prediction = self.scaling.apply(self.module(z))
        loss: torch.Tensor = (1 - self.cfg.teacher_weight) * self.hard_loss(prediction, self.y[rows])
        if self.cfg.teacher_weight > 0:
            loss = loss + self.cfg.teacher_weight * self.matching_loss(prediction, self.soft[rows])
        return loss

    def terms(self, z: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The task loss as :class:`~gbdt2nn_core.student.joint_step.JointStep`'s task terms."""
        return (self(z, rows),)


class _Epochs:
    """The mlp's training epochs, on one process or data-parallel on several (``parallel``: the
    ``DistributedDataParallel`` of a :class:`~gbdt2nn_core.student.joint_step.JointStep`)."""

    def __init__(
        self,
        rows_per_step: int,
        cfg: MLPConfig,
        module: MLPModule,
        z: torch.Tensor,
        n_all: int,
        loss: _TaskLoss,
        targets: AlignmentTargets | None,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        alignment: Alignment | None,
        weight: AlignmentWeight | None,
    ) -> None:
        self.rows_per_step = rows_per_step
        self.cfg, self.module, self.z, self.n_all, self.loss, self.targets = cfg, module, z, n_all, loss, targets
        self.optimizer, self.generator, self.alignment, self.weight = optimizer, generator, alignment, weight
        self.parallel: nn.Module | None = None

    def train(self, epoch: int) -> dict[str, float]:
        """One pass over this process's rows in a seeded random order; the losses summed over every process's rows
        (``task``, ``rows``; ``align``, ``aligned``: the alignment term times its aligned rows, and their count)."""
        cfg, alignment = self.cfg, self.alignment
        (self.parallel or self.module).train()  # the DistributedDataParallel wrapper's flag too
        plan = epoch_plan(len(self.z), self.n_all, self.rows_per_step, self.generator, alignment, self.targets)
        batches, carry = plan.batches, plan.carry
        # each batch's shares of the global batch: one collective for the epoch
        shares = epoch_shares(batches, carry, self.targets) if self.parallel is not None else []
        sums = torch.zeros(4, dtype=torch.float64)  # task, rows, alignment, aligned rows
        for b, rows in enumerate(batches):
            rows = rows.to(self.z.device)
            if self.parallel is None:
                loss_task, loss, loss_align, aligned_rows = self._step_loss(
                    epoch, rows, bool(carry[b]), plan.alignment_factor
                )
            else:
                (loss_task,), loss_align, aligned_rows = self.parallel(self.z[rows], rows, bool(carry[b]))
                loss = data_parallel_loss(
                    loss_task,
                    loss_align,
                    *shares[b],
                    alignment=alignment,
                    weight=self.weight,
                    rest_name="the task loss",
                    epoch=epoch,
                    lr=cfg.lr,
                    alignment_factor=plan.alignment_factor,
                )
            if loss_align is not None:
                sums[2:] += torch.tensor([float(loss_align.detach()) * aligned_rows, aligned_rows], dtype=torch.float64)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            self.optimizer.step()
            sums[:2] += torch.tensor([float(loss_task.detach()) * len(rows), len(rows)], dtype=torch.float64)
        task, rows_seen, align, aligned = all_reduce_sum(sums).tolist()
        return {"task": task, "rows": rows_seen, "align": align, "aligned": aligned}

    def _step_loss(
        self, epoch: int, rows: torch.Tensor, carry: bool, alignment_factor: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
        """One process's step: ``(task loss, loss to back-propagate, alignment loss or None, aligned rows)``; the
        term is multiplied by ``alignment_factor`` (the epoch plan's,
        :attr:`~gbdt2nn_core.student.joint_step.EpochPlan.alignment_factor`)."""
        cfg, alignment = self.cfg, self.alignment
        loss_task = self.loss(self.z[rows], rows)
        check_finite_loss(loss_task, "the task loss", epoch, cfg.lr, alignment)
        aligned = None
        if self.targets is not None and carry:
            aligned = self.targets.batch_loss(self.module, self.z[rows], rows)
        if alignment is None or self.weight is None or aligned is None:
            return loss_task, loss_task, None, 0
        loss_align, aligned_rows = aligned
        loss = loss_task + alignment_factor * self.weight.weight(loss_task, loss_align) * loss_align
        check_finite_loss(loss, "the alignment loss", epoch, cfg.lr, alignment)
        return loss_task, loss, loss_align, aligned_rows
