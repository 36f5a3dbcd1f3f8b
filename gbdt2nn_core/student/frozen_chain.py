"""GBDT2NN's layers after the first, with BatchNorm frozen, and their input gradient — differentiable without a
double backward.

With every BatchNorm on its running statistics the layers after the first linear map are a ReLU chain of group
linear maps (BatchNorm folded into them), ``p1 = a·s + c``, ``p_i = relu(p_{i-1}) W_i + B_i``, ``y = relu(p_L)·h +
b``. Its input gradient is a product of the same weights under the forward pass's ReLU masks,
``g = ∂y/∂a = s ⊙ δ_1`` with ``δ_L = m_L ⊙ hᵀ`` and ``δ_{i-1} = m_{i-1} ⊙ (δ_i W_iᵀ)``. The masks are piecewise
constant, so ``g`` is multilinear in the weights, and the gradient of an alignment loss ``⟨ḡ, g⟩`` with respect to
them is one *tangent* pass down the chain with the primal masks, ``r_1 = m_1 ⊙ ḡ s``, ``r_i = m_i ⊙ (r_{i-1}
W_i)``, and one product per layer, ``∂/∂W_i = r_{i-1}ᵀ δ_i``, ``∂/∂h = Σ r_L``. Autograd's double backward computes
the same numbers by differentiating the backward pass's graph: about twice the batched products and every
element-wise op again (``tests/test_frozen_chain.py`` checks the two agree to 1e-5).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

__all__ = ["outputs", "outputs_and_input_gradient"]


def outputs(
    first: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    head: torch.Tensor,
    head_bias: torch.Tensor,
) -> torch.Tensor:
    """``y`` ``(n, k)`` alone (arguments as for :func:`outputs_and_input_gradient`), by plain autograd ops: the forward
    when no input gradient is wanted."""
    activations = _activations(first.transpose(0, 1), scale, shift, layers)
    return torch.baddbmm(head_bias.unsqueeze(1), activations[-1], head).squeeze(-1).transpose(0, 1)


def _activations(
    a: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor]]
) -> list[torch.Tensor]:
    """``x_1 .. x_L`` of the chain from its group-major input ``a`` ``(k, n, h)`` (a strided view is read in place)."""
    activations = [torch.relu(a * scale.unsqueeze(1) + shift.unsqueeze(1))]
    for weight, bias in layers:
        activations.append(torch.relu(torch.baddbmm(bias.unsqueeze(1), activations[-1], weight)))
    return activations


def outputs_and_input_gradient(
    first: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    head: torch.Tensor,
    head_bias: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``y`` ``(n, k)`` and ``g = ∂(Σ_j y_j)/∂first`` ``(n, k, h)`` of the frozen chain at ``first`` ``(n, k, h)``.

    ``scale``, ``shift`` ``(k, h)``: the first BatchNorm as an affine map; ``layers``: the folded group linear maps
    ``(weight (k, i, o), bias (k, o))``; ``head`` ``(k, i, 1)``, ``head_bias`` ``(k, 1)``: the last layer with the
    frozen leaf-embedding head folded in. Both results are differentiable in every argument (``g``'s gradient
    without a double backward); a second derivative of them is not supported.
    """
    flat = [tensor for pair in layers for tensor in pair]
    y, g = _FrozenChain.apply(first, scale, shift, head, head_bias, *flat)  # type: ignore[no-untyped-call]
    return y, g


