"""The distillation pipeline: data → teacher → TreeSHAP → GBDT2NN student (plain or aligned) → metrics.

``distill(frame, target)`` runs it end to end with components chosen by name from the plugin registry::

    from gbdt2nn_core.data import load_bundled
    from gbdt2nn_core.distill import DistillConfig, distill

    adult = load_bundled("adult")
    run = distill(adult.frame, adult.target, DistillConfig(alignment_weight=1.0))
    print(run.metrics["student"]["agreement"])
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from gbdt2nn_core.alignment import Alignment
from gbdt2nn_core.cache import ExplanationCache, default_cache_dir, frame_digest
from gbdt2nn_core.data import (
    TabularSchema,
    TargetEncoder,
    infer_task,
    split_features_target,
    warn_if_few_test_rows,
)
from gbdt2nn_core.encoding import InputEncoder, teacher_thresholds
from gbdt2nn_core.errors import ConfigError, DataError
from gbdt2nn_core.interfaces import TASKS, Attributor, Task, Teacher, TeacherExplainer, TreeShap
from gbdt2nn_core.metrics import agreement, agreement_per_output, fidelity, task_metrics
from gbdt2nn_core.progress import NullProgress, Progress
from gbdt2nn_core.registry import Registry, get_registry
from gbdt2nn_core.student import GBDT2NNStudent

__all__ = [
    "DistillConfig",
    "DistillRun",
    "PreparedData",
    "SplitData",
    "build_teacher",
    "check_component_names",
    "compare",
    "distill",
    "encoder_for",
    "fit_encoder",
    "prepare",
    "split_data",
    "teacher_explanations",
    "train_student",
]


def _check_weight(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ConfigError(setting=attribute.name, value=value, fix="use a finite number of at least 0 (0 = plain)")


def _check_fraction(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (isinstance(value, (int, float)) and 0 < value <= 1):
        raise ConfigError(setting=attribute.name, value=value, fix="use a number in (0, 1]")


def _check_test_size(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    # 1 would leave no training rows, and train_test_split's own error would blame the classes
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 < value < 1):
        raise ConfigError(setting=attribute.name, value=value, fix="use a number between 0 and 1, e.g. 0.2")


def _check_task(_: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and value not in TASKS:
        raise ConfigError(setting=attribute.name, value=value, fix=f"use one of {', '.join(TASKS)} (or leave it out)")


def _check_explanation(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ("path-dependent", "interventional"):
        raise ConfigError(setting=attribute.name, value=value, fix="use 'path-dependent' or 'interventional'")


def _check_bins(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ConfigError(setting=attribute.name, value=value, fix="use a whole number of at least 0 (0 = no bins)")


def _options(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(value or {})


@attrs.frozen(kw_only=True)
class DistillConfig:
    """Everything a distillation run needs besides the data. Components are plugin names.

    ``alignment_weight`` is λ in ``L = L_GBDT2NN + λ · L_align``; 0 gives plain distillation.
    """

    task: Task | None = attrs.field(default=None, validator=_check_task)
    teacher: str = "lightgbm"
    teacher_options: dict[str, Any] = attrs.field(factory=dict, converter=_options)
    student: str = "gbdt2nn"
    student_options: dict[str, Any] = attrs.field(factory=dict, converter=_options)
    attributor: str = "structure"
    attributor_options: dict[str, Any] = attrs.field(factory=dict, converter=_options)
    alignment: str = "mse"
    alignment_options: dict[str, Any] = attrs.field(factory=dict, converter=_options)
    alignment_weight: float = attrs.field(default=1.0, validator=_check_weight)
    alignment_fraction: float = attrs.field(default=1.0, validator=_check_fraction)
    test_size: float = attrs.field(default=0.2, validator=_check_test_size)
    #: Teacher explanations to imitate: native ``"path-dependent"`` TreeSHAP, or ``"interventional"`` TreeSHAP
    #: against a background sample of training rows (from an attributor with ``explain_teacher``, e.g. ``shap``).
    teacher_explanation: str = attrs.field(default="path-dependent", validator=_check_explanation)
    #: Training rows in the interventional background sample.
    background_rows: int = attrs.field(default=100, validator=_check_bins)
    #: Split thresholds of the teacher per numeric column that the student's encoding uses (0 = none).
    threshold_bins: int = attrs.field(default=64, validator=_check_bins)
    seed: int = 0
    #: Where teacher explanations are cached (default: ``$GBDT2NN_CACHE_DIR`` or ``~/.cache/gbdt2nn``).
    cache_dir: str | None = None
    #: Set to ``False`` to recompute teacher explanations every time.
    cache: bool = True

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class SplitData:
    """A train/test split of teacher-ready frames and encoded targets."""

    task: Task
    schema: TabularSchema
    target: TargetEncoder
    train_frame: pd.DataFrame = attrs.field(eq=False, repr=False)
    test_frame: pd.DataFrame = attrs.field(eq=False, repr=False)
    y_train: np.ndarray = attrs.field(eq=False, repr=False)
    y_test: np.ndarray = attrs.field(eq=False, repr=False)


@attrs.frozen(kw_only=True)
class PreparedData(SplitData):
    """A split plus the student's encoding of both sides."""

    encoder: InputEncoder
    z_train: np.ndarray = attrs.field(eq=False, repr=False)
    z_test: np.ndarray = attrs.field(eq=False, repr=False)

    @classmethod
    def encode(cls, split: SplitData, encoder: InputEncoder) -> PreparedData:
        fields = {f.name: getattr(split, f.name) for f in attrs.fields(SplitData)}
        return cls(
            **fields,
            encoder=encoder,
            z_train=encoder.transform(split.train_frame),
            z_test=encoder.transform(split.test_frame),
        )


