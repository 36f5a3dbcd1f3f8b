"""The GBDT2NN student: DeepGBM's recipe for turning a tree ensemble into a network, plus explanation imitation.

Steps (DeepGBM, KDD 2019, §3.2): group the trees, pick each group's top columns by split gain, learn a leaf
embedding per group that predicts the group's summed leaf values, then train one MLP per group on its columns
to reproduce that embedding while the summed group outputs fit the task:

    L = (1 - β_e) · L_task(ŷ, y) + β_e · Σ_j Σ_d |w_jd| (N_jd(x[I_j]) - G_jd(x))²  [+ λ · L_align]

with ``β_e = β_0 · max(β_floor, r^⌊e / d⌋)``, AdamW (lr 1e-3, weight decay 1e-6).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from gbdt2nn_core.alignment import Alignment, column_attributions, frozen_batchnorm
from gbdt2nn_core.errors import ConfigError, Gbdt2nnError
from gbdt2nn_core.interfaces import Attributor, Student, Task, Teacher
from gbdt2nn_core.progress import NullProgress, Progress
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
    batch_size: int = attrs.field(default=512, validator=_positive_int)
    lr: float = attrs.field(default=1e-3, validator=_positive_float)
    weight_decay: float = attrs.field(default=1e-6, validator=_non_negative_float)
    beta0: float = attrs.field(default=1.0, validator=_unit_interval)
    beta_decay: float = attrs.field(default=0.7, validator=_unit_interval)
    beta_step: int = attrs.field(default=2, validator=_positive_int)
    beta_floor: float = attrs.field(default=0.3, validator=_unit_interval)
    #: Share of the task loss that fits the teacher's margins (MSE, "logit matching") instead of the labels;
    #: 0 is DeepGBM's original, label-only loss.
    teacher_weight: float = attrs.field(default=0.0, validator=_unit_interval)
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
            raise _NotFitted()
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
    ) -> GBDT2NNStudent:
        """Distil ``teacher`` into the network.

        ``leaves`` are the teacher's leaf indices of the training rows, ``z`` their encoded values, ``y`` the
        training targets (floats for regression, class indices otherwise). ``column_of`` / ``aggregation``
        describe the encoding (see :class:`~gbdt2nn_core.encoding.InputEncoder`). ``teacher_margin`` (the
        teacher's margins of the training rows) is needed when ``teacher_weight > 0``. ``on_epoch_end(student,
        epoch)`` may return metrics (validation loss, agreement...) to store in the epoch's record.
        """
        progress = progress or NullProgress()
        cfg = self.config
        torch.manual_seed(cfg.seed)
        generator = torch.Generator().manual_seed(cfg.seed)
        module, groups = self._build(teacher, column_of)
        self.groups_ = groups
        ensemble = teacher.structure()
        n = z.shape[0]
        if n < 2:
            raise ConfigError(setting="training rows", value=n, fix="train on at least two rows")

        # --- step 4: leaf embeddings, then frozen heads and embedding targets G_j(x)
        leaf_sums = torch.as_tensor(group_leaf_sums(ensemble, leaves, groups), dtype=torch.float32)
        embedding = LeafEmbedding(ensemble, groups, cfg.embedding_dim, cfg.leaf_dropout, leaf_sums.mean(0).numpy())
        leaves_t = torch.as_tensor(leaves, dtype=torch.long)
        steps = math.ceil(n / cfg.batch_size) * cfg.leaf_epochs
        with progress.step("leaf embedding", total=steps):
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
            with torch.no_grad():
                targets = torch.cat([embedding.embed(leaves_t[i : i + 4096]) for i in range(0, n, 4096)])
                module.head_weight.copy_(embedding.weight)
                module.head_bias.copy_(embedding.bias)

        # --- steps 5-6 (+ alignment): train the group networks
        z_t = torch.as_tensor(z, dtype=torch.float32)
        y_t = torch.as_tensor(y, dtype=torch.long if task == "multiclass" else torch.float32)
        task_loss = _task_loss(task)
        soft_targets = None
        if cfg.teacher_weight > 0:
            if teacher_margin is None:
                raise ConfigError(setting="teacher_weight", value=cfg.teacher_weight, fix="pass teacher_margin to fit")
            soft_targets = torch.tensor(_soft_targets(task, teacher_margin), dtype=torch.float32)
            soft_loss = _soft_loss(task)
        emb_weight = module.head_weight.abs()
        optimizer = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        align_targets = aggregation_t = None
        if alignment is not None:
            if not alignment.attributor.differentiable:
                raise ConfigError(
                    setting="attributor",
                    value=type(alignment.attributor).__name__,
                    fix="joint training needs a differentiable attributor (e.g. gradient-x-input)",
                )
            align_targets = torch.tensor(alignment.teacher_attributions, dtype=torch.float32)
            aggregation_t = torch.as_tensor(aggregation, dtype=torch.float32)
            background = z_t[torch.randperm(n, generator=generator)[:256]]
            alignment.attributor.fit(module, background)
        self.module_ = module
        self.history_ = []
        batches = math.ceil(n / cfg.batch_size)
        with progress.step("student training", total=cfg.epochs):
            for epoch in range(cfg.epochs):
                started = time.perf_counter()
                beta = cfg.beta(epoch)
                module.train()
                order = torch.randperm(n, generator=generator)
                carry = torch.rand(batches, generator=generator) < (alignment.fraction if alignment else 0.0)
                sums = {"task": 0.0, "emb": 0.0, "align": 0.0}
                aligned_rows = 0
                for b, start in enumerate(range(0, n, cfg.batch_size)):
                    rows = order[start : start + cfg.batch_size]
                    if len(rows) < 2:
                        continue
                    zb = z_t[rows]
                    emb = module.embeddings(zb)
                    prediction = module.combine(module.group_outputs(emb))
                    loss_task = task_loss(prediction, y_t[rows])
                    if soft_targets is not None:
                        loss_task = (1 - cfg.teacher_weight) * loss_task + cfg.teacher_weight * soft_loss(
                            prediction, soft_targets[rows]
                        )
                    loss_emb = (((emb - targets[rows]) ** 2) * emb_weight).sum(dim=(1, 2)).mean()
                    loss = (1.0 - beta) * loss_task + beta * loss_emb
                    if alignment is not None and carry[b]:
                        with frozen_batchnorm(module):
                            student_attr = column_attributions(
                                alignment.attributor, module, zb, aggregation_t, create_graph=True
                            )
                        teacher_attr = align_targets[rows]
                        loss_align = alignment.loss(
                            student_attr.reshape(-1, student_attr.shape[-1]),
                            teacher_attr.reshape(-1, teacher_attr.shape[-1]),
                        )
                        loss = loss + alignment.weight * loss_align
                        sums["align"] += float(loss_align.detach()) * len(rows)
                        aligned_rows += len(rows)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    sums["task"] += float(loss_task.detach()) * len(rows)
                    sums["emb"] += float(loss_emb.detach()) * len(rows)
                extra = None
                if on_epoch_end is not None:
                    module.eval()
                    extra = on_epoch_end(self, epoch)
                record = EpochRecord(
                    extra=dict(extra or {}),
                    epoch=epoch,
                    beta=beta,
                    task_loss=sums["task"] / n,
                    embedding_loss=sums["emb"] / n,
                    alignment_loss=sums["align"] / aligned_rows if aligned_rows else None,
                    seconds=time.perf_counter() - started,
                )
                self.history_.append(record)
                progress.advance(1, loss=record.task_loss)
        module.eval()
        return self

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_margin(self, z: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """Margins of encoded rows, ``(n,)`` or ``(n, c)``."""
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


@attrs.define(auto_exc=True)
class _NotFitted(Gbdt2nnError):
    def message(self) -> str:
        return "this student is not fitted yet; call fit() first"


def _task_loss(task: Task) -> nn.Module:
    if task == "regression":
        return nn.MSELoss()
    if task == "binary":
        return nn.BCEWithLogitsLoss()
    return nn.CrossEntropyLoss()


def _soft_targets(task: Task, margin: np.ndarray) -> np.ndarray:
    """The teacher's margins as regression targets (logit matching; per-row centred for softmax outputs)."""
    if task == "multiclass":
        return margin - margin.mean(axis=1, keepdims=True)
    return margin


def _soft_loss(task: Task) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if task == "multiclass":
        return lambda prediction, target: nn.functional.mse_loss(prediction - prediction.mean(1, keepdim=True), target)
    return nn.functional.mse_loss
