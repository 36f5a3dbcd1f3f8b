"""Interrupted training resumes from its last checkpoint and ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest

from gbdt2nn_core.pipeline.distill import DistillRun
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


def _aligned_epochs(run: DistillRun, path: Path, *, stop_after: int | None = None, **overrides: Any) -> list[int]:
    """The epochs an aligned student of ``run``'s pipeline trains with ``overrides`` and checkpoint ``path``."""
    from gbdt2nn_core.pipeline.core import Pipeline

    seen: list[int] = []

    def on_epoch_end(_student: Any, epoch: int) -> None:
        seen.append(epoch)
        if epoch == stop_after:
            raise _Killed

    config = attrs.evolve(run.config, student_options={**run.config.student_options, "epochs": 3})
    Pipeline(config).train(
        run.prepared, alignment_weight=1.0, alignment="mse", on_epoch_end=on_epoch_end, checkpoint=path, **overrides
    )
    return seen


@pytest.mark.parametrize(
    ("written", "resumed_with"),
    [
        ({"alignment_options": {"normalize": False}}, {"alignment_options": {"normalize": True}}),
        ({"attributor_options": {"background_rows": 256}}, {"attributor_options": {"background_rows": 64}}),
        ({"alignment_batches": "grouped"}, {"alignment_batches": "mixed"}),
    ],
    ids=["loss-options", "attributor-options", "batches"],
)
def test_checkpoint_of_other_alignment_settings_is_not_resumed(
    adult_run: DistillRun, tmp_path: Path, written: dict[str, Any], resumed_with: dict[str, Any]
) -> None:
    # the loss, the attributor and the batches enter the fingerprint with their options: a run that changes one
    # trains afresh, while the same settings (built anew, as a restarted process builds them) resume
    killed = tmp_path / "killed.ckpt"
    with pytest.raises(_Killed):
        _aligned_epochs(adult_run, killed, stop_after=1, **written)
    same = tmp_path / "same.ckpt"
    same.write_bytes(killed.read_bytes())
    assert _aligned_epochs(adult_run, same, **written) == [1, 2]  # resumed after epoch 0
    assert _aligned_epochs(adult_run, killed, **resumed_with) == [0, 1, 2]  # another setup: from scratch
