"""gbdt2nn plugin: the ``mlp`` student, a plain MLP on the core's encoded inputs.

Importing the package is cheap; the classes (and torch) load on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gbdt2nn_mlp.student import MLPConfig, MLPModule, MLPStudent

__all__ = ["MLPConfig", "MLPModule", "MLPStudent"]


def __getattr__(name: str) -> Any:
    # The entry point imports this package before its plugin module, so torch must not load here.
    if name in __all__:
        from gbdt2nn_mlp import student

        return getattr(student, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
