"""The installed gbdt2nn-core version, in a module of its own so that any layer may read it without importing the
package's public API (which would close an import cycle through the registry)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["__version__"]

try:
    __version__ = version("gbdt2nn-core")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0.0.0"
