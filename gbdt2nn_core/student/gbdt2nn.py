"""The GBDT2NN student: DeepGBM's recipe for turning a tree ensemble into a network, plus explanation imitation.

Steps (DeepGBM, KDD 2019, §3.2): group the trees, pick each group's top columns by split gain, learn a leaf
embedding per group that predicts the group's summed leaf values, then train one MLP per group on its columns
to reproduce that embedding while the summed group outputs fit the task:

    L = (1 - β_e) · L_task(ŷ, y) + β_e · Σ_j Σ_d |w_jd| (N_jd(x[I_j]) - G_jd(x))²  [+ λ · L_align]

with ``β_e = β_0 · max(β_floor, r^⌊e / d⌋)``, AdamW (lr 1e-3, weight decay 1e-6).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import attrs
import numpy as np
import torch

from gbdt2nn_core.data import rowfile
from gbdt2nn_core.data.rowfile import read_rows
from gbdt2nn_core.errors import ConfigError, NotFittedError
from gbdt2nn_core.host.device import inference_chunk_rows, module_device, rng_devices, rows_on
from gbdt2nn_core.host.interfaces import OnlineUpdate, Student, StudentInputs, Task, Teacher, ValidationRows
from gbdt2nn_core.kit.alignment import Alignment
from gbdt2nn_core.progress import NullProgress, Progress
from gbdt2nn_core.student._grouping import group_trees, select_group_features
from gbdt2nn_core.student._leaf_embedding import LeafEmbedding, fit_leaf_embedding, group_leaf_sums
from gbdt2nn_core.student.calibration import saved_temperature, temperature_state
from gbdt2nn_core.student.disk_rows import DiskRows, RowSource, rows_like, select_rows, training_rows
from gbdt2nn_core.student.distributed import (
    all_reduce_sum,
    broadcast_buffers,
    broadcast_state,
    data_parallel,
    global_mean_var,
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
    learning_rate_choice,
    learning_rate_for_batch,
    learning_rate_schedule,
    load_checkpoint,
    monitor_batchnorm_rows,
    non_negative_float,
    non_negative_int,
    positive_float_or_auto,
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
    unit_interval_or_auto,
    validation_loss,
    validation_temperature,
)
from gbdt2nn_core.student.module import GBDT2NNModule
from gbdt2nn_core.validators import is_positive_number, is_whole_number

if TYPE_CHECKING:
    from gbdt2nn_core.data.encoding import OneHotBlocks

__all__ = ["EpochRecord", "GBDT2NNConfig", "GBDT2NNStudent"]

#: ``beta_floor="auto"`` per task (see :attr:`GBDT2NNConfig.beta_floor`).
_AUTO_BETA_FLOOR: dict[str, float] = {"regression": 0.1, "binary": 0.3, "multiclass": 0.3}

#: ``teacher_weight="auto"`` per task (see :attr:`GBDT2NNConfig.teacher_weight`).
_AUTO_TEACHER_WEIGHT: dict[str, float] = {"regression": 0.0, "binary": 0.0, "multiclass": 1.0}


def _hidden(value: Any) -> tuple[int, ...]:
    """Layer widths from a sequence of ints or the text ``"100,100,100,50"`` (how a command line or the error
    below writes them)."""
    error = ConfigError(
        setting="hidden",
        value=value,
        fix="give one or more positive layer widths, e.g. 100,100,100,50 (TOML: [100, 100, 100, 50])",
    )
    try:
        sizes = tuple(int(part) for part in value.split(",")) if isinstance(value, str) else tuple(value)
    except (TypeError, ValueError):
        raise error from None
    if not sizes or not all(is_whole_number(s, 1) for s in sizes):
        raise error
    return sizes


@attrs.frozen(kw_only=True)
class GBDT2NNConfig:
    """Settings of the GBDT2NN student; the defaults follow DeepGBM's code for mid-sized data, except where a field
    says otherwise (β decays every epoch, ``beta_step = 1``; regression targets are standardised)."""

    n_groups: int = attrs.field(default=10, validator=positive_int)
    features_per_group: int = attrs.field(default=64, validator=positive_int)
    embedding_dim: int = attrs.field(default=20, validator=positive_int)
    hidden: tuple[int, ...] = attrs.field(default=(100, 100, 100, 50), converter=_hidden)
    leaf_epochs: int = attrs.field(default=2, validator=positive_int)
    leaf_dropout: float = attrs.field(default=0.5, validator=unit_interval)
    #: The epoch budget: training stops earlier when ``early_stopping`` sees no progress (see ``patience``).
    epochs: int = attrs.field(default=20, validator=positive_int)
    #: Stop when the task loss on the validation rows (:attr:`StudentInputs.validation`) has not improved for
    #: ``patience`` epochs, and restore the best epoch's weights; ``False`` trains the whole budget and keeps the
    #: last weights (the validation loss is still recorded).
    early_stopping: bool = attrs.field(default=True, validator=boolean)
    patience: int = attrs.field(default=3, validator=positive_int)
    #: Monitor and keep an exponential moving average of the weights over about this many epochs of steps
    #: (:class:`~gbdt2nn_core.student.weight_average.WeightAverage`) instead of the last step's weights; 0 = off.
    #: Training steps the live weights either way. Three seeds, test metric without → with (RESULTS.md, "The
    #: average of the last steps' weights"): flights-30k AUC plain 0.7315 → 0.7347, aligned 0.7324 → 0.7351
    #: (teacher 0.7396); adult aligned 0.9293 → 0.9302 (teacher 0.9295).
    weight_average_epochs: float = attrs.field(default=0.5, validator=non_negative_float)
    #: Clip each step's gradient at this multiple of the median gradient norm of the steps before it
    #: (:class:`~gbdt2nn_core.student.gradient_clip.GradientClip`); 0 = off. Rare steps hundreds of times the usual
    #: size derailed aligned runs (diamonds' price, seed 1: test RMSE 749 USD without, 579 with; plain 576), and the
    #: up-weighted batches that carry the alignment term are clipped to twice an ordinary step (california, three
    #: seeds: aligned RMSE 0.4988 → 0.4756, plain 0.4693; Spearman 0.922 → 0.891).
    clip_gradients: float = attrs.field(default=2.0, validator=non_negative_float)
    #: Fit a temperature on the validation rows after training (classification), so that probabilities are as
    #: confident as they are right; margins stay uncalibrated.
    calibrate: bool = attrs.field(default=True, validator=boolean)
    #: Rows per training step; ``"auto"`` chooses it from the number of training rows
    #: (:func:`~gbdt2nn_core.student.kit.batch_size_for_rows`: about 100 steps an epoch, 64 to 512 rows), recorded in
    #: ``history["choices"]["batch_size"]``.
    batch_size: int | Literal["auto"] = attrs.field(default="auto", validator=batch_size_or_auto)
    #: The base learning rate (AdamW); ``"auto"`` chooses it from the batch size
    #: (:func:`~gbdt2nn_core.student.kit.learning_rate_for_batch`: 3e-3 at batches of 128 rows or more, DeepGBM's 1e-3
    #: below), recorded in ``history["choices"]["learning_rate"]``. 1e-3 → 3e-3 over the quality suite's ten datasets
    #: (RESULTS.md, "A higher learning rate"): both students gained on every dataset with batches of 128 rows or more
    #: (aligned: flights-30k AUC 0.7386 → 0.7426, teacher 0.7396; California RMSE 0.4599 → 0.4578), while digits'
    #: 64-row batches lost accuracy (0.9741 → 0.9639).
    lr: float | Literal["auto"] = attrs.field(default="auto", validator=positive_float_or_auto)
    #: The learning rate over the epochs: ``"constant"`` keeps ``lr`` (DeepGBM's code); ``"cosine"`` anneals it from
    #: ``lr`` towards 0 over the epoch budget (:func:`~gbdt2nn_core.student.kit.epoch_learning_rate`). Cosine was
    #: measured and not made the default: regression students, seed 0, test RMSE constant → cosine: california plain
    #: 0.4606 → 0.4631, aligned 0.4722 → 0.4822; diamonds' price plain 584.3 → 585.3, aligned 582.1 → 584.2 USD
    #: (RESULTS.md). Each epoch's rate is in its :class:`EpochRecord`.
    lr_schedule: Literal["constant", "cosine"] = attrs.field(default="constant", validator=learning_rate_schedule)
    weight_decay: float = attrs.field(default=1e-6, validator=non_negative_float)
    #: The embedding loss's weight β in epoch 0 (see :meth:`beta`): epoch 0 imitates the leaf embeddings only.
    beta0: float = attrs.field(default=1.0, validator=unit_interval)
    beta_decay: float = attrs.field(default=0.7, validator=unit_interval)
    #: Epochs per decay step of β. 1 gives the task loss 30 % of the weight from epoch 1 on; DeepGBM's code uses 2,
    #: which trains no task loss in epochs 0 and 1. A lower ``beta0`` (e.g. 0.2) trains short runs better still but
    #: leaves the aligned student's agreement gain over the plain one below 0.05 in some of the end-to-end grid's
    #: combinations (CHANGELOG.md has the measurements).
    beta_step: int = attrs.field(default=1, validator=positive_int)
    #: The least β ever gets: from the epoch where ``beta_decay`` reaches it, this share of the loss keeps tying the
    #: group networks to the leaf embeddings. ``"auto"`` (:meth:`for_task`) is 0.1 for regression and 0.3 (DeepGBM's)
    #: for classification: regression students at 0.3 stayed a few per cent above their teacher's RMSE, and 0.1
    #: closes most of it (three seeds, aligned test RMSE: diamonds' price 578.6 → 537.0 USD, teacher 535.5;
    #: California housing 0.4756 → 0.4648, teacher 0.4517), while on classification it helped nowhere beyond noise
    #: and cost agreement and early stopping's warm-up (flights-30k aligned Spearman 0.862 → 0.806, diamonds-cut
    #: accuracy −0.004; RESULTS.md, "The embedding loss's floor").
    beta_floor: float | Literal["auto"] = attrs.field(default="auto", validator=unit_interval_or_auto)
    #: Train regression targets standardised, ``(y - mean) / std`` of the training rows (the network's heads map
    #: back to the target's units); ``False`` trains in the target's own units (very large targets are still
    #: divided by a power of two near their size, so that squared errors stay finite). See
    #: :func:`~gbdt2nn_core.student.kit.target_scaling`.
    standardize_targets: bool = attrs.field(default=True, validator=boolean)
    #: Cap λ (the alignment weight) on each aligned batch so that the alignment term is at most this multiple of the
    #: task and embedding loss (moving averages; :class:`~gbdt2nn_core.student.kit.AlignmentWeight`); 0 = off.
    alignment_cap: float = attrs.field(default=1.0, validator=non_negative_float)
    #: Halve λ for the rest of training after an epoch whose validation task loss rose while the alignment loss fell
    #: (:meth:`~gbdt2nn_core.student.kit.AlignmentWeight.end_epoch`), so that alignment does not keep buying
    #: agreement with accuracy; ``False`` keeps λ (capped) throughout. California housing at batch 512, seed 0:
    #: aligned test RMSE 0.538 without, 0.512 with (plain 0.513), Spearman 0.830 → 0.850; at the automatic batch size
    #: (128 there) it is neutral (CHANGELOG.md has the measurements).
    alignment_backoff: bool = attrs.field(default=True, validator=boolean)
    #: Measure the alignment term in units of the teacher's attribution size (their RMS over the aligned rows,
    #: :func:`~gbdt2nn_core.student.kit.attribution_unit`), so that λ weighs a relative error alike on every dataset;
    #: ``False`` measures it in the training units of the margins (0.1.0: on digits, a term 20× smaller than
    #: the task loss, and alignment that barely moved agreement).
    alignment_in_teacher_units: bool = attrs.field(default=True, validator=boolean)
    #: Share of the task loss that fits the teacher's margins (MSE, "logit matching"; knowledge distillation of the
    #: output) instead of the labels. ``"auto"`` (:meth:`for_task`) is 1 for multiclass — the student fits the
    #: teacher's centred margins, and early stopping and calibration still read the labels — and 0, DeepGBM's
    #: label-only loss, otherwise; 0 also where no teacher margins are given to ``fit``. Multiclass, aligned student,
    #: 0 → 1 (RESULTS.md, "The teacher's margins for multiclass"): digits over ten seeds accuracy 0.9683 → 0.9706
    #: (teacher 0.9733) and log-loss 1.18 → 1.07 × the teacher's; diamonds' cut over three seeds measured beside it.
    #: On binary and regression tasks 0.5 did not pay: adult's plain student agrees more with TreeSHAP by itself, so
    #: alignment's gain shrinks, and California's RMSE rose 0.5055 → 0.5142 (CHANGELOG.md has the measurements).
    teacher_weight: float | Literal["auto"] = attrs.field(default="auto", validator=unit_interval_or_auto)
    #: After the last epoch, re-estimate the BatchNorm statistics on the training rows with the final weights (one
    #: forward pass). Training keeps exponential running averages of statistics while the weights move, and the
    #: alignment term (computed on running statistics, so that attributions are per row) tunes the weights to
    #: those moving averages: without this pass a joint student can predict much worse in eval mode than it trained
    #: (California housing, structure + mse, seed 0: test RMSE 0.651 against 0.489 after the pass).
    recalibrate_batchnorm: bool = attrs.field(default=True, validator=boolean)
    #: Under several processes (``--nproc``, torchrun), normalise every training batch with the moments of the
    #: global batch (every process's rows: one all-reduce per BatchNorm layer at every pass, exactly the
    #: single-process computation); ``False`` normalises with each process's own rows, as
    #: ``DistributedDataParallel`` does without ``SyncBatchNorm`` — fewer collectives per step, where their latency
    #: is the bill (gloo on CPU; docs/scaling-out.md has the measurements). Running statistics end up global either
    #: way (the BatchNorm pass, the validation monitor). No effect on one process.
    sync_batchnorm: bool = attrs.field(default=True, validator=boolean)
    seed: int = attrs.field(default=0, validator=non_negative_int)

    def for_task(self, task: Task) -> GBDT2NNConfig:
        """This config with ``"auto"`` settings that depend on the task resolved (``beta_floor``,
        ``teacher_weight``)."""
        config = self
        if config.beta_floor == "auto":
            config = attrs.evolve(config, beta_floor=_AUTO_BETA_FLOOR[task])
        if config.teacher_weight == "auto":
            config = attrs.evolve(config, teacher_weight=_AUTO_TEACHER_WEIGHT[task])
        return config

    def margin_share(self) -> float:
        """``teacher_weight`` as a number; needs it resolved (see :meth:`for_task`)."""
        if self.teacher_weight == "auto":
            raise ConfigError(
                setting="teacher_weight", value="auto", fix="resolve it for the task first: config.for_task(task)"
            )
        return self.teacher_weight

    def beta(self, epoch: int) -> float:
        """The embedding-loss weight β of ``epoch`` (0-based); needs a numeric ``beta_floor`` (see :meth:`for_task`)."""
        if self.beta_floor == "auto":
            raise ConfigError(
                setting="beta_floor", value="auto", fix="resolve it for the task first: config.for_task(task)"
            )
        return self.beta0 * max(self.beta_floor, self.beta_decay ** (epoch // self.beta_step))

    def beta_warmup(self) -> int:
        """The first epoch from which β no longer changes within the budget: early stopping's warm-up (while the
        task loss still gains weight, a flat validation loss is no reason to stop)."""
        betas = [self.beta(epoch) for epoch in range(self.epochs)]
        return next(e for e in range(self.epochs) if all(b == betas[e] for b in betas[e:]))


@attrs.frozen(kw_only=True)
class EpochRecord:
    """What one training epoch did (means over its batches)."""

    epoch: int
    beta: float
    task_loss: float
    embedding_loss: float
    alignment_loss: float | None
    seconds: float
    #: The mean λ of the epoch's aligned batches (after :attr:`GBDT2NNConfig.alignment_cap`); ``None`` when plain.
    alignment_weight: float | None = None
    #: The task loss on the validation rows after this epoch (``None`` without validation rows).
    validation_loss: float | None = None
    #: The learning rate of the epoch's steps (:attr:`GBDT2NNConfig.lr_schedule`).
    learning_rate: float | None = None
    #: Whatever the ``on_epoch_end`` callback measured (e.g. validation metrics, agreement).
    extra: dict[str, float] = attrs.field(factory=dict)


class GBDT2NNStudent(Student):
    """DeepGBM's GBDT2NN, built from a teacher and trained on encoded rows.

    Use :meth:`fit`, then :meth:`predict_margin` / :meth:`attributions`. Options are the fields of
    :class:`GBDT2NNConfig`.
    """

    supports_online = True
    supports_data_parallel = True

    def __init__(self, **options: Any) -> None:
        self.config = config_from_options(GBDT2NNConfig, options)
        self.module_: GBDT2NNModule | None = None
        self.history_: list[EpochRecord] = []
        self.leaf_history_: list[float] = []
        self.stopping_: dict[str, Any] = {}
        #: What the student chose for itself and why (``history["choices"]``, the run folder's config.json).
        self.choices_: dict[str, Any] = {}
        #: The training units of regression targets (saved with the state: online updates train in them too).
        self.target_scaling_: TargetScaling | None = None
        self.group_columns_: np.ndarray | None = None
        self.groups_: list[np.ndarray] = []
        self.lookup_blocks_: OneHotBlocks | None = None  # see use_lookup
        #: The rows per training step the last fit used (``batch_size`` resolved; online updates use it too).
        self.batch_size_: int | None = None
        #: The base learning rate the last fit used (``lr`` resolved; online updates start from it).
        self.learning_rate_: float | None = None

    # ------------------------------------------------------------------ building
    def _build(
        self, teacher: Teacher, column_of: np.ndarray, device: torch.device
    ) -> tuple[GBDT2NNModule, list[np.ndarray]]:
        ensemble = teacher.structure()
        groups, group_output = group_trees(ensemble, self.config.n_groups, self.config.seed)
        columns = select_group_features(ensemble, groups, self.config.features_per_group)
        # each group's encoded positions: all blocks of its columns, padded with the zero column D
        pad = len(column_of)
        positions = [np.flatnonzero(np.isin(column_of, row[row >= 0])) for row in columns]
        width = max(1, max(len(p) for p in positions))
        index = np.full((len(groups), width), pad, dtype=np.int64)
        for g, p in enumerate(positions):
            index[g, : len(p)] = p
        module = GBDT2NNModule(
            group_input_index=torch.as_tensor(index),
            group_output=torch.as_tensor(group_output),
            n_outputs=ensemble.n_outputs,
            hidden=self.config.hidden,
            embedding_dim=self.config.embedding_dim,
        ).to(device)
        module.use_lookup(self.lookup_blocks_)  # after the move: the lookup tables are made on the module's device
        self.group_columns_ = columns
        return module, groups

    @property
    def module(self) -> GBDT2NNModule:
        if self.module_ is None:
            raise NotFittedError(
                component="GBDT2NNStudent", method="module", fix="call fit() first, or load a saved student"
            )
        return self.module_

    # ------------------------------------------------------------------ training
    def fit(self, inputs: StudentInputs) -> GBDT2NNStudent:
        """Distil ``inputs.teacher`` into the network.

        Uses the teacher's leaf indices of the training rows (``inputs.leaves``), their encoded values and
        targets, and the encoding description; ``inputs.teacher_margin`` when ``teacher_weight > 0``.
        ``inputs.on_epoch_end(student, epoch)`` may return metrics (validation loss, agreement...) to store in the
        epoch's record. With ``inputs.checkpoint``, the state after the leaf embedding and after every epoch is
        saved there, and a matching checkpoint found there is resumed: the result is the same as an uninterrupted
        run.
        """
        # seed torch for this fit only: the caller's global random state is restored afterwards
        with torch.random.fork_rng(devices=rng_devices(inputs.device)):
            return self._fit(
                teacher=inputs.teacher,
                leaves=inputs.leaves,
                z=inputs.z,
                y=inputs.y,
                task=inputs.task,
                column_of=inputs.column_of,
                aggregation=inputs.aggregation,
                teacher_margin=inputs.teacher_margin,
                alignment=inputs.alignment,
                background=inputs.background,
                progress=inputs.progress or NullProgress(),
                on_epoch_end=inputs.on_epoch_end,
                checkpoint=inputs.checkpoint,
                validation=inputs.validation,
                device=torch.device(inputs.device),
            )

    def _fit(
        self,
        *,
        teacher: Teacher,
        leaves: np.ndarray,
        z: np.ndarray,
        y: np.ndarray,
        task: Task,
        column_of: np.ndarray,
        aggregation: np.ndarray,
        teacher_margin: np.ndarray | None,
        alignment: Alignment | None,
        background: np.ndarray,
        progress: Progress,
        on_epoch_end: Callable[[GBDT2NNStudent, int], dict[str, float] | None] | None,
        checkpoint: Path | None,
        validation: ValidationRows | None = None,
        device: torch.device | None = None,
    ) -> GBDT2NNStudent:
        cfg = self.config.for_task(task)  # the task's β floor; ``self.config`` (what is saved) keeps "auto"
        if self.config.teacher_weight == "auto" and teacher_margin is None:
            cfg = attrs.evolve(cfg, teacher_weight=0.0)  # no margins given: the labels, as DeepGBM fits them
        # everything below lives on ``device``: the matrices are copied there whole, once (see host/device.py)
        device = device or torch.device("cpu")
        # with several processes (see gbdt2nn_core.student.distributed) the rows are this process's shard; dataset
        # statistics, losses and BatchNorm moments are taken over every shard, and only rank 0 writes checkpoints
        processes = world()
        n = z.shape[0]
        n_all = fitting_rows(n)
        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        module, groups = self._build(teacher, column_of, device)
        if not processes.leader:
            # the networks start from rank 0's weights (DistributedDataParallel broadcasts them), and rank 0 draws as
            # one process would; every other process draws its own dropout masks, so that rows at the same position
            # of two shards do not share one
            torch.manual_seed(cfg.seed + processes.rank)
        self.groups_ = groups
        ensemble = teacher.structure()
        fingerprint = training_fingerprint(cfg, teacher, z, y, alignment, validation, world_size=processes.size)
        resumed = load_checkpoint(checkpoint, fingerprint) if checkpoint is not None and processes.leader else None
        if processes.distributed:  # rank 0's checkpoint (or none) on every process, so that all resume alike
            resumed = broadcast_state(resumed)

        # --- step 4: leaf embeddings, then frozen heads and embedding targets G_j(x)
        scaling = target_scaling(task, y, standardize=cfg.standardize_targets)  # over every shard's rows
        self.target_scaling_ = scaling
        self.choices_ = {"targets": scaling.describe(), "beta": _beta_choice(cfg, self.config.beta_floor == "auto")}
        self.choices_["teacher_weight"] = _teacher_weight_choice(cfg, self.config.teacher_weight == "auto")
        self.batch_size_, self.choices_["batch_size"] = batch_size_choice(cfg.batch_size, n_all // processes.size)
        rows_per_step = self.batch_size_
        rate, self.choices_["learning_rate"] = learning_rate_choice(cfg.lr, rows_per_step)
        self.learning_rate_ = rate
        scale = scaling.scale
        leaf_sums = rows_on(_scaled_leaf_sums(ensemble, leaves, groups, scale), device, torch.float32)
        leaf_mean = global_mean_var(leaf_sums)[0] if processes.distributed else leaf_sums.mean(0)
        embedding = LeafEmbedding(ensemble, groups, cfg.embedding_dim, cfg.leaf_dropout, leaf_mean.cpu().numpy())
        embedding = embedding.to(device)
        # int32 (the teacher's type; the embedding adds the int64 tree offsets per batch): no int64 copy of every row;
        # leaves kept on disk are read a batch at a time
        leaves_t = training_rows(leaves, device, torch.int32)
        steps = math.ceil(n / rows_per_step) * cfg.leaf_epochs
        with progress.step("leaf embedding", total=steps):
            if resumed is not None:
                embedding.load_state_dict(resumed["leaf_embedding"])
                embedding.eval()
                self.leaf_history_ = list(resumed["leaf_history"])
            else:
                self.leaf_history_ = fit_leaf_embedding(
                    embedding,
                    leaves_t,
                    leaf_sums,
                    epochs=cfg.leaf_epochs,
                    batch_size=rows_per_step,
                    lr=rate,
                    weight_decay=cfg.weight_decay,
                    generator=generator,
                    on_step=progress.advance,
                    sync_batchnorm=cfg.sync_batchnorm,
                )
                check_finite_loss(torch.tensor(self.leaf_history_), "the leaf embedding loss", None, rate, None)
            with torch.no_grad():
                # 512 rows a chunk: embed's (rows, k, trees per group, E) lookup before the sum is 4 MiB (33 MiB for
                # 4,096 rows on adult, which the process kept); every row's targets are its own, so the same values
                targets = rows_like(
                    z,
                    (n, len(groups), cfg.embedding_dim),
                    lambda: (embedding.embed(leaves_t[i : i + 512]) for i in range(0, n, 512)),
                    device,
                )
                module.head_weight.copy_(embedding.weight * scale)
                module.head_bias.copy_(embedding.bias * scale)

        # --- steps 5-6 (+ alignment): train the group networks
        z_t = training_rows(z, device, torch.float32)  # large rows stay on disk (see gbdt2nn_core.data.rowfile)
        y_t = rows_on(scaling.targets(task, y), device)
        # the lookup slots of the rows, found once (rows on disk are read, and checked, a batch at a time)
        slots = module.rows_slots(z_t) if isinstance(z_t, torch.Tensor) else None
        objective = _Objective(
            cfg, task, module, targets, y_t, teacher_margin, alignment, aggregation, scaling, slots=slots
        )
        if alignment is not None:
            alignment.attributor.fit(module, rows_on(background, device, torch.float32))
        optimizer = adamw(module.parameters(), lr=rate, weight_decay=cfg.weight_decay)
        controls = TrainingControls.from_config(module, optimizer, cfg)
        weight = (
            AlignmentWeight(alignment.weight, cfg.alignment_cap, backoff=cfg.alignment_backoff)
            if alignment is not None
            else None
        )
        self.module_ = module
        self.history_ = []
        stopper = EarlyStopping(
            enabled=cfg.early_stopping, patience=cfg.patience, budget=cfg.epochs, warmup=cfg.beta_warmup()
        )
        served_statistics = z_t if cfg.recalibrate_batchnorm else None
        monitor = _validation_monitor(task, module, validation, scaling, served_statistics, rows_per_step)
        first_epoch = 0
        if resumed is not None:
            restore_training_state(resumed, module, optimizer, generator)
            self.history_ = [EpochRecord(**record) for record in json.loads(resumed["history"])]
            first_epoch = int(resumed["epochs_done"])
            stopper.resume(resumed["early_stopping"])
            controls.load_state_dict(resumed)
            if weight is not None:
                weight.resume(resumed["alignment_weight"])

        def save(epochs_done: int) -> None:
            if checkpoint is None or not processes.leader:
                return
            save_checkpoint(
                checkpoint,
                {
                    "fingerprint": fingerprint,
                    "epochs_done": epochs_done,
                    **training_state(module, optimizer, generator),
                    "leaf_embedding": embedding.state_dict(),
                    "leaf_history": list(self.leaf_history_),
                    "history": json.dumps([attrs.asdict(record) for record in self.history_]),
                    "early_stopping": stopper.checkpoint(),
                    "alignment_weight": weight.checkpoint() if weight is not None else None,
                    **controls.state_dict(),
                },
            )

        if resumed is None:
            save(0)
        # one DistributedDataParallel over the joint loss (built after a resume: it broadcasts rank 0's weights)
        parallel = None
        if processes.distributed:
            parallel = data_parallel(JointStep(module, objective.distillation, objective.alignment_targets))
        training = progress.step("student training", total=cfg.epochs)
        with training, synchronised_batchnorm(module, cfg.sync_batchnorm):
            progress.advance(first_epoch)
            for epoch in range(first_epoch, cfg.epochs):
                if stopper.should_stop():
                    break
                started = time.perf_counter()
                rate = controls.start_epoch(epoch)
                beta = cfg.beta(epoch)
                if parallel is None:
                    sums = self._train_epoch(epoch, z_t, objective, optimizer, generator, alignment, weight, beta)
                else:
                    targets_ = objective.alignment_targets
                    sums = self._train_epoch_parallel(
                        epoch, z_t, parallel, optimizer, generator, alignment, n_all, weight, targets_, beta
                    )
                extra = None
                controls.end_epoch()
                with controls.served():  # the network as it would be served (the weight average, when averaging)
                    held_out = monitor()
                    stopper.update(epoch, held_out, module)
                    if on_epoch_end is not None:
                        module.eval()
                        extra = on_epoch_end(self, epoch)
                alignment_loss = sums["align"] / sums["aligned_rows"] if sums["aligned_rows"] else None
                record = EpochRecord(
                    extra=dict(extra or {}),
                    epoch=epoch,
                    beta=beta,
                    task_loss=sums["task"] / n_all,
                    embedding_loss=sums["emb"] / n_all,
                    alignment_loss=alignment_loss,
                    seconds=time.perf_counter() - started,
                    validation_loss=held_out,
                    alignment_weight=weight.epoch_mean() if weight is not None else None,
                    learning_rate=rate,
                )
                if weight is not None:
                    weight.end_epoch(epoch, held_out, alignment_loss)
                self.history_.append(record)
                save(epoch + 1)
                progress.advance(1, loss=record.task_loss)
        self.stopping_ = stopper.finish(module)
        controls.finish(self.stopping_)
        if not (cfg.sync_batchnorm or cfg.recalibrate_batchnorm):  # (the BatchNorm pass below makes them equal)
            broadcast_buffers(module)  # each process tracked its own rows' statistics: use rank 0's everywhere
        if isinstance(targets, DiskRows):  # this fit's own file: no other student reads it
            targets.remove()
        if weight is not None:
            self.choices_["alignment_weight"] = weight.describe()
            self.choices_["alignment_unit"] = _alignment_unit_choice(cfg, objective)
        if validation is not None:
            self.stopping_["validation_rows"] = len(validation.y)
        if cfg.recalibrate_batchnorm:
            with progress.step("BatchNorm statistics"), module.sharing_first_layer():  # one set of lookup tables
                recalibrate_batchnorm(module, z_t, rows_per_step)
        module.eval()
        self.temperature = validation_temperature(task, module, validation) if cfg.calibrate else 1.0
        self.stopping_["temperature"] = self.temperature
        return self

    def _train_epoch(
        self,
        epoch: int,
        z: RowSource,
        objective: _Objective,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        alignment: Alignment | None,
        weight: AlignmentWeight | None,
        beta: float,
    ) -> dict[str, float]:
        """One pass over the rows in a seeded random order, the embedding loss weighted ``beta`` (the epoch's β);
        returns summed losses.

        The batches and which of them carry the alignment term (over their rows among ``alignment.rows``, weighted
        by ``weight``, a fresh one for this epoch if not given) come from
        :func:`~gbdt2nn_core.student.joint_step.epoch_plan`, drawn with ``generator``.
        """
        cfg, module = self.config, self.module
        if alignment is not None and weight is None:
            weight = AlignmentWeight(alignment.weight, cfg.alignment_cap)
        module.train()
        n = z.shape[0]
        plan = epoch_plan(n, n, self._rows_per_step(n), generator, alignment, objective.alignment_targets)
        sums = {"task": 0.0, "emb": 0.0, "align": 0.0, "aligned_rows": 0.0}
        for b, rows in enumerate(plan.batches):
            rows = rows.to(z.device)
            # the step's forward passes (the batch, the background expectation, the aligned rows) share the tensors
            # made from the first layer's weights, which change only at optimizer.step()
            with module.sharing_first_layer():
                z_batch = select_rows(z, rows)
                loss_task, loss_emb = objective.distillation(z_batch, rows)
                loss = (1.0 - beta) * loss_task + beta * loss_emb
                check_finite_loss(loss, "the task and embedding loss", epoch, self.learning_rate(), alignment)
                aligned = objective.alignment(z_batch, rows) if alignment is not None and plan.carry[b] else None
            if alignment is not None and weight is not None and aligned is not None:
                loss_align, aligned_rows = aligned
                loss = loss + plan.alignment_factor * weight.weight(loss, loss_align) * loss_align
                check_finite_loss(loss, "the alignment loss", epoch, self.learning_rate(), alignment)
                sums["align"] += float(loss_align.detach()) * aligned_rows
                sums["aligned_rows"] += aligned_rows
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is unannotated
            optimizer.step()
            sums["task"] += float(loss_task.detach()) * len(rows)
            sums["emb"] += float(loss_emb.detach()) * len(rows)
        return sums

    def _train_epoch_parallel(
        self,
        epoch: int,
        z: RowSource,
        parallel: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        alignment: Alignment | None,
        n_all: int,
        weight: AlignmentWeight | None,
        targets: AlignmentTargets | None,
        beta: float,
    ) -> dict[str, float]:
        """:meth:`_train_epoch` on this process's shard, the joint loss under ``DistributedDataParallel``; returns
        the losses summed over every process's rows.

        Each step's loss is this process's share of the global batch's (see
        :func:`~gbdt2nn_core.student.joint_step.epoch_shares`; ``targets`` tells how many of a batch's rows are
        aligned) and goes through **one** backward, which all-reduces the gradients once. The shared generator draws
        the same numbers on every process: which batches carry the alignment term is the same everywhere, and λ
        (capped by ``weight``) comes from the global batch's losses, so it is the same everywhere too.
        """
        parallel.train()
        rows_per_step = self._rows_per_step(n_all // world().size)
        plan = epoch_plan(z.shape[0], n_all, rows_per_step, generator, alignment, targets)
        batches, carry = plan.batches, plan.carry
        shares = epoch_shares(batches, carry, targets)  # one collective for the epoch
        sums = torch.zeros(4, dtype=torch.float64)  # task, embedding, alignment, aligned rows
        for b, rows in enumerate(batches):
            # the step's forward passes share the tensors made from the first layer's weights, as in _train_epoch
            with self.module.sharing_first_layer():
                (loss_task, loss_emb), loss_align, aligned_rows = parallel(select_rows(z, rows), rows, bool(carry[b]))
            loss = data_parallel_loss(
                (1.0 - beta) * loss_task + beta * loss_emb,
                loss_align,
                *shares[b],
                alignment=alignment,
                weight=weight,
                rest_name="the task and embedding loss",
                epoch=epoch,
                lr=self.learning_rate(),
                alignment_factor=plan.alignment_factor,
            )
            if loss_align is not None:
                sums[2:] += torch.tensor([float(loss_align.detach()) * aligned_rows, aligned_rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is unannotated
            optimizer.step()
            sums[:2] += torch.tensor([float(loss_task.detach()), float(loss_emb.detach())]) * len(rows)
        total = all_reduce_sum(sums)
        return dict(zip(("task", "emb", "align", "aligned_rows"), total.tolist(), strict=True))

    def learning_rate(self) -> float:
        """The base learning rate of the last fit (``lr`` resolved for its batch size), or else the configured one
        (``"auto"`` resolved for the recorded batch size)."""
        if self.learning_rate_ is not None:
            return self.learning_rate_
        if self.config.lr != "auto":
            return float(self.config.lr)
        if self.batch_size_ is None:
            raise NotFittedError(
                component="GBDT2NNStudent", method="learning_rate", fix="call fit() first, or load a saved student"
            )
        return learning_rate_for_batch(self.batch_size_)

    def _rows_per_step(self, rows: int) -> int:
        """The batch size of the last fit, or else the configured one resolved for ``rows`` rows."""
        if self.batch_size_ is not None:
            return self.batch_size_
        return batch_size_choice(self.config.batch_size, rows)[0]

    # ------------------------------------------------------------------ the Student contract
    @property
    def n_outputs(self) -> int:
        return int(self.module.n_outputs)

    @property
    def history(self) -> dict[str, Any]:
        return {
            "leaf_embedding": list(self.leaf_history_),
            "epochs": [attrs.asdict(record) for record in self.history_],
            "stopping": dict(self.stopping_),
            "choices": dict(self.choices_),
        }

    def options(self) -> dict[str, Any]:
        return attrs.asdict(self.config)

    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        module = self.module
        description = {
            "architecture": {
                "group_input_index": module.group_input_index.tolist(),
                "group_output": module.output_map.argmax(dim=1).tolist(),
                "n_outputs": module.n_outputs,
                "hidden": list(module.hidden_sizes),
                "embedding_dim": module.embedding_dim,
                "group_columns": self.group_columns_.tolist() if self.group_columns_ is not None else None,
            },
            "calibration": temperature_state(self.temperature),
        }
        if self.target_scaling_ is not None:
            description["target_scaling"] = {
                "offset": self.target_scaling_.offset,
                "scale": self.target_scaling_.scale,
            }
        if self.batch_size_ is not None:  # the rows per step online updates train with
            description["batch_size"] = self.batch_size_
        if self.learning_rate_ is not None:  # the rate online updates start from
            description["learning_rate"] = self.learning_rate_
        tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in module.state_dict().items()}
        return description, tensors

    def load_state(self, description: dict[str, Any], tensors: dict[str, torch.Tensor]) -> GBDT2NNStudent:
        architecture = description["architecture"]
        module = GBDT2NNModule(
            group_input_index=torch.as_tensor(architecture["group_input_index"]),
            group_output=torch.as_tensor(architecture["group_output"]),
            n_outputs=int(architecture["n_outputs"]),
            hidden=tuple(architecture["hidden"]),
            embedding_dim=int(architecture["embedding_dim"]),
        )
        module.load_state_dict(tensors, strict=True)
        module.use_lookup(self.lookup_blocks_)
        self.module_ = module.eval()
        self.temperature = saved_temperature(description)
        units = description.get("target_scaling")  # absent from students saved before it was recorded
        if isinstance(units, dict):
            offset, scale = float(units["offset"]), float(units["scale"])
            if not (math.isfinite(offset) and math.isfinite(scale) and scale > 0):
                raise ValueError(f"target_scaling must be finite with a positive scale, not {units}")
            self.target_scaling_ = TargetScaling(offset=offset, scale=scale)
        rows_per_step = description.get("batch_size")  # absent from students saved before it was recorded
        if rows_per_step is not None:
            if not is_whole_number(rows_per_step, 2):
                raise ValueError(f"batch_size must be a whole number of at least 2, not {rows_per_step!r}")
            self.batch_size_ = rows_per_step
        rate = description.get("learning_rate")  # absent from students saved before lr could be "auto"
        if rate is not None:
            if not is_positive_number(rate):
                raise ValueError(f"learning_rate must be a finite number > 0, not {rate!r}")
            self.learning_rate_ = float(rate)
        if architecture.get("group_columns") is not None:
            self.group_columns_ = np.asarray(architecture["group_columns"])
        return self

    def use_lookup(self, blocks: OneHotBlocks | None) -> bool:
        """Compute the first layer as a row lookup over the encoder's one-hot ``blocks`` (exact; see
        :meth:`GBDT2NNModule.use_lookup`): in training's forward and at inference, now and for networks built later."""
        self.lookup_blocks_ = blocks
        if self.module_ is not None:
            self.module_.use_lookup(blocks)
        return blocks is not None and (self.module_ is None or self.module_.lookup_enabled)

    @property
    def lookup_enabled(self) -> bool:
        return self.module_ is not None and self.module_.lookup_enabled

    def predict_margin_lookup(self, other: np.ndarray, active: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        module = self.module.eval()
        device = module.group_input_index.device
        chunk = inference_chunk_rows(device, batch_size)
        other_t = torch.as_tensor(other, dtype=torch.float32)
        active_t = torch.as_tensor(active, dtype=torch.long)
        with torch.no_grad():
            chunks = [
                module.forward_lookup(other_t[i : i + chunk].to(device), active_t[i : i + chunk].to(device)).cpu()
                for i in range(0, max(len(other_t), 1), chunk)
            ]
        return torch.cat(chunks).numpy()

    def move_to(self, device: torch.device | str) -> GBDT2NNStudent:
        """:meth:`Student.move_to`, with the lookup first layer's tables made again on the new device."""
        super().move_to(device)
        self.module.use_lookup(self.lookup_blocks_)
        return self

    def partial_fit(self, update: OnlineUpdate) -> list[dict[str, Any]]:
        """DeepGBM's online update: the network trains end to end on new rows (:mod:`gbdt2nn_core.student.online`)."""
        from gbdt2nn_core.student.online import online_update

        return online_update(
            self.module,
            update.z,
            update.y,
            task=update.task,
            optimizer=update.optimizer,
            epochs=update.epochs,
            batch_size=self._rows_per_step(len(update.z)),
            generator=update.generator,
            alignment=update.alignment,
            aggregation=update.aggregation,
            scaling=self.target_scaling_,
        )


def _scaled_leaf_sums(ensemble: Any, leaves: np.ndarray, groups: list[np.ndarray], scale: float) -> np.ndarray:
    """``group_leaf_sums(...) / scale`` as float32, computed a chunk of rows at a time (its float64 per-tree
    temporaries would otherwise be 8 bytes x trees per row)."""
    sums = np.empty((len(leaves), len(groups)), dtype=np.float32)
    size = rowfile.chunk_rows(8 * leaves.shape[1])  # its float64 temporary: one value per tree
    for start in range(0, len(leaves), size):
        sums[start : start + size] = group_leaf_sums(ensemble, read_rows(leaves, start, start + size), groups) / scale
    return sums


def _teacher_weight_choice(cfg: GBDT2NNConfig, auto: bool) -> dict[str, Any]:
    """The share of the task loss that fits the teacher's margins, as resolved for the run's record, and why."""
    if not auto:
        why = "set by the user"
    elif cfg.margin_share() > 0:
        why = "teacher_weight=auto: a multiclass student fits the teacher's margins"
    else:
        why = "teacher_weight=auto: the labels (binary and regression tasks, or no teacher margins given)"
    return {"value": cfg.margin_share(), "why": why}


def _beta_choice(cfg: GBDT2NNConfig, auto_floor: bool) -> dict[str, Any]:
    """The β schedule as resolved for the run's record (``cfg`` resolved for the task): β of each epoch of the
    budget, the floor, the warm-up, and why."""
    deepgbm = cfg.beta0 == 1.0
    why = "DeepGBM's schedule: no task loss while beta is 1" if deepgbm else "task loss from the first epoch"
    if auto_floor:
        why += f"; floor {cfg.beta_floor}, chosen for the task (beta_floor=auto)"
    per_epoch = [cfg.beta(epoch) for epoch in range(cfg.epochs)]
    return {"per_epoch": per_epoch, "floor": cfg.beta_floor, "warmup": cfg.beta_warmup(), "why": why}


def _validation_monitor(
    task: Task,
    module: GBDT2NNModule,
    validation: ValidationRows | None,
    scaling: TargetScaling,
    batchnorm_rows: RowSource | None,
    batch_size: int,
) -> Callable[[], float | None]:
    """The validation task loss after an epoch (of the network as served: see :func:`validation_loss`), or ``None``
    without validation rows."""
    if validation is None:
        return lambda: None
    device = module_device(module)
    z = rows_on(validation.z, device, torch.float32)
    y = rows_on(scaling.targets(task, validation.y), device)
    # every epoch reads the same rows: the BatchNorm pass's sample is drawn once, and the lookup slots of both sets
    # of rows are found once instead of in every batch of every epoch (about 2 % of a plain epoch on adult)
    if batchnorm_rows is not None:
        batchnorm_rows = monitor_batchnorm_rows(batchnorm_rows)
        if isinstance(batchnorm_rows, torch.Tensor):
            batchnorm_rows = rows_on(batchnorm_rows, device, torch.float32)
    known_slots = [
        (rows, slots)
        for rows in (z, batchnorm_rows)
        if isinstance(rows, torch.Tensor) and rows.is_contiguous() and (slots := module.rows_slots(rows)) is not None
    ]

    def monitor() -> float:
        # the weights stay put while the monitor runs: its BatchNorm pass builds the first layer's lookup tables
        # once instead of once per batch (32 batches of 512 rows)
        with module.sharing_first_layer():
            for rows, slots in known_slots:
                module.share_rows_slots(rows, slots)
            return validation_loss(
                task, module, z, y, scaling=scaling, batchnorm_rows=batchnorm_rows, batch_size=batch_size
            )

    return monitor


class _Objective:
    """The parts of the joint loss for a batch of rows: task + embedding imitation, and alignment."""

    def __init__(
        self,
        cfg: GBDT2NNConfig,
        task: Task,
        module: GBDT2NNModule,
        embedding_targets: RowSource,
        y: torch.Tensor,
        teacher_margin: np.ndarray | None,
        alignment: Alignment | None,
        aggregation: np.ndarray,
        scaling: TargetScaling,
        slots: torch.Tensor | None = None,
    ) -> None:
        # ``y`` comes in training units; margins and soft targets are put in them here, attributions divided by the
        # scale (they are differences of margins)
        self.cfg, self.module, self.targets, self.y, self.scaling = cfg, module, embedding_targets, y, scaling
        #: the lookup slots of every training row, found once (:meth:`GBDT2NNModule.rows_slots`), or ``None``
        self.slots = slots
        scale = scaling.scale
        self.task_loss = task_loss(task)
        self.embedding_weight = module.head_weight.abs() / scale  # the heads hold the scale, the loss must not
        self.soft_targets: torch.Tensor | None = None
        if cfg.margin_share() > 0:
            if teacher_margin is None:
                raise ConfigError(setting="teacher_weight", value=cfg.teacher_weight, fix="pass teacher_margin to fit")
            self.soft_targets = rows_on(scaling.margins(soft_targets(task, teacher_margin)), y.device, torch.float32)
            self.soft_loss = soft_loss(task)
        self.alignment_targets: AlignmentTargets | None = None
        if alignment is not None:
            require_differentiable(alignment)
            aggregation_t = rows_on(aggregation, y.device, torch.float32)
            self.alignment_targets = AlignmentTargets(
                alignment, len(y), aggregation_t, scale=scale, teacher_units=cfg.alignment_in_teacher_units
            )

    def distillation(self, z: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``L_task`` (labels, optionally mixed with the teacher's margins) and the |w|-weighted embedding loss."""
        slots = select_rows(self.slots, rows) if self.slots is not None else None
        embeddings = self.module.embeddings_of_slots(z, slots)
        prediction = self.scaling.apply(self.module.combine(self.module.group_outputs(embeddings)))
        loss_task = self.task_loss(prediction, select_rows(self.y, rows))
        if self.soft_targets is not None:
            weight = self.cfg.margin_share()
            soft = select_rows(self.soft_targets, rows)
            loss_task = (1 - weight) * loss_task + weight * self.soft_loss(prediction, soft)
        targets = select_rows(self.targets, rows)
        loss_embedding = (((embeddings - targets) ** 2) * self.embedding_weight).sum(dim=(1, 2)).mean()
        return loss_task, loss_embedding

    def alignment(self, z: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, int] | None:
        """``L_align`` between the student's per-column attributions and the teacher's over the batch's aligned
        rows (back-propagatable), and how many rows that is; ``None`` when the batch has no aligned row."""
        assert self.alignment_targets is not None
        return self.alignment_targets.batch_loss(self.module, z, rows)


def _alignment_unit_choice(cfg: GBDT2NNConfig, objective: _Objective) -> dict[str, Any]:
    """The unit the alignment term was measured in, for the run's record."""
    unit = objective.alignment_targets.unit if objective.alignment_targets is not None else 1.0
    if cfg.alignment_in_teacher_units:
        why = "the teacher's attribution RMS over the aligned rows: a relative error, alike on every dataset"
    else:
        why = "alignment_in_teacher_units off: the margins' training units"
    return {"teacher_units": cfg.alignment_in_teacher_units, "unit": unit, "why": why}
