"""A student that closes its gap to the teacher by itself (issue 12): a batch size chosen from the number of rows
(``batch_size="auto"``), a learning rate chosen from the batch size (``lr="auto"``), and λ backed off when alignment
starts to cost the task (``alignment_backoff``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from gbdt2nn_core import GBDT2NNClassifier
from gbdt2nn_core.errors import ConfigError, NotFittedError
from gbdt2nn_core.pipeline.distill import DistillConfig, distill
from gbdt2nn_core.student import GBDT2NNStudent
from gbdt2nn_core.student.kit import AlignmentWeight, batch_size_for_rows, learning_rate_for_batch

pytestmark = pytest.mark.usefixtures("single_thread_torch")


# ------------------------------------------------------------------------------------------------ the units, by hand
def test_the_automatic_batch_size_gives_an_epoch_about_a_hundred_steps_between_64_and_512_rows() -> None:
    # by hand: the largest power of two not above rows / 100, then clipped to [64, 512]
    assert batch_size_for_rows(1_293) == 64  # digits' training rows: 12 → 64
    assert batch_size_for_rows(14_860) == 128  # California housing's: 148 → 128
    assert batch_size_for_rows(35_165) == 256  # adult's: 351 → 256
    assert batch_size_for_rows(25_599) == 128
    assert batch_size_for_rows(25_600) == 256
    assert batch_size_for_rows(1_000_000) == 512
    assert batch_size_for_rows(3) == 64


def test_the_automatic_learning_rate_is_three_times_deepgbms_from_batches_of_128_rows() -> None:
    # by hand: 1e-3 (DeepGBM's) below 128 rows a batch, 3e-3 from there on
    assert [learning_rate_for_batch(rows) for rows in (2, 64, 127, 128, 256, 512, 4096)] == [
        1e-3,
        1e-3,
        1e-3,
        3e-3,
        3e-3,
        3e-3,
        3e-3,
    ]


@pytest.fixture
def adamw_rates(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The learning rate of every ``AdamW.step`` taken during the test, read from the optimizer itself: the reference
    for the rate a student trained at, and for the number of training steps."""
    rates: list[float] = []
    original = torch.optim.AdamW.step

    def recorded(self: torch.optim.AdamW, *args: Any, **kwargs: Any) -> Any:
        rates.append(float(self.param_groups[0]["lr"]))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recorded)
    return rates


@pytest.mark.parametrize(("batch_size", "rate"), [(64, 1e-3), (128, 3e-3)])
def test_the_resolved_learning_rate_is_recorded_and_every_step_takes_it(
    adult_small: pd.DataFrame,
    small_config: Callable[..., DistillConfig],
    adamw_rates: list[float],
    batch_size: int,
    rate: float,
) -> None:
    options = {"batch_size": batch_size, "epochs": 2, "leaf_epochs": 1, "early_stopping": False}  # lr left "auto"
    run = distill(adult_small, "income_gt_50k", small_config(student_options=options))
    assert run.student.options()["lr"] == "auto"  # what is saved: resolved again by the next fit
    assert run.student.history["choices"]["learning_rate"]["rate"] == rate
    assert len(adamw_rates) > 0
    assert set(adamw_rates) == {rate}  # the leaf embedding's steps and the student's
    assert [epoch["learning_rate"] for epoch in run.student.history["epochs"]] == [rate, rate]
    assert run.student.learning_rate() == rate
    explicit = distill(adult_small, "income_gt_50k", small_config(student_options={**options, "lr": 2e-3}))
    assert explicit.student.history["choices"]["learning_rate"] == {"rate": 2e-3, "why": "as configured"}


def test_an_automatic_rate_gives_the_network_the_same_rate_set_by_hand_gives(
    adult_small: pd.DataFrame, small_config: Callable[..., DistillConfig]
) -> None:
    options = {"batch_size": 128, "epochs": 2, "leaf_epochs": 1}
    auto = distill(adult_small, "income_gt_50k", small_config(student_options=options))
    by_hand = distill(adult_small, "income_gt_50k", small_config(student_options={**options, "lr": 3e-3}))
    np.testing.assert_array_equal(
        auto.student.predict_margin(auto.data.z_test), by_hand.student.predict_margin(by_hand.data.z_test)
    )


