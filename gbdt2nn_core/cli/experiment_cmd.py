"""``gbdt2nn experiment``: plain vs joint vs independent imitation, over several seeds, with a report.

Settings come from flags, from a TOML file (``--config``, see :mod:`gbdt2nn_core.experiment.config`), or both
(flags win). ``--resume`` continues an interrupted experiment in ``--out``; ``--report-only`` re-renders the
report from the runs that finished.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gbdt2nn_core.errors import ConfigError, DataError

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``gbdt2nn experiment`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "experiment",
        help="plain vs joint (explanation-imitating) vs independent imitation over seeds, with a report",
        description=(
            "On one dataset and several seeds, train the teacher, a plain GBDT2NN student (λ = 0), a jointly "
            "trained student for every attributor × alignment loss, and an independent explanation network; "
            "report mean ± std of the task metric, fidelity, agreement with TreeSHAP and wall times in "
            "DIR/results.json, DIR/report.md and DIR/report.html. Interrupted runs resume with --resume."
        ),
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML experiment file (see docs/experiment.md); flags win"
    )
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", metavar="NAME", help="a bundled dataset: adult (default) or california")
    data.add_argument(
        "--data", type=Path, metavar="FILE", help="CSV (.csv, .csv.gz) or Parquet file with features and target"
    )
    data.add_argument("--target", metavar="COL", help="name of the target column in --data")
    data.add_argument("--task", choices=["regression", "binary", "multiclass"], help="default: inferred from target")
    grid = parser.add_argument_group("what to run")
    grid.add_argument("--seeds", type=int, metavar="N", help="number of seeds, 0..N-1 (default: 5)")
    grid.add_argument("--student", metavar="NAME", help="student architecture (default: gbdt2nn; e.g. mlp)")
    grid.add_argument(
        "--attributors", metavar="A,B", help="comma-separated attributors (default: every differentiable one)"
    )
    grid.add_argument("--losses", metavar="X,Y", help="comma-separated alignment losses (default: every installed one)")
    grid.add_argument("--alignment-weight", type=float, metavar="λ", help="λ of the joint configurations (default: 1)")
    grid.add_argument(
        "--alignment-rows",
        type=float,
        metavar="SHARE",
        help="share of the training rows that carry the alignment term (default: 0.1)",
    )
    grid.add_argument(
        "--alignment-min-rows",
        type=int,
        metavar="N",
        help="but at least this many aligned training rows (all of them when there are fewer); 0 = no floor "
        "(default: 3000)",
    )
    grid.add_argument(
        "--alignment-fraction",
        type=float,
        metavar="SHARE",
        help="share of the training batches that carry the alignment term (default: 1)",
    )
    grid.add_argument(
        "--alignment-batches",
        choices=["grouped", "mixed"],
        help="grouped: the aligned rows train in batches of their own, weighted up (default); mixed: every "
        "batch carries its few aligned rows",
    )
    grid.add_argument("--epochs", type=int, metavar="N", help="student training epochs (default: the student's, 20)")
    grid.add_argument("--no-independent", action="store_true", help="skip independent imitation")
    grid.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="threads of torch, the teacher's training and its TreeSHAP (default: each library's choice)",
    )
    grid.add_argument(
        "--device",
        metavar="DEVICE",
        help="where the students train and serve: auto (a CUDA GPU when there is one), cpu, cuda or cuda:N "
        "(default: auto)",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--out", type=Path, metavar="DIR", help="experiment folder (default: runs/experiment-<dataset>)"
    )
    output.add_argument("--resume", action="store_true", help="continue the experiment in --out")
    output.add_argument(
        "--report-only", action="store_true", help="only re-render results and report from the finished runs in --out"
    )
    parser.set_defaults(func=run)


def _settings(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(ExperimentConfig keyword arguments, other settings)`` from the file and the flags."""
    from gbdt2nn_core.experiment.config import EXPERIMENT_KEYS, read_experiment_file

    file = read_experiment_file(args.config) if args.config is not None else {k: {} for k in EXPERIMENT_KEYS}
    data, section = file["data"], file["experiment"]
    for flag, value in (("--seeds", args.seeds), ("--epochs", args.epochs), ("--threads", args.threads)):
        if value is not None and value < 1:
            raise ConfigError(setting=flag, value=value, fix="use a whole number of at least 1")
    config: dict[str, Any] = {}
    for key in EXPERIMENT_KEYS["experiment"] - {"out"}:
        if key in section:
            config[key] = section[key]
    for key in ("dataset", "target", "task"):
        if key in data:
            config[key] = data[key]
    if "path" in data:
        config["data"] = str(data["path"])
    if "name" in file["teacher"]:
        config["teacher"] = file["teacher"]["name"]
    config["teacher_options"] = dict(file["teacher"].get("options", {}))
    if "name" in file["student"]:
        config["student"] = file["student"]["name"]
    student_options = dict(file["student"].get("options", {}))
    if args.epochs is not None:
        student_options["epochs"] = args.epochs
    config["student_options"] = student_options
    config["attributor_options"] = file["attributor_options"]
    config["loss_options"] = file["loss_options"]
    if file["imitation"]:
        config["imitation"] = file["imitation"]
    flags = {
        "dataset": args.dataset,
        "data": str(args.data) if args.data is not None else None,
        "target": args.target,
        "task": args.task,
        "seeds": args.seeds,
        "student": args.student,
        "attributors": args.attributors,
        "losses": args.losses,
        "alignment_weight": args.alignment_weight,
        "alignment_rows": args.alignment_rows,
        "alignment_min_rows": args.alignment_min_rows,
        "alignment_fraction": args.alignment_fraction,
        "alignment_batches": args.alignment_batches,
        "threads": args.threads,
        "device": args.device,
    }
    config.update({k: v for k, v in flags.items() if v is not None})
    if args.data is not None and args.dataset is None:
        config.pop("dataset", None)
    if args.dataset is not None and args.data is None:
        config.pop("data", None)
        config.pop("target", None)
    if args.no_independent:
        config["independent"] = False
    out = args.out if args.out is not None else section.get("out")
    return config, {"out": out}