def split_data(frame: pd.DataFrame, target: str, *, task: Task | None, test_size: float, seed: int) -> SplitData:
    """Check the data, fix the schema and split it (stratified for classification)."""
    features, y = split_features_target(frame, target)
    task = task or infer_task(y)
    target_encoder = TargetEncoder.fit(y, task)
    schema = TabularSchema.infer(features)
    teacher_frame = schema.to_frame(features)
    y_encoded = target_encoder.transform(y)
    if len(teacher_frame) < 10:
        raise DataError(problem=f"only {len(teacher_frame)} rows", fix="distil from at least 10 rows")
    stratify = y_encoded if task != "regression" else None
    try:
        train_index, test_index = train_test_split(
            np.arange(len(teacher_frame)), test_size=test_size, random_state=seed, stratify=stratify
        )
    except ValueError as exc:
        raise DataError(
            problem=f"cannot split the data for testing: {exc}", fix="add rows for the rare classes"
        ) from exc
    warn_if_few_test_rows(len(test_index), len(teacher_frame))
    return SplitData(
        task=task,
        schema=schema,
        target=target_encoder,
        train_frame=teacher_frame.iloc[train_index].reset_index(drop=True),
        test_frame=teacher_frame.iloc[test_index].reset_index(drop=True),
        y_train=y_encoded[train_index],
        y_test=y_encoded[test_index],
    )


def prepare(
    frame: pd.DataFrame,
    target: str,
    *,
    task: Task | None,
    test_size: float,
    seed: int,
    teacher: Teacher | None = None,
    threshold_bins: int = 64,
) -> PreparedData:
    """Split and encode; with a fitted ``teacher``, numeric columns also get its split-threshold intervals."""
    split = split_data(frame, target, task=task, test_size=test_size, seed=seed)
    return PreparedData.encode(split, fit_encoder(split, teacher, threshold_bins))


def fit_encoder(split: SplitData, teacher: Teacher | None, threshold_bins: int) -> InputEncoder:
    """The student's input encoder for this split, using the teacher's thresholds when there is a teacher."""
    return encoder_for(split.train_frame, split.schema, teacher, threshold_bins)


def encoder_for(
    frame: pd.DataFrame, schema: TabularSchema, teacher: Teacher | None, threshold_bins: int
) -> InputEncoder:
    """The student's input encoder fitted on teacher-ready training rows ``frame``.

    With a fitted ``teacher`` and ``threshold_bins > 0``, numeric columns also get the one-hot of the interval
    between the teacher's own split thresholds that a value falls in.
    """
    if teacher is None or threshold_bins == 0:
        return InputEncoder.fit(frame, schema)
    ensemble = teacher.structure()
    return InputEncoder.fit(
        frame,
        schema,
        thresholds=teacher_thresholds(ensemble, schema, threshold_bins),
        split_rule=getattr(ensemble, "split_rule", "<="),
    )