def test_online_updates_start_from_the_fitted_rate_also_after_save_and_load(
    adult_small: pd.DataFrame, tmp_path: Any
) -> None:
    X, y = adult_small.drop(columns="income_gt_50k"), adult_small["income_gt_50k"].to_numpy()
    settings: dict[str, Any] = {
        "teacher_options": {"n_estimators": 10, "num_leaves": 7, "num_threads": 1},
        "student_options": {"n_groups": 3, "hidden": (16, 16), "batch_size": 128, "leaf_epochs": 1},
        "epochs": 1,
        "cache_dir": False,
    }
    model = GBDT2NNClassifier(**settings).fit(X[:1500], y[:1500])
    assert model.student_.learning_rate() == 3e-3
    model.partial_fit(X[1500:1700], y[1500:1700])
    assert model._online_optimizer is not None
    assert model._online_optimizer.param_groups[0]["lr"] == 3e-3
    loaded = GBDT2NNClassifier.load(model.save(tmp_path / "model"))
    assert loaded.student_.learning_rate() == 3e-3  # saved with the network, as the batch size is
    loaded.partial_fit(X[1700:1900], y[1700:1900])
    assert loaded._online_optimizer is not None
    assert loaded._online_optimizer.param_groups[0]["lr"] == 3e-3
    with pytest.raises(NotFittedError, match="call fit"):
        GBDT2NNStudent().learning_rate()


@pytest.mark.parametrize("value", ["fast", 0.0, float("nan"), True])
def test_a_learning_rate_that_is_neither_auto_nor_a_positive_number_is_refused(value: object) -> None:
    with pytest.raises(ConfigError, match=r"invalid lr=.*use auto \(chosen from the data\) or a number > 0"):
        GBDT2NNStudent(lr=value)


def test_the_resolved_batch_size_is_recorded_and_used(
    adult_small: pd.DataFrame, small_config: Callable[..., DistillConfig], adamw_rates: list[float]
) -> None:
    steps = adamw_rates  # one entry per AdamW step
    options = {"batch_size": "auto", "epochs": 1, "leaf_epochs": 1}
    run = distill(adult_small, "income_gt_50k", small_config(alignment_weight=0.0, student_options=options))
    rows = len(run.data.y_train) - run.student.history["stopping"]["validation_rows"]
    choice = run.student.history["choices"]["batch_size"]
    assert choice["rows"] == batch_size_for_rows(rows) == 64  # adult_small: under 6,400 training rows
    # the reference: AdamW's steps counted, the leaf embedding's epoch and the student's, each in batches of 64
    assert len(steps) == 2 * int(np.ceil(rows / 64))
    # saved with the student: online updates train in batches of the same size
    description, _ = run.student.state()
    assert description["batch_size"] == 64
    fixed = small_config(alignment_weight=0.0, student_options={**options, "batch_size": 100})
    assert distill(adult_small, "income_gt_50k", fixed).student.history["choices"]["batch_size"]["rows"] == 100


def test_lambda_halves_after_an_epoch_whose_validation_loss_rose_while_the_alignment_loss_fell() -> None:
    weight = AlignmentWeight(0.1, cap=0.0, backoff=True)
    # (validation task loss, alignment loss) per epoch
    epochs = [(1.0, 5.0), (0.9, 4.0), (0.95, 3.0), (0.97, 3.5), (0.99, 2.0), (0.8, 1.0)]
    used = []
    for epoch, (held_out, aligned) in enumerate(epochs):
        used.append(weight.weight(torch.tensor(1.0), torch.tensor(aligned)))
        weight.epoch_mean()
        weight.end_epoch(epoch, held_out, aligned)
    # by hand: epoch 2 (0.95 > 0.9, 3 < 4) and epoch 4 (0.99 > 0.97, 2 < 3.5) back off; epoch 3's alignment rose
    assert used == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.025])
    assert weight.describe()["backoff_epochs"] == [2, 4]
    assert weight.describe()["final_factor"] == pytest.approx(0.25)
    # off: λ as configured whatever happens
    off = AlignmentWeight(0.1, cap=0.0)
    for epoch, (held_out, aligned) in enumerate(epochs):
        off.end_epoch(epoch, held_out, aligned)
    assert off.weight(torch.tensor(1.0), torch.tensor(1.0)) == 0.1


