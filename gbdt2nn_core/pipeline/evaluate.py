"""Measuring a student against its teacher on some rows: the one place a :class:`~gbdt2nn_core.pipeline.metrics.Metrics`
record is built (the pipeline's test rows, or the rows given to an estimator's ``evaluate``)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from gbdt2nn_core.data.rowfile import is_on_disk, row_chunks
from gbdt2nn_core.host.interfaces import Attributor, Student, Task
from gbdt2nn_core.pipeline.config import DistillConfig
from gbdt2nn_core.pipeline.metrics import (
    Metrics,
    StudentMetrics,
    agreement,
    agreement_per_output,
    explained_outputs,
    fidelity,
    task_metrics,
)

__all__ = ["ATTRIBUTION_CHUNK", "evaluate_rows"]

#: Rows explained at a time. An attribution holds several ``(rows, groups, group width)`` tensors and their graph:
#: at 2,048 rows that was about 330 MiB on adult, the whole run's peak; at 512 about a quarter of it.
ATTRIBUTION_CHUNK = 512


def _attributions(student: Student, attributor: Attributor, aggregation: np.ndarray, z: np.ndarray) -> np.ndarray:
    return student.attributions(z, attributor, aggregation, ATTRIBUTION_CHUNK)


def _by_chunk(z: np.ndarray, per_rows: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``per_rows(z)``; for encoded rows kept on disk, over chunks read one at a time (chunks of
    :func:`~gbdt2nn_core.data.rowfile.chunk_rows` rows, a multiple of every inference chunk: the same calls, the same
    values), so that the file never becomes resident as a whole."""
    if not is_on_disk(z):
        return per_rows(z)
    return np.concatenate([per_rows(rows) for rows in row_chunks(z)])


def evaluate_rows(
    *,
    config: DistillConfig,
    task: Task,
    classes: Sequence[Any],
    y: np.ndarray,
    z: np.ndarray,
    aggregation: np.ndarray,
    teacher_margin: np.ndarray,
    teacher_attributions: np.ndarray,
    student: Student,
    attributor: Attributor,
    attributors: Mapping[str, Attributor],
    background: np.ndarray,
    rows_train: int,
    keep: dict[str, np.ndarray] | None = None,
) -> Metrics:
    """Task metric, fidelity and agreement of ``student`` (explained by the fitted ``attributor``) on ``(z, y)``.

    Each of ``attributors`` is fitted on ``background`` first and measured in ``agreement_by_attributor``.
    """
    import torch

    margin = np.asarray(_by_chunk(z, student.predict_margin), dtype=np.float64)
    values = _by_chunk(z, functools.partial(_attributions, student, attributor, aggregation))
    # multiclass: each row's explanation of the class the teacher predicts (every class: agreement_per_class)
    explained = explained_outputs(task, teacher_margin)
    by_attributor: dict[str, dict[str, float]] = {}
    arrays: dict[str, np.ndarray] = {"margin": margin}
    for name, other in attributors.items():
        other.fit(student.module, torch.as_tensor(background, dtype=torch.float32))
        arrays[name] = _by_chunk(z, functools.partial(_attributions, student, other, aggregation))
        by_attributor[name] = agreement(arrays[name], teacher_attributions, explained=explained)
    if keep is not None:
        keep.update(arrays)
    per_class = every_class = None
    if task == "multiclass":
        # every class's explanations, not only the predicted one's: which classes lag, and the mean of all pairs
        per_class = agreement_per_output(values, teacher_attributions, [str(c) for c in classes])
        every_class = agreement(values, teacher_attributions)
    return Metrics(
        task=task,
        rows_train=rows_train,
        rows_test=len(y),
        teacher_name=config.teacher,
        teacher_test=task_metrics(task, y, teacher_margin),
        student=StudentMetrics(
            name=config.student,
            attributor=config.attributor,
            loss=config.alignment,
            weight=float(config.alignment_weight),
            # calibrated probabilities (the temperature keeps AUC and accuracy); fidelity compares raw margins
            test=task_metrics(task, y, margin / student.temperature),
            fidelity=fidelity(task, margin, teacher_margin),
            agreement=agreement(values, teacher_attributions, explained=explained),
            agreement_by_attributor=by_attributor,
            agreement_per_class=per_class,
            agreement_every_class=every_class,
        ),
    )
