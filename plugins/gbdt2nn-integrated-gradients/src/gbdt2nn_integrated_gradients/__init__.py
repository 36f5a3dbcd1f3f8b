"""gbdt2nn plugin: integrated gradients from a baseline, batched over the path steps, differentiable.

Importing the package is cheap; the class (and torch) load on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gbdt2nn_integrated_gradients.attributor import IntegratedGradients

__all__ = ["IntegratedGradients"]


def __getattr__(name: str) -> Any:
    # The entry point imports this package before its plugin module, so torch must not load here.
    if name in __all__:
        from gbdt2nn_integrated_gradients import attributor

        return getattr(attributor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
