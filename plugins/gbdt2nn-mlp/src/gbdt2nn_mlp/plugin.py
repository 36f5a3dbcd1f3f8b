"""Entry point of the gbdt2nn-mlp plugin: registers the ``mlp`` student.

Kept light (no torch import): the student class loads only when a user asks for it.
"""

from __future__ import annotations

from typing import Any

from gbdt2nn_core import Student, StudentSpec, hookimpl


def _make_mlp(**options: Any) -> Student:
    from gbdt2nn_mlp.student import MLPStudent

    return MLPStudent(**options)


@hookimpl
def gbdt2nn_register_students() -> list[StudentSpec]:
    """The plain MLP student (options: see MLPConfig)."""
    return [
        StudentSpec(
            name="mlp",
            factory=_make_mlp,
            summary="plain MLP on the encoded inputs, distilled from teacher margins and labels (baseline)",
        )
    ]
