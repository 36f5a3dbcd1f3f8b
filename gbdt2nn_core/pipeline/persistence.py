"""Saving and loading distilled students without pickle: tensors in safetensors, everything else in JSON.

A saved student is a folder with ``student.safetensors`` (the network's tensors, from :meth:`Student.state
<gbdt2nn_core.Student.state>`) and ``student.json`` (format version, the student's registry name and options,
its architecture description, task, class labels, input schema, encoder statistics). The loader builds the
student by that name through the registry, so any student plugin saves and loads alike. Optionally
optionally ``background.safetensors``: encoded training rows that attributors measure expectations and
baselines against (``E[f]`` of the structure attributor), so that a loaded student explains exactly like the
one that was saved. A folder without it (older files, the CLI's run folders) still loads; its attributors then
start from the training mean, ``z = 0``.
Loading checks the format version and turns every way a file can be broken into one
:class:`~gbdt2nn_core.ModelFileError` line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pandas as pd
import torch

from gbdt2nn_core.data import TargetEncoder, check_finite_margins
from gbdt2nn_core.data.encoding import InputEncoder
from gbdt2nn_core.errors import ModelFileError, PluginLoadError, UnknownComponentError
from gbdt2nn_core.host.interfaces import Student, Task
from gbdt2nn_core.host.registry import Registry, get_registry
from gbdt2nn_core.pipeline.margins import enable_lookup, frame_margins
from gbdt2nn_core.student.calibration import probabilities
from gbdt2nn_core.student.file_checks import check_loaded_student, check_saved_student

__all__ = ["BACKGROUND", "FORMAT_VERSION", "DistilledModel", "load_model", "save_model"]

#: 2: any student, by registry name (``student``, ``student_options``, ``student_state``); 1 (GBDT2NN only) still loads.
FORMAT_VERSION = 2
WEIGHTS = "student.safetensors"
METADATA = "student.json"
BACKGROUND = "background.safetensors"


def _json_label(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@attrs.define(kw_only=True)
class DistilledModel:
    """A trained student with everything needed to use it on raw rows: schema, encoder, task, labels."""

    student: Student
    encoder: InputEncoder
    target: TargetEncoder
    metadata: dict[str, Any] = attrs.field(factory=dict)
    #: Encoded training rows ``(m, D)`` for attributors' backgrounds (``None``: not saved).
    background: np.ndarray | None = attrs.field(default=None, repr=False, eq=False)
    #: The student's registry name, recorded so that the loader can build it again.
    student_name: str = "gbdt2nn"

    def __attrs_post_init__(self) -> None:
        enable_lookup(self.student, self.encoder)  # serve through the lookup first layer where the student has one

    @property
    def task(self) -> Task:
        return self.target.task

    def encode(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Check ``X`` against the schema and encode it for the network."""
        return self.encoder.transform(self.encoder.schema.to_frame(X))

    def predict_margin(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        frame = self.encoder.schema.to_frame(X)
        margin = frame_margins(self.student, self.encoder, frame)
        check_finite_margins(margin, frame)
        return margin

    def predict_proba(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Calibrated class probabilities ``(n, k)`` (the student's temperature applied to its margins)."""
        if self.task == "regression":
            raise AttributeError("predict_proba is only available for classification students")
        return probabilities(self.predict_margin(X), self.student.temperature)

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        if self.task == "regression":
            return self.predict_margin(X)
        labels: np.ndarray = np.asarray(self.target.classes, dtype=object)[self.predict_proba(X).argmax(axis=1)]
        return labels


def save_model(directory: Path, model: DistilledModel) -> None:
    """Write ``student.safetensors`` and ``student.json`` into ``directory`` (which must exist)."""
    from safetensors.torch import save_file

    description, tensors = model.student.state()
    save_file(tensors, str(directory / WEIGHTS))
    if model.background is not None:
        background = torch.as_tensor(np.ascontiguousarray(model.background, dtype=np.float32))
        save_file({"background": background}, str(directory / BACKGROUND))
    metadata = {
        "format_version": FORMAT_VERSION,
        "student": model.student_name,
        "student_options": model.student.options(),
        "student_state": description,
        "task": model.task,
        "classes": [_json_label(c) for c in model.target.classes],
        "encoder": model.encoder.to_json(),
        **model.metadata,
    }
    (directory / METADATA).write_text(json.dumps(metadata, indent=2))


_OWN_KEYS = {
    "format_version",
    "student",
    "student_options",
    "student_state",
    "kind",
    "config",
    "architecture",
    "task",
    "classes",
    "encoder",
}


def _student_record(metadata: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """The student's name, options and state description; format 1 (GBDT2NN only) kept them elsewhere."""
    if metadata["format_version"] == 1:
        name, options, description = (
            metadata.get("kind", "gbdt2nn"),
            metadata["config"],
            {"architecture": metadata["architecture"]},
        )
    else:
        name, options, description = metadata["student"], metadata["student_options"], metadata["student_state"]
    if not isinstance(name, str) or not isinstance(options, dict) or not isinstance(description, dict):
        raise TypeError("the student's name, options or state have the wrong type")
    return name, options, description


def _build_student(name: str, options: dict[str, Any], registry: Registry, where: str) -> Student:
    try:
        return registry.student(name, **options)
    except (UnknownComponentError, PluginLoadError) as exc:
        raise ModelFileError(
            path=where,
            problem=f"it holds a {name!r} student, and no installed plugin provides one ({exc.message()})",
            fix=f"install the plugin of the {name!r} student (e.g. pip install gbdt2nn-{name})",
        ) from None


def load_model(directory: Path | str, registry: Registry | None = None) -> DistilledModel:
    """Load a student saved by :func:`save_model` (or a run folder). Never unpickles anything."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    where = str(directory)
    if not (directory / METADATA).is_file() or not (directory / WEIGHTS).is_file():
        raise ModelFileError(
            path=where, problem=f"{METADATA} or {WEIGHTS} is missing", fix="pass a folder written by 'gbdt2nn distill'"
        )
    try:
        metadata = json.loads((directory / METADATA).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFileError(
            path=where, problem=f"{METADATA} is corrupt ({exc})", fix="re-run the distillation"
        ) from exc
    version = metadata.get("format_version") if isinstance(metadata, dict) else None
    if not isinstance(version, int):
        raise ModelFileError(path=where, problem=f"{METADATA} has no format version", fix="re-run the distillation")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            path=where,
            problem=f"it was written in format {version}, newer than this gbdt2nn reads ({FORMAT_VERSION})",
            fix="upgrade gbdt2nn-core (pip install -U gbdt2nn-core)",
        )
    try:
        name, options, description = _student_record(metadata)
        view = {**metadata, "config": options, **description}  # the student's part of student.json, flat
        check_saved_student(name, view, directory / WEIGHTS)  # before anything the JSON declares is allocated
        student = _build_student(name, options, registry or get_registry(), where)
        student.load_state(description, load_file(str(directory / WEIGHTS), device="cpu"))  # whatever it trained on
        check_loaded_student(name, student.module, view, directory)
        encoder = InputEncoder.from_json(metadata["encoder"])
        target = TargetEncoder(task=metadata["task"], classes=tuple(metadata["classes"]))
    except SafetensorError as exc:
        raise ModelFileError(
            path=where, problem=f"{WEIGHTS} is corrupt or truncated ({exc})", fix="re-run the distillation"
        ) from exc
    except (AttributeError, KeyError, TypeError, ValueError, RuntimeError) as exc:
        problem = f"the files do not fit together ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        raise ModelFileError(path=where, problem=problem, fix="re-run the distillation") from exc
    background = None
    if (directory / BACKGROUND).is_file():
        try:
            background = load_file(str(directory / BACKGROUND))["background"].numpy()
        except (SafetensorError, KeyError, OSError) as exc:
            raise ModelFileError(
                path=where, problem=f"{BACKGROUND} is corrupt or truncated ({exc})", fix="save the model again"
            ) from exc
        if background.ndim != 2 or background.shape[1] != encoder.n_encoded:
            raise ModelFileError(
                path=where,
                problem=f"{BACKGROUND} holds shape {background.shape}, the encoder has {encoder.n_encoded} columns",
                fix="save the model again",
            )
    extra = {k: v for k, v in metadata.items() if k not in _OWN_KEYS}
    return DistilledModel(
        student=student, encoder=encoder, target=target, metadata=extra, background=background, student_name=name
    )