def run(args: argparse.Namespace) -> int:
    """Run (or resume, or only report) the experiment described by the flags and the --config file."""
    from gbdt2nn_core.data import load_bundled, read_table, split_features_target
    from gbdt2nn_core.experiment.config import ExperimentConfig
    from gbdt2nn_core.host.device import resolve_device
    from gbdt2nn_core.pipeline.processes import launched
    from gbdt2nn_core.progress import RichProgress

    if launched():  # N copies would each train every run and write the same folder
        raise DataError(
            problem="gbdt2nn experiment runs in one process, not under torchrun",
            fix="run it without torchrun (gbdt2nn distill --nproc / torchrun train one student on several processes)",
        )
    config_kwargs, other = _settings(args)
    if config_kwargs.get("data") is not None and config_kwargs.get("dataset") is not None:
        raise DataError(problem="both data.path (--data) and dataset (--dataset) were given", fix="pass only one")
    if config_kwargs.get("data") is None and config_kwargs.get("target") is not None:
        raise DataError(problem="--target needs --data", fix="pass --data FILE, or drop --target for a bundled dataset")
    if config_kwargs.get("data") is None:
        config_kwargs.setdefault("dataset", "adult")
    config = ExperimentConfig(**config_kwargs)
    resolve_device(config.device)  # a missing GPU is an error before any teacher trains
    name = config.dataset or Path(str(config.data)).name.split(".")[0]
    out = Path(other["out"]) if other["out"] is not None else Path("runs") / f"experiment-{name}"

    if args.report_only:
        from gbdt2nn_core.experiment.report import write_report
        from gbdt2nn_core.experiment.results import collect_results

        results = collect_results(out)
        write_report(out, results)
        _print_summary(results, out)
        return 0

    if config.data is not None:
        if not config.target:
            raise DataError(problem="--data needs --target", fix="name the target column with --target COL")
        frame, target, source = read_table(Path(config.data)), config.target, str(config.data)
    else:
        dataset = load_bundled(str(config.dataset))
        frame, target, source = dataset.frame, dataset.target, f"bundled:{dataset.name}"
        if config.task is None:
            import attrs

            config = attrs.evolve(config, task=dataset.task)
    split_features_target(frame, target)  # a missing target column fails before anything runs

    from gbdt2nn_core.experiment.runner import ExperimentRunner

    progress = RichProgress()
    runner = ExperimentRunner(
        config,
        out,
        frame=frame,
        target=target,
        data_source=source,
        progress=progress,
        resume=args.resume,
        echo=lambda message: progress.console.print(f"[bold]experiment[/] {message}"),
        argv=["gbdt2nn", *sys.argv[1:]],
    )
    progress.console.print(
        f"[bold]gbdt2nn experiment[/] · {source} ({len(frame):,} rows) · seeds {list(config.seeds)} · "
        f"{len(runner.configurations)} configurations → {out}"
    )
    runner.run()
    from gbdt2nn_core.experiment.report import write_report
    from gbdt2nn_core.experiment.results import collect_results

    results = collect_results(out)
    write_report(out, results)
    _print_summary(results, out)
    return 0


def _print_summary(results: dict[str, Any], out: Path) -> None:
    from gbdt2nn_core.experiment.report import markdown_table

    print(markdown_table(results))  # plain Markdown: pasteable, and never wrapped by a console width
    state = "complete" if results["complete"] else f"incomplete ({len(results['missing'])} runs missing)"
    print(f"experiment {state}: {out / 'report.html'} · {out / 'report.md'} · {out / 'results.json'}")
