"""gbdt2nn's benchmark harness: measures our own speed against the tools a user would otherwise reach for.

    python benchmarks/run.py --out BENCHMARKS.md            # the full run (tens of minutes on two shared cores)
    python benchmarks/run.py --quick --out /tmp/bench.md    # a smoke run of every code path (seconds)

Five suites, each written up as a section of the Markdown report (ratios first):

1. ``explain``: teacher explanations (TreeSHAP) on adult: our path (the lightgbm teacher plugin's
   ``shap_values`` through :class:`gbdt2nn_core.data.cache.ExplanationCache`) vs LightGBM's native
   ``predict(pred_contrib=True)`` vs ``shap.TreeExplainer(...).shap_values``; rows/s, the largest difference
   between their values, and the cached second run;
2. ``train``: one student training step (batch 512), plain vs joint with each attributor;
3. ``infer``: student inference on 10,000 rows vs the teacher's native predict vs hummingbird-ml's compiled
   teacher, and the student's achieved FLOP/s vs this machine's matmul FLOP/s;
4. ``treeshap``: the teacher's TreeSHAP of all training rows, chunked on 1, 2... all cores (``shap_values(threads=)``)
   vs one native single-threaded call, with the largest difference between their values;
5. ``e2e``: the pipeline end to end on the whole adult table, plain and aligned, each in a fresh process: wall
   time and peak resident memory (RSS) of every phase, against DeepGBM's reference figures: measured side by side
   when ``--deepgbm CHECKOUT`` names a checkout of its code (``deepgbm_reference.py`` runs it), else quoted.

A sixth section, serving on a GPU, comes from ``benchmarks/results/gpu-serving.json``, written by
``benchmarks/gpu_serving.py`` on a CUDA machine (see its docstring); the report quotes it with its date.

How the timings resist a noisy, shared machine: one process measures both sides of every ratio, the cases of a
suite are interleaved (A, B, C, A, B, C... with the order rotated each round), the garbage collector is off
inside a timed call, every figure is the median of ``--repeats`` rounds after a warm-up round, a ratio is the
median of per-round ratios (two cases timed seconds apart see the same load), and the spread (min-max) is shown.
Every library runs on ``--threads`` threads (torch intra-op, OpenMP for LightGBM, BLAS).

Modules: ``bench_measure`` (timing, peak memory, machine description), ``bench_suites`` (the four suites),
``bench_report`` (the Markdown). Third-party libraries are imported only after the threads are pinned.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the sibling modules, also when this file is loaded by path (the smoke test)
    sys.path.insert(0, str(HERE))

from bench_measure import ROOT, configure_threads, machine  # noqa: E402
from bench_report import render  # noqa: E402
from bench_suites import (  # noqa: E402
    SIZES,
    SUITES,
    Context,
    bench_e2e,
    bench_explain,
    bench_infer,
    bench_train,
    bench_treeshap,
    e2e_once,
)
from deepgbm_reference import checkout_problem  # noqa: E402

if TYPE_CHECKING:  # types only: gbdt2nn is imported after configure_threads
    from gbdt2nn_core.host.interfaces import AlignmentBatches

GPU_RECORD = HERE / "results" / "gpu-serving.json"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md", help="Markdown report to write")
    parser.add_argument("--json", type=Path, default=None, help="also write every raw timing to this JSON file")
    parser.add_argument("--quick", action="store_true", help="toy sizes: a smoke run of every code path")
    parser.add_argument("--threads", type=int, default=1, help="threads for torch, OpenMP and BLAS (default 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per suite (default 5; 2 with --quick)")
    parser.add_argument("--e2e-repeats", type=int, default=1, help="end-to-end runs of each kind (default 1)")
    parser.add_argument(
        "--e2e-seeds", action="store_true", help="run end-to-end round i with seed i (default: every round seed 0)"
    )
    parser.add_argument(
        "--e2e-mixed", action="store_true", help="also an aligned run with the mixed batch layout in every round"
    )
    parser.add_argument(
        "--deepgbm",
        type=Path,
        default=None,
        metavar="CHECKOUT",
        help="a checkout of github.com/motefly/DeepGBM: run its GBDT2NN in every end-to-end round and compare "
        "with it as measured (default: its figures quoted from docs/DESIGN.md)",
    )
    parser.add_argument("--e2e-seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--suites", default=",".join(SUITES), help=f"comma-separated subset of {','.join(SUITES)}")
    parser.add_argument("--e2e-in-process", action="store_true", help="run end to end in this process (smoke tests)")
    parser.add_argument("--render-from", type=Path, default=None, help="rewrite --out from a --json file, no timing")
    parser.add_argument("--e2e-child", choices=("plain", "aligned", "aligned_mixed"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.suites.split(",")) - set(SUITES)
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(sorted(unknown))}; choose from {', '.join(SUITES)}")
    if args.threads < 1 or (args.repeats is not None and args.repeats < 1) or args.e2e_repeats < 1:
        parser.error("--threads, --repeats and --e2e-repeats must be at least 1")
    problem = checkout_problem(args.deepgbm) if args.deepgbm is not None else None
    if problem is not None:
        parser.error(f"--deepgbm: {problem}")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    configure_threads(args.threads)
    sizes = dict(SIZES["quick" if args.quick else "full"])
    if args.repeats is not None:
        sizes["repeats"] = args.repeats
    if args.render_from is not None:
        recorded: dict[str, Any] = json.loads(args.render_from.read_text(encoding="utf-8"))
        args.out.write_text(render(recorded), encoding="utf-8")
        return recorded
    if args.e2e_child:
        weight = 0.0 if args.e2e_child == "plain" else 1.0
        batches: AlignmentBatches = "mixed" if args.e2e_child == "aligned_mixed" else "grouped"
        result = e2e_once(sizes, args.threads, weight, args.e2e_seed, batches)
        print(json.dumps(result))
        return result

    started = time.perf_counter()
    suites = [s for s in SUITES if s in args.suites.split(",")]
    results: dict[str, Any] = {}
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/run.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "quick": args.quick,
        "threads": args.threads,
        "repeats": sizes["repeats"],
        "sizes": {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()},
        "machine": machine(),
    }
    results["meta"] = meta
    needs_context = [s for s in suites if s != "e2e"]
    if needs_context:
        _log("setting up: adult, teacher, TreeSHAP, a one-epoch student")
        ctx = Context(sizes, args.threads)
        results["context"] = ctx.describe()
        benches = (
            ("explain", bench_explain),
            ("train", bench_train),
            ("infer", bench_infer),
            ("treeshap", bench_treeshap),
        )
        for suite, bench in benches:
            if suite in suites:
                _log(f"suite {suite}")
                results[suite] = bench(ctx)
        del ctx
        gc.collect()
    if "e2e" in suites:
        _log("suite e2e")
        results["e2e"] = bench_e2e(
            sizes,
            args.threads,
            quick=args.quick,
            in_process=args.e2e_in_process,
            repeats=args.e2e_repeats,
            seeds=args.e2e_seeds,
            mixed=args.e2e_mixed,
            deepgbm=args.deepgbm,
        )
    meta["wall_s"] = time.perf_counter() - started
    meta["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    if GPU_RECORD.exists() and not args.quick:
        # measured on a GPU machine by benchmarks/gpu_serving.py (this machine may have none): quoted with its date
        results["gpu_serving"] = json.loads(GPU_RECORD.read_text(encoding="utf-8"))
    args.out.write_text(render(results), encoding="utf-8")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    _log(f"wrote {args.out} in {meta['wall_s']:.0f} s")
    return results


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
