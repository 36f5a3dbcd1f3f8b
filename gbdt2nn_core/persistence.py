"""Saving and loading distilled students without pickle: tensors in safetensors, everything else in JSON.

A saved student is a folder with ``student.safetensors`` (the network's weights and buffers) and
``student.json`` (format version, task, class labels, input schema, encoder statistics, architecture), and
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
from gbdt2nn_core.encoding import InputEncoder
from gbdt2nn_core.errors import ModelFileError
from gbdt2nn_core.interfaces import Task
from gbdt2nn_core.student import GBDT2NNConfig, GBDT2NNModule, GBDT2NNStudent
from gbdt2nn_core.student.file_checks import check_student_files, check_student_weights

__all__ = ["BACKGROUND", "FORMAT_VERSION", "DistilledModel", "load_model", "save_model"]

FORMAT_VERSION = 1
WEIGHTS = "student.safetensors"
METADATA = "student.json"
BACKGROUND = "background.safetensors"


def _json_label(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


@attrs.define(kw_only=True)
class DistilledModel:
    """A trained student with everything needed to use it on raw rows: schema, encoder, task, labels."""

    student: GBDT2NNStudent
    encoder: InputEncoder
    target: TargetEncoder
    metadata: dict[str, Any] = attrs.field(factory=dict)
    #: Encoded training rows ``(m, D)`` for attributors' backgrounds (``None``: not saved).
    background: np.ndarray | None = attrs.field(default=None, repr=False, eq=False)

    @property
    def task(self) -> Task:
        return self.target.task

    def encode(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Check ``X`` against the schema and encode it for the network."""
        return self.encoder.transform(self.encoder.schema.to_frame(X))

    def predict_margin(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        frame = self.encoder.schema.to_frame(X)
        margin = self.student.predict_margin(self.encoder.transform(frame))
        check_finite_margins(margin, frame)
        return margin

    def predict_proba(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        margin = self.predict_margin(X)
        if self.task == "binary":
            positive = 1.0 / (1.0 + np.exp(-margin))
            return np.stack([1 - positive, positive], axis=1)
        if self.task == "multiclass":
            shifted = np.exp(margin - margin.max(axis=1, keepdims=True))
            proba: np.ndarray = shifted / shifted.sum(axis=1, keepdims=True)
            return proba
        raise AttributeError("predict_proba is only available for classification students")

    def predict(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        if self.task == "regression":
            return self.predict_margin(X)
        labels: np.ndarray = np.asarray(self.target.classes, dtype=object)[self.predict_proba(X).argmax(axis=1)]
        return labels


def save_model(directory: Path, model: DistilledModel) -> None:
    """Write ``student.safetensors`` and ``student.json`` into ``directory`` (which must exist)."""
    from safetensors.torch import save_file

    module = model.student.module
    state = {name: tensor.detach().contiguous() for name, tensor in module.state_dict().items()}
    save_file(state, str(directory / WEIGHTS))
    if model.background is not None:
        background = torch.as_tensor(np.ascontiguousarray(model.background, dtype=np.float32))
        save_file({"background": background}, str(directory / BACKGROUND))
    metadata = {
        "format_version": FORMAT_VERSION,
        "kind": "gbdt2nn",
        "task": model.task,
        "classes": [_json_label(c) for c in model.target.classes],
        "encoder": model.encoder.to_json(),
        "config": attrs.asdict(model.student.config),
        "architecture": {
            "group_input_index": module.group_input_index.tolist(),
            "group_output": module.output_map.argmax(dim=1).tolist(),
            "n_outputs": module.n_outputs,
            "hidden": list(module.hidden_sizes),
            "embedding_dim": module.embedding_dim,
            "group_columns": model.student.group_columns_.tolist()
            if model.student.group_columns_ is not None
            else None,
        },
        **model.metadata,
    }
    (directory / METADATA).write_text(json.dumps(metadata, indent=2))


def load_model(directory: Path | str) -> DistilledModel:
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
    check_student_files(metadata, directory / WEIGHTS)  # before anything the JSON declares is allocated
    try:
        architecture = metadata["architecture"]
        config = GBDT2NNConfig(
            **{k: v for k, v in metadata["config"].items() if k != "hidden"}, hidden=tuple(metadata["config"]["hidden"])
        )
        module = GBDT2NNModule(
            group_input_index=torch.as_tensor(architecture["group_input_index"]),
            group_output=torch.as_tensor(architecture["group_output"]),
            n_outputs=int(architecture["n_outputs"]),
            hidden=tuple(architecture["hidden"]),
            embedding_dim=int(architecture["embedding_dim"]),
        )
        state = load_file(str(directory / WEIGHTS))
        module.load_state_dict(state, strict=True)
        check_student_weights(module, metadata, directory)
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
    student = GBDT2NNStudent(**attrs.asdict(config))
    student.module_ = module.eval()
    if architecture.get("group_columns") is not None:
        student.group_columns_ = np.asarray(architecture["group_columns"])
    extra = {
        k: v
        for k, v in metadata.items()
        if k not in {"format_version", "kind", "task", "classes", "encoder", "config", "architecture"}
    }
    return DistilledModel(student=student, encoder=encoder, target=target, metadata=extra, background=background)
