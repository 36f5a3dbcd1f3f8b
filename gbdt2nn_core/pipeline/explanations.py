"""The teacher's explanations that a student imitates and is judged against, computed once and cached on disk.

Interventional TreeSHAP comes from an attributor with the :class:`~gbdt2nn_core.TeacherExplainer` capability;
the pipeline asks the registry for one by capability, not by name.
"""

from __future__ import annotations

import pandas as pd

from gbdt2nn_core.data.cache import ExplanationCache, default_cache_dir, frame_digest
from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.host.interfaces import Teacher, TeacherExplainer, TreeShap
from gbdt2nn_core.host.registry import Registry
from gbdt2nn_core.pipeline.config import DistillConfig

__all__ = ["TeacherExplanations", "explanation_cache", "find_teacher_explainer", "teacher_explainer_names"]


def teacher_explainer_names(registry: Registry) -> tuple[str, ...]:
    """The installed attributors that can explain teachers (implement ``explain_teacher``)."""
    return tuple(
        name for name in registry.names("attributor") if isinstance(registry.attributor(name), TeacherExplainer)
    )


def find_teacher_explainer(config: DistillConfig, registry: Registry) -> TeacherExplainer:
    """The configured attributor if it can explain teachers, else the first installed one that can."""
    candidate = registry.attributor(config.attributor, **config.attributor_options)
    if isinstance(candidate, TeacherExplainer):
        return candidate
    capable = teacher_explainer_names(registry)
    if not capable:
        raise ConfigError(
            setting="teacher_explanation",
            value="interventional",
            fix="install an attributor that explains teachers (e.g. pip install gbdt2nn-shap), or use 'path-dependent'",
        )
    explainer = registry.attributor(capable[0])
    assert isinstance(explainer, TeacherExplainer)
    return explainer


def explanation_cache(config: DistillConfig) -> ExplanationCache:
    """The on-disk cache ``config`` asks for (none with ``cache=False``)."""
    return ExplanationCache((config.cache_dir or default_cache_dir()) if config.cache else None)


class TeacherExplanations:
    """``explain(frame)``: the teacher's TreeSHAP of ``frame`` of the configured kind, cached, on ``device`` where
    the teacher backend computes TreeSHAP there.

    Interventional TreeSHAP is measured against ``background`` (teacher-ready training rows drawn by the
    pipeline's background policy); the cache key names that background, so that two backgrounds never mix.
    """

    def __init__(
        self,
        teacher: Teacher,
        *,
        config: DistillConfig,
        registry: Registry,
        background: pd.DataFrame,
        cache: ExplanationCache | None = None,
        device: object = "cpu",
    ) -> None:
        self.teacher, self.config, self.registry, self.background = teacher, config, registry, background
        self.cache = cache if cache is not None else explanation_cache(config)
        #: The run's resolved device: path-dependent TreeSHAP runs there where the teacher backend can
        #: (:meth:`Teacher.shap_values_on`); the cache key does not name it (the values are the same).
        self.device = str(device)

    def explain(self, frame: pd.DataFrame) -> TreeShap:
        teacher = self.teacher
        if self.config.teacher_explanation == "path-dependent":
            return self.cache.get_or_compute(
                teacher, frame, "path-dependent", lambda: teacher.shap_values_on(frame, self.device)
            )
        explainer = find_teacher_explainer(self.config, self.registry)
        background = self.background
        method = f"interventional-{frame_digest(background)[:16]}"
        return self.cache.get_or_compute(
            teacher, frame, method, lambda: explainer.explain_teacher(teacher, frame, background)
        )
