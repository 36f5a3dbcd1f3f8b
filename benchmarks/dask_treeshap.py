"""Rows/s of the teacher's TreeSHAP: Dask workers (1 and 2) against the threaded single-machine path, in one run.

    python benchmarks/dask_treeshap.py                       # adult's 39,073 training rows, medians of 3
    python benchmarks/dask_treeshap.py --rows 2000 --repeats 1 --out /tmp/dask.json   # a quick look

The teacher is LightGBM, 100 trees x 64 leaves (the demo's), trained on adult's training split (seed 0). The cases
are timed in interleaved rounds (see ``bench_measure.measure``), after an untimed warm-up on 200 rows that loads
the libraries in the workers:

- ``threaded, t thread(s)``: ``teacher.shap_values(rows, threads=t)`` in this process, t = 1 and 2;
- ``dask, w worker(s) x 1 thread``: ``shap_values_on_dask`` on a ``LocalCluster`` of w worker processes (started
  once, before timing; its start-up time is reported apart). A timed call includes shipping the rows and the
  teacher to the workers and the values back.

Every case's values must equal the 1-thread values to 1e-6. Writes a JSON file (``--out``, default
``benchmarks/results/dask-treeshap-<date>.json``) and prints a table. Needs ``pip install 'gbdt2nn-core[dask]'``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the sibling modules, also when this file is loaded by path (the smoke test)
    sys.path.insert(0, str(HERE))

from bench_measure import ROOT, configure_threads, machine, measure, summary  # noqa: E402

TARGET = "income_gt_50k"


def measure_treeshap(teacher: Any, rows: Any, *, repeats: int) -> tuple[dict[str, Any], dict[str, float]]:
    """Seconds and rows/s of the teacher's TreeSHAP of ``rows``: threaded (1, 2 threads) and on Dask (1, 2 workers
    x 1 thread), in interleaved rounds; every case's values are checked equal to the 1-thread values (1e-6).

    Returns the per-case results and the local clusters' start-up seconds by worker count.
    """
    import numpy as np

    from gbdt2nn_core.pipeline.dask_engine import DaskSettings, dask_client, shap_values_on_dask

    reference = teacher.shap_values(rows, threads=1).values
    with contextlib.ExitStack() as stack:
        clients: dict[int, Any] = {}
        startup: dict[int, float] = {}
        for workers in (1, 2):
            started = time.perf_counter()
            clients[workers] = stack.enter_context(dask_client(DaskSettings(n_workers=workers, threads_per_worker=1)))
            startup[workers] = time.perf_counter() - started
            shap_values_on_dask(clients[workers], teacher, rows.iloc[:200])  # loads the libraries in the workers

        results: dict[str, Any] = {}

        def case(name: str, compute: Any) -> Any:
            def run() -> None:
                values = compute().values
                gap = float(np.abs(values - reference).max())
                if gap > 1e-6:
                    raise SystemExit(f"{name}: values differ from the 1-thread values by {gap:.3g}")
                results.setdefault(name, {})["max_abs_diff_vs_1_thread"] = gap

            return run

        cases = {
            "threaded, 1 thread": case("threaded, 1 thread", lambda: teacher.shap_values(rows, threads=1)),
            "threaded, 2 threads": case("threaded, 2 threads", lambda: teacher.shap_values(rows, threads=2)),
            "dask, 1 worker x 1 thread": case(
                "dask, 1 worker x 1 thread", lambda: shap_values_on_dask(clients[1], teacher, rows)
            ),
            "dask, 2 workers x 1 thread": case(
                "dask, 2 workers x 1 thread", lambda: shap_values_on_dask(clients[2], teacher, rows)
            ),
        }
        seconds = measure(cases, repeats=repeats, warmup=0)

    base = summary(seconds["threaded, 1 thread"])["median"]
    for name, samples in seconds.items():
        stats = summary(samples)
        entry = results.setdefault(name, {})
        entry.update(
            seconds=stats,
            rows_per_second=summary([len(rows) / s for s in samples]),
            speedup_vs_1_thread=base / stats["median"],
            seconds_samples=samples,
        )
    return results, {f"{w} worker(s)": s for w, s in startup.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="explain this many training rows (default: all)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (default: 3)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    configure_threads(1)  # every library single-threaded unless a case sets its own thread count

    from gbdt2nn_core.data import load_bundled
    from gbdt2nn_core.host.registry import get_registry
    from gbdt2nn_core.pipeline import DistillConfig, Pipeline

    adult = load_bundled("adult")
    split = Pipeline(DistillConfig()).split(adult.frame, TARGET)
    rows = split.train_frame if args.rows is None else split.train_frame.iloc[: args.rows]
    teacher = get_registry().teacher("lightgbm", n_estimators=100, num_leaves=64, num_threads=1)
    teacher.fit(split.train_frame, split.y_train, task=split.task, seed=0)
    results, startup = measure_treeshap(teacher, rows, repeats=args.repeats)
    table = [
        (name, entry["seconds"]["median"], len(rows) / entry["seconds"]["median"], entry["speedup_vs_1_thread"])
        for name, entry in results.items()
    ]
    record = {
        "benchmark": "dask-treeshap",
        "command": "python benchmarks/dask_treeshap.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "rows": len(rows),
        "teacher": "lightgbm, 100 trees x 64 leaves, adult training split (seed 0)",
        "repeats": args.repeats,
        "cluster_startup_seconds": startup,
        "machine": machine(),
        "cases": results,
    }
    out = args.out or ROOT / "benchmarks" / "results" / f"dask-treeshap-{datetime.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"TreeSHAP of {len(rows):,} adult training rows (LightGBM 100 x 64), medians of {args.repeats}")
    print(f"{'case':<30}{'seconds':>10}{'rows/s':>10}{'x 1 thread':>12}")
    for name, median, rate, speedup in table:
        print(f"{name:<30}{median:>10.2f}{rate:>10,.0f}{speedup:>12.2f}")
    print("cluster start-up: " + ", ".join(f"{w} {s:.1f} s" for w, s in startup.items()))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
