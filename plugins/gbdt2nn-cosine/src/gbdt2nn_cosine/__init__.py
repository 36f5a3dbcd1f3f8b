"""gbdt2nn plugin: the ``cosine`` alignment loss (1 - per-row cosine similarity).

Importing the package is cheap; the class (and torch) load on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gbdt2nn_cosine.loss import CosineDistance

__all__ = ["CosineDistance"]


def __getattr__(name: str) -> Any:
    # The entry point imports this package before its plugin module, so torch must not load here.
    if name in __all__:
        from gbdt2nn_cosine import loss

        return getattr(loss, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
