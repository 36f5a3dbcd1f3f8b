"""The student's validation split and early stopping with best-epoch restore (issue 12, item 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pandas as pd
import pytest
import sklearn.metrics as skm
from scipy.special import expit

from gbdt2nn_core.host.registry import get_registry
from gbdt2nn_core.pipeline.data import MIN_VALIDATION_ROWS, validation_split
from gbdt2nn_core.pipeline.distill import DistillRun

pytestmark = pytest.mark.usefixtures("single_thread_torch")

#: A learning rate high enough that the small adult student overfits within a few epochs, so that it stops early.
OVERFIT: dict[str, Any] = {"epochs": 12, "patience": 2, "lr": 0.03, "n_groups": 3, "hidden": (32, 16)}
OVERFIT.update(batch_size=128, beta0=0.0, recalibrate_batchnorm=False, seed=1)


# ------------------------------------------------------------------------------------------------ the split
def test_the_split_is_seeded_disjoint_and_stratified() -> None:
    y = np.array([0] * 900 + [1] * 100)
    split = validation_split(y, task="binary", fraction=0.1, seed=3)
    assert split.note == "stratified"
    assert len(split.validation) == 100
    assert len(split.fit) == 900
    assert np.intersect1d(split.fit, split.validation).size == 0
    np.testing.assert_array_equal(np.union1d(split.fit, split.validation), np.arange(1000))
    assert np.bincount(y[split.validation]).tolist() == [90, 10]  # the training rows' class shares, exactly
    again = validation_split(y, task="binary", fraction=0.1, seed=3)
    np.testing.assert_array_equal(again.validation, split.validation)
    other = validation_split(y, task="binary", fraction=0.1, seed=4)
    assert not np.array_equal(other.validation, split.validation)


def test_too_few_rows_or_a_rare_class_fall_back_and_say_so() -> None:
    tiny = validation_split(np.zeros(100), task="regression", fraction=0.1, seed=0)
    assert len(tiny.validation) == 0
    assert len(tiny.fit) == 100
    assert MIN_VALIDATION_ROWS > 10
    assert "too few" in tiny.note
    rare = np.array([0] * 499 + [1] * 500 + [2])  # one row of class 2: cannot be stratified
    split = validation_split(rare, task="multiclass", fraction=0.1, seed=0)
    assert split.note.startswith("random")
    assert len(split.validation) == 100
    off = validation_split(rare, task="multiclass", fraction=0.0, seed=0)
    assert len(off.validation) == 0
    assert off.note.startswith("off")


def test_the_pipeline_holds_validation_rows_out_of_the_student_only(adult_run: DistillRun) -> None:
    prepared = adult_run.prepared
    split = prepared.validation
    assert len(split.validation) == round(0.1 * len(prepared.data.y_train))
    inputs = prepared.student_inputs()
    assert inputs.validation is not None
    np.testing.assert_array_equal(inputs.z, prepared.data.z_train[split.fit])
    np.testing.assert_array_equal(inputs.validation.z, prepared.data.z_train[split.validation])
    np.testing.assert_array_equal(inputs.validation.y, prepared.data.y_train[split.validation])
    np.testing.assert_array_equal(inputs.leaves, prepared.teacher.leaf_indices(prepared.data.train_frame)[split.fit])
    # the teacher saw every training row: its own leaves of the held-out rows are those of the full fit
    assert adult_run.student.history["stopping"]["validation_rows"] == len(split.validation)


def test_the_fitting_rows_come_first_and_reach_the_student_as_views(adult_run: DistillRun, adult_dataset: Any) -> None:
    """The held-out rows are the ones validation_split draws from the split's training rows; the training rows are
    then ordered fitting rows first, so that the student's fitting rows and held-out rows are views of the encoding
    (the fitting rows' leaves too)."""
    from gbdt2nn_core.pipeline import Pipeline

    prepared = adult_run.prepared
    frame = adult_dataset.frame.sample(2000, random_state=0).reset_index(drop=True)  # as adult_run's
    split = Pipeline(adult_run.config).split(frame, adult_dataset.target)
    drawn = validation_split(split.y_train, task=split.task, fraction=0.1, seed=adult_run.config.seed)
    n_fit = len(drawn.fit)
    np.testing.assert_array_equal(prepared.validation.fit, np.arange(n_fit))
    np.testing.assert_array_equal(prepared.validation.validation, np.arange(n_fit, len(split.y_train)))
    train = prepared.data.train_frame
    for positions, rows in ((drawn.fit, slice(0, n_fit)), (drawn.validation, slice(n_fit, None))):
        expected = split.train_frame.iloc[positions].reset_index(drop=True)
        pd.testing.assert_frame_equal(train.iloc[rows].reset_index(drop=True), expected)
        np.testing.assert_array_equal(prepared.data.y_train[rows], split.y_train[positions])
    inputs = prepared.student_inputs()
    assert np.shares_memory(inputs.z, prepared.data.z_train)
    assert np.shares_memory(inputs.leaves, prepared.leaves_train)
    assert inputs.validation is not None
    assert np.shares_memory(inputs.validation.z, prepared.data.z_train)
    # several processes: each one's shard of the fitting rows is still theirs alone, in order
    shard = np.arange(10, 20)
    np.testing.assert_array_equal(prepared.student_inputs(shard=shard).z, prepared.data.z_train[10:20])


# ------------------------------------------------------------------------------------------------ stopping
def _fit(run: DistillRun, student: str = "gbdt2nn", inputs: dict[str, Any] | None = None, **options: Any) -> Any:
    settings = {**OVERFIT, **options} if student == "gbdt2nn" else options
    fitted = get_registry().student(student, **settings)
    return fitted.fit(run.prepared.student_inputs(**(inputs or {})))


def _validation_log_loss(run: DistillRun, student: Any) -> float:
    """The student's log-loss on its validation rows, by scikit-learn (independent of the training loop)."""
    held_out = run.prepared.validation.validation
    margin = student.predict_margin(run.data.z_train[held_out])
    return float(skm.log_loss(run.data.y_train[held_out], expit(margin), labels=[0, 1]))


def test_training_stops_after_patience_epochs_and_keeps_the_best_epoch(adult_run: DistillRun) -> None:
    student = _fit(adult_run)
    losses = [record.validation_loss for record in student.history_]
    best = int(np.argmin(losses))  # by hand from the recorded losses: the first lowest
    stopping = student.history["stopping"]
    assert stopping["best_epoch"] == best
    assert len(losses) == best + 1 + OVERFIT["patience"] < OVERFIT["epochs"]  # stopped early, patience after best
    assert all(loss > losses[best] for loss in losses[best + 1 :])
    assert stopping["stopped"].startswith("no improvement")
    assert stopping["restored_best"]
    # the weights are the best epoch's: scikit-learn's log-loss of them is the recorded best loss
    assert _validation_log_loss(adult_run, student) == pytest.approx(losses[best], rel=1e-4)
    assert _validation_log_loss(adult_run, student) < losses[-1]


def test_without_early_stopping_the_budget_is_trained_and_the_last_weights_kept(adult_run: DistillRun) -> None:
    student = _fit(adult_run, early_stopping=False, epochs=6)
    losses = [record.validation_loss for record in student.history_]
    assert len(losses) == 6
    assert student.history["stopping"]["stopped"] == "epoch budget reached"
    assert not student.history["stopping"]["restored_best"]
    assert _validation_log_loss(adult_run, student) == pytest.approx(losses[-1], rel=1e-4)


def test_without_validation_rows_the_budget_is_trained(adult_run: DistillRun) -> None:
    student = get_registry().student("gbdt2nn", **{**OVERFIT, "epochs": 4})
    student.fit(attrs.evolve(adult_run.prepared.student_inputs(), validation=None))
    assert len(student.history_) == 4
    assert all(record.validation_loss is None for record in student.history_)
    assert student.history["stopping"]["stopped"].startswith("no validation rows")


def test_an_interrupted_early_stopped_run_resumes_to_the_same_result(adult_run: DistillRun, tmp_path: Path) -> None:
    reference = _fit(adult_run)
    stopped_at = len(reference.history_)
    path = tmp_path / "student.ckpt"

    class Killed(Exception):
        pass

    def interrupt(_student: Any, epoch: int) -> None:
        if epoch == stopped_at - 2:  # after the best epoch was saved, before the stop
            raise Killed

    with pytest.raises(Killed):
        _fit(adult_run, inputs={"checkpoint": path, "on_epoch_end": interrupt})
    resumed = _fit(adult_run, inputs={"checkpoint": path})
    assert [r.epoch for r in resumed.history_] == list(range(stopped_at))
    assert resumed.history["stopping"] == reference.history["stopping"]
    z_test = adult_run.data.z_test
    np.testing.assert_array_equal(resumed.predict_margin(z_test), reference.predict_margin(z_test))


def test_the_mlp_student_stops_and_restores_the_same_way(adult_run: DistillRun) -> None:
    student = _fit(adult_run, "mlp", epochs=10, patience=1, lr=0.03, hidden=(64,), recalibrate_batchnorm=False)
    losses = [record["validation_loss"] for record in student.history["epochs"]]
    best = int(np.argmin(losses))
    stopping = student.history["stopping"]
    assert stopping["best_epoch"] == best
    assert len(losses) == min(best + 2, 10)
    assert _validation_log_loss(adult_run, student) == pytest.approx(losses[best], rel=1e-4)


# ------------------------------------------------------------------------------------------------ the record
def test_the_run_folder_records_every_choice(adult_run: DistillRun, tmp_path: Path) -> None:
    from gbdt2nn_core.pipeline.runfolder import write_run

    out = write_run(tmp_path / "run", adult_run)
    config = json.loads((out / "config.json").read_text())
    history = json.loads((out / "history.json").read_text())
    assert config["validation_fraction"] == 0.1
    stopping = history["stopping"]
    assert stopping["early_stopping"] is True
    assert stopping["patience"] == 3
    assert stopping["validation_rows"] == len(adult_run.prepared.validation.validation)
    assert stopping["best_epoch"] == int(np.argmin([e["validation_loss"] for e in history["epochs"]]))
    assert history["validation_split"] == {"validation_rows": 160, "fit_rows": 1440, "validation_split": "stratified"}


def test_patience_counts_from_the_end_of_the_beta_warm_up() -> None:
    from torch import nn

    from gbdt2nn_core.student import GBDT2NNConfig
    from gbdt2nn_core.student.kit import EarlyStopping

    # by hand, DeepGBM's schedule: β = 1, 1, 0.7, 0.7, 0.49, 0.49, 0.343, 0.343, then the floor 0.3 from epoch 8 on
    assert GBDT2NNConfig(beta0=1.0, beta_step=2, beta_floor=0.3).beta_warmup() == 8
    assert GBDT2NNConfig(beta0=0.0).for_task("binary").beta_warmup() == 0
    stopper = EarlyStopping(enabled=True, patience=2, budget=20, warmup=8)
    module = nn.Linear(1, 1)
    losses = [1.0] + [2.0] * 20  # the best is epoch 0, never beaten
    stops = []
    for epoch, loss in enumerate(losses):
        stopper.update(epoch, loss, module)
        stops.append(stopper.should_stop())
    assert stops.index(True) == 9  # epochs 8 and 9 without improvement after the warm-up: stop after epoch 9


def test_the_monitored_loss_is_that_of_the_served_network(adult_run: DistillRun) -> None:
    # with the final BatchNorm pass on: each epoch's loss is measured with statistics re-estimated on the training
    # rows, so the restored best epoch, after that pass, scores exactly its recorded loss
    student = _fit(adult_run, recalibrate_batchnorm=True)
    losses = [record.validation_loss for record in student.history_]
    best = student.history["stopping"]["best_epoch"]
    assert best == int(np.argmin(losses))
    assert _validation_log_loss(adult_run, student) == pytest.approx(losses[best], rel=1e-4)


def test_the_monitor_estimates_batchnorm_on_a_sample_of_many_rows(
    adult_run: DistillRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above MONITOR_BATCHNORM_ROWS training rows the monitor re-estimates BatchNorm's statistics on a seeded sample
    (the same rows every epoch): its loss is that of recalibrating on exactly those rows, close to every row's."""
    import copy

    import torch

    from gbdt2nn_core.student import kit
    from gbdt2nn_core.student.batchnorm import recalibrate_batchnorm

    student = _fit(adult_run, epochs=2, early_stopping=False)
    module = copy.deepcopy(student.module)
    fit_rows = adult_run.prepared.validation.fit
    held_out = adult_run.prepared.validation.validation
    z = torch.as_tensor(adult_run.data.z_train[fit_rows], dtype=torch.float32)
    z_valid = torch.as_tensor(adult_run.data.z_train[held_out], dtype=torch.float32)
    y_valid = torch.as_tensor(adult_run.data.y_train[held_out], dtype=torch.float32)
    monkeypatch.setattr(kit, "MONITOR_BATCHNORM_ROWS", 1_000)
    sampled = kit.validation_loss("binary", module, z_valid, y_valid, batchnorm_rows=z, batch_size=128)
    # the reference: recalibrating by hand on a seeded sample of 1,000 rows, in their order
    chosen = np.sort(np.random.default_rng(0).choice(len(z), size=1_000, replace=False))
    by_hand = copy.deepcopy(module)
    recalibrate_batchnorm(by_hand, z[torch.as_tensor(chosen)], 128)
    assert sampled == pytest.approx(kit.validation_loss("binary", by_hand, z_valid, y_valid), rel=1e-6)
    monkeypatch.setattr(kit, "MONITOR_BATCHNORM_ROWS", len(z))
    every_row = kit.validation_loss("binary", module, z_valid, y_valid, batchnorm_rows=z, batch_size=128)
    # a size asked for (the constant now every row) names the same sample as the constant set to that size
    torch.testing.assert_close(kit.monitor_batchnorm_rows(z, 1_000), z[torch.as_tensor(chosen)], rtol=0, atol=0)
    assert sampled != every_row
    assert sampled == pytest.approx(every_row, rel=0.02)
    # and the module's own statistics are put back either way
    for name, buffer in module.named_buffers():
        torch.testing.assert_close(buffer, dict(student.module.named_buffers())[name])
