"""Entry point of the gbdt2nn-lightgbm plugin: registers the ``lightgbm`` teacher.

Kept light (no LightGBM import): the teacher class loads only when a user asks for it.
"""

from __future__ import annotations

from typing import Any

from gbdt2nn_core import Teacher, TeacherSpec, hookimpl


def make_teacher(model: object = None, **params: Any) -> Teacher:
    """Build a :class:`~gbdt2nn_lightgbm.teacher.LightGBMTeacher`: trains on ``fit`` or wraps ``model``."""
    from gbdt2nn_lightgbm.teacher import LightGBMTeacher

    return LightGBMTeacher(model=model, **params)


@hookimpl
def gbdt2nn_register_teachers() -> list[TeacherSpec]:
    """The LightGBM teacher."""
    return [
        TeacherSpec(
            name="lightgbm",
            factory=make_teacher,
            summary="LightGBM: train a booster or wrap a Booster/LGBMModel/model file; native TreeSHAP",
        )
    ]
