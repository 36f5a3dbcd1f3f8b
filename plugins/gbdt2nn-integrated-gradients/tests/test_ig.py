"""integrated-gradients against Captum's IntegratedGradients, completeness and differentiability."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from captum.attr import IntegratedGradients as CaptumIG
from torch import nn

from gbdt2nn_core import Registry
from gbdt2nn_core.errors import ConfigError, DataError
from gbdt2nn_core.testing import check_attributor
from gbdt2nn_integrated_gradients import IntegratedGradients
from gbdt2nn_integrated_gradients._quadrature import METHODS
from gbdt2nn_integrated_gradients.plugin import gbdt2nn_register_attributors

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


def squeeze(net: nn.Module):
    return lambda z: net(z)[:, 0]


@pytest.mark.parametrize(
    "options", [{}, {"method": "riemann_trapezoid", "steps": 5}, {"baseline": "background-mean"}], ids=str
)
def test_conforms_to_the_attributor_contract(options):
    (spec,) = gbdt2nn_register_attributors()
    check_attributor(spec, options=options)


def test_registered_under_its_public_name():
    attributor = Registry(strict=True).attributor("integrated-gradients", steps=8)
    assert isinstance(attributor, IntegratedGradients)
    assert attributor.steps == 8
    assert attributor.reference == "baseline"


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("baseline", ["zero", "background-mean", "explicit"])
def test_matches_captum_with_one_output(method, baseline):
    net = make_net(6, 1)
    z = torch.randn(12, 6, dtype=torch.float64)
    background = torch.randn(40, 6, dtype=torch.float64) + 0.5
    explicit = torch.linspace(-1, 1, 6, dtype=torch.float64)
    option = explicit if baseline == "explicit" else baseline
    ours = IntegratedGradients(steps=7, method=method, baseline=option).fit(squeeze(net), background)
    reference = {"zero": torch.zeros(1, 6), "background-mean": background.mean(0, keepdim=True)}.get(
        baseline, explicit[None]
    ).double()
    expected = CaptumIG(squeeze(net)).attribute(z, baselines=reference, n_steps=7, method=method)
    torch.testing.assert_close(ours.attribute(squeeze(net), z), expected, rtol=0, atol=1e-6)


def test_matches_captum_per_output_with_several_outputs():
    net = make_net(5, 3)
    z = torch.randn(10, 5, dtype=torch.float64)
    ours = IntegratedGradients(steps=16).attribute(net, z)
    assert ours.shape == (10, 3, 5)
    for c in range(3):
        expected = CaptumIG(net).attribute(z, baselines=torch.zeros(1, 5).double(), target=c, n_steps=16)
        torch.testing.assert_close(ours[:, c], expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("training_steps", [3, None])
def test_a_differentiable_result_takes_the_training_steps(training_steps: int | None) -> None:
    """Joint training's result (``create_graph``) is Captum's at ``training_steps`` points, an explanation Captum's at
    ``steps``; ``training_steps=None`` takes ``steps`` for both."""
    net = make_net(6, 1)
    z = torch.randn(12, 6, dtype=torch.float64)
    ours = IntegratedGradients(steps=8, training_steps=training_steps)
    captum = CaptumIG(squeeze(net))
    zero = torch.zeros(1, 6, dtype=torch.float64)
    trained = captum.attribute(z, baselines=zero, n_steps=8 if training_steps is None else training_steps)
    explained = captum.attribute(z, baselines=zero, n_steps=8)
    torch.testing.assert_close(ours.attribute(squeeze(net), z, create_graph=True).detach(), trained, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.attribute(squeeze(net), z), explained, rtol=0, atol=1e-6)
    assert ours.training_steps == (8 if training_steps is None else training_steps)


def test_chunked_steps_give_the_same_result():
    net = make_net(5, 2)
    z = torch.randn(10, 5, dtype=torch.float64)
    whole = IntegratedGradients(steps=9).attribute(net, z)
    chunked = IntegratedGradients(steps=9, internal_batch_size=25).attribute(net, z)
    torch.testing.assert_close(whole, chunked, rtol=0, atol=1e-12)


def test_completeness_gap_shrinks_with_more_steps():
    net = make_net(6, 2, activation=nn.Tanh)
    z = 2.0 * torch.randn(30, 6, dtype=torch.float64)
    gaps = []
    for steps in (2, 4, 8, 16):
        ig = IntegratedGradients(steps=steps)
        gaps.append(ig.completeness_gap(net, z, ig.attribute(net, z)).abs().mean().item())
    assert gaps == sorted(gaps, reverse=True), gaps
    assert gaps[-1] < 1e-6 < gaps[0]


def test_completeness_gap_has_one_value_per_row_and_output():
    net = make_net(4, 3)
    z = torch.randn(7, 4, dtype=torch.float64)
    ig = IntegratedGradients(steps=64, method="riemann_middle")
    gap = ig.completeness_gap(net, z, ig.attribute(net, z))
    assert gap.shape == (7, 3)
    assert gap.abs().max() < 0.05


def test_parameter_gradients_match_finite_differences():
    net = make_net(4, 2, seed=3, activation=nn.Tanh)
    z = torch.randn(5, 4, dtype=torch.float64)
    target = torch.randn(5, 2, 4, dtype=torch.float64)
    ig = IntegratedGradients(steps=6)
    weight = net[3].weight

    def loss() -> torch.Tensor:
        return (ig.attribute(net, z, create_graph=True) - target).pow(2).sum()

    (analytic,) = torch.autograd.grad(loss(), weight)
    step = 1e-6
    for index in [(0, 0), (5, 7), (15, 31)]:
        with torch.no_grad():
            weight[index] += step
            up = loss().item()
            weight[index] -= 2 * step
            down = loss().item()
            weight[index] += step
        assert analytic[index].item() == pytest.approx((up - down) / (2 * step), rel=1e-5, abs=1e-8)


def test_rejects_bad_options_and_rows_in_one_line():
    with pytest.raises(ConfigError, match="method='simpson'"):
        IntegratedGradients(method="simpson")
    with pytest.raises(ConfigError, match="integer >= 2"):
        IntegratedGradients(steps=1, method="riemann_left")
    with pytest.raises(ConfigError, match="training_steps=0"):
        IntegratedGradients(training_steps=0)
    with pytest.raises(ConfigError, match="baseline='median'"):
        IntegratedGradients(baseline="median")
    with pytest.raises(DataError, match="needs a background sample"):
        IntegratedGradients(baseline="background-mean").attribute(lambda x: x.sum(1), torch.ones(2, 3))
    with pytest.raises(DataError, match=r"baseline has shape \(1, 4\) but z has shape \(2, 3\)"):
        IntegratedGradients(baseline=[0.0, 0.0, 0.0, 0.0]).attribute(lambda x: x.sum(1), torch.ones(2, 3))


def test_plugin_module_does_not_import_torch():
    code = "import sys, gbdt2nn_integrated_gradients.plugin; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "options",
    [{}, {"baseline": "background-mean", "steps": 5}, {"internal_batch_size": 30}, {"steps": 3, "training_steps": 6}],
)
def test_column_path_equals_the_dense_path(options: dict[str, object]) -> None:
    """The first-layer column path: same values and alignment gradients as the dense path (the conformance kit)."""
    from gbdt2nn_core.testing import check_column_path
    from gbdt2nn_integrated_gradients.plugin import gbdt2nn_register_attributors as register

    (spec,) = [spec for spec in register() if spec.name == "integrated-gradients"]
    check_column_path(spec, options=options)


def test_repr_names_an_explicit_baseline_by_its_values() -> None:
    # a training checkpoint's fingerprint reads the attributor's repr: another baseline is another setup
    from gbdt2nn_integrated_gradients.attributor import IntegratedGradients

    one, same, other = (IntegratedGradients(baseline=b) for b in ([0.0, 1.0], [0.0, 1.0], [0.0, 2.0]))
    assert repr(one) == repr(same) != repr(other)
    assert "baseline='zero'" in repr(IntegratedGradients())
