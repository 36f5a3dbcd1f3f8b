"""Run folders: everything a distillation produced, written atomically.

A run folder holds ``student.safetensors`` + ``student.json`` (the student), ``teacher.*`` (the booster in its
native format), ``config.json``, ``metrics.json`` and ``history.json``; with a comparison, the plain student
lives in ``plain/``. The folder is assembled under a temporary name next to its destination and renamed into
place only when complete, so a failed or interrupted run leaves nothing half-written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from gbdt2nn_core.distill import DistillRun
from gbdt2nn_core.errors import DataError
from gbdt2nn_core.model_files import staged_folder
from gbdt2nn_core.persistence import DistilledModel, save_model
from gbdt2nn_core.registry import get_registry

__all__ = ["check_destination", "write_run"]


def check_destination(out: Path, *, overwrite: bool) -> None:
    """Fail early (before any training) if ``out`` cannot be written."""
    if out.exists() and not out.is_dir():
        raise DataError(problem=f"--out {str(out)!r} is a file", fix="choose a folder path for the run")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(
            problem=f"the output folder {str(out)!r} already exists and is not empty",
            fix="pass --overwrite or choose another --out",
        )


def _write_student(directory: Path, run: DistillRun) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    model = DistilledModel(
        student=run.student,
        encoder=run.data.encoder,
        target=run.data.target,
        metadata={"teacher": run.config.teacher, "alignment_weight": run.config.alignment_weight},
    )
    save_model(directory, model)
    (directory / "config.json").write_text(json.dumps(run.config.to_json(), indent=2, default=str))
    (directory / "metrics.json").write_text(json.dumps(run.metrics, indent=2))
    history = [attrs.asdict(record) for record in run.student.history_]
    (directory / "history.json").write_text(
        json.dumps({"leaf_embedding": run.student.leaf_history_, "epochs": history}, indent=2)
    )


def write_run(out: Path, run: DistillRun, *, plain: DistillRun | None = None, overwrite: bool = False) -> Path:
    """Write the run (and the plain comparison run, if any) to ``out``; returns ``out``."""
    check_destination(out, overwrite=overwrite)
    with staged_folder(out) as staging:
        _write_student(staging, run)
        run.teacher.save(staging / f"teacher{_teacher_suffix(run.config.teacher)}")
        if plain is not None:
            _write_student(staging / "plain", plain)
            comparison: dict[str, Any] = {"plain": plain.metrics["student"], **run.metrics}
            (staging / "metrics.json").write_text(json.dumps(comparison, indent=2))
    return out


def _teacher_suffix(name: str) -> str:
    return get_registry().teacher_suffix(name)
