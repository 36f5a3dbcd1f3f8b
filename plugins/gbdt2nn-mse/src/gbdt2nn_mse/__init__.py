"""gbdt2nn plugin: the ``mse`` alignment loss (mean squared difference of attributions).

Importing the package is cheap; the class (and torch) load on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gbdt2nn_mse.loss import AttributionMSE

__all__ = ["AttributionMSE"]


def __getattr__(name: str) -> Any:
    # The entry point imports this package before its plugin module, so torch must not load here.
    if name in __all__:
        from gbdt2nn_mse import loss

        return getattr(loss, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
