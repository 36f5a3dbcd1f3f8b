"""The manifest of an experiment: what is needed to reproduce a result, written next to it.

``manifest.json`` records the versions of every gbdt2nn distribution and plugin (from ``importlib.metadata``) and
of the libraries they require, the Python and torch versions and threads, the seeds, a SHA-256 of the
data, the full configuration and the command line.
"""

from __future__ import annotations

import platform
import re
import sys
import time
from importlib import metadata
from typing import Any

import pandas as pd

from gbdt2nn_core.data.cache import frame_digest
from gbdt2nn_core.host.registry import Registry

__all__ = ["CORE", "build_manifest", "data_digest", "package_versions"]

#: The core's distribution; its requirements and those of every plugin distribution are the libraries recorded.
CORE = "gbdt2nn-core"
# The name at the start of a requirement line ("lightgbm>=4.0", "xgboost-cpu>=2.0; platform_system != ...").
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _requirements(distribution: str) -> list[str]:
    """The names of the libraries ``distribution`` requires (not its optional extras); none if not installed."""
    try:
        lines = metadata.requires(distribution) or []
    except metadata.PackageNotFoundError:
        return []
    return [
        match.group(1)
        for line in lines
        if "extra" not in line.partition(";")[2] and (match := _REQUIREMENT_NAME.match(line))
    ]


def package_versions(registry: Registry) -> dict[str, Any]:
    """Versions of the core, of every plugin the registry saw (loaded or not) and of the libraries they need.

    The libraries are read from the distributions' own requirements, so a new plugin's tree library is recorded
    without the core naming it.
    """
    plugins = {
        record.name: {"distribution": record.distribution, "version": record.version, "status": record.status}
        for record in registry.plugins()
    }
    distributions = [CORE, *(record.distribution for record in registry.plugins())]
    names = sorted({name for dist in distributions for name in _requirements(dist) if not name.startswith("gbdt2nn")})
    libraries = {name: version for name in names if (version := _version(name)) is not None}
    return {CORE: _version(CORE), "plugins": plugins, "libraries": libraries}


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
