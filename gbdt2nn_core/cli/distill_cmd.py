"""``gbdt2nn distill``: distil a booster into a GBDT2NN student and compare it with plain distillation.

With no data it runs on the bundled adult dataset and prints teacher vs plain student vs aligned student.
Settings come from flags, from a TOML run file (``--config``), or both (flags win).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import attrs

from gbdt2nn_core.errors import ConfigError, DataError, Gbdt2nnError

__all__ = ["add_parser", "run"]

_KINDS = ("teacher", "student", "attributor", "alignment")


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
    parser.add_argument("--config", type=Path, help="TOML run file (see docs); flags override its settings")
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, help="CSV (.csv, .csv.gz) or Parquet file with features and target")
    data.add_argument("--target", help="name of the target column in --data")
    data.add_argument("--dataset", default=None, help="a bundled dataset instead of --data: adult or california")
    data.add_argument("--task", choices=["regression", "binary", "multiclass"], help="default: inferred from target")
    models = parser.add_argument_group("components (plugin names; see 'gbdt2nn plugins')")
    models.add_argument("--teacher", help="teacher backend (default: lightgbm)")
    models.add_argument("--teacher-model", type=Path, help="distil this saved booster instead of training one")
    models.add_argument("--student", help="student architecture (default: gbdt2nn; e.g. mlp)")
    models.add_argument("--attributor", help="student attributor (default: structure)")
    models.add_argument(
        "--alignment", help="alignment loss (default: auto: rank for multiclass, cosine for binary, mse for regression)"
    )
    examples = {
        "teacher": "n_estimators=50",
        "student": "n_groups=5",
        "attributor": "steps=32",
        "alignment": "normalize=true",
    }
    for kind in _KINDS:
        models.add_argument(
            f"--{kind}-option",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help=f"option for the {kind} (VALUE in TOML syntax; repeatable), e.g. {examples[kind]}",
        )
    training = parser.add_argument_group("training")
    training.add_argument("--alignment-weight", type=float, help="λ of the alignment term; 0 = plain (default: 1)")
    training.add_argument(
        "--alignment-rows",
        type=float,
        metavar="SHARE",
        help="share of the training rows that carry the alignment term, a seeded random subset whose teacher "
        "TreeSHAP alone is computed; 1 = all (default: 0.1)",
    )
    training.add_argument(
        "--alignment-min-rows",
        type=int,
        metavar="N",
        help="but at least this many aligned training rows (all of them when there are fewer); 0 = no floor "
        "(default: 3000)",
    )
    training.add_argument(
        "--alignment-fraction",
        type=float,
        metavar="SHARE",
        help="share of the training batches that carry the alignment term (default: 1)",
    )
    training.add_argument(
        "--alignment-batches",
        choices=["grouped", "mixed"],
        help="grouped: the aligned rows train in batches of their own, on a share of the steps, weighted up to "
        "align as much per epoch (faster); mixed: every batch carries its few aligned rows (default: grouped)",
    )
    training.add_argument(
        "--epochs", type=int, default=None, help="the student's budget of training epochs (default: 20)"
    )
    training.add_argument(
        "--validation-fraction",
        type=float,
        metavar="SHARE",
        help="share of the training rows the student holds out to stop early on and pick its best epoch; the "
        "teacher trains on all; 0 = none (default: 0.1). Early stopping itself: --student-option "
        "early_stopping=false / patience=N",
    )
    training.add_argument(
        "--synthetic-rows",
        type=_count_or_auto,
        metavar="N",
        help="synthetic rows per training row, labelled by the teacher, that the student also trains on (MUNGE: "
        "rows near the data, so the student learns the teacher's function between them; each adds an epoch's "
        "worth of steps); 0 = none (default: auto, 4 for regression, fewer on a large training set so that they are at "
        "most 200,000 in all, none for classification)",
    )
    training.add_argument("--seed", type=int, default=None, help="random seed (default: 0)")
    training.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="threads of torch, the teacher's training and its TreeSHAP, recorded in config.json (default: every "
        "core this process may use)",
    )
    training.add_argument(
        "--device",
        metavar="DEVICE",
        help="where everything after the teacher runs (student, its TreeSHAP targets on XGBoost): auto (a CUDA GPU "
        "when there is one), cpu, cuda or cuda:N (default: auto)",
    )
    training.add_argument(
        "--teacher-explanation",
        choices=["path-dependent", "interventional"],
        help="teacher TreeSHAP: native path-dependent (default) or interventional (needs the shap plugin)",
    )
    training.add_argument(
        "--compare", action="store_true", default=None, help="also train a plain (λ = 0) student (demo: always)"
    )
    training.add_argument(
        "--alignment-check",
        action="store_true",
        default=None,
        help="train the plain student too, and where the aligned one's loss on the held-out rows is more than 0.5%% "
        "above it, train it again at a tenth of λ and keep that one (recorded in config.json; 2.25x a plain run's "
        "time on adult)",
    )
    engine = parser.add_argument_group("engine (the teacher and its TreeSHAP on a cluster; see docs/scaling-out.md)")
    engine.add_argument(
        "--engine", choices=["local", "dask"], default="local", help="dask: needs pip install 'gbdt2nn-core[dask]'"
    )
    engine.add_argument("--scheduler", metavar="ADDRESS", help="Dask scheduler (tcp://HOST:PORT); default: local")
    engine.add_argument("--dask-workers", type=int, metavar="N", help="workers of the local Dask cluster (default: 2)")
    processes = parser.add_argument_group("processes (data-parallel student training; see docs/scaling-out.md)")
    processes.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train the student in N processes on this machine (torch.distributed, gloo on CPU), each on its own "
        "shard of the rows with batch_size rows per step; across machines run the command under torchrun instead "
        "(default: 1)",
    )
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, help="run folder to write (required with --data)")
    output.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    output.add_argument("--json", action="store_true", help="print metrics as JSON instead of a table")
    parser.set_defaults(func=run)


def _count_or_auto(text: str) -> int | str:
    """A whole number, or the text as given: ``auto``, or a mistake that ``DistillConfig`` refuses in one line."""
    try:
        return int(text)
    except ValueError:
        return text


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """Merge the TOML run file (if any) with the flags; a flag that is given wins."""
    from gbdt2nn_core.cli.serving import parse_options
    from gbdt2nn_core.config_file import ALLOWED_KEYS, read_config_file

    file = read_config_file(args.config) if args.config is not None else {k: {} for k in ALLOWED_KEYS}
    data, run_section = file["data"], file["run"]

    def pick(flag: Any, section: dict[str, Any], key: str, default: Any = None) -> Any:
        return flag if flag is not None else section.get(key, default)

    def options(kind: str) -> dict[str, Any]:
        flags = parse_options(getattr(args, f"{kind}_option"), f"--{kind}-option")
        return {**file[kind].get("options", {}), **flags}

    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(setting="--epochs", value=args.epochs, fix="use a whole number of at least 1")
    student_options = options("student")
    if args.epochs is not None:
        student_options["epochs"] = args.epochs
    # only what the flags or the file set: DistillConfig states the defaults
    given: dict[str, Any] = {
        "task": pick(args.task, data, "task"),
        "teacher": pick(args.teacher, file["teacher"], "name"),
        "student": pick(args.student, file["student"], "name"),
        "attributor": pick(args.attributor, file["attributor"], "name"),
        "alignment": pick(args.alignment, file["alignment"], "loss"),
        "alignment_weight": pick(args.alignment_weight, file["alignment"], "weight"),
        "alignment_fraction": pick(args.alignment_fraction, file["alignment"], "fraction"),
        "alignment_batches": pick(args.alignment_batches, file["alignment"], "batches"),
        "alignment_rows": pick(args.alignment_rows, file["alignment"], "rows"),
        "alignment_min_rows": pick(args.alignment_min_rows, file["alignment"], "min_rows"),
        "alignment_check": pick(args.alignment_check, file["alignment"], "check"),
        "seed": pick(args.seed, run_section, "seed"),
        "threads": pick(args.threads, run_section, "threads"),
        "validation_fraction": pick(args.validation_fraction, run_section, "validation_fraction"),
        "synthetic_rows": pick(args.synthetic_rows, run_section, "synthetic_rows"),
        "teacher_explanation": pick(args.teacher_explanation, run_section, "teacher_explanation"),
        "device": pick(args.device, run_section, "device"),
    }
    config: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    config.update(
        teacher_options=options("teacher"),
        student_options=student_options,
        attributor_options=options("attributor"),
        alignment_options=options("alignment"),
    )
    for key in (
        "test_size",
        "threshold_bins",
        "merge_categories",
        "background_rows",
        "cache_dir",
        "cache",
        "spill_bytes",
    ):
        if key in run_section:
            config[key] = run_section[key]
    return {
        "data": pick(args.data, data, "path"),
        "dataset": pick(args.dataset, data, "dataset"),
        "target": pick(args.target, data, "target"),
        "teacher_model": pick(args.teacher_model, file["teacher"], "model"),
        "out": pick(args.out, run_section, "out"),
        "compare": pick(args.compare, run_section, "compare", False),
        "config": config,
    }


def run(args: argparse.Namespace) -> int:
    """Run the distillation described by the flags and the --config file."""
    import torch

    from gbdt2nn_core.cli.launch import launch
    from gbdt2nn_core.pipeline.dask_engine import engine_client
    from gbdt2nn_core.pipeline.processes import launched

    if launched():  # one of the processes that torchrun or --nproc started
        return _run_in_process_group(args)
    if args.nproc is not None:
        _check_nproc(args)
        if args.nproc > 1:
            _check_before_launch(args)
            return launch(args.nproc, _without_nproc(args.argv))
    previous_threads = torch.get_num_threads()  # put back: main() may be called inside a larger program
    try:
        with engine_client(args.engine, scheduler=args.scheduler, workers=args.dask_workers) as engine:
            return _run(args, engine)
    finally:
        torch.set_num_threads(previous_threads)


def _check_nproc(args: argparse.Namespace) -> None:
    if args.nproc < 1:
        raise ConfigError(setting="--nproc", value=args.nproc, fix="use a whole number of processes ≥ 1")
    if args.engine != "local" and args.nproc > 1:
        raise ConfigError(
            setting="--nproc",
            value=args.nproc,
            fix="the Dask engine prepares the teacher in one process; use --engine dask or --nproc, not both",
        )


def _check_before_launch(args: argparse.Namespace) -> None:
    """The mistakes every process would make, found once before any starts (and before anything is written)."""
    from gbdt2nn_core.host.registry import get_registry
    from gbdt2nn_core.pipeline import DistillConfig, Pipeline
    from gbdt2nn_core.pipeline.processes import check_data_parallel
    from gbdt2nn_core.pipeline.runfolder import check_destination

    settings = _settings(args)
    config = DistillConfig(**settings["config"])
    Pipeline(config, get_registry()).check()
    student = get_registry().student(config.student, seed=config.seed, **config.student_options)
    check_data_parallel(student, config.student, args.nproc)
    if settings["data"] is not None and not Path(settings["data"]).exists():
        raise DataError(
            problem=f"data file {str(settings['data'])!r} does not exist", fix="check the path passed to --data"
        )
    if settings["out"] is not None:
        check_destination(Path(settings["out"]), overwrite=args.overwrite)


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line with ``--nproc N`` left out: what each started process runs."""
    kept: list[str] = []
    skip = False
    for token in argv:
        if skip:
            skip = False
        elif token == "--nproc":
            skip = True
        elif not token.startswith("--nproc="):
            kept.append(token)
    return kept


