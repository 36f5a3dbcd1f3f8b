"""The core's own components, registered through the same hooks as any third-party plugin."""

from __future__ import annotations

from typing import Any

from gbdt2nn_core.host.hookspecs import hookimpl
from gbdt2nn_core.host.interfaces import Attributor, Student
from gbdt2nn_core.host.specs import AttributorSpec, StudentSpec


def _make_gbdt2nn(**options: Any) -> Student:
    from gbdt2nn_core.student import GBDT2NNStudent

    return GBDT2NNStudent(**options)


@hookimpl
def gbdt2nn_register_students() -> list[StudentSpec]:
    return [
        StudentSpec(
            name="gbdt2nn",
            factory=_make_gbdt2nn,
            summary="DeepGBM's GBDT2NN: grouped trees distilled into batched group MLPs via leaf embeddings",
        )
    ]


def _make_structure(**options: Any) -> Attributor:
    from gbdt2nn_core.student.structure import StructureAttributor

    return StructureAttributor(**options)


@hookimpl
def gbdt2nn_register_attributors() -> list[AttributorSpec]:
    return [
        AttributorSpec(
            name="structure",
            factory=_make_structure,
            summary="GBDT2NN only: each tree group's output split over its own columns; exact f(x) - E[f]",
        )
    ]
