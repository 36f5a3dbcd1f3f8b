"""The alignment schedule: only a seeded share of the training rows is explained and aligned (``alignment_rows``),
but at least ``alignment_min_rows`` of them (every row of a smaller set).

References: the teacher's own TreeSHAP of every training row (a subset's values are its rows), a hand
computation of a batch's term from per-row attributions, and the training-row positions that the loss receives
(encoded into the teacher attributions, so the loss itself reports which rows it saw).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from gbdt2nn_core.host.interfaces import StudentInputs
from gbdt2nn_core.host.registry import get_registry
from gbdt2nn_core.kit.alignment import Alignment
from gbdt2nn_core.pipeline import Pipeline
from gbdt2nn_core.pipeline.distill import DistillConfig, DistillRun
from gbdt2nn_core.student import GBDT2NNStudent
from gbdt2nn_core.student.kit import AlignmentTargets, attribution_unit

TARGET = "income_gt_50k"


def _spy_on_shap_values(teacher: Any, monkeypatch: pytest.MonkeyPatch) -> list[pd.DataFrame]:
    """Record every frame the teacher is asked to explain."""
    asked: list[pd.DataFrame] = []
    original = teacher.shap_values

    def spy(frame: pd.DataFrame, **options: Any) -> Any:
        asked.append(frame.copy())
        return original(frame, **options)

    monkeypatch.setattr(teacher, "shap_values", spy)
    return asked


def test_only_the_aligned_rows_are_explained(
    adult_small: pd.DataFrame, small_config: Callable[..., DistillConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = Pipeline(small_config(alignment_rows=0.25, alignment_min_rows=0))
    prepared = pipeline.prepare(adult_small, TARGET)
    asked = _spy_on_shap_values(prepared.teacher, monkeypatch)
    trained = pipeline.train(prepared)

    fit = prepared.validation.fit  # the share is of the rows the student fits on (not its validation rows)
    n = len(fit)
    assert [len(frame) for frame in asked] == [math.ceil(0.25 * n)]
    # what training used, from memory: nothing more asked
    rows, target = prepared.aligned_explanations(0.25, 0, min_rows=0)
    assert len(asked) == 1
    assert rows is not None
    assert len(np.unique(rows)) == len(rows) == len(asked[0])
    pd.testing.assert_frame_equal(asked[0], prepared.data.train_frame.iloc[fit[rows]].reset_index(drop=True))
    # the subset's explanations are the full set's at those rows (the teacher's own TreeSHAP of every row)
    everything = prepared.teacher.shap_values(prepared.data.train_frame)
    np.testing.assert_allclose(target.values, everything.values[fit[rows]], rtol=0, atol=1e-9)
    assert trained.config.alignment_rows == 0.25


def test_a_floor_raises_the_aligned_rows_to_at_least_that_many(
    adult_small: pd.DataFrame, small_config: Callable[..., DistillConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = Pipeline(small_config(alignment_rows=0.1, alignment_min_rows=500))
    prepared = pipeline.prepare(adult_small, TARGET)
    asked = _spy_on_shap_values(prepared.teacher, monkeypatch)
    trained = pipeline.train(prepared)

    fit = prepared.validation.fit
    assert math.ceil(0.1 * len(fit)) < 500 < len(fit)  # the share alone would give fewer rows
    assert [len(frame) for frame in asked] == [500]
    rows, target = prepared.aligned_explanations(0.1, 0, min_rows=500)
    assert rows is not None
    assert len(np.unique(rows)) == len(rows) == 500
    assert rows.max() < len(fit)
    pd.testing.assert_frame_equal(asked[0], prepared.data.train_frame.iloc[fit[rows]].reset_index(drop=True))
    everything = prepared.teacher.shap_values(prepared.data.train_frame)
    np.testing.assert_allclose(target.values, everything.values[fit[rows]], rtol=0, atol=1e-9)
    assert trained.config.alignment_min_rows == 500
    # a share that already gives more rows than the floor is unchanged by it
    share_rows, _ = prepared.aligned_explanations(0.5, 0, min_rows=500)
    assert share_rows is not None
    assert len(share_rows) == math.ceil(0.5 * len(fit))


def test_a_floor_above_the_training_rows_aligns_every_row(
    adult_small: pd.DataFrame, small_config: Callable[..., DistillConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = Pipeline(small_config(alignment_rows=0.1, alignment_min_rows=10**6))
    prepared = pipeline.prepare(adult_small, TARGET)
    asked = _spy_on_shap_values(prepared.teacher, monkeypatch)
    pipeline.train(prepared)

    fit = prepared.validation.fit
    assert [len(frame) for frame in asked] == [len(fit)]  # capped at the rows the student fits on
    pd.testing.assert_frame_equal(asked[0], prepared.data.train_frame.iloc[fit].reset_index(drop=True))
    rows, target = prepared.aligned_explanations(0.1, 0, min_rows=10**6)
    assert rows is None  # every fitting row: the batch is used as it is
    everything = prepared.teacher.shap_values(prepared.data.train_frame)
    np.testing.assert_allclose(target.values, everything.values[fit], rtol=0, atol=1e-9)
    # the default floor does the same on a set this small (fewer fitting rows than the 3,000 it asks for)
    assert DistillConfig().alignment_min_rows == 3000 > len(fit)
    assert prepared.aligned_explanations(0.1, 0, min_rows=DistillConfig().alignment_min_rows)[0] is None


def test_a_subset_and_the_full_set_never_share_a_cache_entry(
    adult_small: pd.DataFrame, small_config: Callable[..., DistillConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    subset = Pipeline(small_config(alignment_rows=0.5, alignment_min_rows=0))
    subset.train(subset.prepare(adult_small, TARGET))
    full = Pipeline(small_config(alignment_rows=1.0))  # same cache folder, same teacher
    prepared = full.prepare(adult_small, TARGET)
    asked = _spy_on_shap_values(prepared.teacher, monkeypatch)
    full.train(prepared)
    assert [len(frame) for frame in asked] == [len(prepared.validation.fit)]
    again = Pipeline(small_config(alignment_rows=0.5, alignment_min_rows=0))
    prepared = again.prepare(adult_small, TARGET)
    asked = _spy_on_shap_values(prepared.teacher, monkeypatch)
    again.train(prepared)
    assert asked == []  # the subset's own entry, from disk


def _alignment(run: DistillRun, rows: np.ndarray | None, **fields: Any) -> Alignment:
    registry = get_registry()
    values = run.prepared.shap_train.values[run.prepared.validation.fit]  # by position among the fitting rows
    return Alignment(
        attributor=registry.attributor("structure"),
        loss=registry.alignment_loss("mse"),
        teacher_attributions=values if rows is None else values[rows],
        rows=rows,
        **fields,
    )


def test_the_term_of_a_batch_is_the_loss_over_its_aligned_rows_only(adult_run: DistillRun) -> None:
    module = copy.deepcopy(adult_run.student.module).train()
    z = adult_run.data.z_train[adult_run.prepared.validation.fit]  # the rows the student fits on
    n = len(z)
    subset = np.arange(0, n, 3)
    alignment = _alignment(adult_run, subset)
    aggregation = torch.as_tensor(adult_run.data.encoder.aggregation(), dtype=torch.float32)
    alignment.attributor.fit(module, torch.as_tensor(adult_run.prepared.background, dtype=torch.float32))
    targets = AlignmentTargets(alignment, n, aggregation)
    batch = torch.tensor([7, 3, 12, 5, 9, 1, 0, 4, 10])
    loss, count = targets.batch_loss(module, torch.as_tensor(z[batch.numpy()], dtype=torch.float32), batch)

    # by hand: every batch row's own attributions (eval mode: per row), then the mean over the subset's rows
    module.eval()
    per_row = adult_run.student.attributions(z[batch.numpy()], alignment.attributor, aggregation.numpy())
    teacher = adult_run.prepared.shap_train.values[adult_run.prepared.validation.fit]
    kept = [i for i, row in enumerate(batch.tolist()) if row % 3 == 0]
    expected = np.mean((per_row[kept] - teacher[batch.numpy()[kept]]) ** 2)
    assert count == len(kept) == 4
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert targets.batch_loss(module, torch.zeros(2, z.shape[1]), torch.tensor([1, 2])) is None  # none aligned


def test_in_teacher_units_the_term_is_the_relative_error(adult_run: DistillRun) -> None:
    module = copy.deepcopy(adult_run.student.module).train()
    z = adult_run.data.z_train[adult_run.prepared.validation.fit]
    subset = np.arange(0, len(z), 2)
    alignment = _alignment(adult_run, subset)
    aggregation = torch.as_tensor(adult_run.data.encoder.aggregation(), dtype=torch.float32)
    alignment.attributor.fit(module, torch.as_tensor(adult_run.prepared.background, dtype=torch.float32))
    targets = AlignmentTargets(alignment, len(z), aggregation, teacher_units=True)
    batch = torch.tensor([0, 2, 4, 6, 8, 10])
    loss, _ = targets.batch_loss(module, torch.as_tensor(z[batch.numpy()], dtype=torch.float32), batch)

    # by hand: the unit is the RMS of the aligned rows' TreeSHAP; the loss is the MSE of both sides divided by it
    teacher = adult_run.prepared.shap_train.values[adult_run.prepared.validation.fit]
    unit = float(np.sqrt(np.mean(teacher[subset] ** 2)))
    module.eval()
    per_row = adult_run.student.attributions(z[batch.numpy()], alignment.attributor, aggregation.numpy())
    expected = np.mean(((per_row - teacher[batch.numpy()]) / unit) ** 2)
    assert targets.unit == pytest.approx(unit, rel=1e-9)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert attribution_unit(np.zeros((3, 4))) == 1.0  # all-zero targets: margin units, nothing divided by 0


def test_a_batch_without_aligned_rows_builds_no_attribution_graph(adult_run: DistillRun) -> None:
    # the term is skipped before the attributor runs: no forward, no double backward for such a batch
    module = copy.deepcopy(adult_run.student.module).train()
    n = len(adult_run.prepared.validation.fit)
    alignment = _alignment(adult_run, np.arange(0, n, 3))
    calls: list[int] = []
    attribute_columns = alignment.attributor.attribute_columns  # type: ignore[attr-defined]

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return attribute_columns(*args, **kwargs)

    alignment.attributor.attribute_columns = counted  # type: ignore[attr-defined]
    alignment.attributor.fit(module, torch.as_tensor(adult_run.prepared.background, dtype=torch.float32))
    aggregation = torch.as_tensor(adult_run.data.encoder.aggregation(), dtype=torch.float32)
    targets = AlignmentTargets(alignment, n, aggregation)
    z = torch.as_tensor(adult_run.data.z_train[adult_run.prepared.validation.fit][:6], dtype=torch.float32)
    assert targets.batch_loss(module, z[[1, 2, 4, 5]], torch.tensor([1, 2, 4, 5])) is None
    assert calls == []
    assert targets.batch_loss(module, z[[1, 3]], torch.tensor([1, 3])) is not None
    assert calls == [1]


class _PositionRecorder:
    """An alignment loss that records which training rows it was given (their position is in column 0)."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def __call__(self, student_attr: torch.Tensor, teacher_attr: torch.Tensor) -> torch.Tensor:
        self.seen += [round(float(value)) for value in teacher_attr[:, 0]]
        return (student_attr * 0).sum()