def _run_in_process_group(args: argparse.Namespace) -> int:
    """:func:`run` in one of several processes: join the group, distil; rank 0 alone reports and writes."""
    from gbdt2nn_core.pipeline.processes import process_group

    if args.nproc is not None:
        raise ConfigError(
            setting="--nproc",
            value=args.nproc,
            fix="this command already runs under torchrun, which starts the processes; leave --nproc out",
        )
    if args.engine != "local":
        raise ConfigError(
            setting="--engine",
            value=args.engine,
            fix="the Dask engine prepares the teacher in one process; run it without torchrun",
        )
    from gbdt2nn_core.host.device import resolve_device
    from gbdt2nn_core.pipeline import DistillConfig

    leader = os.environ.get("RANK") == "0"
    try:
        # the collective backend follows where the student trains: NCCL between GPUs, gloo on CPUs
        device = resolve_device(DistillConfig(**_settings(args)["config"]).device)
        with process_group(device=device.type):
            return _run(args, None)
    except Gbdt2nnError:
        if leader or os.environ.get("GBDT2NN_DEBUG"):
            raise
        return 2  # every process meets the same mistake: rank 0 alone says it (GBDT2NN_DEBUG=1 shows each one's)
    except KeyboardInterrupt:
        return 130  # Ctrl-C reaches every process: the launcher (or torchrun) says it once


