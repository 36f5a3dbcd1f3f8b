"""gbdt2nn plugin: signed gradient (saliency) and gradient × input attributions, differentiable.

Importing the package is cheap; the classes (and torch) load on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gbdt2nn_gradient.attributors import Gradient, GradientXInput

__all__ = ["Gradient", "GradientXInput"]


def __getattr__(name: str) -> Any:
    # The entry point imports this package before its plugin module, so torch must not load here.
    if name in __all__:
        from gbdt2nn_gradient import attributors

        return getattr(attributors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
