"""Run folders, the one saved-model format: everything a distillation produced, written atomically.

A run folder holds ``student.safetensors`` + ``student.json`` (the student), ``teacher.*`` (the booster in its
native format), ``config.json``, ``metrics.json`` and ``history.json``, and ``background.safetensors`` (the
attributors' background rows); with a comparison, the plain student lives in ``plain/``. ``gbdt2nn distill`` and
:meth:`GBDT2NNClassifier.save <gbdt2nn_core.GBDT2NNClassifier.save>` both write it with :func:`write_folder`;
``gbdt2nn predict/explain/export`` and ``GBDT2NNClassifier.load`` both read it with :func:`read_folder`. The
folder is assembled under a temporary name next to its destination and renamed into place only when complete,
so a failed or interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import pandas as pd

from gbdt2nn_core.errors import DataError, PluginLoadError, UnknownComponentError
from gbdt2nn_core.host.interfaces import Teacher
from gbdt2nn_core.host.registry import Registry, get_registry
from gbdt2nn_core.model_files import staged_folder, write_atomic
from gbdt2nn_core.pipeline import DistillConfig
from gbdt2nn_core.pipeline.metrics import validation_cost
from gbdt2nn_core.pipeline.persistence import DistilledModel, load_model, save_model
from gbdt2nn_core.student.distributed import world

if TYPE_CHECKING:
    from gbdt2nn_core.pipeline.distill import DistillRun

__all__ = [
    "RunFolder",
    "RunParts",
    "check_destination",
    "folder_config",
    "read_folder",
    "write_folder",
    "write_json",
    "write_run",
]

CONFIG = "config.json"
METRICS = "metrics.json"
HISTORY = "history.json"
#: The keys of ``config.json``'s ``student_choices`` that the pipeline, not the student, writes.
PIPELINE_CHOICES = ("alignment", "alignment_check")


def check_destination(out: Path, *, overwrite: bool) -> None:
    """Fail early (before any training) if ``out`` cannot be written."""
    if out.exists() and not out.is_dir():
        raise DataError(problem=f"--out {str(out)!r} is a file", fix="choose a folder path for the run")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(
            problem=f"the output folder {str(out)!r} already exists and is not empty",
            fix="pass --overwrite or choose another --out",
        )


@attrs.frozen(kw_only=True)
class RunParts:
    """One student's share of a run folder."""

    model: DistilledModel
    config: DistillConfig
    metrics: dict[str, Any] | None = None
    history: dict[str, Any] = attrs.field(factory=dict)
    #: Teacher-ready training rows that interventional TreeSHAP measured against (kept so that a loaded model
    #: explains its teacher exactly as training did).
    teacher_background: pd.DataFrame | None = attrs.field(default=None, eq=False)
    #: The device the student trained on (``config.device`` resolved, e.g. ``"cuda:0"``), recorded in config.json
    #: as ``resolved_device`` beside the requested ``device``.
    device: str | None = None


def _jsonable_rows(frame: pd.DataFrame) -> dict[str, list[Any]]:
    rows = frame.astype(object).where(frame.notna(), None).to_dict(orient="list")
    return json.loads(json.dumps(rows, default=_json_default))  # type: ignore[no-any-return]


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically (numpy numbers and arrays become JSON numbers and lists)."""
    write_atomic(path, (json.dumps(payload, indent=2, default=_json_default) + "\n").encode("utf-8"))


def _write_student(directory: Path, parts: RunParts, teacher_file: str | None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    metadata = dict(parts.model.metadata)
    metadata["teacher"] = parts.config.teacher
    metadata["alignment_weight"] = parts.config.alignment_weight
    metadata["teacher_file"] = teacher_file
    if parts.teacher_background is not None:
        metadata["teacher_background"] = _jsonable_rows(parts.teacher_background)
    save_model(directory, attrs.evolve(parts.model, metadata=metadata))
    # the settings as given, where they ran, what the student resolved for itself from the data (targets' scale,
    # β, λ...) and why, and world_size: the processes that trained the student (gbdt2nn_core.pipeline.processes),
    # each on batch_size rows
    choices = parts.history.get("choices", {})
    resolved = {} if parts.device is None else {"resolved_device": parts.device}
    write_json(
        directory / CONFIG,
        {**parts.config.to_json(), **resolved, "student_choices": choices, "world_size": world().size},
    )
    if parts.metrics is not None:
        write_json(directory / METRICS, parts.metrics)
    write_json(directory / HISTORY, parts.history)


def write_folder(
    out: Path,
    main: RunParts,
    *,
    teacher: Teacher | None,
    plain: RunParts | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the run folder ``out`` (and the plain comparison student in ``plain/``); returns ``out``."""
    check_destination(out, overwrite=overwrite)
    teacher_file = f"teacher{get_registry().teacher_suffix(main.config.teacher)}" if teacher is not None else None
    with staged_folder(out) as staging:
        _write_student(staging, main, teacher_file)
        if teacher is not None and teacher_file is not None:
            teacher.save(staging / teacher_file)
        if plain is not None:
            _write_student(staging / "plain", plain, None)
            if main.metrics is not None and plain.metrics is not None:
                cost = validation_cost(main.history, plain.history)
                write_json(
                    staging / METRICS, {"plain": plain.metrics["student"], **main.metrics, "validation_cost": cost}
                )
    return out


