"""The moving average of the student's weights: the documented recurrence, computed apart from the code under test
from snapshots of the weights after every optimizer step, and what the student serves."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from gbdt2nn_core.pipeline.distill import DistillRun
from gbdt2nn_core.student import GBDT2NNStudent
from gbdt2nn_core.student.weight_average import WeightAverage


def reference_average(snapshots: list[list[np.ndarray]], first_epoch_steps: int, epochs: float) -> list[np.ndarray]:
    """The documented recurrence in float64, from the weights before the first step (``snapshots[0]``) and after
    each step ``t`` (``snapshots[t]``): ``a ← d·a + (1 − d)·w`` with ``d = (1 + t) / (10 + t)`` during the first
    epoch, then ``min(1 − 1 / (epochs · first_epoch_steps), (1 + t) / (10 + t))``."""
    decay_after = 1.0 - 1.0 / max(1.0, epochs * first_epoch_steps)
    average = [w.astype(np.float64) for w in snapshots[0]]
    for t, weights in enumerate(snapshots[1:], start=1):
        warm = (1 + t) / (10 + t)
        decay = warm if t <= first_epoch_steps else min(decay_after, warm)
        average = [decay * a + (1 - decay) * w for a, w in zip(average, weights, strict=True)]
    return average


def test_the_average_follows_the_documented_recurrence_and_leaves_training_on_the_live_weights() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    average = WeightAverage(model, optimizer, epochs=0.5)
    snapshots = [[p.detach().numpy().copy() for p in model.parameters()]]
    steps_per_epoch = 6
    for _epoch in range(3):
        for _ in range(steps_per_epoch):
            x = torch.randn(8, 4)
            loss = (model(x).squeeze(1) - x.sum(1)).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            snapshots.append([p.detach().numpy().copy() for p in model.parameters()])
        average.end_epoch()
        live = [p.detach().clone() for p in model.parameters()]
        expected = reference_average(snapshots, steps_per_epoch, 0.5)
        with average.averaged():
            for p, e in zip(model.parameters(), expected, strict=True):
                np.testing.assert_allclose(p.detach().numpy(), e, rtol=1e-5, atol=1e-6)
        for p, w in zip(model.parameters(), live, strict=True):
            assert torch.equal(p, w)  # bit for bit: training goes on from the live weights
    assert average.decay == pytest.approx(1 - 1 / 3)  # half an epoch of 6 steps
    average.close()
    optimizer.step()  # no longer followed
    assert average.steps == 3 * steps_per_epoch


def test_an_error_inside_the_averaged_block_still_puts_the_live_weights_back() -> None:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    average = WeightAverage(model, optimizer, epochs=1.0)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    live = [p.detach().clone() for p in model.parameters()]
    inside: list[bool] = []

    def fail_inside() -> None:
        with average.averaged():
            inside.append(torch.equal(model.weight, live[0]))
            raise RuntimeError("inside")

    with pytest.raises(RuntimeError, match="inside"):
        fail_inside()
    assert inside == [False]  # the average was in the module
    assert all(torch.equal(p, w) for p, w in zip(model.parameters(), live, strict=True))


def _fit_recording_steps(run: DistillRun, **options: Any) -> tuple[GBDT2NNStudent, list[list[np.ndarray]]]:
    """Fit a student with early stopping off; its training optimizer's weights before the first step and after
    every step, recorded by global optimizer hooks (the leaf-embedding stage's optimizer is told apart by its
    parameters)."""
    recorded: dict[int, tuple[torch.optim.Optimizer, list[list[np.ndarray]]]] = {}

    def weights(optimizer: torch.optim.Optimizer) -> list[np.ndarray]:
        return [p.detach().numpy().copy() for group in optimizer.param_groups for p in group["params"]]

    def before(optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        if id(optimizer) not in recorded:
            recorded[id(optimizer)] = (optimizer, [weights(optimizer)])

    def after(optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        recorded[id(optimizer)][1].append(weights(optimizer))

    student = GBDT2NNStudent(
        epochs=3, n_groups=3, hidden=(16, 8), batch_size=128, seed=1, early_stopping=False, **options
    )
    handles = [
        register_optimizer_step_pre_hook(before),
        register_optimizer_step_post_hook(after),
    ]
    try:
        student.fit(run.prepared.student_inputs())
    finally:
        for handle in handles:
            handle.remove()
    module_params = list(student.module.parameters())
    for optimizer, snapshots in recorded.values():
        params = [p for group in optimizer.param_groups for p in group["params"]]
        if len(params) == len(module_params) and all(a is b for a, b in zip(params, module_params, strict=True)):
            return student, snapshots
    raise AssertionError("the training optimizer was not recorded")


def test_the_student_serves_the_average_of_its_steps_and_zero_serves_the_last_step(adult_run: DistillRun) -> None:
    averaged, snapshots = _fit_recording_steps(adult_run, weight_average_epochs=0.5)
    steps = len(snapshots) - 1
    assert steps % 3 == 0  # 3 epochs of equal batches
    assert steps >= 24
    expected = reference_average(snapshots, steps // 3, 0.5)
    served = [p.detach().numpy() for p in averaged.module.parameters()]
    for s, e in zip(served, expected, strict=True):
        np.testing.assert_allclose(s, e, rtol=1e-4, atol=1e-6)
    assert not all(np.allclose(s, w) for s, w in zip(served, snapshots[-1], strict=True))  # not the last step's
    assert averaged.stopping_["weight_average"]["decay"] == pytest.approx(1 - 1 / (0.5 * (steps // 3)))

    last, last_snapshots = _fit_recording_steps(adult_run, weight_average_epochs=0)
    for s, w in zip(last.module.parameters(), last_snapshots[-1], strict=True):
        np.testing.assert_array_equal(s.detach().numpy(), w)
    assert "weight_average" not in last.stopping_
