"""A student that closes its gap to the teacher by itself (issue 12): the learning rate halved when the validation
loss stalls (``lr_plateau``), and λ backed off when alignment starts to cost the task (``alignment_backoff``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from gbdt2nn_core.pipeline.distill import DistillConfig, distill
from gbdt2nn_core.student.kit import AlignmentWeight, PlateauLearningRate

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def _optimizer(lr: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=lr)


# ------------------------------------------------------------------------------------------------ the units, by hand
def test_the_learning_rate_halves_after_patience_epochs_without_a_better_validation_loss() -> None:
    optimizer = _optimizer(0.01)
    schedule = PlateauLearningRate(optimizer, enabled=True, patience=2, warmup=2)
    # epochs 0-1 are the warm-up: a worse loss there counts for nothing
    losses = [1.0, 1.5, 0.9, 0.95, 0.97, 0.96, 0.8, 0.85, 0.86]
    rates = []
    for epoch, loss in enumerate(losses):
        schedule.update(epoch, loss)
        rates.append(schedule.rate)
    # by hand: best 0.9 at epoch 2; epochs 3 and 4 stall (halve after 4), 5 stalls, 6 improves, 7 and 8 stall
    assert rates == pytest.approx([0.01, 0.01, 0.01, 0.01, 0.005, 0.005, 0.005, 0.005, 0.0025])
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0025)
    assert schedule.describe()["reductions_after_epochs"] == [4, 8]
    # off: the rate never moves
    still = PlateauLearningRate(_optimizer(0.01), enabled=False, patience=1)
    for epoch, loss in enumerate(losses):
        still.update(epoch, loss)
    assert still.rate == 0.01
    assert still.describe()["why"].startswith("lr_plateau off")


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

    returned: list[float] = []

    def rising(*_: Any, **__: Any) -> float:
        returned.append(1.0 + 0.1 * len(returned))
        return returned[-1]

    monkeypatch.setattr(gbdt2nn, "validation_loss", rising)
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


def test_a_stalled_validation_loss_halves_the_learning_rate_after_the_warm_up(
    adult_small: pd.DataFrame,
    small_config: Callable[..., DistillConfig],
    rising_validation_loss: list[float],
) -> None:
    options = {"epochs": 7, "early_stopping": False, "lr_plateau": True, "lr": 0.002}
    run = distill(adult_small, "income_gt_50k", small_config(alignment_weight=0.0, student_options=options))
    rates = [epoch["learning_rate"] for epoch in run.student.history["epochs"]]
    # by hand: β's warm-up is epochs 0-3 (β constant from epoch 4); every later epoch is worse than epoch 0, so with
    # patience 1 the rate halves after epochs 4, 5 and 6: epochs 5 and 6 train at half and a quarter of it
    assert rates == pytest.approx([0.002] * 5 + [0.001, 0.0005])
    choice = run.student.history["choices"]["learning_rate"]
    assert choice["reductions_after_epochs"] == [4, 5, 6]
    assert choice["final_lr"] == pytest.approx(0.00025)


def test_switching_the_choices_off_trains_as_before(
    adult_small: pd.DataFrame, small_config: Callable[..., DistillConfig]
) -> None:
    """Off, the run is the one with a constant learning rate and λ; on, it is the same until the first change."""
    base = {"epochs": 8, "early_stopping": False, "lr_plateau": False, "alignment_backoff": False}
    off = distill(adult_small, "income_gt_50k", small_config(alignment_weight=1.0, student_options=base))
    on_options = {**base, "lr_plateau": True, "alignment_backoff": True}
    on = distill(adult_small, "income_gt_50k", small_config(alignment_weight=1.0, student_options=on_options))
    off_epochs, on_epochs = off.student.history["epochs"], on.student.history["epochs"]
    assert all(epoch["learning_rate"] == 1e-3 for epoch in off_epochs)
    assert off.student.history["choices"]["alignment_weight"]["backoff_epochs"] == []
    # the first epoch that trains differently: after the first halving of the rate or of λ
    changes = [
        epoch
        for epoch in range(1, len(on_epochs))
        if on_epochs[epoch]["learning_rate"] != 1e-3
        or on_epochs[epoch]["alignment_weight"] != pytest.approx(off_epochs[epoch]["alignment_weight"])
    ]
    first = changes[0] if changes else len(on_epochs)
    for before, after in zip(off_epochs[:first], on_epochs[:first], strict=True):
        assert after["task_loss"] == before["task_loss"]
        assert after["validation_loss"] == before["validation_loss"]
    if changes:
        assert on_epochs[first]["task_loss"] != off_epochs[first]["task_loss"]
    else:  # nothing changed: the whole run is the same, weights included
        np.testing.assert_array_equal(
            on.student.predict_margin(on.data.z_test), off.student.predict_margin(off.data.z_test)
        )
