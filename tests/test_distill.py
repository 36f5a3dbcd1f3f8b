"""The distillation pipeline end to end on small real data: metrics, alignment, regression, reproducibility."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

from gbdt2nn_core import AlignmentLossSpec, hookimpl
from gbdt2nn_core.data import TabularSchema
from gbdt2nn_core.errors import ConfigError, UnknownComponentError
from gbdt2nn_core.host.registry import Registry
from gbdt2nn_core.pipeline.distill import DistillConfig, DistillRun, compare, distill
from gbdt2nn_core.pipeline.metrics import validation_cost

pytestmark = pytest.mark.usefixtures("single_thread_torch")

TARGET = "income_gt_50k"
TEACHER = {"n_estimators": 10, "num_leaves": 15, "num_threads": 1}
STUDENT = {"epochs": 3, "n_groups": 4, "hidden": (16, 16), "batch_size": 256}


@pytest.fixture(scope="module")
def adult_2000() -> pd.DataFrame:
    """2,000 raw adult rows (shared by this module's tests: do not modify)."""
    from gbdt2nn_core.data import load_bundled

    return load_bundled("adult").frame.sample(2000, random_state=0).reset_index(drop=True)


@pytest.fixture(scope="module")
def comparison(
    adult_2000: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory, single_thread_torch: None
) -> tuple[DistillRun, DistillRun]:
    """Plain and cosine-aligned students of one 10-tree teacher, 3 epochs each."""
    config = DistillConfig(
        teacher_options=TEACHER,
        student_options=STUDENT,
        attributor="gradient-x-input",
        alignment="cosine",
        alignment_weight=1.0,
        cache_dir=str(tmp_path_factory.mktemp("treeshap")),
    )
    return compare(adult_2000, TARGET, config)


def _assert_documented_shape(metrics: dict[str, Any], task_keys: set[str], *, label_agreement: bool) -> None:
    assert {"task", "teacher", "student"} <= set(metrics)
    assert set(metrics["teacher"]["test"]) == task_keys
    student = metrics["student"]
    assert set(student["test"]) == task_keys
    assert {"margin_rmse", "margin_r2"} <= set(student["fidelity"])
    assert ("label_agreement" in student["fidelity"]) == label_agreement
    assert {"spearman", "cosine", "top5", "sign"} <= set(student["agreement"])
    for section in (metrics["teacher"]["test"], student["test"], student["fidelity"], student["agreement"]):
        assert all(isinstance(v, float) and np.isfinite(v) for v in section.values()), section
    json.dumps(metrics)  # plain JSON, ready for metrics.json


def test_metrics_have_the_documented_shape(comparison: tuple[DistillRun, DistillRun]) -> None:
    plain, aligned = comparison
    for run in (plain, aligned):
        assert run.metrics["task"] == "binary"
        assert run.metrics["rows"] == {"train": 1600, "test": 400}
        _assert_documented_shape(run.metrics, {"auc", "logloss", "accuracy"}, label_agreement=True)
    assert plain.metrics["student"]["alignment"]["weight"] == 0.0
    assert aligned.metrics["student"]["alignment"] == {
        "attributor": "gradient-x-input",
        "loss": "cosine",
        "weight": 1.0,
    }


def test_teacher_metrics_equal_sklearn_on_the_boosters_own_predictions(
    comparison: tuple[DistillRun, DistillRun],
) -> None:
    _, run = comparison
    probability = run.teacher.native_model.predict(run.data.test_frame)  # LightGBM's own predict
    y = run.data.y_test
    teacher = run.metrics["teacher"]["test"]
    assert teacher["auc"] == pytest.approx(skm.roc_auc_score(y, probability), abs=1e-12)
    assert teacher["logloss"] == pytest.approx(skm.log_loss(y, probability), rel=1e-6)
    assert teacher["accuracy"] == pytest.approx(skm.accuracy_score(y, probability >= 0.5), abs=1e-12)
    assert teacher["auc"] > 0.8  # a real teacher on real data


def test_student_metrics_equal_sklearn_on_the_students_predictions(comparison: tuple[DistillRun, DistillRun]) -> None:
    for run in comparison:
        margin = run.student.predict_margin(run.data.z_test)
        assert run.metrics["student"]["test"]["auc"] == pytest.approx(skm.roc_auc_score(run.data.y_test, margin))
        teacher_margin = run.teacher.predict_margin(run.data.test_frame)
        rmse = np.sqrt(np.mean((margin - teacher_margin) ** 2))
        assert run.metrics["student"]["fidelity"]["margin_rmse"] == pytest.approx(rmse, rel=1e-5)


def test_test_rows_are_held_out_rows_with_their_own_labels(
    adult_2000: pd.DataFrame, comparison: tuple[DistillRun, DistillRun]
) -> None:
    _, run = comparison
    features = adult_2000.drop(columns=[TARGET])
    original = TabularSchema.infer(features).to_frame(features)
    labels: dict[int, set[int]] = {}
    for key, label in zip(pd.util.hash_pandas_object(original, index=False), adult_2000[TARGET], strict=True):
        labels.setdefault(int(key), set()).add(int(label))
    test_keys = pd.util.hash_pandas_object(run.data.test_frame, index=False)
    train_keys = pd.util.hash_pandas_object(run.data.train_frame, index=False)
    assert all(int(label) in labels[int(key)] for key, label in zip(test_keys, run.data.y_test, strict=True))
    assert all(int(label) in labels[int(key)] for key, label in zip(train_keys, run.data.y_train, strict=True))
    assert sorted([*test_keys, *train_keys]) == sorted(pd.util.hash_pandas_object(original, index=False))
    # stratified: both sides keep the positive rate
    assert run.data.y_test.mean() == pytest.approx(adult_2000[TARGET].mean(), abs=0.01)


def test_alignment_trains_the_explanations_towards_treeshap(comparison: tuple[DistillRun, DistillRun]) -> None:
    plain, aligned = comparison
    losses = [record.alignment_loss for record in aligned.student.history_]
    assert len(losses) == 3
    assert all(loss is not None for loss in losses)
    assert losses[-1] < losses[0]
    assert all(record.alignment_loss is None for record in plain.student.history_)
    # the effect shows on held-out rows: the aligned student's attributions agree better with TreeSHAP
    assert aligned.metrics["student"]["agreement"]["cosine"] > plain.metrics["student"]["agreement"]["cosine"] + 0.1


class SpyLoss:
    """An alignment-loss plugin (``spy``) that counts its calls: 1 - cosine similarity, like the cosine plugin."""

    def __init__(self) -> None:
        self.calls = 0

    @hookimpl
    def gbdt2nn_register_alignment_losses(self) -> list[AlignmentLossSpec]:
        return [AlignmentLossSpec(name="spy", factory=lambda: self.loss, summary="counts its calls")]

    def loss(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return (1 - torch.nn.functional.cosine_similarity(student, teacher, dim=1, eps=1e-8)).mean()


def test_zero_weight_trains_no_alignment_term(
    adult_2000: pd.DataFrame, small_config: Callable[..., DistillConfig]
) -> None:
    spy = SpyLoss()
    registry = Registry(plugins=[("spy", spy)])
    frame = adult_2000.head(600)

    plain = distill(frame, TARGET, small_config(alignment="spy", alignment_weight=0.0), registry=registry)
    assert spy.calls == 0
    assert all(record.alignment_loss is None for record in plain.student.history_)

    aligned = distill(frame, TARGET, small_config(alignment="spy", alignment_weight=0.5), registry=registry)
    batches_per_epoch = int(np.ceil(480 / 256))
    assert spy.calls == 2 * batches_per_epoch  # every batch of both epochs
    assert all(record.alignment_loss is not None for record in aligned.student.history_)


def test_regression_on_california(california_small: pd.DataFrame, small_config: Callable[..., DistillConfig]) -> None:
    run = distill(california_small, "MedHouseVal", small_config())

    assert run.data.task == "regression"
    _assert_documented_shape(run.metrics, {"rmse", "r2"}, label_agreement=False)
    prediction = run.teacher.native_model.predict(run.data.test_frame)
    assert run.metrics["teacher"]["test"]["rmse"] == pytest.approx(
        skm.root_mean_squared_error(run.data.y_test, prediction), rel=1e-9
    )
    assert run.metrics["teacher"]["test"]["r2"] == pytest.approx(skm.r2_score(run.data.y_test, prediction), rel=1e-9)
    margin = run.student.predict_margin(run.data.z_test)
    assert margin.shape == (200,)
    assert run.metrics["student"]["test"]["rmse"] == pytest.approx(
        skm.root_mean_squared_error(run.data.y_test, margin), rel=1e-5
    )


def test_multiclass_students_explain_every_class(
    california_small: pd.DataFrame, small_config: Callable[..., DistillConfig]
) -> None:
    frame = california_small.assign(price=pd.qcut(california_small["MedHouseVal"], 3, labels=["low", "mid", "high"]))
    frame = frame.drop(columns=["MedHouseVal"]).astype({"price": str})

    run = distill(frame, "price", small_config(student_options={"n_groups": 6}))

    assert run.data.task == "multiclass"
    _assert_documented_shape(run.metrics, {"logloss", "accuracy"}, label_agreement=True)
    probability = run.teacher.native_model.predict(run.data.test_frame)
    assert probability.shape == (200, 3)
    assert run.metrics["teacher"]["test"]["logloss"] == pytest.approx(
        skm.log_loss(run.data.y_test, probability, labels=[0, 1, 2]), rel=1e-6
    )
    assert run.student.predict_margin(run.data.z_test).shape == (200, 3)


def test_same_seed_gives_identical_students(
    adult_2000: pd.DataFrame, small_config: Callable[..., DistillConfig]
) -> None:
    frame = adult_2000.head(800)
    config = small_config(alignment_weight=1.0)
    first = distill(frame, TARGET, config)
    second = distill(frame, TARGET, config)
    np.testing.assert_array_equal(
        first.student.predict_margin(first.data.z_test), second.student.predict_margin(second.data.z_test)
    )
    assert [r.task_loss for r in first.student.history_] == [r.task_loss for r in second.student.history_]

    other = distill(frame, TARGET, small_config(alignment_weight=1.0, seed=1))
    assert not np.array_equal(other.data.y_test, first.data.y_test) or not np.array_equal(
        other.student.predict_margin(other.data.z_test), first.student.predict_margin(first.data.z_test)
    )


def test_compare_plain_student_equals_a_plain_distillation(
    adult_2000: pd.DataFrame, small_config: Callable[..., DistillConfig]
) -> None:
    frame = adult_2000.head(800)
    plain, _ = compare(frame, TARGET, small_config(alignment_weight=1.0))
    alone = distill(frame, TARGET, small_config(alignment_weight=0.0))
    np.testing.assert_array_equal(
        plain.student.predict_margin(plain.data.z_test), alone.student.predict_margin(alone.data.z_test)
    )


def test_teacher_explanations_are_cached_between_runs(
    adult_2000: pd.DataFrame, small_config: Callable[..., DistillConfig], tmp_path: Path
) -> None:
    frame = adult_2000.head(600)
    config = small_config(cache_dir=str(tmp_path / "shared"))
    first = distill(frame, TARGET, config)
    second = distill(frame, TARGET, config)
    assert first.metrics["timings"]["treeshap_cache_hits"] == 0
    assert second.metrics["timings"]["treeshap_cache_hits"] == 2  # train and test rows
    assert first.metrics["student"]["agreement"] == second.metrics["student"]["agreement"]


def test_plain_distillation_explains_only_the_test_rows(
    adult_2000: pd.DataFrame, small_config: Callable[..., DistillConfig], tmp_path: Path
) -> None:
    # the training rows' TreeSHAP is only a target for aligned students; plain runs should not pay for it
    frame = adult_2000.head(600)
    cache = tmp_path / "explanations"
    plain = distill(frame, TARGET, small_config(alignment_weight=0.0, cache_dir=str(cache)))
    assert len(list(cache.glob("treeshap-*.npz"))) == 1
    assert plain.metrics["timings"]["treeshap_cache_hits"] == 0

    aligned = distill(frame, TARGET, small_config(alignment_weight=1.0, cache_dir=str(cache)))
    assert len(list(cache.glob("treeshap-*.npz"))) == 2  # the training rows are added
    assert aligned.metrics["timings"]["treeshap_cache_hits"] == 1  # the test rows come from the first run
    assert plain.metrics["student"]["agreement"] != aligned.metrics["student"]["agreement"]


@pytest.mark.parametrize("recalibrate", [True, False], ids=["recalibrated", "running-averages"])
def test_batchnorm_statistics_are_those_of_the_final_weights_on_the_training_rows(
    california_small: pd.DataFrame, small_config: Callable[..., DistillConfig], recalibrate: bool
) -> None:
    # a joint student: its alignment term trains on running statistics, which then lag behind the weights
    config = small_config(
        attributor="structure",
        alignment="mse",
        alignment_weight=1.0,
        student_options={"epochs": 3, "batch_size": 240, "recalibrate_batchnorm": recalibrate},
    )
    run = distill(california_small, "MedHouseVal", config)
    # the rows the student fits on: 720 (800 less 10 % held out) and, regression, 4 synthetic rows for each
    module, z = run.student.module, np.asarray(run.prepared.student_inputs().z)
    assert len(z) == 5 * 720  # whole batches of 240, so exact batch averages
    with torch.no_grad():
        first = module.mlp.hidden[0](module.group_inputs(torch.as_tensor(z))).numpy().astype(np.float64)
    batches = first.reshape(len(z) // 240, 240, -1)  # (batches, rows, k · h) in training-row order
    mean = batches.mean(axis=1).mean(axis=0)
    var = batches.var(axis=1, ddof=1).mean(axis=0)  # BatchNorm keeps the unbiased batch variance
    norm = module.mlp.norms[0].norm
    matches = np.allclose(norm.running_mean.numpy(), mean.ravel(), atol=1e-4, rtol=1e-4) and np.allclose(
        norm.running_var.numpy(), var.ravel(), atol=1e-4, rtol=1e-4
    )
    assert matches == recalibrate
    assert not module.training


def test_validation_cost_compares_the_held_out_rows_both_students_share(
    comparison: tuple[DistillRun, DistillRun],
) -> None:
    plain, aligned = comparison
    stopping = plain.student.history["stopping"], aligned.student.history["stopping"]
    # one split: the same held-out rows scored both students, so their losses compare
    assert stopping[0]["validation_rows"] == stopping[1]["validation_rows"] == len(plain.prepared.validation.validation)
    losses = [record["validation_loss"] for record in aligned.student.history["epochs"]]
    assert stopping[1]["best_validation_loss"] in losses  # the loss of an epoch the student actually had
    cost = validation_cost(aligned.student.history, plain.student.history)
    assert cost == pytest.approx(stopping[1]["best_validation_loss"] / stopping[0]["best_validation_loss"] - 1.0)


def test_validation_cost_is_none_without_held_out_rows(
    adult_2000: pd.DataFrame, small_config: Callable[..., DistillConfig]
) -> None:
    config = small_config(alignment_weight=1.0, validation_fraction=0.0, alignment_check=True)
    plain, aligned = compare(adult_2000.head(600), TARGET, config)
    assert plain.student.history["stopping"]["best_validation_loss"] is None
    assert validation_cost(aligned.student.history, plain.student.history) is None
    # nothing to check against: the check keeps the configured weight and says why
    record = aligned.trained.choices["alignment_check"]
    assert record["kept_weight"] == 1.0
    assert record["why"].startswith("no held-out rows")


@pytest.mark.parametrize("trips", [True, False], ids=["retrains", "keeps"])
def test_alignment_check_keeps_the_student_a_plain_distillation_at_the_chosen_weight_would_give(
    adult_2000: pd.DataFrame,
    small_config: Callable[..., DistillConfig],
    monkeypatch: pytest.MonkeyPatch,
    trips: bool,
) -> None:
    import gbdt2nn_core.pipeline.distill as distill_module

    # the threshold moved so that the check trips (or never does), whatever these tiny students' losses are
    monkeypatch.setattr(distill_module, "ALIGNMENT_COST_NOTICE", -math.inf if trips else math.inf)
    frame = adult_2000.head(800)
    checked = distill(frame, TARGET, small_config(alignment_weight=1.0, alignment_check=True))
    weight = 0.1 if trips else 1.0
    alone = distill(frame, TARGET, small_config(alignment_weight=weight))  # no plain student, no check
    assert checked.config.alignment_weight == pytest.approx(weight)
    np.testing.assert_array_equal(
        checked.student.predict_margin(checked.data.z_test), alone.student.predict_margin(alone.data.z_test)
    )
    record = checked.trained.choices["alignment_check"]
    assert [tried["weight"] for tried in record["tried"]] == pytest.approx([1.0, 0.1] if trips else [1.0])
    assert all(tried["validation_cost"] is not None for tried in record["tried"])
    assert record["kept_weight"] == pytest.approx(weight)


def test_compare_needs_a_positive_weight(adult_2000: pd.DataFrame, small_config: Callable[..., DistillConfig]) -> None:
    with pytest.raises(ConfigError) as info:
        compare(adult_2000, TARGET, small_config(alignment_weight=0.0))
    assert info.value.setting == "alignment_weight"


def test_unknown_component_fails_before_any_work(adult_2000: pd.DataFrame, tmp_path: Path) -> None:
    # the target does not exist either: the name check must come first
    config = DistillConfig(attributor="gradiant", cache_dir=str(tmp_path))
    with pytest.raises(UnknownComponentError) as info:
        distill(adult_2000, "no-such-target", config)
    assert info.value.suggestion == "gradient"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("alignment_weight", -1.0), ("alignment_weight", float("inf")), ("test_size", 0.0), ("task", "ranking")],
)
def test_config_rejects_bad_values(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        DistillConfig(**{field: value})
    assert info.value.setting == field
