"""Signed saliency and gradient × input, computed with one batched backward pass per output."""

from __future__ import annotations

import torch

from gbdt2nn_core.host.attribution import (
    FirstLayerModel,
    MarginModel,
    check_encoded_rows,
    first_layer_gradients,
    input_gradients,
)
from gbdt2nn_core.host.interfaces import Attributor

__all__ = ["Gradient", "GradientXInput"]


class Gradient(Attributor):
    """Signed gradient ``∂f/∂z`` (saliency without the absolute value).

    It explains no difference: it is the local slope of the margin, so its scale is per unit of ``z``, not in
    margin units like TreeSHAP. Compare it with TreeSHAP by rank or cosine, not by MSE.
    """

    differentiable = True
    reference = "local"

    def attribute(self, model: MarginModel, z: torch.Tensor, *, create_graph: bool = False) -> torch.Tensor:
        """``∂f/∂z`` for rows ``z`` ``(n, D)``: ``(n, D)``, or ``(n, k, D)`` for ``k`` outputs."""
        z = check_encoded_rows(z)
        grads = input_gradients(model, z, create_graph=create_graph)
        return grads if create_graph else grads.detach()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GradientXInput(Attributor):
    """Gradient × input ``z ⊙ ∂f/∂z``.

    Because ``z`` is centred (``z = 0`` is the training mean), this is the first-order Taylor estimate of
    ``f(z) − f(0)`` split over features: exact for a linear model, and the ``steps = 1`` limit of integrated
    gradients from the zero baseline.

    Per column, for a model whose first layer is linear (:class:`~gbdt2nn_core.host.attribution.FirstLayerModel`),
    :meth:`attribute_columns` computes the same sums by the chain rule from the first layer's output:
    ``Σ_{s ∈ c} z_s ∂f/∂z_s = Σ_j ∂f/∂h1_j · H_cj``, so joint training never differentiates twice through
    the first layer.
    """

    differentiable = True
    reference = "baseline"

    def attribute(self, model: MarginModel, z: torch.Tensor, *, create_graph: bool = False) -> torch.Tensor:
        """``z ⊙ ∂f/∂z`` for rows ``z`` ``(n, D)``: ``(n, D)``, or ``(n, k, D)`` for ``k`` outputs."""
        z = check_encoded_rows(z)
        with torch.enable_grad():
            grads = input_gradients(model, z, create_graph=create_graph)
            attributions = grads * (z if grads.ndim == 2 else z.unsqueeze(1))
        return attributions if create_graph else attributions.detach()

    def attribute_columns(
        self, model: FirstLayerModel, z: torch.Tensor, aggregation: torch.Tensor, *, create_graph: bool = False
    ) -> torch.Tensor:
        """``attribute(model, z) @ aggregation`` through the model's first layer: ``(n, d)`` or ``(n, k, d)``."""
        z = check_encoded_rows(z)
        with torch.enable_grad():
            layer = model.column_first_layer(z, aggregation)
            grads = first_layer_gradients(model, layer.first, create_graph=create_graph)
            attributions = layer.contract(grads)
        return attributions if create_graph else attributions.detach()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