def check_component_names(config: DistillConfig, registry: Registry) -> None:
    """Resolve every plugin name of ``config`` first, so that a typo fails before minutes of training."""
    for kind, name in (
        ("teacher", config.teacher),
        ("student", config.student),
        ("attributor", config.attributor),
        ("alignment loss", config.alignment),
    ):
        registry.spec(kind, name)  # type: ignore[arg-type]


def build_teacher(config: DistillConfig, registry: Registry, teacher_model: Any = None) -> Teacher:
    """The configured teacher, unfitted; ``teacher_model`` (a booster or model file) makes it wrap that model."""
    options = dict(config.teacher_options)
    if teacher_model is not None:
        options["model"] = teacher_model
    return registry.teacher(config.teacher, **options)


def teacher_explanations(
    teacher: Teacher,
    frame: pd.DataFrame,
    *,
    config: DistillConfig,
    registry: Registry,
    train_frame: pd.DataFrame,
    cache: ExplanationCache | None = None,
) -> TreeShap:
    """The teacher's TreeSHAP of ``frame`` that the student imitates, computed once and cached on disk.

    ``config.teacher_explanation`` picks native path-dependent TreeSHAP, or interventional TreeSHAP against a
    background sample of ``train_frame`` (``config.background_rows`` rows drawn with ``config.seed``).
    """
    if cache is None:
        cache = ExplanationCache((config.cache_dir or default_cache_dir()) if config.cache else None)
    if config.teacher_explanation == "path-dependent":
        return cache.get_or_compute(teacher, frame, "path-dependent", lambda: teacher.shap_values(frame))
    explainer = _teacher_explainer(config, registry)
    rows = min(config.background_rows, len(train_frame))
    background = train_frame.sample(rows, random_state=config.seed)
    method = f"interventional-{frame_digest(background)[:16]}"
    return cache.get_or_compute(teacher, frame, method, lambda: explainer.explain_teacher(teacher, frame, background))


def _teacher_explainer(config: DistillConfig, registry: Registry) -> TeacherExplainer:
    """The configured attributor if it can explain teachers, else the ``shap`` plugin's."""
    candidate = registry.attributor(config.attributor, **config.attributor_options)
    if isinstance(candidate, TeacherExplainer):
        return candidate
    if "shap" not in registry.names("attributor"):
        raise ConfigError(
            setting="teacher_explanation",
            value="interventional",
            fix="install gbdt2nn-shap (interventional TreeSHAP), or use 'path-dependent'",
        )
    explainer = registry.attributor("shap")
    if not isinstance(explainer, TeacherExplainer):  # pragma: no cover - a broken third-party 'shap'
        raise ConfigError(setting="teacher_explanation", value="interventional", fix="use 'path-dependent'")
    return explainer


def train_student(
    *,
    teacher: Teacher,
    encoder: InputEncoder,
    z: np.ndarray,
    y: np.ndarray,
    task: Task,
    leaves: np.ndarray,
    teacher_margin: np.ndarray | None,
    teacher_attributions: np.ndarray | None,
    config: DistillConfig,
    registry: Registry,
    progress: Progress | None = None,
    background_rows: int = 256,
) -> tuple[GBDT2NNStudent, Attributor]:
    """Build and train the configured GBDT2NN student on encoded rows ``z``; returns it and its fitted attributor.

    ``config.alignment_weight > 0`` adds the alignment term towards ``teacher_attributions`` (the teacher's
    TreeSHAP of the same rows, ``(n, d)`` or ``(n, k, d)``). A plain student's attributor is fitted on a
    background sample of ``background_rows`` encoded rows drawn with ``config.seed``.
    """
    progress = progress or NullProgress()
    student = registry.student(config.student, seed=config.seed, **config.student_options)
    if not isinstance(student, GBDT2NNStudent):
        raise ConfigError(setting="student", value=config.student, fix="this pipeline trains GBDT2NN students")
    attributor = registry.attributor(config.attributor, **config.attributor_options)
    alignment = None
    if config.alignment_weight > 0:
        if teacher_attributions is None:
            raise ConfigError(
                setting="alignment_weight",
                value=config.alignment_weight,
                fix="pass the teacher's attributions of the training rows (or use 0 for plain distillation)",
            )
        alignment = Alignment(
            attributor=attributor,
            loss=registry.alignment_loss(config.alignment, **config.alignment_options),
            teacher_attributions=teacher_attributions,
            weight=config.alignment_weight,
            fraction=config.alignment_fraction,
        )
    student.fit(
        teacher=teacher,
        leaves=leaves,
        z=z,
        y=y,
        task=task,
        teacher_margin=teacher_margin,
        column_of=encoder.column_of,
        aggregation=encoder.aggregation(),
        alignment=alignment,
        progress=progress,
    )
    if alignment is None:
        # plain students never called fit on the attributor; explaining needs its background all the same
        background = z[np.random.default_rng(config.seed).permutation(len(z))[:background_rows]]
        import torch

        attributor.fit(student.module, torch.as_tensor(background, dtype=torch.float32))
    return student, attributor


