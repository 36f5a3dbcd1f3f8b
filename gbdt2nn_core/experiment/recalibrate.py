"""Re-evaluate an experiment's students after re-estimating their BatchNorm statistics on the final weights.

Students trained since ``GBDT2NNConfig.recalibrate_batchnorm`` exists (on by default) already end with this pass;
this module re-evaluates experiments whose students were trained before it (or with it off).

Why: joint training computes the alignment term with BatchNorm on its *running* statistics (attributions must
be per-row, see :func:`gbdt2nn_core.kit.alignment.frozen_batchnorm`) while the task loss trains on *batch*
statistics. The alignment gradient then tunes the weights to running statistics that keep moving, and at the
end of training the running statistics no longer fit the weights: in eval mode a jointly trained student can
predict much worse than in train mode (California housing, structure + mse, seed 0: test RMSE 0.651 in eval
mode, 0.489 with batch statistics, 0.487 for the plain student). One forward pass over the training rows with
the final weights re-estimates the statistics and removes the gap.

This module applies that pass to every finished student of an experiment folder, without retraining, and
writes a sibling experiment folder with the re-evaluated ``metrics.json`` files, ``results.json`` and report::

    python -m gbdt2nn_core.experiment.recalibrate runs/experiment-california   # → runs/experiment-california-bn
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gbdt2nn_core.data import load_bundled, read_table
from gbdt2nn_core.errors import DataError
from gbdt2nn_core.experiment.config import ExperimentConfig
from gbdt2nn_core.experiment.manifest import data_digest
from gbdt2nn_core.experiment.names import IMITATION
from gbdt2nn_core.experiment.runner import write_npz
from gbdt2nn_core.host.registry import Registry, get_registry
from gbdt2nn_core.pipeline import BACKGROUND_ROWS, background_index, evaluate_rows, split_data
from gbdt2nn_core.pipeline.runfolder import write_json
from gbdt2nn_core.student import recalibrate_batchnorm
from gbdt2nn_core.student.kit import batch_size_for_rows
from gbdt2nn_core.validators import is_whole_number

__all__ = ["recalibrate_batchnorm", "reevaluate", "training_batch_size"]


def _load_frame(manifest: dict[str, Any]) -> tuple[Any, str]:
    source, target = manifest["data"]["source"], manifest["data"]["target"]
    frame = load_bundled(source.removeprefix("bundled:")).frame if source.startswith("bundled:") else read_table(source)
    if data_digest(frame) != manifest["data"]["sha256"]:
        raise DataError(problem=f"the data at {source!r} changed since the experiment ran", fix="restore that data")
    return frame, target


#: The students' batch size before ``"auto"`` existed, when a saved student did not record the one it trained with.
_FORMER_DEFAULT_BATCH = 512


def training_batch_size(student: Any, options: dict[str, Any], rows: int) -> int:
    """The rows per batch ``student`` trained with, for its BatchNorm pass over ``rows`` training rows: the size it
    recorded (students saved since ``"auto"`` existed), else its ``batch_size`` option (``"auto"`` resolved for the
    rows), else the default of the students that recorded none."""
    recorded = getattr(student, "batch_size_", None)
    if is_whole_number(recorded, 2):
        return recorded
    option = options.get("batch_size", _FORMER_DEFAULT_BATCH)
    if option == "auto":
        return batch_size_for_rows(rows)
    return int(option)


def reevaluate(out: Path | str, dest: Path | str | None = None, *, registry: Registry | None = None) -> Path:
    """Copy the experiment in ``out`` to ``dest`` (default ``<out>-bn``) with every finished student re-evaluated
    after :func:`recalibrate_batchnorm` on its seed's training rows; returns ``dest`` (results and report written).
    """
    from gbdt2nn_core.experiment.report import write_report
    from gbdt2nn_core.experiment.results import collect_results
    from gbdt2nn_core.pipeline.persistence import load_model

    out = Path(out)
    dest = Path(dest) if dest is not None else out.with_name(out.name + "-bn")
    registry = registry or get_registry()
    manifest = json.loads((out / "manifest.json").read_text())
    config = ExperimentConfig(**manifest["config"])
    frame, target = _load_frame(manifest)
    dest.mkdir(parents=True, exist_ok=True)
    write_json(dest / "manifest.json", {**manifest, "batchnorm": "recalibrated", "derived_from": str(out)})
    for seed in config.seeds:
        source = out / "runs" / str(seed)
        if not (source / "teacher" / "explanations.npz").is_file():
            continue
        shutil.copytree(source / "teacher", dest / "runs" / str(seed) / "teacher", dirs_exist_ok=True)
        with np.load(source / "teacher" / "explanations.npz", allow_pickle=False) as stored:
            shap_test, teacher_margin = stored["shap_test"].astype(np.float64), stored["teacher_margin"]
        split = split_data(frame, target, task=config.task, test_size=config.test_size, seed=seed)
        recalibrated_plain: dict[str, Any] | None = None
        runs = sorted((p.parent for p in source.glob("*/metrics.json")), key=lambda p: p.name != "plain")
        for run in runs:
            metrics = json.loads((run / "metrics.json").read_text())
            target_folder = dest / "runs" / str(seed) / run.name
            target_folder.mkdir(parents=True, exist_ok=True)
            for name in ("history.json", "manifest.json"):
                shutil.copy2(run / name, target_folder / name)
            if metrics["configuration"]["kind"] == "independent":
                if recalibrated_plain is None:
                    continue
                plain_student = recalibrated_plain["student"]
                student = {**metrics["student"], "test": plain_student["test"], "fidelity": plain_student["fidelity"]}
                metrics = {**metrics, "student": student}
                shutil.copy2(run / "attributions.npz", target_folder / "attributions.npz")
                write_json(target_folder / "metrics.json", metrics)
                continue
            model = load_model(run)
            z_train = model.encoder.transform(split.train_frame)
            z_test = model.encoder.transform(split.test_frame)
            started = time.perf_counter()
            rows_per_batch = training_batch_size(model.student, config.student_options, len(z_train))
            recalibrate_batchnorm(model.student.module, z_train, rows_per_batch)
            model.student.module.eval()
            recalibrate_s = time.perf_counter() - started
            background = z_train[background_index(len(z_train), BACKGROUND_ROWS, seed)]
            student = metrics["student"]
            names = [k for k in student.get("agreement_by_attributor", {}) if k != IMITATION]
            primary = student["alignment"]["attributor"]
            explainer = registry.attributor(primary, **config.attributor_options.get(primary, {}))
            explainer.fit(model.student.module, torch.as_tensor(background, dtype=torch.float32))
            arrays: dict[str, np.ndarray] = {}
            measured = evaluate_rows(
                config=config.distill_config(seed),
                task=model.task,
                classes=model.target.classes,
                y=split.y_test,
                z=z_test,
                aggregation=model.encoder.aggregation(),
                teacher_margin=teacher_margin,
                teacher_attributions=shap_test,
                student=model.student,
                attributor=explainer,
                attributors={n: registry.attributor(n, **config.attributor_options.get(n, {})) for n in names},
                background=background,
                rows_train=len(split.y_train),
                keep=arrays,
            )
            metrics = {
                **metrics,
                "student": {**measured.student.to_json(), "alignment": student["alignment"], "name": student["name"]},
                "timings": {**metrics["timings"], "recalibrate_s": round(recalibrate_s, 4)},
                "batchnorm": "recalibrated",
            }
            write_npz(target_folder / "attributions.npz", **{k: v.astype(np.float32) for k, v in arrays.items()})
            write_json(target_folder / "metrics.json", metrics)
            if metrics["configuration"]["kind"] == "plain":
                recalibrated_plain = metrics
    write_report(dest, collect_results(dest))
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gbdt2nn_core.experiment.recalibrate",
        description="Re-evaluate an experiment's students after re-estimating their BatchNorm statistics.",
    )
    parser.add_argument("out", type=Path, help="the experiment folder")
    parser.add_argument("dest", type=Path, nargs="?", help="where to write the re-evaluated copy (default: OUT-bn)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    dest = reevaluate(args.out, args.dest)
    print(f"re-evaluated: {dest / 'report.md'} · {dest / 'results.json'}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
