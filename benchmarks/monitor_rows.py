"""On how many training rows the validation monitor needs to re-estimate BatchNorm before it scores an epoch.

After every epoch the validation monitor scores the network *as it will be served*: BatchNorm's statistics are
re-estimated on a seeded sample of the training rows (``MONITOR_BATCHNORM_ROWS``), the validation task loss is
computed, and the statistics are put back. On adult that pass was 0.35 s of a 2.2 s plain epoch. Fewer rows cost
less; the question is whether early stopping then decides differently.

For a plain student (λ = 0) the answer is exact without training twice: its weights after each epoch do not depend on
the monitor (the monitor restores every buffer and draws from a forked random state; nothing else reads its loss),
so one run that trains the whole budget and scores every epoch with the reference sample **and** with each smaller
one gives every loss sequence; early stopping is then replayed on each (same patience, warm-up and budget as the
run's). A candidate that picks the same best epoch yields the same student, bit for bit.

    python benchmarks/monitor_rows.py --datasets adult,california --seeds 0,1,2 \
        --json benchmarks/results/monitor-rows.json

An aligned student's training reads the monitor (λ's back-off), so ``--aligned-e2e`` trains the end-to-end suite's
aligned runs of adult anew with each number of rows and compares what they end with:

    python benchmarks/monitor_rows.py --aligned-e2e --seeds 0,1,2 --rows 4096
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
# the sibling modules and the quality suite's loaders (also when this file is loaded by path)
for folder in (HERE, HERE / "quality"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import gbdt2nn_core.student.gbdt2nn as gbdt2nn_student  # noqa: E402
import gbdt2nn_core.student.kit as kit  # noqa: E402
from gbdt2nn_core.pipeline import DistillConfig, Pipeline  # noqa: E402
from gbdt2nn_core.pipeline.distill import run_student  # noqa: E402
from gbdt2nn_core.student.kit import EarlyStopping, monitor_batchnorm_rows  # noqa: E402

CANDIDATE_ROWS = (2_048, 4_096, 8_192)
#: The rows the monitor used before this study (and the reference it is compared with).
REFERENCE_ROWS = 16_384


def recording_monitor(
    reference_rows: int, candidates: Sequence[int], epochs: list[dict[str, Any]]
) -> Callable[..., Any]:
    """A stand-in for the student's ``_validation_monitor`` that returns the reference monitor's loss (so training
    and early stopping go on as without it) and records, each epoch, the loss and seconds of the reference and of a
    monitor re-estimating BatchNorm on each candidate number of rows."""
    build = gbdt2nn_student._validation_monitor

    def monitor_factory(task: Any, module: Any, validation: Any, scaling: Any, rows: Any, batch_size: int) -> Any:
        if validation is None or rows is None:
            return build(task, module, validation, scaling, rows, batch_size)
        reference = build(task, module, validation, scaling, monitor_batchnorm_rows(rows, reference_rows), batch_size)
        smaller = {
            size: build(task, module, validation, scaling, monitor_batchnorm_rows(rows, size), batch_size)
            for size in candidates
            if size < min(len(rows), reference_rows)
        }

        def monitor() -> float | None:
            started = time.perf_counter()
            loss = reference()
            record: dict[str, Any] = {
                "loss": {"reference": loss},
                "seconds": {"reference": time.perf_counter() - started},
            }
            for size, candidate in smaller.items():
                started = time.perf_counter()
                record["loss"][str(size)] = candidate()
                record["seconds"][str(size)] = time.perf_counter() - started
            epochs.append(record)
            return loss

        return monitor

    return monitor_factory


def replay(losses: Sequence[float], stopping: dict[str, Any]) -> dict[str, int | None]:
    """Early stopping run on ``losses`` with the run's patience, warm-up and budget: the epoch it keeps and how
    many it trains."""
    stopper = EarlyStopping(
        enabled=True, patience=stopping["patience"], budget=stopping["budget"], warmup=stopping["warmup"]
    )
    placeholder = torch.nn.Linear(1, 1)  # the replay needs the decisions, not the weights
    for epoch, loss in enumerate(losses):
        if stopper.should_stop():
            break
        stopper.update(epoch, loss, placeholder)
    return {"best_epoch": stopper.best_epoch, "epochs_run": stopper.epochs_run}


def study(dataset: Any, seed: int, threads: int, reference_rows: int, candidates: Sequence[int]) -> dict[str, Any]:
    """One plain student of ``dataset`` trained the whole budget, every epoch scored by each monitor; early
    stopping replayed on each monitor's losses."""
    config = DistillConfig(
        task=dataset.task,
        seed=seed,
        teacher_options={"num_threads": threads},
        student_options={"early_stopping": False},
        cache=False,
    )
    pipeline = Pipeline(config)
    pipeline.check()
    prepared = pipeline.prepare(dataset.frame, dataset.target)
    epochs: list[dict[str, Any]] = []
    original = gbdt2nn_student._validation_monitor
    gbdt2nn_student._validation_monitor = recording_monitor(reference_rows, candidates, epochs)  # type: ignore[assignment]
    try:
        run = run_student(pipeline, prepared, 0.0)
    finally:
        gbdt2nn_student._validation_monitor = original  # type: ignore[assignment]
    stopping = run.student.history["stopping"]
    reference_losses = [epoch["loss"]["reference"] for epoch in epochs]
    reference = replay(reference_losses, stopping)
    outcome: dict[str, Any] = {
        "dataset": dataset.name,
        "seed": seed,
        "fitting_rows": len(prepared.data.y_train) - int(stopping.get("validation_rows", 0)),
        "patience": stopping["patience"],
        "warmup": stopping["warmup"],
        "budget": stopping["budget"],
        "reference_rows": reference_rows,
        "reference": {**reference, "monitor_s": _median([e["seconds"]["reference"] for e in epochs])},
        "candidates": {},
        "epochs": epochs,
    }
    best = reference["best_epoch"]
    for size in epochs[0]["loss"] if epochs else []:
        if size == "reference":
            continue
        losses = [epoch["loss"][size] for epoch in epochs]
        decided = replay(losses, stopping)
        chosen = decided["best_epoch"]
        outcome["candidates"][size] = {
            **decided,
            "same_student": chosen == best,
            # the reference monitor's loss at the epoch this monitor keeps, relative to the reference's own choice
            "reference_loss_regret": (
                reference_losses[chosen] / reference_losses[best] - 1
                if chosen is not None and best is not None
                else None
            ),
            "largest_relative_difference": max(abs(a / b - 1) for a, b in zip(losses, reference_losses, strict=True)),
            "monitor_s": _median([epoch["seconds"][size] for epoch in epochs]),
        }
    return outcome


