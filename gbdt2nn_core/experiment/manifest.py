"""The manifest of an experiment: what is needed to reproduce a result, written next to it.

``manifest.json`` records the versions of every gbdt2nn distribution and plugin (from ``importlib.metadata``) and
of the libraries that change numbers, the Python and torch versions and threads, the seeds, a SHA-256 of the
data, the full configuration and the command line.
"""

from __future__ import annotations

import platform
import sys
import time
from importlib import metadata
from typing import Any

import pandas as pd

from gbdt2nn_core.cache import frame_digest
from gbdt2nn_core.registry import Registry

__all__ = ["LIBRARIES", "build_manifest", "data_digest", "package_versions"]

#: Third-party libraries whose versions can change an experiment's numbers.
LIBRARIES = (
    "torch",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "lightgbm",
    "xgboost",
    "xgboost-cpu",
    "shap",
    "captum",
    "matplotlib",
    "attrs",
    "pluggy",
)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def package_versions(registry: Registry) -> dict[str, Any]:
    """Versions of the core, of every plugin the registry saw (loaded or not) and of the libraries."""
    plugins = {
        record.name: {"distribution": record.distribution, "version": record.version, "status": record.status}
        for record in registry.plugins()
    }
    libraries = {name: version for name in LIBRARIES if (version := _version(name)) is not None}
    return {"gbdt2nn-core": _version("gbdt2nn-core"), "plugins": plugins, "libraries": libraries}


def data_digest(frame: pd.DataFrame) -> str:
    """SHA-256 of the table's values, column names and dtypes (row order matters)."""
    return frame_digest(frame)


def build_manifest(
    *,
    registry: Registry,
    config: dict[str, Any],
    config_digest: str,
    data: dict[str, Any],
    components: dict[str, Any],
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """The experiment's manifest (a JSON-ready dict)."""
    import torch

    return {
        "format": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": list(sys.argv if argv is None else argv),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": {"version": torch.__version__, "threads": torch.get_num_threads()},
        "packages": package_versions(registry),
        "seeds": list(config["seeds"]),
        "data": data,
        "components": components,
        "config": config,
        "config_digest": config_digest,
    }
