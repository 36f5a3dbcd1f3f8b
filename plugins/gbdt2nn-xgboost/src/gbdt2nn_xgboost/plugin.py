"""Entry point of the gbdt2nn-xgboost plugin: registers the ``xgboost`` teacher.

Kept light (no XGBoost import): the teacher class loads only when a user asks for it.
"""

from __future__ import annotations

from typing import Any

from gbdt2nn_core import Teacher, TeacherSpec, hookimpl, recognise_by_module


def make_teacher(model: object = None, **params: Any) -> Teacher:
    """Build a :class:`~gbdt2nn_xgboost.teacher.XGBoostTeacher`: trains on ``fit`` or wraps ``model``."""
    from gbdt2nn_xgboost.teacher import XGBoostTeacher

    return XGBoostTeacher(model=model, **params)


def sniff(head: bytes) -> bool:
    """Whether a file's first bytes are an XGBoost model: JSON and UBJSON models both open with an object."""
    return head.lstrip().startswith(b"{")


@hookimpl
def gbdt2nn_register_teachers() -> list[TeacherSpec]:
    """The XGBoost teacher."""
    return [
        TeacherSpec(
            name="xgboost",
            factory=make_teacher,
            file_suffix=".json",
            recognises=recognise_by_module("xgboost"),
            sniff=sniff,
            summary="XGBoost: train a booster or wrap a Booster/XGBModel/JSON or UBJ file; native TreeSHAP",
        )
    ]
