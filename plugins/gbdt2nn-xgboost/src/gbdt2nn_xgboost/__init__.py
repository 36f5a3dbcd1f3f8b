"""gbdt2nn plugin: an XGBoost teacher that trains or wraps a booster and explains it with native TreeSHAP.

Importing the package is cheap; :class:`XGBoostTeacher` (and XGBoost) load on first access.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gbdt2nn_xgboost.teacher import XGBoostTeacher

try:
    __version__ = version("gbdt2nn-xgboost")
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["XGBoostTeacher", "__version__"]


def __getattr__(name: str) -> Any:
    # The entry point imports this package before its plugin module, so XGBoost must not load here.
    if name == "XGBoostTeacher":
        from gbdt2nn_xgboost.teacher import XGBoostTeacher

        return XGBoostTeacher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