class _FrozenChain(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        first: torch.Tensor,
        scale: torch.Tensor,
        shift: torch.Tensor,
        head: torch.Tensor,
        head_bias: torch.Tensor,
        *flat: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        weights, biases = flat[0::2], flat[1::2]
        a = first.transpose(0, 1)  # (k, n, h): group-major
        activations = _activations(a, scale, shift, list(zip(weights, biases, strict=True)))  # x_1 .. x_L
        y = torch.baddbmm(head_bias.unsqueeze(1), activations[-1], head).squeeze(-1)  # (k, n)
        # δ_i = ∂y/∂p_i: ReLU's derivative is 1 where its output is positive
        deltas = [_relu_mask(head.transpose(1, 2).expand_as(activations[-1]), activations[-1])]
        for weight, activation in zip(reversed(weights), reversed(activations[:-1]), strict=True):
            deltas.append(_relu_mask(torch.bmm(deltas[-1], weight.transpose(1, 2)), activation))
        deltas.reverse()  # δ_1 .. δ_L
        g = deltas[0] * scale.unsqueeze(1)
        ctx.save_for_backward(a, scale, g, *weights, *activations, *deltas)
        ctx.layers = len(weights)
        ctx.set_materialize_grads(False)
        return y.transpose(0, 1), g.transpose(0, 1)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, y_bar: torch.Tensor | None, g_bar: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        layers = ctx.layers
        saved = ctx.saved_tensors
        a, scale, g = saved[:3]
        weights = saved[3 : 3 + layers]
        activations = saved[3 + layers : 4 + 2 * layers]  # x_1 .. x_L
        deltas = saved[4 + 2 * layers :]  # δ_1 .. δ_L
        need = ctx.needs_input_grad
        # per-row seeds of the y path, (k, n, 1): ∂⟨ȳ, y⟩/∂p_i = ȳ δ_i
        seed = None if y_bar is None else y_bar.transpose(0, 1).unsqueeze(-1)
        # the tangent pass of the g path: r_i, the cotangent of m_i ⊙ (δ_{i+1} W_{i+1}ᵀ)
        tangent = None if g_bar is None else _relu_mask(g_bar.transpose(0, 1) * scale.unsqueeze(1), activations[0])

        grad_first = grad_scale = grad_shift = None
        if seed is not None:
            # ∂⟨ȳ, y⟩/∂p_i = ȳ δ_i; sums over rows of it as (k, 1, n) @ (k, n, o) products
            seed_rows = seed.transpose(1, 2)
            grad_first = (seed * g).transpose(0, 1) if need[0] else None
            grad_shift = torch.bmm(seed_rows, deltas[0]).squeeze(1) if need[2] else None
        if need[1]:  # p_1 = a·s + c for y, and g = s ⊙ δ_1
            per_row = seed * a if seed is not None else None
            if g_bar is not None:
                per_row = g_bar.transpose(0, 1) if per_row is None else per_row + g_bar.transpose(0, 1)
            grad_scale = None if per_row is None else (per_row * deltas[0]).sum(1)

        grads_flat: list[torch.Tensor | None] = []
        for i, weight in enumerate(weights):  # layer i + 2: input x_{i+1}, output p_{i+2}
            delta, below = deltas[i + 1], activations[i]
            grad_bias = torch.bmm(seed_rows, delta).squeeze(1) if seed is not None and need[6 + 2 * i] else None
            grad_weight: torch.Tensor | None = None
            if need[5 + 2 * i]:
                # both paths in one product: x_{i+1}ᵀ (ȳ δ) + r_{i+1}ᵀ δ = (ȳ x_{i+1} + r_{i+1})ᵀ δ, ȳ a per-row scalar
                rows = None
                if seed is not None:
                    rows = seed * below if tangent is None else torch.addcmul(tangent, seed, below)
                elif tangent is not None:
                    rows = tangent
                grad_weight = None if rows is None else torch.bmm(rows.transpose(1, 2), delta)
            if tangent is not None:
                tangent = _relu_mask(torch.bmm(tangent, weight), activations[i + 1])
            grads_flat += [grad_weight, grad_bias]

        grad_head = grad_head_bias = None
        if seed is not None:
            grad_head = torch.bmm(activations[-1].transpose(1, 2), seed) if need[3] else None
            grad_head_bias = seed.sum(1) if need[4] else None
        if tangent is not None and need[3]:  # δ_L = m_L ⊙ hᵀ, and m_L is already in the tangent
            own = tangent.sum(1).unsqueeze(-1)
            grad_head = own if grad_head is None else grad_head + own
        return (grad_first, grad_scale, grad_shift, grad_head, grad_head_bias, *grads_flat)


def _relu_mask(values: torch.Tensor, activation: torch.Tensor) -> torch.Tensor:
    """``values`` where the ReLU output ``activation`` is positive, else 0: autograd's own ReLU backward kernel (the
    same convention at 0), one pass with no boolean mask written and converted (which cost a sixth of a joint step)."""
    masked: torch.Tensor = torch.ops.aten.threshold_backward(values, activation, 0)
    return masked
