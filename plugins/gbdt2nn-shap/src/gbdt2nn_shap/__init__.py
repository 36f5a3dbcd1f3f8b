"""gbdt2nn plugin: expected gradients (SHAP for the network) and interventional TreeSHAP for the teacher.

Importing the package is cheap; the names (and torch, shap) load on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gbdt2nn_shap.attributor import ExpectedGradients
    from gbdt2nn_shap.teacher import interventional_tree_shap

__all__ = ["ExpectedGradients", "interventional_tree_shap"]

_HOMES = {"ExpectedGradients": "gbdt2nn_shap.attributor", "interventional_tree_shap": "gbdt2nn_shap.teacher"}


def __getattr__(name: str) -> Any:
    # The entry point imports this package before its plugin module, so torch and shap must not load here.
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
