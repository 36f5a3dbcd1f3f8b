"""gbdt2nn plugin: a CatBoost teacher that trains or wraps a model, with native categorical features and
CatBoost's own TreeSHAP.

Importing the package is cheap; :class:`CatBoostTeacher` (and CatBoost) load on first access.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gbdt2nn_catboost.teacher import CatBoostTeacher

try:
    __version__ = version("gbdt2nn-catboost")
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["CatBoostTeacher", "__version__"]


def __getattr__(name: str) -> Any:
    # The entry point imports this package before its plugin module, so CatBoost must not load here.
    if name == "CatBoostTeacher":
        from gbdt2nn_catboost.teacher import CatBoostTeacher

        return CatBoostTeacher
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