@pytest.mark.parametrize("student_name", ["gbdt2nn", "mlp"])
def test_each_student_aligns_every_subset_row_once_per_epoch_and_no_other(
    adult_run: DistillRun, student_name: str
) -> None:
    registry = get_registry()
    n = len(adult_run.prepared.validation.fit)
    subset = np.sort(np.random.default_rng(5).permutation(n)[: n // 7])
    encoded_positions = np.zeros((len(subset), adult_run.prepared.shap_train.values.shape[1]))
    encoded_positions[:, 0] = subset
    recorder = _PositionRecorder()
    alignment = Alignment(
        attributor=registry.attributor("gradient-x-input"),
        loss=recorder,
        teacher_attributions=encoded_positions,
        rows=subset,
    )
    # the positions must reach the loss as they are: no unit of the teacher's attribution size
    student = registry.student(student_name, seed=0, epochs=2, batch_size=128, alignment_in_teacher_units=False)
    student.fit(adult_run.prepared.student_inputs(alignment=alignment))
    assert sorted(recorder.seen) == sorted([*subset.tolist(), *subset.tolist()])


def _fit(
    run: DistillRun, alignment: Alignment | None, *, checkpoint: Path | None = None, stop_after: int | None = None
) -> GBDT2NNStudent:
    student = GBDT2NNStudent(epochs=3, n_groups=3, hidden=(16, 8), batch_size=256, seed=1)

    def interrupt(_student: GBDT2NNStudent, epoch: int) -> None:
        if stop_after is not None and epoch == stop_after:
            raise KeyboardInterrupt

    inputs: StudentInputs = run.prepared.student_inputs(
        alignment=alignment, on_epoch_end=interrupt, checkpoint=checkpoint
    )
    return student.fit(inputs)


def _weights(student: GBDT2NNStudent) -> dict[str, np.ndarray]:
    return {name: tensor.numpy() for name, tensor in student.state()[1].items()}


def test_a_subset_of_every_row_trains_exactly_as_the_full_alignment(adult_run: DistillRun) -> None:
    n = len(adult_run.prepared.validation.fit)
    full = _weights(_fit(adult_run, _alignment(adult_run, None)))
    every_row = _weights(_fit(adult_run, _alignment(adult_run, np.arange(n))))
    assert full.keys() == every_row.keys()
    for name in full:
        np.testing.assert_array_equal(every_row[name], full[name], err_msg=name)


def test_resuming_a_subset_aligned_run_gives_the_uninterrupted_result(adult_run: DistillRun, tmp_path: Path) -> None:
    n = len(adult_run.prepared.validation.fit)
    subset = np.arange(1, n, 4)
    z_test = adult_run.data.z_test
    reference = _fit(adult_run, _alignment(adult_run, subset)).predict_margin(z_test)
    path = tmp_path / "student.ckpt"
    with pytest.raises(KeyboardInterrupt):
        _fit(adult_run, _alignment(adult_run, subset), checkpoint=path, stop_after=1)
    resumed = _fit(adult_run, _alignment(adult_run, subset), checkpoint=path)
    np.testing.assert_array_equal(resumed.predict_margin(z_test), reference)
    # the finished checkpoint of this subset is not resumed by a run on another subset
    other = np.arange(2, n, 4)
    fresh = _fit(adult_run, _alignment(adult_run, other)).predict_margin(z_test)
    np.testing.assert_array_equal(
        _fit(adult_run, _alignment(adult_run, other), checkpoint=path).predict_margin(z_test), fresh
    )
    assert not np.array_equal(fresh, reference)


def test_every_entry_point_passes_the_schedule_on(
    adult_dataset: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, single_thread_torch: None
) -> None:
    import json

    from gbdt2nn_core import GBDT2NNClassifier
    from gbdt2nn_core.cli import main
    from gbdt2nn_core.experiment import ExperimentConfig

    monkeypatch.setenv("GBDT2NN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    adult_dataset.frame.sample(400, random_state=0).to_csv("small.csv", index=False)
    teacher = ["--teacher-option", "n_estimators=5", "--teacher-option", "num_threads=1"]
    student = ["--student-option", "n_groups=2", "--student-option", "hidden=[8]", "--epochs", "1"]
    schedule = ["--alignment-rows", "0.3", "--alignment-fraction", "0.5", "--alignment-min-rows", "40"]
    code = main(["distill", "--data", "small.csv", "--target", TARGET, "--out", "run", *teacher, *student, *schedule])
    assert code == 0
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    schedule_recorded = [recorded[f"alignment_{key}"] for key in ("rows", "fraction", "min_rows")]
    assert schedule_recorded == [0.3, 0.5, 40]
    # the run file's [alignment] min_rows, and a flag over it
    Path("run.toml").write_text("[alignment]\nmin_rows = 0\n")
    argv = ["distill", "--data", "small.csv", "--target", TARGET, *teacher, *student, "--config", "run.toml"]
    assert main([*argv, "--out", "from-file"]) == 0
    assert json.loads((tmp_path / "from-file" / "config.json").read_text())["alignment_min_rows"] == 0
    assert main([*argv, "--out", "flag-wins", "--alignment-min-rows", "7"]) == 0
    assert json.loads((tmp_path / "flag-wins" / "config.json").read_text())["alignment_min_rows"] == 7

    frame = pd.read_csv("small.csv")
    estimator = GBDT2NNClassifier(
        teacher_options={"n_estimators": 5, "num_threads": 1},
        student_options={"n_groups": 2, "hidden": [8]},
        epochs=1,
        alignment_rows=0.3,
        alignment_min_rows=40,
        alignment_fraction=0.5,
        cache_dir=str(tmp_path / "cache"),
    )
    assert (estimator.get_params()["alignment_rows"], estimator.get_params()["alignment_min_rows"]) == (0.3, 40)
    estimator.fit(frame.drop(columns=TARGET), frame[TARGET])
    config = estimator.config_
    assert (config.alignment_rows, config.alignment_fraction, config.alignment_min_rows) == (0.3, 0.5, 40)
    experiment = ExperimentConfig(dataset="adult", alignment_rows=0.3, alignment_min_rows=40).distill_config(0)
    assert (experiment.alignment_rows, experiment.alignment_min_rows) == (0.3, 40)
