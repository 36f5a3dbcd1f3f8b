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
from typing import Any, Protocol, TypeVar

import attrs
import pandas as pd

from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.host.interfaces import Attributor, Student, Teacher
from gbdt2nn_core.host.registry import Registry
from gbdt2nn_core.pipeline import DistillConfig, Pipeline, Prepared, PreparedData, Trained
from gbdt2nn_core.pipeline.metrics import ALIGNMENT_COST_NOTICE, Metrics, validation_cost
from gbdt2nn_core.progress import Progress

__all__ = [
    "ALIGNMENT_CHECK_FACTOR",
    "DistillConfig",
    "DistillRun",
    "checked_alignment",
    "compare",
    "distill",
    "plain_and_aligned",
    "plain_then_aligned",
]

#: What ``alignment_check`` multiplies λ by when the aligned student costs accuracy on the held-out rows. Under the
#: gradient clip λ between 0.5 and 2 changes little (each aligned batch's step is clipped at twice an ordinary one, so
#: λ sets its direction, not its length); a tenth of it took two thirds of nycflights13's cost away at Spearman 0.913
#: → 0.896, and all of diamonds' cut's (RESULTS.md, "λ under the clip").
ALIGNMENT_CHECK_FACTOR = 0.1


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

    @property
    def choices(self) -> dict[str, Any]:
        """What the pipeline chose for the student and why (:attr:`Trained.choices <gbdt2nn_core.pipeline.Trained>`)."""
        return self.trained.choices


class _StudentRun(Protocol):
    """What :func:`checked_alignment` reads of a training: a :class:`DistillRun`, or a bare
    :class:`~gbdt2nn_core.pipeline.Trained` (the scikit-learn estimators, which evaluate nothing)."""

    @property
    def config(self) -> DistillConfig: ...

    @property
    def student(self) -> Student: ...

    @property
    def choices(self) -> dict[str, Any]: ...


RunT = TypeVar("RunT", bound=_StudentRun)


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


def checked_alignment(plain: RunT, aligned: RunT, retrain: Callable[[float], RunT]) -> RunT:
    """``aligned``, or where its best validation task loss is more than
    :data:`~gbdt2nn_core.pipeline.metrics.ALIGNMENT_COST_NOTICE` above ``plain``'s (the same held-out rows;
    :func:`~gbdt2nn_core.pipeline.metrics.validation_cost`), the student ``retrain(λ × ALIGNMENT_CHECK_FACTOR)``
    trains instead. What was tried and kept goes into the kept student's choices (``alignment_check``; the run
    folder's ``config.json`` → ``student_choices``). Without held-out rows nothing is compared and ``aligned`` stays.
    Under several processes each calls it with its own training of the same student; they decide together.
    """
    weight = aligned.config.alignment_weight
    cost = validation_cost(aligned.student.history, plain.student.history)
    tried = [{"weight": weight, "validation_cost": cost}]
    kept = aligned
    if _every_process_agrees(cost is not None and cost > ALIGNMENT_COST_NOTICE):
        kept = retrain(weight * ALIGNMENT_CHECK_FACTOR)
        tried.append(
            {
                "weight": kept.config.alignment_weight,
                "validation_cost": validation_cost(kept.student.history, plain.student.history),
            }
        )
    if cost is None:
        why = "no held-out rows to compare on: the configured weight"
    elif kept is aligned:
        why = f"the aligned student's validation loss within {ALIGNMENT_COST_NOTICE:.1%} of the plain one's"
    else:
        why = (
            f"the aligned student's validation loss {cost:+.2%} against the plain one's, above "
            f"{ALIGNMENT_COST_NOTICE:.1%}: trained again at {ALIGNMENT_CHECK_FACTOR:g} x the weight"
        )
    kept.choices["alignment_check"] = {
        "notice": ALIGNMENT_COST_NOTICE,
        "tried": tried,
        "kept_weight": kept.config.alignment_weight,
        "why": why,
    }
    return kept


def _every_process_agrees(retrain: bool) -> bool:
    """``retrain``, decided once for every process that trains the student together: each holds the same weights and
    every held-out row, so each computes the same cost, but a process that decided alone and differently would wait
    forever for the others in the retraining's first collective. With one process, ``retrain`` itself."""
    import torch

    from gbdt2nn_core.student.distributed import all_reduce_sum

    return bool(all_reduce_sum(torch.tensor([float(retrain)]))[0] > 0)


def plain_then_aligned(train: Callable[[float], RunT], config: DistillConfig) -> tuple[RunT, RunT]:
    """``train(0)`` (the plain student) and ``train(config.alignment_weight)``; with ``config.alignment_check``, the
    aligned one is :func:`checked_alignment`'s choice (the plain student is its yardstick; ``train`` retrains)."""
    plain = train(0.0)
    aligned = train(config.alignment_weight)
    if config.alignment_check:
        aligned = checked_alignment(plain, aligned, train)
    return plain, aligned


def plain_and_aligned(pipeline: Pipeline, prepared: Prepared) -> tuple[DistillRun, DistillRun]:
    """The plain (λ = 0) student of ``prepared`` and the aligned one at the pipeline's λ, each evaluated
    (:func:`plain_then_aligned`: with ``config.alignment_check``, :func:`checked_alignment`'s choice)."""
    return plain_then_aligned(lambda weight: run_student(pipeline, prepared, weight), pipeline.config)


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

    ``teacher_model`` wraps an existing booster (object or model file) instead of training one. With
    ``config.alignment_check`` a plain student trains first, as the aligned one's yardstick (:func:`checked_alignment`).
    """
    pipeline = Pipeline(config, registry, progress=progress)
    pipeline.check()
    prepared = pipeline.prepare(frame, target, teacher_model)
    weight = pipeline.config.alignment_weight
    try:
        if pipeline.config.alignment_check and weight > 0:
            return plain_and_aligned(pipeline, prepared)[1]
        return run_student(pipeline, prepared, weight)
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
    """Plain (λ = 0) and aligned (λ = ``config.alignment_weight``) students from one teacher and one split; with
    ``config.alignment_check`` the aligned one is :func:`checked_alignment`'s choice."""
    config = config or DistillConfig()
    if config.alignment_weight <= 0:
        raise ConfigError(setting="alignment_weight", value=config.alignment_weight, fix="compare needs λ > 0")
    pipeline = Pipeline(config, registry, progress=progress)
    pipeline.check()
    prepared = pipeline.prepare(frame, target, teacher_model)
    try:
        return plain_and_aligned(pipeline, prepared)
    except BaseException:
        prepared.close()  # rows kept on disk go with a failed run; finished ones keep them with their data
        raise