@attrs.define(kw_only=True)
class DistillRun:
    """The outcome of one distillation: models, data, metrics, training history and phase timings."""

    config: DistillConfig
    data: PreparedData = attrs.field(repr=False)
    teacher: Teacher = attrs.field(repr=False)
    student: GBDT2NNStudent = attrs.field(repr=False)
    attributor: Attributor = attrs.field(repr=False)
    metrics: dict[str, Any]
    timings: dict[str, float]


class _Components:
    """The pieces shared by the students of one comparison: data, teacher and its explanations."""

    def __init__(
        self,
        frame: pd.DataFrame,
        target: str,
        config: DistillConfig,
        *,
        registry: Registry,
        progress: Progress,
        teacher_model: Any = None,
    ) -> None:
        self.config, self.registry, self.progress = config, registry, progress
        self.timings: dict[str, float] = {}
        check_component_names(config, registry)
        # the cache folder is checked (created) first: a bad GBDT2NN_CACHE_DIR fails before the teacher trains
        self._cache = ExplanationCache((config.cache_dir or default_cache_dir()) if config.cache else None)
        started = time.perf_counter()
        split = split_data(frame, target, task=config.task, test_size=config.test_size, seed=config.seed)
        self.timings["prepare_s"] = time.perf_counter() - started

        self.teacher = build_teacher(config, registry, teacher_model)
        started = time.perf_counter()
        with progress.step(f"teacher ({config.teacher})"):
            self.teacher.fit(split.train_frame, split.y_train, task=split.task, seed=config.seed)
        self.timings["teacher_s"] = time.perf_counter() - started
        started = time.perf_counter()
        self.data = PreparedData.encode(split, fit_encoder(split, self.teacher, config.threshold_bins))
        self.timings["prepare_s"] += time.perf_counter() - started

        self._shap_train: TreeShap | None = None
        started = time.perf_counter()
        with progress.step("teacher TreeSHAP (test rows)"):
            self.shap_test = self._explain(self._cache, self.data.test_frame)
        self.timings["treeshap_s"] = time.perf_counter() - started
        self.timings["treeshap_cache_hits"] = float(self._cache.hits)
        self.teacher_margin_test = self.teacher.predict_margin(self.data.test_frame)
        self.teacher_margin_train = self.teacher.predict_margin(self.data.train_frame)
        self.leaves_train = self.teacher.leaf_indices(self.data.train_frame)

    @property
    def shap_train(self) -> TreeShap:
        """The teacher's explanations of the training rows, computed on first use.

        Only aligned students need them, and on adult they are half the wall time of a plain run.
        """
        if self._shap_train is None:
            started = time.perf_counter()
            with self.progress.step("teacher TreeSHAP (training rows)"):
                self._shap_train = self._explain(self._cache, self.data.train_frame)
            self.timings["treeshap_s"] += time.perf_counter() - started
            self.timings["treeshap_cache_hits"] = float(self._cache.hits)
        return self._shap_train

    def _explain(self, cache: ExplanationCache, frame: pd.DataFrame) -> TreeShap:
        return teacher_explanations(
            self.teacher,
            frame,
            config=self.config,
            registry=self.registry,
            train_frame=self.data.train_frame,
            cache=cache,
        )

    def train_student(self, alignment_weight: float) -> DistillRun:
        config = attrs.evolve(self.config, alignment_weight=alignment_weight)
        data = self.data
        started = time.perf_counter()
        student, attributor = train_student(
            teacher=self.teacher,
            encoder=data.encoder,
            z=data.z_train,
            y=data.y_train,
            task=data.task,
            leaves=self.leaves_train,
            teacher_margin=self.teacher_margin_train,
            teacher_attributions=self.shap_train.values if alignment_weight > 0 else None,
            config=config,
            registry=self.registry,
            progress=self.progress,
        )
        timings = dict(self.timings, student_s=time.perf_counter() - started)
        started = time.perf_counter()
        with self.progress.step("evaluation"):
            metrics = self.evaluate(student, attributor)
        timings["evaluate_s"] = time.perf_counter() - started
        return DistillRun(
            config=config,
            data=data,
            teacher=self.teacher,
            student=student,
            attributor=attributor,
            metrics=metrics,
            timings=timings,
        )

    def evaluate(self, student: GBDT2NNStudent, attributor: Attributor) -> dict[str, Any]:
        data = self.data
        student_margin = student.predict_margin(data.z_test)
        student_attr = student.attributions(data.z_test, attributor, data.encoder.aggregation())
        metrics: dict[str, Any] = {
            "task": data.task,
            "rows": {"train": len(data.y_train), "test": len(data.y_test)},
            "teacher": {
                "name": self.config.teacher,
                "test": task_metrics(data.task, data.y_test, self.teacher_margin_test),
            },
            "student": {
                "name": self.config.student,
                "alignment": {
                    "attributor": self.config.attributor,
                    "loss": self.config.alignment,
                    "weight": None,  # filled by the caller
                },
                "test": task_metrics(data.task, data.y_test, student_margin),
                "fidelity": fidelity(data.task, student_margin, self.teacher_margin_test),
                "agreement": agreement(student_attr, self.shap_test.values),
            },
        }
        if data.task == "multiclass":
            # the overall agreement averages over (row, class) pairs; this shows which classes lag
            metrics["student"]["agreement_per_class"] = agreement_per_output(
                student_attr, self.shap_test.values, [str(c) for c in data.target.classes]
            )
        return metrics


