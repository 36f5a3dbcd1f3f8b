"""Entry point of the gbdt2nn-shap plugin: registers ``shap`` (expected gradients, plus interventional TreeSHAP).

Kept light (no torch or shap import): the attributor loads only when a user asks for it.
"""

from __future__ import annotations

from typing import Any

from gbdt2nn_core import Attributor, AttributorSpec, hookimpl


def _make_shap(**options: Any) -> Attributor:
    from gbdt2nn_shap.attributor import ExpectedGradients

    return ExpectedGradients(**options)


@hookimpl
def gbdt2nn_register_attributors() -> list[AttributorSpec]:
    """Expected gradients (options: samples, training_samples, seed, internal_batch_size), differentiable."""
    return [
        AttributorSpec(
            name="shap",
            factory=_make_shap,
            summary="expected gradients over a background sample: explains f(z) - E[f], like interventional TreeSHAP",
        )
    ]
