"""Entry point of the gbdt2nn-integrated-gradients plugin: registers ``integrated-gradients``.

Kept light (no torch import): the attributor class loads only when a user asks for it.
"""

from __future__ import annotations

from typing import Any

from gbdt2nn_core import Attributor, AttributorSpec, hookimpl


def _make_integrated_gradients(**options: Any) -> Attributor:
    from gbdt2nn_integrated_gradients.attributor import IntegratedGradients

    return IntegratedGradients(**options)


@hookimpl
def gbdt2nn_register_attributors() -> list[AttributorSpec]:
    """Integrated gradients (options: steps, training_steps, method, baseline, internal_batch_size), differentiable."""
    return [
        AttributorSpec(
            name="integrated-gradients",
            factory=_make_integrated_gradients,
            summary="integrated gradients from a baseline (default: training mean): explains f(z) - f(baseline)",
        )
    ]
