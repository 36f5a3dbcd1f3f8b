"""Entry point of the gbdt2nn-gradient plugin: registers ``gradient`` and ``gradient-x-input``.

Kept light (no torch import): the attributor classes load only when a user asks for one.
"""

from __future__ import annotations

from gbdt2nn_core import Attributor, AttributorSpec, hookimpl


def _make_gradient() -> Attributor:
    from gbdt2nn_gradient.attributors import Gradient

    return Gradient()


def _make_gradient_x_input() -> Attributor:
    from gbdt2nn_gradient.attributors import GradientXInput

    return GradientXInput()


@hookimpl
def gbdt2nn_register_attributors() -> list[AttributorSpec]:
    """The signed gradient and gradient × input attributors (both differentiable, for joint training)."""
    return [
        AttributorSpec(
            name="gradient",
            factory=_make_gradient,
            summary="signed gradient df/dz (saliency): the local slope, explains no difference",
        ),
        AttributorSpec(
            name="gradient-x-input",
            factory=_make_gradient_x_input,
            summary="z * df/dz: first-order estimate of f(z) - f(training mean)",
        ),
    ]
