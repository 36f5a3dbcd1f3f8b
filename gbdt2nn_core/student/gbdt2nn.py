"""The GBDT2NN student: DeepGBM's recipe for turning a tree ensemble into a network, plus explanation imitation.

Steps (DeepGBM, KDD 2019, §3.2): group the trees, pick each group's top columns by split gain, learn a leaf
embedding per group that predicts the group's summed leaf values, then train one MLP per group on its columns
to reproduce that embedding while the summed group outputs fit the task:

    L = (1 - β_e) · L_task(ŷ, y) + β_e · Σ_j Σ_d |w_jd| (N_jd(x[I_j]) - G_jd(x))²  [+ λ · L_align]

with ``β_e = β_0 · max(β_floor, r^⌊e / d⌋)``, AdamW (lr 1e-3, weight decay 1e-6).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from gbdt2nn_core.alignment import Alignment, column_attributions, frozen_batchnorm
from gbdt2nn_core.errors import ConfigError, NotFittedError, TrainingError
from gbdt2nn_core.interfaces import Attributor, Student, Task, Teacher
from gbdt2nn_core.progress import NullProgress, Progress
from gbdt2nn_core.student._batchnorm import recalibrate_batchnorm, row_batches
from gbdt2nn_core.student._checkpoint import load_checkpoint, save_checkpoint
from gbdt2nn_core.student._grouping import group_trees, select_group_features
from gbdt2nn_core.student._leaf_embedding import LeafEmbedding, fit_leaf_embedding, group_leaf_sums
from gbdt2nn_core.student.module import GBDT2NNModule

__all__ = ["EpochRecord", "GBDT2NNConfig", "GBDT2NNStudent"]


def _positive_int(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(setting=attribute.name, value=value, fix="use a whole number of at least 1")


def _non_negative_int(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(setting=attribute.name, value=value, fix="use a whole number of at least 0")


def _positive_float(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ConfigError(setting=attribute.name, value=value, fix="use a finite number greater than 0")


def _unit_interval(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ConfigError(setting=attribute.name, value=value, fix="use a number between 0 and 1")


def _non_negative_float(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ConfigError(setting=attribute.name, value=value, fix="use a finite number of at least 0")


def _boolean(_: object, attribute: attrs.Attribute[bool], value: bool) -> None:
    if not isinstance(value, bool):
        raise ConfigError(setting=attribute.name, value=value, fix="use true or false")


def _batch_size(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 2:
        raise ConfigError(
            setting=attribute.name,
            value=value,
            fix="use a whole number of at least 2 (BatchNorm needs two rows per batch)",
        )


def _hidden(value: Any) -> tuple[int, ...]:
    sizes = tuple(value)
    if not sizes or not all(isinstance(s, int) and s >= 1 for s in sizes):
        raise ConfigError(
            setting="hidden", value=value, fix="give one or more positive layer widths, e.g. 100,100,100,50"
        )
    return sizes


@attrs.frozen(kw_only=True)
class GBDT2NNConfig:
    """Settings of the GBDT2NN student; the defaults follow DeepGBM's code for mid-sized data."""

    n_groups: int = attrs.field(default=10, validator=_positive_int)
    features_per_group: int = attrs.field(default=64, validator=_positive_int)
    embedding_dim: int = attrs.field(default=20, validator=_positive_int)
    hidden: tuple[int, ...] = attrs.field(default=(100, 100, 100, 50), converter=_hidden)
    leaf_epochs: int = attrs.field(default=2, validator=_positive_int)
    leaf_dropout: float = attrs.field(default=0.5, validator=_unit_interval)
    epochs: int = attrs.field(default=20, validator=_positive_int)
    batch_size: int = attrs.field(default=512, validator=_batch_size)
    lr: float = attrs.field(default=1e-3, validator=_positive_float)
    weight_decay: float = attrs.field(default=1e-6, validator=_non_negative_float)
    beta0: float = attrs.field(default=1.0, validator=_unit_interval)
    beta_decay: float = attrs.field(default=0.7, validator=_unit_interval)
    beta_step: int = attrs.field(default=2, validator=_positive_int)
    beta_floor: float = attrs.field(default=0.3, validator=_unit_interval)
    #: Share of the task loss that fits the teacher's margins (MSE, "logit matching") instead of the labels;
    #: 0 is DeepGBM's original, label-only loss.
    teacher_weight: float = attrs.field(default=0.0, validator=_unit_interval)
    #: After the last epoch, re-estimate the BatchNorm statistics on the training rows with the final weights (one
    #: forward pass). Training keeps exponential running averages of statistics while the weights move, and the
    #: alignment term (computed on running statistics, so that attributions are per row) tunes the weights to
    #: those moving averages: without this pass a joint student can predict much worse in eval mode than it trained
    #: (California housing, structure + mse, seed 0: test RMSE 0.651 against 0.489 after the pass).
    recalibrate_batchnorm: bool = attrs.field(default=True, validator=_boolean)
    seed: int = attrs.field(default=0, validator=_non_negative_int)

    def beta(self, epoch: int) -> float:
        """The embedding-loss weight β of ``epoch`` (0-based)."""
        return self.beta0 * max(self.beta_floor, self.beta_decay ** (epoch // self.beta_step))


@attrs.frozen(kw_only=True)
class EpochRecord:
    """What one training epoch did (means over its batches)."""

    epoch: int
    beta: float
    task_loss: float
    embedding_loss: float
    alignment_loss: float | None
    seconds: float
    #: Whatever the ``on_epoch_end`` callback measured (e.g. validation metrics, agreement).
    extra: dict[str, float] = attrs.field(factory=dict)


class GBDT2NNStudent(Student):
    """DeepGBM's GBDT2NN, built from a teacher and trained on encoded rows.

    Use :meth:`fit`, then :meth:`predict_margin` / :meth:`attributions`. Options are the fields of
    :class:`GBDT2NNConfig`.
    """

    def __init__(self, **options: Any) -> None:
        try:
            self.config = GBDT2NNConfig(**options)
        except TypeError as exc:
            known = ", ".join(f.name for f in attrs.fields(GBDT2NNConfig))
            raise ConfigError(
                setting="student option", value=str(exc).split("'")[-2], fix=f"use one of {known}"
            ) from exc
        self.module_: GBDT2NNModule | None = None
        self.history_: list[EpochRecord] = []
        self.leaf_history_: list[float] = []
        self.group_columns_: np.ndarray | None = None
        self.groups_: list[np.ndarray] = []

    # ------------------------------------------------------------------ building
    def _build(self, teacher: Teacher, column_of: np.ndarray) -> tuple[GBDT2NNModule, list[np.ndarray]]:
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
        )
        self.group_columns_ = columns
        return module, groups

    @property
    def module(self) -> GBDT2NNModule:
        if self.module_ is None:
            raise NotFittedError(
                component="GBDT2NNStudent", method="module", fix="call fit() first, or load a saved student"
            )
        return self.module_

    def margin(self, z: torch.Tensor) -> torch.Tensor:
        return self.module(z)  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ training
    def fit(
        self,
        *,
        teacher: Teacher,
        leaves: np.ndarray,
        z: np.ndarray,
        y: np.ndarray,
        task: Task,
        column_of: np.ndarray,
        aggregation: np.ndarray,
        teacher_margin: np.ndarray | None = None,
        alignment: Alignment | None = None,
        progress: Progress | None = None,
        on_epoch_end: Callable[[GBDT2NNStudent, int], dict[str, float] | None] | None = None,
        checkpoint: Path | None = None,
    ) -> GBDT2NNStudent:
        """Distil ``teacher`` into the network.

        ``leaves`` are the teacher's leaf indices of the training rows, ``z`` their encoded values, ``y`` the
        training targets (floats for regression, class indices otherwise). ``column_of`` / ``aggregation``
        describe the encoding (see :class:`~gbdt2nn_core.encoding.InputEncoder`). ``teacher_margin`` (the
        teacher's margins of the training rows) is needed when ``teacher_weight > 0``. ``on_epoch_end(student,
        epoch)`` may return metrics (validation loss, agreement...) to store in the epoch's record.

        With ``checkpoint``, the state after the leaf embedding and after every epoch is saved there, and a
        matching checkpoint found there is resumed: the result is the same as an uninterrupted run.
        """
        # seed torch for this fit only: the caller's global random state is restored afterwards
        with torch.random.fork_rng(devices=[]):
            return self._fit(
                teacher=teacher,
                leaves=leaves,
                z=z,
                y=y,
                task=task,
                column_of=column_of,
                aggregation=aggregation,
                teacher_margin=teacher_margin,
                alignment=alignment,
                progress=progress or NullProgress(),
                on_epoch_end=on_epoch_end,
                checkpoint=checkpoint,
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
        progress: Progress,
        on_epoch_end: Callable[[GBDT2NNStudent, int], dict[str, float] | None] | None,
        checkpoint: Path | None,
    ) -> GBDT2NNStudent:
        cfg = self.config
        n = z.shape[0]
        if n < 2:
            raise ConfigError(setting="training rows", value=n, fix="train on at least two rows")
        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        module, groups = self._build(teacher, column_of)
        self.groups_ = groups
        ensemble = teacher.structure()
        fingerprint = _fingerprint(cfg, teacher, z, y, alignment)
        resumed = load_checkpoint(checkpoint, fingerprint) if checkpoint is not None else None

        # --- step 4: leaf embeddings, then frozen heads and embedding targets G_j(x)
        scale = _target_scale(task, y)
        leaf_sums = torch.as_tensor(group_leaf_sums(ensemble, leaves, groups) / scale, dtype=torch.float32)
        embedding = LeafEmbedding(ensemble, groups, cfg.embedding_dim, cfg.leaf_dropout, leaf_sums.mean(0).numpy())
        leaves_t = torch.as_tensor(leaves, dtype=torch.long)
        steps = math.ceil(n / cfg.batch_size) * cfg.leaf_epochs
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
                    batch_size=cfg.batch_size,
                    lr=cfg.lr,
                    weight_decay=cfg.weight_decay,
                    generator=generator,
                    on_step=progress.advance,
                )
                _check_finite(torch.tensor(self.leaf_history_), "the leaf embedding loss", None, cfg, None)
            with torch.no_grad():
                targets = torch.cat([embedding.embed(leaves_t[i : i + 4096]) for i in range(0, n, 4096)])
                module.head_weight.copy_(embedding.weight * scale)
                module.head_bias.copy_(embedding.bias * scale)

        # --- steps 5-6 (+ alignment): train the group networks
        z_t = torch.as_tensor(z, dtype=torch.float32)
        y_t = torch.tensor(np.asarray(y) / scale if task == "regression" else np.asarray(y))
        y_t = y_t.long() if task == "multiclass" else y_t.float()
        objective = _Objective(cfg, task, module, targets, y_t, teacher_margin, alignment, aggregation, scale)
        if alignment is not None:
            # a generator of its own, so resuming at any epoch draws the same background sample
            background_rows = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + 1))[:256]
            alignment.attributor.fit(module, z_t[background_rows])
        optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.module_ = module
        self.history_ = []
        first_epoch = 0
        if resumed is not None:
            module.load_state_dict(resumed["module"])
            optimizer.load_state_dict(resumed["optimizer"])
            generator.set_state(resumed["generator"])
            torch.set_rng_state(resumed["torch_rng"])
            self.history_ = [EpochRecord(**record) for record in json.loads(resumed["history"])]
            first_epoch = int(resumed["epochs_done"])

        def save(epochs_done: int) -> None:
            if checkpoint is None:
                return
            save_checkpoint(
                checkpoint,
                {
                    "fingerprint": fingerprint,
                    "epochs_done": epochs_done,
                    "module": module.state_dict(),
                    "leaf_embedding": embedding.state_dict(),
                    "leaf_history": list(self.leaf_history_),
                    "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "history": json.dumps([attrs.asdict(record) for record in self.history_]),
                },
            )

        if resumed is None:
            save(0)
        with progress.step("student training", total=cfg.epochs):
            progress.advance(first_epoch)
            for epoch in range(first_epoch, cfg.epochs):
                started = time.perf_counter()
                sums = self._train_epoch(epoch, z_t, objective, optimizer, generator, alignment)
                extra = None
                if on_epoch_end is not None:
                    module.eval()
                    extra = on_epoch_end(self, epoch)
                record = EpochRecord(
                    extra=dict(extra or {}),
                    epoch=epoch,
                    beta=cfg.beta(epoch),
                    task_loss=sums["task"] / n,
                    embedding_loss=sums["emb"] / n,
                    alignment_loss=sums["align"] / sums["aligned_rows"] if sums["aligned_rows"] else None,
                    seconds=time.perf_counter() - started,
                )
                self.history_.append(record)
                save(epoch + 1)
                progress.advance(1, loss=record.task_loss)
        if cfg.recalibrate_batchnorm:
            with progress.step("BatchNorm statistics"):
                recalibrate_batchnorm(module, z_t, cfg.batch_size)
        module.eval()
        return self

    def _train_epoch(
        self,
        epoch: int,
        z: torch.Tensor,
        objective: _Objective,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        alignment: Alignment | None,
    ) -> dict[str, float]:
        """One pass over the rows in a seeded random order; returns summed losses."""
        cfg, module = self.config, self.module
        beta = cfg.beta(epoch)
        module.train()
        n = z.shape[0]
        order = torch.randperm(n, generator=generator)
        batches = math.ceil(n / cfg.batch_size)
        carry = torch.rand(batches, generator=generator) < (alignment.fraction if alignment else 0.0)
        sums = {"task": 0.0, "emb": 0.0, "align": 0.0, "aligned_rows": 0.0}
        for b, rows in enumerate(row_batches(order, cfg.batch_size)):
            loss_task, loss_emb = objective.distillation(z[rows], rows)
            loss = (1.0 - beta) * loss_task + beta * loss_emb
            _check_finite(loss, "the task and embedding loss", epoch, cfg, alignment)
            if alignment is not None and carry[b]:
                loss_align = objective.alignment(z[rows], rows)
                loss = loss + alignment.weight * loss_align
                _check_finite(loss, "the alignment loss", epoch, cfg, alignment)
                sums["align"] += float(loss_align.detach()) * len(rows)
                sums["aligned_rows"] += len(rows)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]  # torch's Tensor.backward is unannotated
            optimizer.step()
            sums["task"] += float(loss_task.detach()) * len(rows)
            sums["emb"] += float(loss_emb.detach()) * len(rows)
        return sums

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_margin(self, z: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """Margins of encoded rows, ``(n,)`` or ``(n, c)``.

        Rows go through in chunks of ``batch_size``: 2,048-row chunks stay in cache and ran 2.3× faster than
        one 10,000-row pass in BENCHMARKS.md's inference measurement.
        """
        module = self.module.eval()
        z_t = torch.as_tensor(z, dtype=torch.float32)
        return torch.cat([module(z_t[i : i + batch_size]) for i in range(0, len(z_t), batch_size)]).numpy()

    def attributions(
        self, z: np.ndarray, attributor: Attributor, aggregation: np.ndarray, batch_size: int = 2048
    ) -> np.ndarray:
        """Per-column attributions of encoded rows (eval mode): ``(n, d)`` or ``(n, c, d)``."""
        module = self.module.eval()
        z_t = torch.as_tensor(z, dtype=torch.float32)
        aggregation_t = torch.as_tensor(aggregation, dtype=torch.float32)
        chunks = []
        for i in range(0, len(z_t), batch_size):
            chunk = column_attributions(attributor, module, z_t[i : i + batch_size], aggregation_t)
            chunks.append(chunk.detach())
        return torch.cat(chunks).numpy()


class _Objective:
    """The parts of the joint loss for a batch of rows: task + embedding imitation, and alignment."""

    def __init__(
        self,
        cfg: GBDT2NNConfig,
        task: Task,
        module: GBDT2NNModule,
        embedding_targets: torch.Tensor,
        y: torch.Tensor,
        teacher_margin: np.ndarray | None,
        alignment: Alignment | None,
        aggregation: np.ndarray,
        scale: float = 1.0,
    ) -> None:
        # ``y`` comes divided by ``scale``; margins, soft targets and attributions are divided by it here
        self.cfg, self.module, self.targets, self.y, self.scale = cfg, module, embedding_targets, y, scale
        self.task_loss = _task_loss(task)
        self.embedding_weight = module.head_weight.abs() / scale  # the heads hold the scale, the loss must not
        self.soft_targets: torch.Tensor | None = None
        if cfg.teacher_weight > 0:
            if teacher_margin is None:
                raise ConfigError(setting="teacher_weight", value=cfg.teacher_weight, fix="pass teacher_margin to fit")
            self.soft_targets = torch.tensor(_soft_targets(task, teacher_margin) / scale, dtype=torch.float32)
            self.soft_loss = _soft_loss(task)
        self.alignment_spec = alignment
        if alignment is not None:
            if not alignment.attributor.differentiable:
                raise ConfigError(
                    setting="attributor",
                    value=type(alignment.attributor).__name__,
                    fix="joint training needs a differentiable attributor (e.g. structure or gradient-x-input)",
                )
            self.teacher_attributions = torch.tensor(alignment.teacher_attributions / scale, dtype=torch.float32)
            self.aggregation = torch.as_tensor(aggregation, dtype=torch.float32)

    def distillation(self, z: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``L_task`` (labels, optionally mixed with the teacher's margins) and the |w|-weighted embedding loss."""
        embeddings = self.module.embeddings(z)
        prediction = self.module.combine(self.module.group_outputs(embeddings)) / self.scale
        loss_task = self.task_loss(prediction, self.y[rows])
        if self.soft_targets is not None:
            weight = self.cfg.teacher_weight
            loss_task = (1 - weight) * loss_task + weight * self.soft_loss(prediction, self.soft_targets[rows])
        loss_embedding = (((embeddings - self.targets[rows]) ** 2) * self.embedding_weight).sum(dim=(1, 2)).mean()
        return loss_task, loss_embedding

    def alignment(self, z: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``L_align`` between the student's per-column attributions and the teacher's, back-propagatable."""
        assert self.alignment_spec is not None
        with frozen_batchnorm(self.module):
            student = column_attributions(
                self.alignment_spec.attributor, self.module, z, self.aggregation, create_graph=True
            )
        student = student / self.scale
        teacher = self.teacher_attributions[rows]
        return self.alignment_spec.loss(student.reshape(-1, student.shape[-1]), teacher.reshape(-1, teacher.shape[-1]))


def _check_finite(
    loss: torch.Tensor, which: str, epoch: int | None, cfg: GBDT2NNConfig, alignment: Alignment | None
) -> None:
    """Stop at the first non-finite loss, naming the setting to lower (training on would only spread the NaN)."""
    if bool(torch.isfinite(loss).all()):
        return
    lr = f"the learning rate (--student-option lr, now {cfg.lr:g})"
    if alignment is not None and (which == "the alignment loss" or alignment.weight > _LARGE_ALIGNMENT_WEIGHT):
        fix = f"lower the alignment weight (--alignment-weight, now {alignment.weight:g}) or {lr}"
    else:
        fix = f"lower {lr}"
    stage = "the leaf embedding" if epoch is None else f"epoch {epoch + 1} of the student training"
    raise TrainingError(stage=stage, loss=which, fix=fix)


#: An alignment weight above this is the likely cause when training diverges (the default is 1).
_LARGE_ALIGNMENT_WEIGHT = 1e3


def _fingerprint(
    cfg: GBDT2NNConfig, teacher: Teacher, z: np.ndarray, y: np.ndarray, alignment: Alignment | None
) -> str:
    """Identifies a training setup, so a checkpoint is only resumed by the run that wrote it."""
    digest = hashlib.sha256()
    digest.update(json.dumps(attrs.asdict(cfg), sort_keys=True, default=str).encode())
    digest.update(teacher.fingerprint().encode())
    digest.update(np.ascontiguousarray(z).tobytes())
    digest.update(np.ascontiguousarray(y).tobytes())
    if alignment is not None:
        loss_name = getattr(alignment.loss, "__qualname__", type(alignment.loss).__qualname__)
        described = (type(alignment.attributor).__qualname__, loss_name, alignment.weight, alignment.fraction)
        digest.update(repr(described).encode())
        digest.update(np.ascontiguousarray(alignment.teacher_attributions).tobytes())
    return digest.hexdigest()


#: Regression targets whose root mean square exceeds this train in units of a power of two near it.
_TARGET_SCALE_FROM = 2.0**10


def _target_scale(task: Task, y: np.ndarray) -> float:
    """The unit regression losses are computed in: 1, or for large targets a power of two near their size.

    A target in the billions would make the squared errors overflow 32-bit floats and the first steps
    of AdamW (about ``lr`` per weight) far too small to reach it. The network still outputs the target's own
    units (the frozen heads are multiplied by the scale); only the losses are divided by it, exactly, being
    a power of two. Targets of ordinary size are untouched (scale 1).
    """
    if task != "regression":
        return 1.0
    values = np.asarray(y, dtype=np.float64)
    rms = float(np.sqrt(np.mean(values**2))) if values.size else 0.0
    return 2.0 ** round(math.log2(rms)) if rms > _TARGET_SCALE_FROM else 1.0


def _task_loss(task: Task) -> nn.Module:
    if task == "regression":
        return nn.MSELoss()
    if task == "binary":
        return nn.BCEWithLogitsLoss()
    return nn.CrossEntropyLoss()


def _soft_targets(task: Task, margin: np.ndarray) -> np.ndarray:
    """The teacher's margins as regression targets (logit matching; per-row centred for softmax outputs)."""
    if task == "multiclass":
        centred: np.ndarray = margin - margin.mean(axis=1, keepdims=True)
        return centred
    return margin


def _soft_loss(task: Task) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if task == "multiclass":
        return lambda prediction, target: nn.functional.mse_loss(prediction - prediction.mean(1, keepdim=True), target)
    return nn.functional.mse_loss
