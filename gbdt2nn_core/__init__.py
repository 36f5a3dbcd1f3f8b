"""gbdt2nn: distil gradient-boosted trees into GBDT2NN networks whose explanations agree with TreeSHAP.

The core holds the hook specifications, the plugin registry, the GBDT2NN student, the training loop, the
metrics and the CLI. Teachers, attributors and alignment losses come from plugins (entry-point group
``gbdt2nn``). Importing this package is cheap: torch and the tree libraries load only when used.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from gbdt2nn_core.errors import (
    ConfigError,
    DataError,
    DuplicatePluginError,
    Gbdt2nnError,
    ModelFileError,
    NotFittedError,
    PluginLoadError,
    UnknownComponentError,
)
from gbdt2nn_core.hookspecs import PROJECT_NAME, hookimpl
from gbdt2nn_core.interfaces import (
    AlignmentLoss,
    Attributor,
    Student,
    Task,
    Teacher,
    TeacherExplainer,
    Tree,
    TreeEnsemble,
    TreeShap,
)
from gbdt2nn_core.registry import Registry, get_registry
from gbdt2nn_core.specs import AlignmentLossSpec, AttributorSpec, ComponentSpec, StudentSpec, TeacherSpec

try:
    __version__ = version("gbdt2nn-core")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "PROJECT_NAME",
    "AlignmentLoss",
    "AlignmentLossSpec",
    "Attributor",
    "AttributorSpec",
    "ComponentSpec",
    "ConfigError",
    "DataError",
    "DuplicatePluginError",
    "Gbdt2nnError",
    "ModelFileError",
    "NotFittedError",
    "PluginLoadError",
    "Registry",
    "Student",
    "StudentSpec",
    "Task",
    "Teacher",
    "TeacherExplainer",
    "TeacherSpec",
    "Tree",
    "TreeEnsemble",
    "TreeShap",
    "UnknownComponentError",
    "__version__",
    "get_registry",
    "hookimpl",
]
