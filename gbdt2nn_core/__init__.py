"""gbdt2nn: distil gradient-boosted trees into GBDT2NN networks whose explanations agree with TreeSHAP.

The core holds the hook specifications, the plugin registry, the GBDT2NN student, the training loop, the
metrics and the CLI. Teachers, attributors and alignment losses come from plugins (entry-point group
``gbdt2nn``). Importing this package is cheap: torch and the tree libraries load only when used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gbdt2nn_core.errors import (
    ConfigError,
    DataError,
    DuplicatePluginError,
    ExportError,
    Gbdt2nnError,
    Gbdt2nnWarning,
    ModelFileError,
    NotFittedError,
    PluginLoadError,
    UnknownComponentError,
)
from gbdt2nn_core.host.hookspecs import PROJECT_NAME, hookimpl
from gbdt2nn_core.host.interfaces import (
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
from gbdt2nn_core.host.registry import Registry, get_registry
from gbdt2nn_core.host.specs import (
    AlignmentLossSpec,
    AttributorSpec,
    ComponentSpec,
    StudentSpec,
    TeacherSpec,
    recognise_by_module,
)
from gbdt2nn_core.version import __version__

if TYPE_CHECKING:
    from gbdt2nn_core.kit.booster_teacher import BoosterFacts, BoosterTeacher

#: Public names that load on first access: the estimators import scikit-learn and torch, the teacher base pandas.
_LAZY = {
    "BoosterFacts": "gbdt2nn_core.kit.booster_teacher",
    "BoosterTeacher": "gbdt2nn_core.kit.booster_teacher",
    "EstimatorNotFittedError": "gbdt2nn_core.pipeline.estimator",
    "GBDT2NNClassifier": "gbdt2nn_core.pipeline.estimator",
    "GBDT2NNRegressor": "gbdt2nn_core.pipeline.estimator",
    "load_estimator": "gbdt2nn_core.pipeline.estimator",
}


__all__ = [
    "PROJECT_NAME",
    "AlignmentLoss",
    "AlignmentLossSpec",
    "Attributor",
    "AttributorSpec",
    "BoosterFacts",
    "BoosterTeacher",
    "ComponentSpec",
    "ConfigError",
    "DataError",
    "DuplicatePluginError",
    "EstimatorNotFittedError",
    "ExportError",
    "GBDT2NNClassifier",
    "GBDT2NNRegressor",
    "Gbdt2nnError",
    "Gbdt2nnWarning",
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
    "load_estimator",
    "recognise_by_module",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
