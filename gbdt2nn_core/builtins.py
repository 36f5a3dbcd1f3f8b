"""The core's own components, registered through the same hooks as any third-party plugin."""

from __future__ import annotations

from typing import Any

from gbdt2nn_core.hookspecs import hookimpl
from gbdt2nn_core.interfaces import Student
from gbdt2nn_core.specs import StudentSpec


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
