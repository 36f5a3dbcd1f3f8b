"""shap (expected gradients): exact for linear models, agrees with Captum's GradientShap, differentiable."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from captum.attr import GradientShap
from torch import nn

from gbdt2nn_core import Registry, TeacherExplainer
from gbdt2nn_core.errors import ConfigError, DataError
from gbdt2nn_core.testing import check_attributor
from gbdt2nn_shap import ExpectedGradients
from gbdt2nn_shap.plugin import gbdt2nn_register_attributors

pytestmark = pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients")


def make_net(n_features: int, n_outputs: int, *, seed: int = 0) -> nn.Module:
    """A float64 tanh MLP with BatchNorm whose running statistics are not the identity, in eval mode."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(n_features, 32), nn.BatchNorm1d(32), nn.Tanh(), nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, n_outputs)
    ).double()
    with torch.no_grad():
        for _ in range(5):
            net(1.5 * torch.randn(128, n_features, dtype=torch.float64) + 0.3)
    return net.eval()


@pytest.mark.parametrize(
    "options", [{}, {"samples": 5, "training_samples": 2, "seed": 3, "internal_batch_size": 20}], ids=str
)
def test_conforms_to_the_attributor_contract(options):
    (spec,) = gbdt2nn_register_attributors()
    check_attributor(spec, options=options)


def test_registered_under_its_public_name():
    attributor = Registry(strict=True).attributor("shap", samples=4)
    assert isinstance(attributor, ExpectedGradients)
    assert attributor.reference == "expectation"
    assert isinstance(attributor, TeacherExplainer)  # it can explain the teacher on its own reference


def test_exact_for_a_linear_model_in_expectation():
    torch.manual_seed(0)
    w = torch.randn(5, dtype=torch.float64)
    background = 2.0 * torch.randn(64, 5, dtype=torch.float64) + 1.0
    z = torch.randn(6, 5, dtype=torch.float64)
    samples = 4000
    got = ExpectedGradients(samples=samples).fit(None, background).attribute(lambda x: x @ w + 0.7, z)
    exact = w * (z - background.mean(0))
    # Each draw contributes w_j (z_j − b_j): the estimate's standard error is |w_j| σ_j / sqrt(samples).
    standard_error = w.abs() * background.std(0, unbiased=False) / samples**0.5
    assert ((got - exact).abs() <= 5 * standard_error).all()


def test_agrees_with_captum_gradient_shap_in_expectation():
    net = make_net(6, 1)
    model = lambda x: net(x)[:, 0]  # noqa: E731
    torch.manual_seed(1)
    background = torch.randn(50, 6, dtype=torch.float64)
    z = torch.randn(5, 6, dtype=torch.float64)
    # Ten independent runs of ours give the estimate and its standard error without re-deriving the estimator.
    runs = torch.stack(
        [ExpectedGradients(samples=400, seed=s).fit(model, background).attribute(model, z) for s in range(10)]
    )
    ours, standard_error = runs.mean(0), runs.std(0) / 10**0.5
    np.random.seed(0)
    torch.manual_seed(0)
    theirs = GradientShap(model).attribute(z, baselines=background, n_samples=4000, stdevs=0.0)
    # Two independent means of the same estimator from 4000 draws each: their difference has sqrt(2)·SE.
    assert ((ours - theirs).abs() <= 5 * 2**0.5 * standard_error + 1e-9).all()
    assert standard_error.max() < 0.05 * ours.abs().mean()  # so that the tolerance is a real constraint


def test_sums_to_f_minus_expected_f_in_expectation():
    net = make_net(4, 2)
    torch.manual_seed(2)
    background = torch.randn(40, 4, dtype=torch.float64)
    z = torch.randn(6, 4, dtype=torch.float64)
    runs = torch.stack(
        [ExpectedGradients(samples=100, seed=s).fit(net, background).attribute(net, z).sum(-1) for s in range(20)]
    )
    with torch.no_grad():
        target = net(z) - net(background).mean(0)
    assert ((runs.mean(0) - target).abs() <= 5 * runs.std(0) / 20**0.5 + 1e-9).all()


def test_multi_output_matches_per_output_draws():
    net = make_net(4, 3)
    background = torch.randn(20, 4, dtype=torch.float64)
    z = torch.randn(5, 4, dtype=torch.float64)
    every = ExpectedGradients(samples=8).fit(net, background).attribute(net, z)
    for c in range(3):
        one = ExpectedGradients(samples=8).fit(net, background).attribute(lambda x, c=c: net(x)[:, c], z)
        torch.testing.assert_close(every[:, c], one, rtol=0, atol=1e-12)


