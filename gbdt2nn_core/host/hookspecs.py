"""The four hooks a gbdt2nn plugin can implement.

Every hook *registers* components: it returns a list of frozen records (see :mod:`gbdt2nn_core.host.specs`) and
the host builds a component from its record only when a user asks for it by name. A plugin module
implements any subset of these hooks with the :data:`gbdt2nn_core.hookimpl` marker and is found through an
entry point of the group ``gbdt2nn``::

    [project.entry-points.gbdt2nn]
    my-loss = "gbdt2nn_my_loss.plugin"

Keep the plugin module light: import torch, LightGBM and friends inside the factory, not at module level,
so that ``gbdt2nn plugins`` stays fast and one broken backend cannot slow down the others.
"""

from __future__ import annotations

import pluggy

from gbdt2nn_core.host.specs import AlignmentLossSpec, AttributorSpec, StudentSpec, TeacherSpec

PROJECT_NAME = "gbdt2nn"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
#: Marker for hook implementations: decorate ``gbdt2nn_register_*`` functions in your plugin module with it.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def gbdt2nn_register_teachers() -> list[TeacherSpec]:  # type: ignore[empty-body]
    """Register gradient-boosted tree backends that a student can be distilled from.

    Called once when the registry loads plugins. Return a list of :class:`~gbdt2nn_core.TeacherSpec`.
    The factory is called as ``factory(model=None, **params)`` and must return a
    :class:`~gbdt2nn_core.Teacher`: with ``model=None`` it trains a booster in ``fit``; with a booster object
    or a model file path it wraps that booster.

    Example::

        from gbdt2nn_core import TeacherSpec, hookimpl

        @hookimpl
        def gbdt2nn_register_teachers():
            def make(model=None, **params):
                from gbdt2nn_catboost.teacher import CatBoostTeacher  # heavy import only when used
                return CatBoostTeacher(model=model, **params)
            return [TeacherSpec(name="catboost", factory=make, summary="CatBoost ensembles, native TreeSHAP")]
    """


@hookspec
def gbdt2nn_register_students() -> list[StudentSpec]:  # type: ignore[empty-body]
    """Register network architectures that learn from a teacher.

    Called once when the registry loads plugins. Return a list of :class:`~gbdt2nn_core.StudentSpec`; the
    factory is called as ``factory(**options)`` and must return a :class:`~gbdt2nn_core.Student`. The
    core's own GBDT2NN student is registered through this hook under the name ``gbdt2nn``.

    Example::

        @hookimpl
        def gbdt2nn_register_students():
            return [StudentSpec(name="wide-gbdt2nn", factory=WideStudent, summary="GBDT2NN with 256-unit layers")]
    """


@hookspec
def gbdt2nn_register_attributors() -> list[AttributorSpec]:  # type: ignore[empty-body]
    """Register methods that explain a student's prediction feature by feature.

    Called once when the registry loads plugins. Return a list of :class:`~gbdt2nn_core.AttributorSpec`; the
    factory is called as ``factory(**options)`` and must return an :class:`~gbdt2nn_core.Attributor`. An
    attributor whose ``differentiable`` is true can be used for joint training: the alignment loss is
    back-propagated through it.

    Example::

        @hookimpl
        def gbdt2nn_register_attributors():
            return [AttributorSpec(name="smoothgrad", factory=SmoothGrad, summary="gradient averaged over noise")]
    """


@hookspec
def gbdt2nn_register_alignment_losses() -> list[AlignmentLossSpec]:  # type: ignore[empty-body]
    """Register losses that pull the student's attributions towards the teacher's TreeSHAP values.

    Called once when the registry loads plugins. Return a list of :class:`~gbdt2nn_core.AlignmentLossSpec`;
    the factory is called as ``factory(**options)`` and must return a callable
    ``loss(student_attr, teacher_attr) -> scalar tensor`` (see :class:`~gbdt2nn_core.AlignmentLoss`). Both
    arguments are float tensors of shape ``(n_rows, n_features)``; the loss must be differentiable in the
    first one.

    Example::

        import torch

        @hookimpl
        def gbdt2nn_register_alignment_losses():
            def l1(student_attr, teacher_attr):
                return (student_attr - teacher_attr).abs().mean()
            return [AlignmentLossSpec(name="l1", factory=lambda: l1, summary="mean absolute difference")]
    """