def distill(
    frame: pd.DataFrame,
    target: str,
    config: DistillConfig | None = None,
    *,
    teacher_model: Any = None,
    registry: Registry | None = None,
    progress: Progress | None = None,
) -> DistillRun:
    """Distil one student (aligned when ``config.alignment_weight > 0``) from ``frame``'s features to ``target``.

    ``teacher_model`` wraps an existing booster (object or model file) instead of training one.
    """
    config = config or DistillConfig()
    parts = _Components(
        frame,
        target,
        config,
        registry=registry or get_registry(),
        progress=progress or NullProgress(),
        teacher_model=teacher_model,
    )
    return _finish(parts.train_student(config.alignment_weight))


def compare(
    frame: pd.DataFrame,
    target: str,
    config: DistillConfig | None = None,
    *,
    teacher_model: Any = None,
    registry: Registry | None = None,
    progress: Progress | None = None,
) -> tuple[DistillRun, DistillRun]:
    """Plain (λ = 0) and aligned (λ = ``config.alignment_weight``) students from one teacher and one split."""
    config = config or DistillConfig()
    if config.alignment_weight <= 0:
        raise ConfigError(setting="alignment_weight", value=config.alignment_weight, fix="compare needs λ > 0")
    parts = _Components(
        frame,
        target,
        config,
        registry=registry or get_registry(),
        progress=progress or NullProgress(),
        teacher_model=teacher_model,
    )
    return _finish(parts.train_student(0.0)), _finish(parts.train_student(config.alignment_weight))


def _finish(run: DistillRun) -> DistillRun:
    run.metrics["student"]["alignment"]["weight"] = run.config.alignment_weight
    run.metrics["timings"] = {k: round(v, 3) for k, v in run.timings.items()}
    return run
