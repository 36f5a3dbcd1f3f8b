"""Convenience functions over the pipeline: ``distill`` one student, or ``compare`` plain and aligned ones.

``distill(frame, target)`` runs :class:`~gbdt2nn_core.pipeline.Pipeline` end to end with components chosen by
name from the plugin registry::

    from gbdt2nn_core.data import load_bundled
    from gbdt2nn_core.pipeline.distill import DistillConfig, distill

    adult = load_bundled("adult")
    run = distill(adult.frame, adult.target, DistillConfig(alignment_weight=1.0))
    print(run.metrics["student"]["agreement"])
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pandas as pd

from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.host.interfaces import Attributor, Student, Teacher
from gbdt2nn_core.host.registry import Registry
from gbdt2nn_core.pipeline import DistillConfig, Pipeline, Prepared, PreparedData, Trained
from gbdt2nn_core.pipeline.metrics import Metrics
from gbdt2nn_core.progress import Progress

__all__ = ["DistillConfig", "DistillRun", "compare", "distill"]


@attrs.define(kw_only=True)
class DistillRun:
    """The outcome of one distillation: models, data, metrics (``metrics.json``'s content) and phase timings."""

    config: DistillConfig
    prepared: Prepared = attrs.field(repr=False)
    trained: Trained = attrs.field(repr=False)
    record: Metrics = attrs.field(repr=False)

    @property
    def data(self) -> PreparedData:
        return self.prepared.data

    @property
    def teacher(self) -> Teacher:
        return self.prepared.teacher

    @property
    def student(self) -> Student:
        return self.trained.student

    @property
    def attributor(self) -> Attributor:
        return self.trained.attributor

    @property
    def metrics(self) -> dict[str, Any]:
        return self.record.to_json()

    @property
    def timings(self) -> dict[str, float]:
        return dict(self.record.timings)


def run_student(
    pipeline: Pipeline,
    prepared: Prepared,
    alignment_weight: float,
    *,
    checkpoint: Path | None = None,
    on_resume: Callable[[int], None] | None = None,
) -> DistillRun:
    """Train and evaluate one student of ``prepared`` with the pipeline's settings and λ = ``alignment_weight``.

    With ``checkpoint`` the student saves its state after every epoch and continues from a matching checkpoint
    found there; ``on_resume(epoch)`` is then called once, when the first resumed epoch ends.
    """
    said: list[int] = []

    def on_epoch_end(_student: Any, epoch: int) -> None:
        if not said and on_resume is not None and epoch > 0:
            on_resume(epoch)
        said.append(epoch)

    trained = pipeline.train(
        prepared, alignment_weight=alignment_weight, on_epoch_end=on_epoch_end, checkpoint=checkpoint
    )
    metrics = pipeline.evaluate(prepared, trained)
    return DistillRun(config=trained.config, prepared=prepared, trained=trained, record=metrics)


def distill(
    frame: pd.DataFrame,
    target: str,
    config: DistillConfig | None = None,
    *,
    teacher_model: Any = None,
    registry: Registry | None = None,
    progress: Progress | None = None,
) -> DistillRun:
    """Distil one student (aligned when ``config.alignment_weight > 0``) from ``frame``'s features to ``target``.

    ``teacher_model`` wraps an existing booster (object or model file) instead of training one.
    """
    pipeline = Pipeline(config, registry, progress=progress)
    pipeline.check()
    prepared = pipeline.prepare(frame, target, teacher_model)
    try:
        return run_student(pipeline, prepared, pipeline.config.alignment_weight)
    except BaseException:
        prepared.close()  # rows kept on disk go with a failed run; a finished one keeps them with its data
        raise


def compare(
    frame: pd.DataFrame,
    target: str,
    config: DistillConfig | None = None,
    *,
    teacher_model: Any = None,
    registry: Registry | None = None,
    progress: Progress | None = None,
) -> tuple[DistillRun, DistillRun]:
    """Plain (λ = 0) and aligned (λ = ``config.alignment_weight``) students from one teacher and one split."""
    config = config or DistillConfig()
    if config.alignment_weight <= 0:
        raise ConfigError(setting="alignment_weight", value=config.alignment_weight, fix="compare needs λ > 0")
    pipeline = Pipeline(config, registry, progress=progress)
    pipeline.check()
    prepared = pipeline.prepare(frame, target, teacher_model)
    try:
        return run_student(pipeline, prepared, 0.0), run_student(pipeline, prepared, config.alignment_weight)
    except BaseException:
        prepared.close()  # rows kept on disk go with a failed run; finished ones keep them with their data
        raise
