"""The frozen chain's input gradient and its exact tangent-pass derivative, against autograd's double backward.

:func:`~gbdt2nn_core.student.frozen_chain.outputs_and_input_gradient` replaces ``autograd.grad(y.sum(), first,
create_graph=True)`` followed by a backward through that graph. The reference here is exactly that, on the module's
own frozen layers (BatchNorm on running statistics that training moved away from 0 and 1, a head that is not
zero): the outputs, the input gradient, and the gradient of any loss of both with respect to every parameter and
to the first layer's output must agree — to 1e-5 in float32, as used in training, and to 1e-10 in float64.
"""

from __future__ import annotations

import pytest
import torch

from gbdt2nn_core.host.attribution import FirstLayerGradients, first_layer_gradients, output_gradients
from gbdt2nn_core.student import GBDT2NNModule


def _module(n_outputs: int, dtype: torch.dtype, seed: int = 0) -> GBDT2NNModule:
    torch.manual_seed(seed)
    groups, encoded = 5, 24
    module = GBDT2NNModule(
        group_input_index=torch.randint(0, encoded, (groups, 7)),
        group_output=torch.arange(groups) % n_outputs,
        n_outputs=n_outputs,
        hidden=(12, 9, 6),
    ).to(dtype)
    with torch.no_grad():
        module.head_weight.normal_()
        module.head_bias.normal_()
    module.train()
    for _ in range(4):  # running statistics away from their initial values
        module(torch.randn(64, encoded, dtype=dtype) * 2 + 0.5)
    return module.eval()


def _reference(module: GBDT2NNModule, first: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``y`` and ``∂Σy/∂first`` by autograd, differentiable by a double backward, on the unfolded layers."""
    outputs = module.group_outputs(module.mlp.after_first_linear(first))
    (gradient,) = torch.autograd.grad(outputs.sum(), first, create_graph=True)
    return outputs, gradient


def _tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 1e-10, "rtol": 1e-10}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("seeds", ["y and g", "g only", "y only"])
@pytest.mark.parametrize("n_outputs", [1, 3])
def test_the_tangent_pass_equals_the_double_backward(dtype: torch.dtype, seeds: str, n_outputs: int) -> None:
    module = _module(n_outputs, dtype)
    first = torch.randn(48, module.n_groups, 12, dtype=dtype, requires_grad=True)
    parameters = [*module.parameters(), first]
    generator = torch.Generator().manual_seed(1)
    y_weight = torch.randn(48, module.n_groups, generator=generator, dtype=dtype)
    g_weight = torch.randn(48, module.n_groups, 12, generator=generator, dtype=dtype)

    outputs, gradient = module.group_outputs_and_gradient(first, create_graph=True)
    expected_outputs, expected_gradient = _reference(module, first)
    torch.testing.assert_close(outputs, expected_outputs, **_tolerance(dtype))
    torch.testing.assert_close(gradient, expected_gradient, **_tolerance(dtype))
    assert type(gradient.grad_fn).__name__.startswith("_FrozenChain")  # the fast path, not autograd's

    def loss(y: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Of ``y``, of ``g`` or of both: a term left out sends no gradient (``None``) into the backward."""
        y_term = (y * y_weight).sum()
        g_term = (g * g_weight).sum() + 0.5 * ((g * g_weight) ** 2).sum()
        return {"y and g": y_term + g_term, "g only": g_term, "y only": y_term}[seeds]

    fast = torch.autograd.grad(loss(outputs, gradient), parameters, allow_unused=True, materialize_grads=True)
    slow = torch.autograd.grad(
        loss(expected_outputs, expected_gradient), parameters, allow_unused=True, materialize_grads=True
    )
    names = [name for name, _ in module.named_parameters()] + ["first"]
    assert any(bool(reference.abs().max() > 0.1) for reference in slow)  # the reference is not trivially zero
    for name, got, want in zip(names, fast, slow, strict=True):
        torch.testing.assert_close(got, want, **_tolerance(dtype), msg=name)


@pytest.mark.parametrize("n_outputs", [1, 3])
@pytest.mark.parametrize("create_graph", [False, True])
def test_first_layer_gradients_equal_autograd_per_output(n_outputs: int, create_graph: bool) -> None:
    """The :class:`FirstLayerGradients` capability, ``(n, k, h)`` or ``(n, c, k, h)``: each output's gradient
    by one pass, equal to one backward per output; detached unless a graph is asked for."""
    module = _module(n_outputs, torch.float64)
    assert isinstance(module, FirstLayerGradients)
    first = torch.randn(20, module.n_groups, 12, dtype=torch.float64)
    got = first_layer_gradients(module, first, create_graph=create_graph)
    want = output_gradients(module.after_first_layer, first, create_graph=False)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    assert got.requires_grad == create_graph


def test_batchnorm_in_training_mode_takes_autograd() -> None:
    """With batch statistics the layers are no chain of fixed affine maps: the gradient is autograd's, unchanged."""
    module = _module(1, torch.float64).train()
    first = torch.randn(32, module.n_groups, 12, dtype=torch.float64, requires_grad=True)
    outputs, gradient = module.group_outputs_and_gradient(first, create_graph=True)
    assert not type(gradient.grad_fn).__name__.startswith("_FrozenChain")
    expected_outputs, expected_gradient = _reference(module, first)
    torch.testing.assert_close(outputs, expected_outputs)
    torch.testing.assert_close(gradient, expected_gradient)
