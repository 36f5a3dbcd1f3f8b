"""The alignment term of a Monte Carlo attributor: two independent estimates, and an unbiased cross term for a
quadratic loss (``gbdt2nn_core.student.kit.alignment_loss``).

The reference is the term computed from the exact attributions the estimator is noisy around: a toy attributor
returns gradient × input of a linear model times ``1 + ε`` with ``ε ~ N(0, σ²)``, so the exact attributions, the
estimator's variance and the bias of a plain squared error are all known in closed form.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from gbdt2nn_core.host.interfaces import Attributor
from gbdt2nn_core.host.specs import AlignmentLossSpec
from gbdt2nn_core.kit.alignment import Alignment
from gbdt2nn_core.kit.losses import check_attribution_pair
from gbdt2nn_core.student.kit import alignment_loss
from gbdt2nn_core.testing import check_alignment_loss

NOISE = 0.5  # σ of the toy estimator's relative noise


class NoisyGradientTimesInput(Attributor):
    """Gradient × input of a linear model, each value times ``1 + ε`` (fresh draws per call): unbiased, noisy."""

    monte_carlo = True

    def __init__(self, seed: int = 0) -> None:
        self.generator = torch.Generator().manual_seed(seed)
        self.calls = 0

    def attribute(self, model: Any, z: torch.Tensor, *, create_graph: bool = False) -> torch.Tensor:
        self.calls += 1
        exact = z * model.weight[0]
        noise = torch.randn(z.shape, generator=self.generator, dtype=z.dtype)
        return exact * (1 + NOISE * noise)


class WeightedSquares:
    """A quadratic loss with weights from the teacher only, as ``mse`` with ``normalize``."""

    quadratic = True

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor, /) -> torch.Tensor:
        student, teacher = check_attribution_pair(student, teacher)
        weights = 1.0 / (1.0 + teacher.abs())
        return (weights * (student - teacher) ** 2).mean()


class AbsoluteDifference:
    """Not quadratic: the core must not debias it."""

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor, /) -> torch.Tensor:
        student, teacher = check_attribution_pair(student, teacher)
        return (student - teacher).abs().mean()


def setting(loss: Any, seed: int = 0) -> tuple[nn.Linear, torch.Tensor, torch.Tensor, Alignment]:
    torch.manual_seed(seed)
    model = nn.Linear(5, 1).double()
    z = torch.randn(12, 5, dtype=torch.float64)
    exact = (z * model.weight[0]).detach()
    teacher = exact + 0.3 * torch.randn(12, 5, dtype=torch.float64)
    alignment = Alignment(attributor=NoisyGradientTimesInput(seed), loss=loss, teacher_attributions=teacher.numpy())
    return model, z, teacher, alignment


def term(alignment: Alignment, model: nn.Module, z: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return alignment_loss(alignment, model, z, torch.eye(5, dtype=torch.float64), teacher)


@pytest.mark.parametrize("loss", [WeightedSquares(), pytest.param(None, id="mse")])
def test_a_quadratic_loss_trains_on_an_unbiased_estimate_of_the_exact_term(loss: Any) -> None:
    """Mean over many steps: the core's term equals the loss of the exact attributions, value and gradient, while the
    squared error of the estimates' mean is off by their variance (σ² · mean(w_j² z_j² · weights) / 2)."""
    if loss is None:
        from gbdt2nn_mse import AttributionMSE

        loss = AttributionMSE(normalize=True)
    model, z, teacher, alignment = setting(loss)
    exact_attributions = z * model.weight[0]
    exact = loss(exact_attributions, teacher)
    (exact_grad,) = torch.autograd.grad(exact, model.weight)

    steps = 4000
    values, grads, biased = [], [], []
    for _ in range(steps):
        value = term(alignment, model, z, teacher)
        (grad,) = torch.autograd.grad(value, model.weight)
        values.append(value.detach())
        grads.append(grad)
    values_t, grads_t = torch.stack(values), torch.stack(grads)
    assert alignment.attributor.calls == 2 * steps  # two independent estimates a step
    standard_error = values_t.std() / math.sqrt(steps)
    assert abs(values_t.mean() - exact.detach()) < 4 * standard_error

    grad_error = grads_t.std(dim=0) / math.sqrt(steps)
    assert ((grads_t.mean(dim=0) - exact_grad).abs() <= 4 * grad_error + 1e-12).all()

    # what the term was before: the squared error of the mean of the two estimates, biased upwards
    for _ in range(steps):
        first = alignment.attributor.attribute(model, z)
        second = alignment.attributor.attribute(model, z)
        biased.append(loss((first + second) / 2, teacher).detach())
    biased_t = torch.stack(biased)
    assert biased_t.mean() - exact.detach() > 10 * biased_t.std() / math.sqrt(steps)


def test_a_loss_that_is_not_quadratic_compares_the_mean_of_two_estimates() -> None:
    loss = AbsoluteDifference()
    model, z, teacher, alignment = setting(loss)
    got = term(alignment, model, z, teacher)
    replay = NoisyGradientTimesInput(0)  # the same stream of draws
    first, second = replay.attribute(model, z), replay.attribute(model, z)
    torch.testing.assert_close(got, loss((first + second) / 2, teacher), rtol=0, atol=0)


def test_an_exact_attributor_is_called_once_and_compared_as_it_is() -> None:
    class Exact(NoisyGradientTimesInput):
        monte_carlo = False

    loss = WeightedSquares()
    model, z, teacher, _ = setting(loss)
    attributor = Exact(0)
    alignment = Alignment(attributor=attributor, loss=loss, teacher_attributions=teacher.numpy())
    got = term(alignment, model, z, teacher)
    assert attributor.calls == 1
    torch.testing.assert_close(got, loss(NoisyGradientTimesInput(0).attribute(model, z), teacher), rtol=0, atol=0)


def test_the_kit_holds_a_loss_to_its_quadratic_declaration() -> None:
    check_alignment_loss(AlignmentLossSpec(name="weighted", summary="test loss", factory=WeightedSquares))

    class FalselyQuadratic(AbsoluteDifference):
        quadratic = True

    with pytest.raises(AssertionError, match="declares quadratic = True but twice the difference"):
        check_alignment_loss(AlignmentLossSpec(name="l1", summary="test loss", factory=FalselyQuadratic))

    class StudentWeighted:
        quadratic = True  # weights from the student: homogeneous of degree 2 in a sense, but not a quadratic form

        def __call__(self, student: torch.Tensor, teacher: torch.Tensor, /) -> torch.Tensor:
            student, teacher = check_attribution_pair(student, teacher)
            difference = student - teacher
            return (difference**4).sum() / (difference**2).sum().clamp_min(1e-12)

    with pytest.raises(AssertionError, match="parallelogram law"):
        check_alignment_loss(AlignmentLossSpec(name="quartic", summary="test loss", factory=StudentWeighted))
