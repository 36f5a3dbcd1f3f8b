"""Entry point of the gbdt2nn-mse plugin: registers the ``mse`` alignment loss.

Kept light (no torch import): the loss class loads only when a user asks for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gbdt2nn_core import AlignmentLossSpec, hookimpl


def _make_mse(**options: Any) -> Callable[..., Any]:
    from gbdt2nn_mse.loss import AttributionMSE

    return AttributionMSE(**options)


@hookimpl
def gbdt2nn_register_alignment_losses() -> list[AlignmentLossSpec]:
    """Attribution MSE (options: normalize, eps)."""
    return [
        AlignmentLossSpec(
            name="mse",
            factory=_make_mse,
            summary="mean squared difference of attributions, optionally per-row scale-normalised",
        )
    ]