def test_draws_are_fresh_per_call_and_restart_on_fit():
    net = make_net(4, 1)
    model = lambda x: net(x)[:, 0]  # noqa: E731
    background = torch.randn(20, 4, dtype=torch.float64)
    z = torch.randn(5, 4, dtype=torch.float64)
    attributor = ExpectedGradients(samples=4, seed=7).fit(model, background)
    first, second = attributor.attribute(model, z), attributor.attribute(model, z)
    assert not torch.allclose(first, second)
    torch.testing.assert_close(attributor.fit(model, background).attribute(model, z), first, rtol=0, atol=0)
    chunked = ExpectedGradients(samples=4, seed=7, internal_batch_size=10).fit(model, background)
    torch.testing.assert_close(chunked.attribute(model, z), first, rtol=0, atol=1e-12)


def test_training_draws_apply_to_differentiable_results_only():
    """``training_samples`` draws when the result is to be differentiated, ``samples`` otherwise: each call equals
    an attributor that draws that many every time (the same random stream), on both paths."""
    net = make_net(4, 1)
    model = lambda x: net(x)[:, 0]  # noqa: E731
    background = torch.randn(20, 4, dtype=torch.float64)
    z = torch.randn(5, 4, dtype=torch.float64)
    mixed = ExpectedGradients(samples=6, training_samples=2, seed=1)
    for draws, create_graph in ((2, True), (6, False)):
        alone = ExpectedGradients(samples=draws, training_samples=draws, seed=1).fit(model, background)
        got = mixed.fit(model, background).attribute(model, z, create_graph=create_graph)
        torch.testing.assert_close(got, alone.attribute(model, z, create_graph=create_graph), rtol=0, atol=0)
    assert ExpectedGradients(samples=6, training_samples=None).training_samples == 6


def test_parameter_gradients_match_finite_differences():
    net = make_net(4, 2, seed=3)
    background = torch.randn(10, 4, dtype=torch.float64)
    z = torch.randn(5, 4, dtype=torch.float64)
    target = torch.randn(5, 2, 4, dtype=torch.float64)
    attributor = ExpectedGradients(samples=3, training_samples=3)
    weight = net[3].weight

    def loss() -> torch.Tensor:
        attributor.fit(net, background)  # the same draws for every evaluation
        return (attributor.attribute(net, z, create_graph=True) - target).pow(2).sum()

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


def test_rejects_bad_options_and_calls_in_one_line():
    with pytest.raises(ConfigError, match="samples=0"):
        ExpectedGradients(samples=0)
    with pytest.raises(ConfigError, match="training_samples=0"):
        ExpectedGradients(training_samples=0)
    with pytest.raises(DataError, match="needs a background sample"):
        ExpectedGradients().attribute(lambda x: x.sum(1), torch.ones(2, 3))
    with pytest.raises(DataError, match="3 columns but the background sample had 4"):
        ExpectedGradients().fit(None, torch.zeros(5, 4)).attribute(lambda x: x.sum(1), torch.ones(2, 3))