@contextlib.contextmanager
def monitor_rows(rows: int) -> Iterator[None]:
    """``MONITOR_BATCHNORM_ROWS`` set to ``rows`` inside the block."""
    saved = kit.MONITOR_BATCHNORM_ROWS
    kit.MONITOR_BATCHNORM_ROWS = rows
    try:
        yield
    finally:
        kit.MONITOR_BATCHNORM_ROWS = saved


def aligned_end_to_end(seeds: Sequence[int], sizes: Sequence[int], *, quick: bool = False) -> list[dict[str, Any]]:
    """Aligned distillations of adult as ``benchmarks/run.py``'s end-to-end suite runs them (λ = 1, DeepGBM's
    sizes), once with each number of monitor rows. An aligned student's training reads the monitor (λ's back-off
    compares consecutive epochs' validation losses), so no replay is exact: each is trained anew."""
    from bench_suites import SIZES, e2e_once

    records = []
    for seed in seeds:
        for rows in sizes:
            with monitor_rows(rows):
                run = e2e_once(SIZES["quick" if quick else "full"], 1, 1.0, seed=seed)
            records.append(
                {
                    "seed": seed,
                    "monitor_rows": rows,
                    "epochs": len(run["epoch_s"]),
                    "test": run["metrics"]["student_test"],
                    "spearman": run["metrics"]["agreement"]["spearman"],
                }
            )
    return records


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else float("nan")


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    from quality_datasets import load
    from quality_measure import sample

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="adult", help="quality-suite dataset names, comma-separated")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--rows", default=",".join(map(str, CANDIDATE_ROWS)), help="candidate monitor rows")
    parser.add_argument("--reference-rows", type=int, default=REFERENCE_ROWS, help="the reference monitor's rows")
    parser.add_argument("--sample-rows", type=int, default=None, help="cut each dataset to this many rows")
    parser.add_argument("--threads", type=int, default=1, help="torch and LightGBM threads")
    parser.add_argument("--json", type=Path, default=None, help="write the outcomes here")
    parser.add_argument(
        "--aligned-e2e",
        action="store_true",
        help="instead: aligned end-to-end runs of adult (benchmarks/run.py's), trained with each number of rows",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    candidates = [int(size) for size in args.rows.split(",")]
    if args.aligned_e2e:
        seeds = [int(s) for s in args.seeds.split(",")]
        records = aligned_end_to_end(seeds, [args.reference_rows, *candidates])
        for record in records:
            print(record, flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps(records, indent=1) + "\n")
        return records
    outcomes = []
    for name in args.datasets.split(","):
        dataset = sample(load(name), args.sample_rows)
        for seed in (int(s) for s in args.seeds.split(",")):
            outcome = study(dataset, seed, args.threads, args.reference_rows, candidates)
            outcomes.append(outcome)
            summary = {
                size: (c["best_epoch"], c["epochs_run"], round(c["monitor_s"], 3))
                for size, c in outcome["candidates"].items()
            }
            print(
                f"{name} seed {seed}: reference best {outcome['reference']['best_epoch']} of "
                f"{outcome['reference']['epochs_run']} ({outcome['reference']['monitor_s']:.3f} s); {summary}",
                flush=True,
            )
            if args.json is not None:  # after every run: a long study keeps what it measured
                args.json.write_text(json.dumps(outcomes, indent=1) + "\n")
    return outcomes


if __name__ == "__main__":
    main()