def parts_of(run: DistillRun) -> RunParts:
    """A pipeline run's share of a run folder."""
    model = DistilledModel(
        student=run.student,
        encoder=run.data.encoder,
        target=run.data.target,
        background=run.prepared.background,
        student_name=run.config.student,
    )
    return RunParts(
        model=model,
        config=run.config,
        metrics=run.metrics,
        history={
            **run.student.history,
            # the student's choices and the pipeline's for it (the alignment loss "auto" resolved to)
            "choices": {**run.student.history.get("choices", {}), **run.trained.choices},
            "validation_split": run.prepared.validation.describe(),
            "synthetic_rows": run.prepared.synthetic.describe() if run.prepared.synthetic is not None else None,
        },
        teacher_background=run.prepared.teacher_background,
        device=run.trained.device,
    )


def write_run(out: Path, run: DistillRun, *, plain: DistillRun | None = None, overwrite: bool = False) -> Path:
    """Write a ``gbdt2nn distill`` run (and the plain comparison run, if any) to ``out``; returns ``out``."""
    return write_folder(
        out,
        parts_of(run),
        teacher=run.teacher,
        plain=parts_of(plain) if plain is not None else None,
        overwrite=overwrite,
    )


@attrs.frozen(kw_only=True)
class RunFolder:
    """A run folder read back: the student with its encoder, the run's config, the teacher when it loads."""

    path: Path
    model: DistilledModel
    config: DistillConfig
    teacher: Teacher | None = attrs.field(eq=False)
    teacher_background: pd.DataFrame | None = attrs.field(eq=False)
    #: The pipeline's choices for the student that ``config.json`` records (``student_choices["alignment"]``: the
    #: loss ``alignment="auto"`` took, and why; ``["alignment_check"]``: the λ tried and kept), so that saving a
    #: loaded estimator again keeps them; ``{}`` when none.
    pipeline_choices: dict[str, Any] = attrs.field(factory=dict, eq=False)


def _recorded_config(directory: Path) -> dict[str, Any]:
    """A run folder's ``config.json`` as written, ``{}`` where it is missing or not a JSON object (an older folder)."""
    try:
        raw = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _pipeline_choices(recorded: dict[str, Any]) -> dict[str, Any]:
    """The pipeline's choices among a ``config.json``'s ``student_choices`` (see :attr:`RunFolder.pipeline_choices`)."""
    choices = recorded.get("student_choices")
    if not isinstance(choices, dict):
        return {}
    return {key: choices[key] for key in PIPELINE_CHOICES if isinstance(choices.get(key), dict)}


def folder_config(directory: Path, model: DistilledModel) -> DistillConfig:
    """The config a run folder was trained with (its ``config.json``; defaults for what an older folder lacks)."""
    return _config_of(_recorded_config(directory), model)


def _config_of(recorded: dict[str, Any], model: DistilledModel) -> DistillConfig:
    """:func:`folder_config` from the ``config.json`` already read."""
    known = {f.name for f in attrs.fields(DistillConfig)}
    values = {k: v for k, v in recorded.items() if k in known}
    values["task"] = model.task
    if "teacher" in model.metadata:
        values["teacher"] = model.metadata["teacher"]
    values.setdefault("student", model.student_name)
    return DistillConfig(**values)


def _load_teacher(
    directory: Path, config: DistillConfig, metadata: dict[str, Any], registry: Registry
) -> Teacher | None:
    filename = (
        metadata.get("teacher_file")
        if "teacher_file" in metadata
        else f"teacher{registry.teacher_suffix(config.teacher)}"
    )
    if not filename or not (directory / filename).is_file():
        return None
    try:
        return registry.teacher(config.teacher, model=str(directory / filename))
    except (UnknownComponentError, PluginLoadError):
        warnings.warn(
            f"gbdt2nn: the teacher plugin {config.teacher!r} is not available; the model loads without its teacher",
            stacklevel=3,
        )
        return None


def read_folder(path: Path | str, *, registry: Registry | None = None, with_teacher: bool = True) -> RunFolder:
    """Read a run folder written by :func:`write_folder` (``gbdt2nn distill`` or ``estimator.save``)."""
    registry = registry or get_registry()
    directory = Path(path)
    model = load_model(directory, registry)
    recorded = _recorded_config(directory)
    config = _config_of(recorded, model)
    rows = model.metadata.get("teacher_background")
    teacher_background = model.encoder.schema.to_frame(pd.DataFrame(rows)) if rows else None
    teacher = _load_teacher(directory, config, model.metadata, registry) if with_teacher else None
    return RunFolder(
        path=directory,
        model=model,
        config=config,
        teacher=teacher,
        teacher_background=teacher_background,
        pipeline_choices=_pipeline_choices(recorded),
    )
