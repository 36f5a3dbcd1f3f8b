"""Entry point of the gbdt2nn-catboost plugin: registers the ``catboost`` teacher.

Kept light (no CatBoost import): the teacher class loads only when a user asks for it.
"""

from __future__ import annotations

from typing import Any

from gbdt2nn_core import Teacher, TeacherSpec, hookimpl, recognise_by_module


def make_teacher(model: object = None, **params: Any) -> Teacher:
    """Build a :class:`~gbdt2nn_catboost.teacher.CatBoostTeacher`: trains on ``fit`` or wraps ``model``."""
    from gbdt2nn_catboost.teacher import CatBoostTeacher

    return CatBoostTeacher(model=model, **params)


def sniff(head: bytes) -> bool:
    """Whether a file's first bytes are a CatBoost binary model (``.cbm`` files start with ``CBM1``)."""
    return head.startswith(b"CBM1")


@hookimpl
def gbdt2nn_register_teachers() -> list[TeacherSpec]:
    """The CatBoost teacher."""
    return [
        TeacherSpec(
            name="catboost",
            factory=make_teacher,
            file_suffix=".cbm",
            recognises=recognise_by_module("catboost"),
            sniff=sniff,
            summary="CatBoost: train or wrap a model/.cbm file; native categorical features and TreeSHAP",
        )
    ]
