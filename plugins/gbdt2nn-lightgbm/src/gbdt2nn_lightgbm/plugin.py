"""Entry point of the gbdt2nn-lightgbm plugin: registers the ``lightgbm`` teacher.

Kept light (no LightGBM import): the teacher class loads only when a user asks for it.
"""

from __future__ import annotations

from typing import Any

from gbdt2nn_core import Teacher, TeacherSpec, hookimpl, recognise_by_module


def make_teacher(model: object = None, **params: Any) -> Teacher:
    """Build a :class:`~gbdt2nn_lightgbm.teacher.LightGBMTeacher`: trains on ``fit`` or wraps ``model``."""
    from gbdt2nn_lightgbm.teacher import LightGBMTeacher

    return LightGBMTeacher(model=model, **params)


def sniff(head: bytes) -> bool:
    """Whether a file's first bytes are a LightGBM text model, which opens with a ``tree`` line."""
    return head.startswith((b"tree\n", b"tree\r\n"))


@hookimpl
def gbdt2nn_register_teachers() -> list[TeacherSpec]:
    """The LightGBM teacher."""
    return [
        TeacherSpec(
            name="lightgbm",
            factory=make_teacher,
            file_suffix=".txt",
            recognises=recognise_by_module("lightgbm"),
            sniff=sniff,
            summary="LightGBM: train a booster or wrap a Booster/LGBMModel/model file; native TreeSHAP",
        )
    ]
