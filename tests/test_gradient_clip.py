"""Gradient clipping relative to the recent steps' norms: the documented rule, recomputed apart from the code under
test from the gradients every step saw before and after the clip, in a toy model and in the real student."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from gbdt2nn_core import get_registry
from gbdt2nn_core.kit.alignment import Alignment
from gbdt2nn_core.pipeline.distill import DistillRun
from gbdt2nn_core.student import GBDT2NNStudent
from gbdt2nn_core.student.gradient_clip import GradientClip


def expected_norms(raw: list[float], multiple: float, window: int, warmup: int) -> list[float]:
    """The rule in float64: step ``t``'s norm becomes ``min(raw_t, multiple × median(raw over the last ``window``
    steps before t))`` once ``warmup`` steps have passed; the unclipped norms are the yardstick."""
    out = []
    for t, norm in enumerate(raw):
        previous = raw[max(0, t - window) : t]
        out.append(norm if len(previous) < warmup else min(norm, multiple * float(np.median(previous))))
    return out


def grad_norm(parameters: list[torch.Tensor]) -> float:
    return float(np.sqrt(sum(float((p.grad.double() ** 2).sum()) for p in parameters if p.grad is not None)))


def _toy_steps(clip: GradientClip | None, model: nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
    for step in steps:
        generator = torch.Generator().manual_seed(step)
        x = torch.randn(16, 4, generator=generator)
        scale = 50.0 if step % 7 == 6 else 1.0  # a spike every seventh step
        loss = scale * (model(x).squeeze(1) - x.sum(1)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def test_each_step_is_clipped_at_the_multiple_of_the_median_of_the_window_before_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(GradientClip, "window", 9)
    monkeypatch.setattr(GradientClip, "warmup", 4)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    clip = GradientClip(optimizer, multiple=1.5)
    parameters = list(model.parameters())
    raw: list[float] = []
    applied: list[float] = []
    handles = [
        register_optimizer_step_pre_hook(lambda *_: raw.append(grad_norm(parameters))),  # global: before the clip
        register_optimizer_step_post_hook(lambda *_: applied.append(grad_norm(parameters))),
    ]
    try:
        _toy_steps(clip, model, optimizer, range(40))
    finally:
        for handle in handles:
            handle.remove()
    expected = expected_norms(raw, 1.5, window=9, warmup=4)
    np.testing.assert_allclose(applied, expected, rtol=1e-5)
    assert clip.describe() == {
        "multiple": 1.5,
        "clipped_steps": sum(a < r * (1 - 1e-6) for a, r in zip(applied, raw, strict=True)),
        "steps": 40,
    }
    assert 5 <= clip.clipped < 40  # the spikes at least; not every step
    clip.close()
    _toy_steps(None, model, optimizer, range(40, 42))
    assert clip.steps == 40  # no longer clipping


def test_a_clip_resumed_from_its_state_continues_bit_for_bit() -> None:
    def trained(split: int | None) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 1))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        clip = GradientClip(optimizer, multiple=1.2)
        if split is None:
            _toy_steps(clip, model, optimizer, range(50))
        else:
            _toy_steps(clip, model, optimizer, range(split))
            state = clip.state_dict()
            clip.close()
            resumed = GradientClip(optimizer, multiple=1.2)
            resumed.load_state_dict(state)
            _toy_steps(resumed, model, optimizer, range(split, 50))
            assert resumed.steps == 50
        return [p.detach().clone() for p in model.parameters()]

    for whole, resumed in zip(trained(None), trained(23), strict=True):
        assert torch.equal(whole, resumed)


def _fit_recording_norms(run: DistillRun, **options: Any) -> tuple[GBDT2NNStudent, list[float], list[float]]:
    """Fit an aligned student (a tenth of the rows aligned, in batches of their own, weighted up); every step of its
    training optimizer's gradient norm before and after the clip (global optimizer hooks: the global pre-hook runs
    before the optimizer's own; the leaf-embedding stage's optimizer is told apart by its parameters)."""
    recorded: dict[int, tuple[torch.optim.Optimizer, list[float], list[float]]] = {}

    def parameters(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
        return [p for group in optimizer.param_groups for p in group["params"]]

    def before(optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        recorded.setdefault(id(optimizer), (optimizer, [], []))[1].append(grad_norm(parameters(optimizer)))

    def after(optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        recorded[id(optimizer)][2].append(grad_norm(parameters(optimizer)))

    n = len(run.prepared.validation.fit)
    rows = np.sort(np.random.default_rng(0).permutation(n)[: n // 10])
    alignment = Alignment(  # targets of the teacher's size and shape; their values do not matter here
        attributor=get_registry().attributor("gradient-x-input"),
        loss=torch.nn.functional.mse_loss,
        teacher_attributions=run.prepared.shap_train.values[: len(rows)],
        rows=rows,
    )
    student = GBDT2NNStudent(epochs=3, n_groups=3, hidden=(16, 8), batch_size=128, seed=1, **options)
    handles = [register_optimizer_step_pre_hook(before), register_optimizer_step_post_hook(after)]
    try:
        student.fit(run.prepared.student_inputs(alignment=alignment))
    finally:
        for handle in handles:
            handle.remove()
    module_params = list(student.module.parameters())
    for optimizer, raw, applied in recorded.values():
        params = parameters(optimizer)
        if len(params) == len(module_params) and all(a is b for a, b in zip(params, module_params, strict=True)):
            return student, raw, applied
    raise AssertionError("the training optimizer was not recorded")


def test_the_student_clips_its_training_steps_by_the_rule_and_zero_clips_none(adult_run: DistillRun) -> None:
    student, raw, applied = _fit_recording_norms(adult_run, clip_gradients=2.0)
    assert len(raw) >= 30
    expected = expected_norms(raw, 2.0, window=GradientClip.window, warmup=GradientClip.warmup)
    np.testing.assert_allclose(applied, expected, rtol=1e-4)
    clipped = sum(a < r * (1 - 1e-4) for a, r in zip(applied, raw, strict=True))
    assert clipped > 0  # the aligned batches' steps, weighted up, at least
    assert student.stopping_["gradient_clip"] == {"multiple": 2.0, "clipped_steps": clipped, "steps": len(raw)}

    unclipped, raw, applied = _fit_recording_norms(adult_run, clip_gradients=0)
    np.testing.assert_allclose(applied, raw, rtol=1e-6)
    assert "gradient_clip" not in unclipped.stopping_


def test_a_nonpositive_multiple_is_refused() -> None:
    optimizer = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="positive"):
        GradientClip(optimizer, multiple=0)