def test_plugin_module_does_not_import_torch_or_shap():
    code = (
        "import sys, gbdt2nn_shap.plugin; "
        "assert not {'torch', 'shap'} & set(sys.modules), 'heavy import in the plugin module'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("options", [{}, {"samples": 5, "training_samples": 3, "internal_batch_size": 30}])
def test_column_path_equals_the_dense_path(options: dict[str, object]) -> None:
    """The first-layer column path: same values and alignment gradients as the dense path (the conformance kit)."""
    from gbdt2nn_core.testing import check_column_path
    from gbdt2nn_shap.plugin import gbdt2nn_register_attributors as register

    (spec,) = [spec for spec in register() if spec.name == "shap"]
    check_column_path(spec, options=options)


class _Margin(nn.Module):
    """The first output of a network, as the margin an attributor explains."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, 0]


class _SquaredError:
    """The mean squared difference, declared quadratic as the ``mse`` plugin declares it."""

    quadratic = True

    def __call__(self, student: torch.Tensor, teacher: torch.Tensor, /) -> torch.Tensor:
        return (student - teacher).pow(2).mean()


def test_a_joint_step_trains_on_an_unbiased_estimate_of_the_exact_term():
    """Expected gradients is a Monte Carlo attributor: the core's alignment term (two estimates of 2 draws, ``mse``)
    averages over steps to the loss of the exact expectation (a 40,000-draw reference), where the squared error of
    one 4-draw estimate is biased upwards by its variance."""
    from gbdt2nn_core.kit.alignment import Alignment
    from gbdt2nn_core.student.kit import alignment_loss

    assert ExpectedGradients.monte_carlo
    model = _Margin(make_net(4, 1, seed=2))
    generator = torch.Generator().manual_seed(0)
    background = torch.randn(30, 4, generator=generator, dtype=torch.float64)
    z = torch.randn(6, 4, generator=generator, dtype=torch.float64)
    exact = ExpectedGradients(samples=40_000, seed=9).fit(model, background).attribute(model, z)
    teacher = exact + 0.05 * torch.randn(6, 4, generator=generator, dtype=torch.float64)
    loss = _SquaredError()  # mse's form, without depending on the mse plugin
    target = loss(exact, teacher).item()

    attributor = ExpectedGradients(training_samples=2, seed=1).fit(model, background)
    alignment = Alignment(attributor=attributor, loss=loss, teacher_attributions=teacher.numpy())
    identity = torch.eye(4, dtype=torch.float64)
    steps = 1500
    debiased = torch.stack([alignment_loss(alignment, model, z, identity, teacher).detach() for _ in range(steps)])
    four_draws = ExpectedGradients(training_samples=4, seed=1).fit(model, background)
    noisy = torch.stack(
        [loss(four_draws.attribute(model, z, create_graph=True), teacher).detach() for _ in range(steps)]
    )
    # besides the steps' standard error, 2 % for the reference's own noise (40,000 draws)
    assert abs(debiased.mean().item() - target) < 4 * debiased.std().item() / steps**0.5 + 0.02 * target
    assert noisy.mean().item() - target > 10 * noisy.std().item() / steps**0.5


@pytest.mark.parametrize("create_graph", [False, True])
def test_independent_estimates_from_one_pass_equal_successive_calls(create_graph: bool) -> None:
    """A joint step's two estimates share one first-layer pass: each equals the call it stands for (same stream),
    and so does the gradient of a loss of both with respect to every parameter."""
    from gbdt2nn_core.host.attribution import independent_column_attributions
    from gbdt2nn_core.kit.alignment import frozen_batchnorm
    from gbdt2nn_core.student.module import GBDT2NNModule

    torch.manual_seed(0)
    module = GBDT2NNModule(
        group_input_index=torch.tensor([[0, 1, 2, 9], [2, 3, 9, 9], [4, 5, 6, 0]]),
        group_output=torch.tensor([0, 0, 1]),
        n_outputs=2,
        hidden=(8, 6),
        embedding_dim=4,
    ).double()
    with torch.no_grad():
        module.head_weight.normal_()  # zero at initialisation
        for _ in range(3):  # running statistics that are not the identity
            module(1.5 * torch.randn(64, 9, dtype=torch.float64) + 0.3)
    aggregation = nn.functional.one_hot(torch.tensor([0, 0, 0, 1, 2, 2, 3, 4, 4]), 5).double()
    background, z = torch.randn(40, 9, dtype=torch.float64), torch.randn(7, 9, dtype=torch.float64)
    together = ExpectedGradients(samples=5, training_samples=3, seed=4, internal_batch_size=14).fit(module, background)
    apart = ExpectedGradients(samples=5, training_samples=3, seed=4, internal_batch_size=14).fit(module, background)
    with frozen_batchnorm(module.train()):
        pair = independent_column_attributions(together, module, z, aggregation, estimates=2, create_graph=create_graph)
        calls = [apart.attribute_columns(module, z, aggregation, create_graph=create_graph) for _ in range(2)]
    assert not torch.allclose(pair[0], pair[1])  # independent draws
    for got, expected in zip(pair, calls, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    if create_graph:
        parameters = [p for p in module.parameters() if p.requires_grad]
        loss_of = lambda first, second: (first * second).sum()  # noqa: E731
        got_grads = torch.autograd.grad(loss_of(*pair), parameters, allow_unused=True)
        expected_grads = torch.autograd.grad(loss_of(*calls), parameters, allow_unused=True)
        for got_grad, expected_grad in zip(got_grads, expected_grads, strict=True):
            if expected_grad is not None:
                torch.testing.assert_close(got_grad, expected_grad, rtol=1e-10, atol=1e-12)
    else:
        assert not pair[0].requires_grad
