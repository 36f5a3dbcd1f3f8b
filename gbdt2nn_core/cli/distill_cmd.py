"""``gbdt2nn distill``: distil a booster into a GBDT2NN student and compare it with plain distillation.

With no data it runs on the bundled adult dataset and prints teacher vs plain student vs aligned student.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gbdt2nn_core.errors import ConfigError, DataError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``gbdt2nn distill`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "distill",
        help="distil a tree ensemble into a GBDT2NN network (no arguments: the bundled adult demo)",
        description=(
            "Train (or load) a gradient-boosted teacher, distil it into a GBDT2NN student with explanation "
            "alignment, and report the task metric, fidelity to the teacher and agreement with its TreeSHAP. "
            "Without --data it runs on the bundled adult census dataset and compares plain and aligned students."
        ),
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, help="CSV (.csv, .csv.gz) or Parquet file with features and target")
    data.add_argument("--target", help="name of the target column in --data")
    data.add_argument("--dataset", default=None, help="a bundled dataset instead of --data: adult or california")
    data.add_argument("--task", choices=["regression", "binary", "multiclass"], help="default: inferred from target")
    models = parser.add_argument_group("components (plugin names; see 'gbdt2nn plugins')")
    models.add_argument("--teacher", default="lightgbm", help="teacher backend (default: lightgbm)")
    models.add_argument("--teacher-model", type=Path, help="distil this saved booster instead of training one")
    models.add_argument(
        "--attributor", default="gradient-x-input", help="student attributor (default: gradient-x-input)"
    )
    models.add_argument("--alignment", default="mse", help="alignment loss (default: mse)")
    training = parser.add_argument_group("training")
    training.add_argument("--alignment-weight", type=float, default=1.0, help="λ of the alignment term; 0 = plain")
    training.add_argument("--epochs", type=int, default=None, help="student training epochs (default: 20)")
    training.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    training.add_argument(
        "--compare", action="store_true", help="also train a plain (λ = 0) student (on by default for the demo)"
    )
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, help="run folder to write (required with --data)")
    output.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    output.add_argument("--json", action="store_true", help="print metrics as JSON instead of a table")
    parser.set_defaults(func=run)


def _config(args: argparse.Namespace, task: str | None) -> Any:
    from gbdt2nn_core.distill import DistillConfig

    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(setting="--epochs", value=args.epochs, fix="use a whole number of at least 1")
    if args.alignment_weight < 0:
        raise ConfigError(setting="--alignment-weight", value=args.alignment_weight, fix="use λ ≥ 0 (0 = plain)")
    student_options: dict[str, Any] = {}
    if args.epochs is not None:
        student_options["epochs"] = args.epochs
    return DistillConfig(
        task=task,  # type: ignore[arg-type]
        teacher=args.teacher,
        attributor=args.attributor,
        alignment=args.alignment,
        alignment_weight=args.alignment_weight,
        student_options=student_options,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    """Run the distillation described by the command-line arguments."""
    from gbdt2nn_core.data import load_bundled, read_table
    from gbdt2nn_core.distill import compare, distill
    from gbdt2nn_core.progress import RichProgress
    from gbdt2nn_core.registry import get_registry
    from gbdt2nn_core.runfolder import check_destination, write_run

    if args.data is not None and args.dataset is not None:
        raise DataError(problem="both --data and --dataset were given", fix="pass only one of them")
    if args.data is not None:
        if not args.target:
            raise DataError(problem="--data needs --target", fix="name the target column with --target COL")
        if args.out is None:
            raise DataError(problem="--data needs --out", fix="name a run folder to write with --out DIR")
        demo = False
    else:
        demo = True
    if args.out is not None:
        check_destination(args.out, overwrite=args.overwrite)  # before minutes of training
    if args.teacher_model is not None and not args.teacher_model.exists():
        raise DataError(
            problem=f"teacher model file {str(args.teacher_model)!r} does not exist", fix="check --teacher-model"
        )

    if demo:
        dataset = load_bundled(args.dataset or "adult")
        frame, target, task = dataset.frame, dataset.target, args.task or dataset.task
        title = f"bundled dataset '{dataset.name}' ({len(frame):,} rows, target {target})"
    else:
        frame, target, task = read_table(args.data), args.target, args.task
        title = f"{args.data.name} ({len(frame):,} rows, target {target})"
    config = _config(args, task)
    registry = get_registry()
    progress = RichProgress()
    progress.console.print(f"[bold]gbdt2nn distill[/] · {title}")
    teacher_model = str(args.teacher_model) if args.teacher_model is not None else None
    plain = None
    if (demo or args.compare) and config.alignment_weight > 0:
        plain, main = compare(frame, target, config, teacher_model=teacher_model, registry=registry, progress=progress)
    else:
        main = distill(frame, target, config, teacher_model=teacher_model, registry=registry, progress=progress)

    if args.out is not None:
        write_run(args.out, main, plain=plain, overwrite=args.overwrite)
    if args.json:
        payload = dict(main.metrics)
        if plain is not None:
            payload["plain"] = plain.metrics["student"]
        print(json.dumps(payload, indent=2))
    else:
        _print_table(main, plain)
        if args.out is not None:
            print(f"run folder: {args.out}")
    return 0


def _print_table(main: Any, plain: Any | None) -> None:
    from rich.console import Console
    from rich.table import Table

    metrics = main.metrics
    task_keys = list(metrics["teacher"]["test"])
    table = Table(title=f"{metrics['task']} · test rows: {metrics['rows']['test']:,}", show_lines=False)
    table.add_column("model")
    for key in task_keys:
        table.add_column(key, justify="right")
    table.add_column("margin R²", justify="right")
    fidelity_label = "label agree" if "label_agreement" in metrics["student"]["fidelity"] else None
    if fidelity_label:
        table.add_column(fidelity_label, justify="right")
    agreement_keys = ["spearman", "cosine", "top5", "sign"]
    for key in agreement_keys:
        table.add_column(f"{key}", justify="right")

    def row(name: str, student: dict[str, Any] | None, test: dict[str, float]) -> list[str]:
        cells = [name, *(f"{test[k]:.4f}" for k in task_keys)]
        if student is None:
            cells += ["—"] * (1 + bool(fidelity_label) + len(agreement_keys))
            return cells
        cells.append(f"{student['fidelity']['margin_r2']:.4f}")
        if fidelity_label:
            cells.append(f"{student['fidelity']['label_agreement']:.4f}")
        cells += [f"{student['agreement'][k]:.4f}" for k in agreement_keys]
        return cells

    table.add_row(*row(f"teacher ({metrics['teacher']['name']})", None, metrics["teacher"]["test"]))
    if plain is not None:
        student = plain.metrics["student"]
        table.add_row(*row("plain student (λ=0)", student, student["test"]))
    student = metrics["student"]
    alignment = student["alignment"]
    label = (
        f"aligned student (λ={alignment['weight']:g}, {alignment['loss']})"
        if alignment["weight"]
        else "plain student (λ=0)"
    )
    table.add_row(*row(label, student, student["test"]))
    console = Console(width=max(Console().width, 150) if not sys.stdout.isatty() else None)
    console.print(table)
    console.print(
        f"agreement = per-row agreement of the student's {alignment['attributor']} attributions with the "
        "teacher's TreeSHAP on test rows (spearman, cosine, top-5 overlap, sign)."
    )
