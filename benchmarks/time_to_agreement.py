"""Time to agreement: how fast each alignment schedule makes the student explain like its teacher, on adult.

    python benchmarks/time_to_agreement.py                      # the full measurement (about 20 minutes, 1 core)
    python benchmarks/time_to_agreement.py --quick --out /tmp/tta   # a smoke run of every code path (seconds)

One process prepares adult once (DeepGBM's settings, the default ``gbdt2nn distill`` run: a LightGBM teacher of
100 trees × 64 leaves, the GBDT2NN student for 20 epochs, the ``structure`` attributor and the loss
``alignment="auto"`` takes: ``cosine`` for adult's binary target since session 32, ``mse`` before), then
trains one student per schedule, one after the other, on the same prepared split:

- ``plain``: λ = 0, no teacher TreeSHAP of training rows;
- ``all rows, every batch``: the schedule before issue 11 (``alignment_rows=1``, ``alignment_fraction=1``);
- candidates: a seeded share of the training rows (``alignment_rows``: only they are explained), a share of the
  batches (``alignment_fraction``), the batch layout (``alignment_batches``: the aligned rows in batches of their
  own, the default, or mixed into every batch, the layout before), and a start epoch (alignment from epoch
  ``start`` on: measured here only, through a subclass of the student, to see whether it pays before it becomes a
  setting).

Every run's cost is counted as a user pays it with an empty explanation cache: the teacher's TreeSHAP of its
aligned rows, the student's training (leaf embedding, epochs, BatchNorm pass) and the evaluation; the preparation
(teacher training, encoding) and the TreeSHAP of the test rows are shared by every run and added to each end to
end figure. After every epoch the agreement (Spearman vs TreeSHAP) is measured on a fixed sample of test rows (the
experiment runner's ``monitor_rows``, 512) with a fresh ``structure`` attributor; monitoring time is excluded.
One seed: the figures choose a default, they are not a significance test.

Writes ``time-to-agreement.json`` and ``time-to-agreement.png`` (agreement vs cumulative wall time) into ``--out``
(default ``benchmarks/results``), and prints the Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the sibling modules, also when this file is loaded by path (the smoke test)
    sys.path.insert(0, str(HERE))

from bench_measure import configure_threads, machine  # noqa: E402

#: name -> (alignment_weight, alignment_rows, alignment_fraction, start epoch, alignment_batches)
Schedule = tuple[float, float, float, int, str]
SCHEDULES: dict[str, Schedule] = {
    "plain": (0.0, 1.0, 1.0, 0, "grouped"),
    "all rows, every batch": (1.0, 1.0, 1.0, 0, "grouped"),
    "rows 0.1": (1.0, 0.1, 1.0, 0, "grouped"),
    "rows 0.1 mixed": (1.0, 0.1, 1.0, 0, "mixed"),
    "rows 0.25, batches 0.5": (1.0, 0.25, 0.5, 0, "grouped"),
    "rows 0.05": (1.0, 0.05, 1.0, 0, "grouped"),
    "rows 0.1 from epoch 10": (1.0, 0.1, 1.0, 10, "grouped"),
}

MONITOR_ROWS = 512


class _Stopwatch:
    """Process CPU time and wall time since the last lap.

    The process runs on one core with one thread, so its CPU time is what the wall time would be on an idle
    core: the cost figures use it, because on a shared machine the wall time of the same work varies with the
    other processes' load (both are recorded).
    """

    def __init__(self) -> None:
        self.cpu, self.wall = time.process_time(), time.perf_counter()

    def peek(self) -> dict[str, float]:
        return {"cpu_s": time.process_time() - self.cpu, "wall_s": time.perf_counter() - self.wall}

    def lap(self) -> dict[str, float]:
        elapsed = self.peek()
        self.cpu, self.wall = time.process_time(), time.perf_counter()
        return elapsed


def _student_starting_at(start: int) -> type:
    """The GBDT2NN student with no alignment term before epoch ``start`` (a candidate, measured here only)."""
    from gbdt2nn_core.student.gbdt2nn import GBDT2NNStudent

    class LateAlignmentStudent(GBDT2NNStudent):
        def _train_epoch(
            self,
            epoch: int,
            z: Any,
            objective: Any,
            optimizer: Any,
            generator: Any,
            alignment: Any,
            weight: Any,
            beta: float,
        ) -> Any:
            return super()._train_epoch(
                epoch, z, objective, optimizer, generator, alignment if epoch >= start else None, weight, beta
            )

    return LateAlignmentStudent


def measure(*, quick: bool, epochs: int, schedules: dict[str, Schedule]) -> dict[str, Any]:
    import numpy as np
    import torch

    from gbdt2nn_core.data import load_bundled
    from gbdt2nn_core.kit.alignment import Alignment
    from gbdt2nn_core.pipeline import DistillConfig, Pipeline
    from gbdt2nn_core.pipeline.core import Trained, resolve_alignment
    from gbdt2nn_core.pipeline.metrics import agreement

    torch.set_num_threads(1)
    adult = load_bundled("adult")
    frame = adult.frame.sample(3000, random_state=0).reset_index(drop=True) if quick else adult.frame
    student_options: dict[str, Any] = {"epochs": epochs}
    if quick:
        student_options.update(n_groups=2, hidden=(16,), batch_size=256)
    config = DistillConfig(
        cache=False, teacher_options={"n_estimators": 10 if quick else 100}, student_options=student_options
    )
    pipeline = Pipeline(config)
    watch = _Stopwatch()
    prepared = pipeline.prepare(frame, adult.target)
    prepare = watch.lap()
    shap_test = prepared.shap_test
    shap_test_cost = watch.lap()
    data = prepared.data
    monitor = np.sort(np.random.default_rng(config.seed + 1).permutation(len(data.z_test))[:MONITOR_ROWS])
    z_monitor, shap_monitor = data.z_test[monitor], shap_test.values[monitor]
    aggregation = data.encoder.aggregation()
    background = torch.as_tensor(prepared.background, dtype=torch.float32)

    # a fresh attributor, refitted after every epoch: never the training one, whose state must not move
    monitor_attributor = pipeline.registry.attributor("structure")
    runs: dict[str, Any] = {}
    # what each share of rows cost to explain the first time (the prepared split keeps it in memory afterwards)
    treeshap_cost: dict[float, dict[str, float]] = {}
    for name, (weight, rows, fraction, start, batches) in schedules.items():
        print(f"--- {name}", file=sys.stderr, flush=True)
        watch.lap()
        if weight > 0:
            # each schedule is a share of the rows, measured as such (no floor: adult's shares are above it anyway)
            aligned_rows, target = prepared.aligned_explanations(rows, config.seed, min_rows=0)
            treeshap_cost.setdefault(rows, watch.lap())
        treeshap = treeshap_cost[rows] if weight > 0 else {"cpu_s": 0.0, "wall_s": 0.0}
        curve: list[dict[str, float]] = []
        monitoring = {"cpu_s": 0.0, "wall_s": 0.0}

        def on_epoch_end(
            student: Any,
            epoch: int,
            curve: list[dict[str, float]] = curve,
            monitoring: dict[str, float] = monitoring,
        ) -> None:
            # the training cost so far, without the monitoring of earlier epochs
            so_far = watch.peek()
            curve.append({"epoch": epoch, **{k: so_far[k] - monitoring[k] for k in so_far}})
            began = _Stopwatch()
            monitor_attributor.fit(student.module, background)
            values = student.attributions(z_monitor, monitor_attributor, aggregation)
            curve[-1]["spearman"] = agreement(values, shap_monitor)["spearman"]
            for key, value in began.lap().items():
                monitoring[key] += value

        watch.lap()
        if start == 0:
            trained = pipeline.train(
                prepared,
                alignment_weight=weight,
                alignment_rows=rows,
                alignment_min_rows=0,
                alignment_fraction=fraction,
                alignment_batches=batches,
                on_epoch_end=on_epoch_end,
            )
        else:
            settings = pipeline.settings(alignment_weight=weight, alignment_rows=rows, alignment_fraction=fraction)
            settings, _ = resolve_alignment(settings, prepared.data.task, target.values.shape, pipeline.registry)
            student = _student_starting_at(start)(seed=settings.seed, **settings.student_options)
            explainer = pipeline.registry.attributor(settings.attributor)
            alignment = Alignment(
                attributor=explainer,
                loss=pipeline.registry.alignment_loss(settings.alignment, **settings.alignment_options),
                teacher_attributions=target.values,
                weight=weight,
                fraction=fraction,
                rows=aligned_rows,
                batches=batches,  # type: ignore[arg-type]  # a name of ALIGNMENT_BATCHES
            )
            student.fit(prepared.student_inputs(alignment=alignment, on_epoch_end=on_epoch_end))
            explainer.fit(student.module, background)
            trained = Trained(config=settings, student=student, attributor=explainer, seconds=0.0)
        training = {k: v - monitoring[k] for k, v in watch.lap().items()}
        for point in curve:
            for key in ("cpu_s", "wall_s"):
                point[key] += treeshap[key]
        metrics = pipeline.evaluate(prepared, trained).to_json()
        evaluation = watch.lap()
        runs[name] = {
            "alignment_weight": weight,
            "alignment_rows": rows,
            "alignment_fraction": fraction,
            "alignment_batches": batches,
            "start_epoch": start,
            **{f"treeshap_train_{k}": v for k, v in treeshap.items()},
            **{f"train_{k}": v for k, v in training.items()},
            **{f"evaluate_{k}": v for k, v in evaluation.items()},
            **{
                f"end_to_end_{k}": prepare[k] + shap_test_cost[k] + treeshap[k] + training[k] + evaluation[k]
                for k in ("cpu_s", "wall_s")
            },
            "auc": metrics["student"]["test"]["auc"],
            "spearman": metrics["student"]["agreement"]["spearman"],
            # the loss the aligned run trained with (``alignment="auto"`` resolved): the plot's title names it
            **({"alignment_loss": metrics["student"]["alignment"]["loss"]} if weight > 0 else {}),
            "curve": curve,
        }
        print(json.dumps({k: v for k, v in runs[name].items() if k != "curve"}), file=sys.stderr, flush=True)
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": quick,
        "epochs": epochs,
        "rows": {"train": len(data.y_train), "test": len(data.y_test)},
        "teacher_auc": metrics["teacher"]["test"]["auc"],
        "prepare": prepare,
        "shap_test": shap_test_cost,
        "machine": machine(),
        "runs": runs,
    }


def table(result: dict[str, Any]) -> str:
    """The Markdown table of the runs: cost against plain (one-core seconds), and what it buys."""
    runs = result["runs"]
    plain = runs["plain"]["end_to_end_cpu_s"]
    lines = [
        "| schedule | rows | batches | layout | from epoch | TreeSHAP (train) s | training s | end to end s | ÷ plain "
        "| wall s (shared machine) | AUC | Spearman (test) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        aligned = run["alignment_weight"] > 0
        layout = run.get("alignment_batches", "mixed")  # records before the grouped layout were mixed
        rows, batches, start = (
            (run["alignment_rows"], run["alignment_fraction"], run["start_epoch"]) if aligned else ("–", "–", "–")
        )
        lines.append(
            f"| {name} | {rows} | {batches} | {layout if aligned else '–'} | {start} "
            f"| {run['treeshap_train_cpu_s']:.1f} | {run['train_cpu_s']:.1f} "
            f"| {run['end_to_end_cpu_s']:.1f} | **{run['end_to_end_cpu_s'] / plain:.2f}×** "
            f"| {run['end_to_end_wall_s']:.0f} | {run['auc']:.4f} | {run['spearman']:.4f} |"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for name, run in result["runs"].items():
        curve = run["curve"]
        axes.plot([p["cpu_s"] for p in curve], [p["spearman"] for p in curve], marker="o", markersize=3, label=name)
    axes.axhline(0.90, color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("time on one core: teacher TreeSHAP of the aligned rows + student training (s)")
    axes.set_ylabel(f"Spearman vs TreeSHAP, {MONITOR_ROWS} test rows")
    # records from before the loss was recorded trained with mse, what alignment="auto" took for adult then
    aligned = [run for run in result["runs"].values() if run["alignment_weight"] > 0]
    losses = sorted({run.get("alignment_loss", "mse") for run in aligned})
    title = f"adult, GBDT2NN, structure + {' / '.join(losses) or 'no alignment'}, {result['epochs']} epochs"
    axes.set_title(f"{title} ({result['date']})")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few thousand rows, tiny models (a smoke run)")
    parser.add_argument("--epochs", type=int, default=None, help="student epochs (default: 20; --quick: 2)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the JSON and the PNG")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAMES",
        help="a schedule to run, or several separated by commas (repeatable; plain always runs): "
        + "; ".join(SCHEDULES),
    )
    args = parser.parse_args(argv)
    args.only = _schedule_names(args.only, parser)
    configure_threads(1)
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_setaffinity") else None
    if cores is not None:  # TreeSHAP uses every core it may run on: give it one
        os.sched_setaffinity(0, {min(cores)})
    try:
        return _run(args)
    finally:
        if cores is not None:
            os.sched_setaffinity(0, cores)


def _schedule_names(values: list[str] | None, parser: argparse.ArgumentParser) -> set[str] | None:
    """The schedules ``--only`` names: each value one name (names may hold a comma: "all rows, every batch") or a
    comma-separated list of them; an unknown name is an error, not a schedule silently left out."""
    if not values:
        return None
    wanted = {"plain"}
    for value in values:
        names = [value] if value in SCHEDULES else [name.strip() for name in value.split(",")]
        unknown = [name for name in names if name not in SCHEDULES]
        if unknown:
            parser.error(f"--only: no schedule named {unknown[0]!r}; choose among: {'; '.join(SCHEDULES)}")
        wanted.update(names)
    return wanted


def _run(args: argparse.Namespace) -> int:
    schedules = dict(SCHEDULES)
    if args.only:
        schedules = {name: value for name, value in SCHEDULES.items() if name in args.only}
    epochs = args.epochs or (2 if args.quick else 20)
    if args.quick:  # start epochs within the short run
        schedules = {name: (w, r, f, min(s, epochs - 1), b) for name, (w, r, f, s, b) in schedules.items()}
    result = measure(quick=args.quick, epochs=epochs, schedules=schedules)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "time-to-agreement.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(result, args.out / "time-to-agreement.png")
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
