"""gradient and gradient-x-input against Captum's Saliency and InputXGradient, and their differentiability."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from captum.attr import InputXGradient, Saliency
from torch import nn

from gbdt2nn_core import Registry
from gbdt2nn_core.errors import DataError
from gbdt2nn_core.testing import check_attributor
from gbdt2nn_gradient import Gradient, GradientXInput
from gbdt2nn_gradient.plugin import gbdt2nn_register_attributors

pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")


def make_net(n_features: int, n_outputs: int, *, seed: int = 0, activation: type[nn.Module] = nn.ReLU) -> nn.Module:
    """A float64 MLP with BatchNorm whose running statistics are not the identity, in eval mode."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(n_features, 32),
        nn.BatchNorm1d(32),
        activation(),
        nn.Linear(32, 16),
        activation(),
        nn.Linear(16, n_outputs),
    ).double()
    with torch.no_grad():
        for _ in range(5):
            net(1.5 * torch.randn(128, n_features, dtype=torch.float64) + 0.3)
    return net.eval()


def margin(net: nn.Module) -> callable:
    return lambda z: net(z).squeeze(1) if net[-1].out_features == 1 else net(z)


@pytest.mark.parametrize("spec", gbdt2nn_register_attributors(), ids=lambda s: s.name)
def test_conforms_to_the_attributor_contract(spec):
    check_attributor(spec)


def test_registered_under_public_names():
    registry = Registry(strict=True)
    assert {"gradient", "gradient-x-input"} <= set(registry.names("attributor"))
    assert isinstance(registry.attributor("gradient"), Gradient)
    assert registry.attributor("gradient-x-input").reference == "baseline"


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_matches_captum(n_outputs):
    net = make_net(6, n_outputs)
    z = torch.randn(20, 6, dtype=torch.float64)
    ours_grad = Gradient().attribute(margin(net), z)
    ours_gxi = GradientXInput().attribute(margin(net), z)
    targets = [None] if n_outputs == 1 else range(n_outputs)
    for c, target in enumerate(targets):
        saliency = Saliency(net).attribute(z, target=0 if target is None else target, abs=False)
        gxi = InputXGradient(net).attribute(z, target=0 if target is None else target)
        got_grad = ours_grad if target is None else ours_grad[:, c]
        got_gxi = ours_gxi if target is None else ours_gxi[:, c]
        torch.testing.assert_close(got_grad, saliency, rtol=0, atol=1e-6)
        torch.testing.assert_close(got_gxi, gxi, rtol=0, atol=1e-6)


def test_gradient_x_input_is_exact_for_a_linear_model():
    torch.manual_seed(1)
    linear = nn.Linear(5, 1).double()
    z = torch.randn(8, 5, dtype=torch.float64)
    attributions = GradientXInput().attribute(lambda x: linear(x)[:, 0], z)
    torch.testing.assert_close(attributions.sum(1), linear(z)[:, 0] - linear(torch.zeros(1, 5).double())[:, 0])


@pytest.mark.parametrize("attributor", [Gradient(), GradientXInput()], ids=repr)
def test_parameter_gradients_match_finite_differences(attributor):
    # Smooth activations so that the attributions are differentiable in the weights everywhere.
    net = make_net(4, 2, seed=3, activation=nn.Tanh)
    z = torch.randn(5, 4, dtype=torch.float64)
    target = torch.randn(5, 2, 4, dtype=torch.float64)
    weight = net[0].weight

    def loss() -> torch.Tensor:
        return (attributor.attribute(net, z, create_graph=True) - target).pow(2).sum()

    (analytic,) = torch.autograd.grad(loss(), weight)
    numeric = torch.zeros_like(weight)
    step = 1e-6
    with torch.no_grad():
        for index in [(0, 0), (3, 1), (17, 2), (31, 3)]:
            weight[index] += step
            up = loss().item()
            weight[index] -= 2 * step
            down = loss().item()
            weight[index] += step
            numeric[index] = (up - down) / (2 * step)
    for index in [(0, 0), (3, 1), (17, 2), (31, 3)]:
        assert analytic[index].item() == pytest.approx(numeric[index].item(), rel=1e-5, abs=1e-8)


def test_gradcheck_through_the_attributions():
    torch.manual_seed(4)
    z = torch.randn(3, 4, dtype=torch.float64)
    w1 = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(5, dtype=torch.float64, requires_grad=True)

    def attributions(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        return GradientXInput().attribute(lambda x: torch.tanh(x @ first) @ second, z, create_graph=True)

    assert torch.autograd.gradcheck(attributions, (w1, w2))


def test_rejects_bad_rows_in_one_line():
    with pytest.raises(DataError, match=r"shape \(4,\)"):
        Gradient().attribute(lambda x: x.sum(1), torch.ones(4))
    with pytest.raises(DataError, match="NaN or infinite values in 1 of 2 rows"):
        GradientXInput().attribute(lambda x: x.sum(1), torch.tensor([[0.0, 1.0], [float("inf"), 0.0]]))
    with pytest.raises(DataError, match=r"returned \(3, 2, 1\) for 3 rows"):
        Gradient().attribute(lambda x: x[:, :, None], torch.ones(3, 2))


def test_plugin_module_does_not_import_torch():
    code = "import sys, gbdt2nn_gradient.plugin; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("options", [{}])
def test_column_path_equals_the_dense_path(options: dict[str, object]) -> None:
    """The first-layer column path: same values and alignment gradients as the dense path (the conformance kit)."""
    from gbdt2nn_core.testing import check_column_path
    from gbdt2nn_gradient.plugin import gbdt2nn_register_attributors as register

    (spec,) = [spec for spec in register() if spec.name == "gradient-x-input"]
    check_column_path(spec, options=options)