def _run(args: argparse.Namespace, engine: Any) -> int:
    """:func:`run`, with ``engine`` the Dask engine of ``--engine dask`` (``None``: everything in this process)."""
    import torch

    from gbdt2nn_core.data import load_bundled, read_table, split_features_target
    from gbdt2nn_core.host.device import resolve_device
    from gbdt2nn_core.host.registry import get_registry
    from gbdt2nn_core.kit.booster_teacher import available_cores
    from gbdt2nn_core.pipeline import DistillConfig, Pipeline
    from gbdt2nn_core.pipeline.dask_engine import prepare_on_dask, read_on_dask
    from gbdt2nn_core.pipeline.distill import plain_then_aligned, run_student
    from gbdt2nn_core.pipeline.metrics import validation_cost
    from gbdt2nn_core.pipeline.runfolder import check_destination, write_run
    from gbdt2nn_core.progress import NullProgress, RichProgress
    from gbdt2nn_core.student.distributed import world

    leader = world().leader  # with several processes, rank 0 alone prints, evaluates and writes
    settings = _settings(args)
    data_path = Path(settings["data"]) if settings["data"] is not None else None
    out = Path(settings["out"]) if settings["out"] is not None else None
    if data_path is not None and settings["dataset"] is not None:
        raise DataError(problem="both --data and --dataset were given", fix="pass only one of them")
    demo = data_path is None
    if not demo:
        if not settings["target"]:
            raise DataError(problem="--data needs --target", fix="name the target column with --target COL")
        if out is None:
            raise DataError(problem="--data needs --out", fix="name a run folder to write with --out DIR")
    config = DistillConfig(**settings["config"])
    processes = world()
    if processes.distributed and resolve_device(config.device).type == "cuda":
        # one GPU per process on its machine: the one torchrun numbers LOCAL_RANK (NCCL reduces between them)
        config = attrs.evolve(config, device=f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
    # every process its share of the cores by default, so that N processes on one machine do not oversubscribe it
    threads = config.threads if config.threads is not None else max(1, available_cores() // processes.size)
    config = attrs.evolve(config, threads=threads)  # explicit, so that config.json says what the run used
    torch.set_num_threads(threads)
    if out is not None and leader:
        check_destination(out, overwrite=args.overwrite)  # before minutes of training
    teacher_model = settings["teacher_model"]
    if teacher_model is not None and not Path(teacher_model).exists():
        raise DataError(
            problem=f"teacher model file {str(teacher_model)!r} does not exist", fix="check --teacher-model"
        )

    if demo:
        dataset = load_bundled(settings["dataset"] or "adult")
        frame, target = dataset.frame, dataset.target
        if config.task is None:
            config = attrs.evolve(config, task=dataset.task)
        title = f"bundled dataset '{dataset.name}' ({len(frame):,} rows, target {target})"
    else:
        assert data_path is not None
        frame = read_table(data_path) if engine is None else read_on_dask(engine, data_path)
        target = settings["target"]
        title = f"{data_path.name} ({len(frame):,} rows, target {target})"
    # a GBDT2NN_CACHE_DIR that cannot be a folder fails here (the pipeline opens its cache), and a misspelt name or
    # a refused option in check(), before anything is printed
    pipeline = Pipeline(config, get_registry())
    pipeline.check()
    split_features_target(frame, target)  # and so does a missing target column
    # and every other mistake in the rows, the target, the task or a --teacher-model booster, before the title,
    # so that a mistake prints its error line alone; the split and the wrapped booster are then used as they are
    split = pipeline.split(frame, target)
    teacher: Any = None
    if teacher_model is not None:
        teacher = pipeline.teacher(str(teacher_model))
        teacher.fit(split.train_frame, split.y_train, task=split.task, seed=config.seed)  # checks; trains nothing
    else:  # building the teacher trains nothing, but refuses an option it does not know (num_leave=4)
        teacher = pipeline.teacher()
    progress = RichProgress()
    pipeline.progress = progress if leader else NullProgress()
    if leader:
        progress.console.print(f"[bold]gbdt2nn distill[/] · {title}")
    if engine is None:
        prepared = pipeline.prepare_split(split, teacher)
    else:  # the teacher trains (unless wrapped) and its TreeSHAP runs on the Dask cluster, which then stops
        prepared = prepare_on_dask(pipeline, split, engine.client, teacher if teacher_model is not None else None)
        engine.close()
    # with --out, every student checkpoints each epoch next to it: the same command after a kill resumes there
    checkpoints = out.with_name(f".{out.name}.checkpoints") if out is not None else None

    def student(weight: float) -> Any:
        # each student's checkpoint file is named after its part in the run, so that the same command resumes it
        name = "plain" if weight == 0 else "aligned" if weight == config.alignment_weight else "aligned-again"

        def say(epoch: int) -> None:
            progress.console.print(f"{name} student: resuming from epoch {epoch} (checkpoint in {checkpoints})")

        path = checkpoints / f"{name}.pt" if checkpoints is not None else None
        if not leader:  # trains its shard in step with rank 0, which evaluates and writes; checked_alignment reads it
            return pipeline.train(prepared, alignment_weight=weight, checkpoint=path)
        return run_student(pipeline, prepared, weight, checkpoint=path, on_resume=say)

    plain = None
    try:
        if (demo or settings["compare"] or config.alignment_check) and config.alignment_weight > 0:
            plain, main = plain_then_aligned(student, config)
        else:
            main = student(config.alignment_weight)
        if out is not None and leader:
            write_run(out, main, plain=plain, overwrite=args.overwrite)
    except Gbdt2nnError:
        # a run that failed (diverged, bad rows) would fail again from its checkpoint: leave nothing behind.
        # A kill or Ctrl-C keeps them, so that the same command resumes.
        if checkpoints is not None and leader:
            shutil.rmtree(checkpoints, ignore_errors=True)
        raise
    finally:
        prepared.close()  # the rows it kept on disk (spill_bytes), finished or failed: the run folder has its own
    if not leader:
        return 0
    if checkpoints is not None:
        shutil.rmtree(checkpoints, ignore_errors=True)  # the run is complete: nothing left to resume
    cost = validation_cost(main.student.history, plain.student.history) if plain is not None else None
    if args.json:
        payload = dict(main.metrics)
        if plain is not None:
            payload["plain"] = plain.metrics["student"]
            payload["validation_cost"] = cost
        print(json.dumps(payload, indent=2))
    else:
        _print_table(main, plain)
        if cost is not None:
            print(_cost_line(cost, advise=not config.alignment_check))
        if out is not None:
            print(f"run folder: {out}")
    return 0


def _cost_line(cost: float, *, advise: bool = True) -> str:
    """What the held-out rows say about alignment's cost (:func:`~gbdt2nn_core.pipeline.metrics.validation_cost`);
    ``advise=False`` where ``--alignment-check`` already acted on it (the student shown is the one it kept)."""
    from gbdt2nn_core.pipeline.metrics import ALIGNMENT_COST_NOTICE

    said = f"held-out rows: the aligned student's task loss is {cost:+.2%} against the plain student's"
    if cost <= ALIGNMENT_COST_NOTICE:
        return f"{said}, within {ALIGNMENT_COST_NOTICE:.1%}: alignment costs no accuracy here."
    if not advise:
        return f"{said}: alignment still costs accuracy on this data after --alignment-check."
    # measured on the quality suite: where this showed, a tenth of λ gave most of the accuracy back
    return (
        f"{said}: alignment costs accuracy on this data; --alignment-weight 0.1 gave most of it back on such data "
        'for a little agreement (docs/attributions.md, "Choosing").'
    )


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
