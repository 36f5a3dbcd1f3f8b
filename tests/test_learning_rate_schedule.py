"""The students' learning-rate schedule: the cosine rate per epoch against torch's own ``CosineAnnealingLR``, and
the rate every training step of a real student took, read from the optimizer by a hook apart from the code under
test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
import pandas as pd
import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.pipeline.distill import DistillConfig, distill
from gbdt2nn_core.student import GBDT2NNStudent
from gbdt2nn_core.student.kit import epoch_learning_rate


def torch_cosine_rates(base: float, budget: int) -> list[float]:
    """The rate of each epoch under ``CosineAnnealingLR(T_max=budget)``, stepped once an epoch."""
    optimizer = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=base)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=budget, eta_min=0.0)
    rates = []
    for _ in range(budget):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("budget", [1, 4, 20])
def test_the_cosine_rate_of_each_epoch_is_torchs_cosine_annealing(budget: int) -> None:
    ours = [epoch_learning_rate("cosine", 3e-3, epoch, budget) for epoch in range(budget)]
    assert ours == pytest.approx(torch_cosine_rates(3e-3, budget), rel=1e-9, abs=1e-15)
    assert [epoch_learning_rate("constant", 3e-3, epoch, budget) for epoch in range(budget)] == [3e-3] * budget


def _steps_rates(fit: Callable[[], Any]) -> tuple[Any, list[float]]:
    """Run ``fit`` and record the learning rate of every optimizer step of the student's epochs (global hook; the
    leaf-embedding stage's optimizer is left out by its parameter count)."""
    seen: dict[int, list[float]] = {}
    optimizers: dict[int, torch.optim.Optimizer] = {}

    def before(optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        optimizers[id(optimizer)] = optimizer
        seen.setdefault(id(optimizer), []).append(optimizer.param_groups[0]["lr"])

    handle = register_optimizer_step_pre_hook(before)
    try:
        result = fit()
    finally:
        handle.remove()
    student = result.student
    parameters = len(list(student.module.parameters()))
    training = [
        rates
        for key, rates in seen.items()
        if sum(len(g["params"]) for g in optimizers[key].param_groups) == parameters
    ]
    assert len(training) == 1
    return student, training[0]


def _assert_every_step_took_its_epochs_rate(rates: list[float], expected: list[float]) -> None:
    """``rates`` (one per optimizer step, epochs of equal step counts) is ``expected[e]`` for every step of epoch e."""
    epochs = len(expected)
    steps_per_epoch = len(rates) // epochs
    assert len(rates) == epochs * steps_per_epoch
    for epoch in range(epochs):
        epoch_rates = rates[epoch * steps_per_epoch : (epoch + 1) * steps_per_epoch]
        assert epoch_rates == [pytest.approx(expected[epoch])] * steps_per_epoch


def test_the_student_keeps_its_rate_by_default_and_anneals_it_when_asked(
    california_small: pd.DataFrame, small_config: Callable[..., DistillConfig]
) -> None:
    options: dict[str, Any] = {"epochs": 4, "early_stopping": False, "lr": 2e-3, "batch_size": 128}
    student, rates = _steps_rates(
        lambda: distill(california_small, "MedHouseVal", small_config(student_options=options))
    )
    assert set(rates) == {2e-3}
    assert [record.learning_rate for record in student.history_] == [2e-3] * 4

    options["lr_schedule"] = "cosine"
    student, rates = _steps_rates(
        lambda: distill(california_small, "MedHouseVal", small_config(student_options=options))
    )
    assert isinstance(student, GBDT2NNStudent)
    expected = torch_cosine_rates(2e-3, 4)
    _assert_every_step_took_its_epochs_rate(rates, expected)
    assert [record.learning_rate for record in student.history_] == pytest.approx(expected)


def test_the_mlp_student_anneals_its_rate_alike(
    california_small: pd.DataFrame, small_config: Callable[..., DistillConfig]
) -> None:
    options: dict[str, Any] = {"epochs": 3, "early_stopping": False, "lr": 2e-3, "batch_size": 128}
    config = attrs.evolve(small_config(), student="mlp", attributor="gradient-x-input", student_options=options)
    student, rates = _steps_rates(lambda: distill(california_small, "MedHouseVal", config))
    assert set(rates) == {2e-3}
    assert [record["learning_rate"] for record in student.history_] == [2e-3] * 3

    config = attrs.evolve(config, student_options={**options, "lr_schedule": "cosine"})
    student, rates = _steps_rates(lambda: distill(california_small, "MedHouseVal", config))
    expected = torch_cosine_rates(2e-3, 3)
    _assert_every_step_took_its_epochs_rate(rates, expected)
    assert [record["learning_rate"] for record in student.history_] == pytest.approx(expected)


def test_an_unknown_schedule_names_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"use constant \(the default\) or cosine"):
        GBDT2NNStudent(lr_schedule="linear")