# ------------------------------------------------------------------------------------------------ in training
@pytest.fixture
def rising_validation_loss(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The student's validation loss made to rise by 0.1 every epoch, whatever the network does."""
    import gbdt2nn_core.student.gbdt2nn as gbdt2nn

    return _make_validation_loss_rise(monkeypatch, gbdt2nn)


def _make_validation_loss_rise(monkeypatch: pytest.MonkeyPatch, student_module: Any) -> list[float]:
    """Replace ``student_module``'s ``validation_loss`` by one that rises by 0.1 at every call; what it returned."""
    returned: list[float] = []

    def rising(*_: Any, **__: Any) -> float:
        returned.append(1.0 + 0.1 * len(returned))
        return returned[-1]

    monkeypatch.setattr(student_module, "validation_loss", rising)
    return returned


def test_a_rising_validation_loss_halves_lambda_in_the_recorded_history(
    adult_small: pd.DataFrame,
    small_config: Callable[..., DistillConfig],
    rising_validation_loss: list[float],
) -> None:
    # a λ far below the cap, so that the recorded λ is the configured one times the back-off
    options = {"epochs": 5, "early_stopping": False, "alignment_backoff": True}
    run = distill(adult_small, "income_gt_50k", small_config(alignment_weight=1e-3, student_options=options))
    epochs = run.student.history["epochs"]
    assert [epoch["validation_loss"] for epoch in epochs] == pytest.approx(rising_validation_loss)
    # the reference: the rule applied by hand to the recorded losses
    factor, expected = 1.0, []
    for before, after in zip([None, *epochs], epochs, strict=False):
        expected.append(1e-3 * factor)
        if before is not None and after["alignment_loss"] < before["alignment_loss"]:
            factor /= 2  # the validation loss rose every epoch
    assert [epoch["alignment_weight"] for epoch in epochs] == pytest.approx(expected)
    assert expected[-1] < expected[0]  # the rule fired: the network's alignment loss fell
    choice = run.student.history["choices"]["alignment_weight"]
    assert choice["backoff"] is True
    assert choice["final_factor"] == pytest.approx(factor)


def test_switching_the_backoff_off_trains_as_before(
    adult_small: pd.DataFrame, small_config: Callable[..., DistillConfig]
) -> None:
    """Off, λ is the capped one throughout; on, training is the same until the first back-off, then differs."""
    base = {"epochs": 8, "early_stopping": False, "alignment_backoff": False}
    off = distill(adult_small, "income_gt_50k", small_config(alignment_weight=1.0, student_options=base))
    on_options = {**base, "alignment_backoff": True}
    on = distill(adult_small, "income_gt_50k", small_config(alignment_weight=1.0, student_options=on_options))
    off_epochs, on_epochs = off.student.history["epochs"], on.student.history["epochs"]
    assert off.student.history["choices"]["alignment_weight"]["backoff_epochs"] == []
    backoffs = on.student.history["choices"]["alignment_weight"]["backoff_epochs"]
    first = backoffs[0] + 1 if backoffs else len(on_epochs)  # the first epoch that trains with a halved λ
    for before, after in zip(off_epochs[:first], on_epochs[:first], strict=True):
        assert after["task_loss"] == before["task_loss"]
        assert after["alignment_weight"] == before["alignment_weight"]
        assert after["validation_loss"] == before["validation_loss"]
    if first < len(on_epochs):
        assert on_epochs[first]["task_loss"] != off_epochs[first]["task_loss"]
    else:  # no back-off fired: the whole run is the same, weights included
        np.testing.assert_array_equal(
            on.student.predict_margin(on.data.z_test), off.student.predict_margin(off.data.z_test)
        )


# ------------------------------------------------------------------------------------------------ distilling the output
def _one_step_student(
    student_inputs: Callable[..., Any],
    teacher: Any,
    X: pd.DataFrame,
    schema: Any,
    y: np.ndarray,
    task: str,
    margin: np.ndarray | None,
    **options: Any,
) -> tuple[Any, np.ndarray]:
    """A GBDT2NN student fitted for one step over every row at a vanishing learning rate, and the encoded rows: the
    recorded task loss is that of the network the test can still evaluate (train mode: BatchNorm on the batch's
    statistics, as in that step). ``student_inputs``: the fixture of the same name."""
    from gbdt2nn_core.data.encoding import InputEncoder
    from gbdt2nn_core.host.registry import Registry

    inputs = student_inputs(teacher, InputEncoder.fit(X, schema), X, y, task, margin=margin, background_rows=50)
    student: Any = Registry().student("gbdt2nn", epochs=1, batch_size=len(y), lr=1e-12, hidden=(16, 16), **options)
    student.fit(inputs)
    return student, inputs.z


@pytest.mark.parametrize("teacher_weight", [0.0, 0.5, 1.0])
def test_the_task_loss_mixes_the_labels_and_the_teachers_own_predictions(
    california_small: pd.DataFrame, student_inputs: Callable[..., Any], teacher_weight: float
) -> None:
    """``teacher_weight`` α: the task loss is (1 − α)·MSE(labels) + α·MSE(the teacher's predictions), in the
    standardised units; the reference is computed here from the teacher's own ``predict`` and the network's forward."""
    import lightgbm as lgb

    from gbdt2nn_core.data import TabularSchema
    from gbdt2nn_core.host.registry import Registry

    X_frame = california_small.drop(columns="MedHouseVal")
    y = california_small["MedHouseVal"].to_numpy(dtype=np.float64)
    schema = TabularSchema.infer(X_frame)
    X = schema.to_frame(X_frame)
    teacher = Registry().teacher("lightgbm", n_estimators=10, num_leaves=15, num_threads=1)
    teacher.fit(X, y, task="regression", seed=0)
    own = teacher.native_model
    assert isinstance(own, lgb.Booster)
    predicted = own.predict(X)  # the teacher's own prediction, not the pipeline's margins
    student, z = _one_step_student(
        student_inputs, teacher, X, schema, y, "regression", predicted, n_groups=4, teacher_weight=teacher_weight
    )
    module = student.module.train()
    with torch.no_grad():
        margin = module(torch.as_tensor(z, dtype=torch.float32)).double().numpy()
    mean, std = y.mean(), y.std()
    on_labels = np.mean(((margin - y) / std) ** 2)
    on_teacher = np.mean(((margin - predicted) / std) ** 2)
    expected = (1 - teacher_weight) * on_labels + teacher_weight * on_teacher
    assert student.history["epochs"][0]["task_loss"] == pytest.approx(expected, rel=1e-4)
    assert student.target_scaling_.offset == pytest.approx(mean)
    assert on_labels != pytest.approx(on_teacher, rel=1e-3)  # the two references differ: the test can tell them apart


@pytest.mark.parametrize("margins_given", [True, False], ids=["margins", "no-margins"])
def test_a_multiclass_student_fits_the_teachers_margins_by_default(
    student_inputs: Callable[..., Any], margins_given: bool
) -> None:
    """``teacher_weight="auto"`` on a multiclass task: the task loss is the MSE between the network's and the
    teacher's centred margins (the teacher's own ``predict(raw_score=True)``), or the labels' cross-entropy where
    no margins are given to ``fit``; the run records which."""
    import lightgbm as lgb
    from sklearn.datasets import load_iris

    from gbdt2nn_core.data import TabularSchema
    from gbdt2nn_core.host.registry import Registry

    iris = load_iris(as_frame=True)
    y = iris.target.to_numpy()
    schema = TabularSchema.infer(iris.data)
    X = schema.to_frame(iris.data)
    teacher = Registry().teacher("lightgbm", n_estimators=10, num_leaves=7, num_threads=1)
    teacher.fit(X, y, task="multiclass", seed=0)
    own = teacher.native_model
    assert isinstance(own, lgb.Booster)
    raw = own.predict(X, raw_score=True)  # (n, 3): the teacher's own margins
    given = raw if margins_given else None
    student, z = _one_step_student(student_inputs, teacher, X, schema, y, "multiclass", given, n_groups=3)
    assert student.config.teacher_weight == "auto"
    module = student.module.train()
    with torch.no_grad():
        margin = module(torch.as_tensor(z, dtype=torch.float32)).double()
    centred = margin.numpy() - margin.numpy().mean(axis=1, keepdims=True)
    on_teacher = np.mean((centred - (raw - raw.mean(axis=1, keepdims=True))) ** 2)
    on_labels = float(torch.nn.functional.cross_entropy(margin, torch.tensor(y)))
    expected = on_teacher if margins_given else on_labels
    assert student.history["epochs"][0]["task_loss"] == pytest.approx(expected, rel=1e-4)
    assert student.choices_["teacher_weight"]["value"] == (1.0 if margins_given else 0.0)
    assert on_labels != pytest.approx(on_teacher, rel=1e-3)  # the two references differ: the test can tell them apart


def test_teacher_weight_auto_is_resolved_per_task_and_a_number_is_kept() -> None:
    from gbdt2nn_core.student.gbdt2nn import GBDT2NNConfig

    auto = GBDT2NNConfig()
    assert [auto.for_task(task).margin_share() for task in ("binary", "regression", "multiclass")] == [0.0, 0.0, 1.0]
    assert GBDT2NNConfig(teacher_weight=0.25).for_task("multiclass").margin_share() == 0.25
    with pytest.raises(ConfigError, match="teacher_weight"):
        auto.margin_share()  # unresolved


# ------------------------------------------------------------------------------------------------ the mlp student
def _mlp_config(small_config: Callable[..., DistillConfig], alignment_weight: float, **options: Any) -> DistillConfig:
    """small_config's run with the mlp student (small_config's student options are GBDT2NN's)."""
    config = small_config(alignment_weight=alignment_weight, attributor="gradient-x-input")
    mlp = {"hidden": [32, 16], **options}
    return DistillConfig(**{**config.to_json(), "student": "mlp", "student_options": mlp})


def test_the_mlp_resolves_the_automatic_batch_size_the_same_way(
    adult_small: pd.DataFrame, small_config: Callable[..., DistillConfig], adamw_rates: list[float]
) -> None:
    steps = adamw_rates  # one entry per AdamW step
    run = distill(adult_small, "income_gt_50k", _mlp_config(small_config, 0.0, epochs=1))
    rows = len(run.data.y_train) - run.student.history["stopping"]["validation_rows"]
    assert run.student.history["choices"]["batch_size"]["rows"] == batch_size_for_rows(rows) == 64
    assert len(steps) == int(np.ceil(rows / 64))  # the reference: AdamW's steps counted, one epoch of 64-row batches
    fixed = distill(adult_small, "income_gt_50k", _mlp_config(small_config, 0.0, epochs=1, batch_size=100))
    assert fixed.student.history["choices"]["batch_size"]["rows"] == 100


def test_a_rising_validation_loss_halves_the_mlps_lambda(
    adult_small: pd.DataFrame, small_config: Callable[..., DistillConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    import gbdt2nn_mlp.student as mlp

    _make_validation_loss_rise(monkeypatch, mlp)
    config = _mlp_config(small_config, 1e-3, epochs=5, early_stopping=False)  # λ far below the cap
    epochs = distill(adult_small, "income_gt_50k", config).student.history["epochs"]
    factor, expected = 1.0, []
    for before, after in zip([None, *epochs], epochs, strict=False):  # the rule, by hand, on the recorded losses
        expected.append(1e-3 * factor)
        if before is not None and after["alignment_loss"] < before["alignment_loss"]:
            factor /= 2
    assert [epoch["alignment_weight"] for epoch in epochs] == pytest.approx(expected)
    assert expected[-1] < expected[0]
