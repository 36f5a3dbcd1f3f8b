"""Interrupted training resumes from its last checkpoint and ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from gbdt2nn_core.distill import DistillRun
from gbdt2nn_core.student import GBDT2NNStudent


class _Killed(Exception):
    """Stands in for a kill: raised from inside the training loop."""


def _fit(run: DistillRun, *, checkpoint: Path | None, stop_after: int | None = None) -> GBDT2NNStudent:
    student = GBDT2NNStudent(epochs=3, n_groups=3, hidden=(16, 8), batch_size=256, seed=1)

    def interrupt(_student: GBDT2NNStudent, epoch: int) -> None:
        if stop_after is not None and epoch == stop_after:
            raise _Killed

    return student.fit(run.prepared.student_inputs(on_epoch_end=interrupt, checkpoint=checkpoint))


def test_resumed_run_equals_uninterrupted_run(adult_run: DistillRun, tmp_path: Path) -> None:
    reference = _fit(adult_run, checkpoint=None)
    path = tmp_path / "student.ckpt"
    with pytest.raises(_Killed):
        _fit(adult_run, checkpoint=path, stop_after=1)  # epoch 0 saved; killed inside epoch 1's callback
    assert path.exists()
    resumed = _fit(adult_run, checkpoint=path)
    assert [r.epoch for r in resumed.history_] == [0, 1, 2]
    np.testing.assert_array_equal(
        resumed.predict_margin(adult_run.data.z_test), reference.predict_margin(adult_run.data.z_test)
    )
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_checkpoint_of_another_setup_is_not_resumed(adult_run: DistillRun, tmp_path: Path) -> None:
    path = tmp_path / "student.ckpt"
    _fit(adult_run, checkpoint=path)
    other = GBDT2NNStudent(epochs=1, n_groups=3, hidden=(16, 8), batch_size=256, seed=2)
    other.fit(adult_run.prepared.student_inputs(checkpoint=path))
    assert [r.epoch for r in other.history_] == [0]  # trained from scratch, not 3 epochs resumed


def test_corrupt_checkpoint_starts_over(adult_run: DistillRun, tmp_path: Path) -> None:
    path = tmp_path / "student.ckpt"
    path.write_bytes(b"not a checkpoint")
    student = _fit(adult_run, checkpoint=path)
    assert len(student.history_) == 3
    assert path.stat().st_size > 100
