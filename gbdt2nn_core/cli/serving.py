"""What ``gbdt2nn predict`` and ``gbdt2nn explain`` share: opening a run folder for an output table, writing
the table with the kept input columns, and ``KEY=VALUE`` component options."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from gbdt2nn_core.pipeline import DistillConfig
    from gbdt2nn_core.pipeline.persistence import DistilledModel

__all__ = ["add_io_arguments", "open_run", "parse_options", "write_output"]


def add_io_arguments(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--data``, ``--out``, ``--keep``, ``--overwrite`` and ``--device``: a run folder, rows in, a table
    out."""
    parser.add_argument("--model", type=Path, required=True, help="run folder (student.safetensors + student.json)")
    parser.add_argument("--data", type=Path, required=True, help="CSV (.csv, .csv.gz) or Parquet file of rows")
    parser.add_argument("--out", type=Path, required=True, help="file to write: .csv, .csv.gz or .parquet")
    parser.add_argument(
        "--keep", action="append", default=[], metavar="COL", help="copy this input column to the output (repeatable)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument(
        "--device",
        default="cpu",
        metavar="DEVICE",
        help="where the student runs: cpu (default; the run folder loads there), auto, cuda or cuda:N",
    )


def parse_options(pairs: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs with TOML values (numbers, booleans, quoted strings; bare words stay strings)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    from gbdt2nn_core.errors import ConfigError

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(setting=flag, value=pair, fix="write KEY=VALUE, e.g. n_estimators=50")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        options[key.strip()] = value
    return options


def open_run(args: argparse.Namespace) -> tuple[DistilledModel, DistillConfig]:
    """The student of the run folder ``--model``, on ``--device``, and the config it was trained with, once ``--out``
    is known to be writable (before any work)."""
    from gbdt2nn_core.cli._files import check_output_file, load_student, table_format
    from gbdt2nn_core.host.device import resolve_device
    from gbdt2nn_core.pipeline.runfolder import folder_config

    device = resolve_device(args.device)  # a GPU this machine lacks fails before the work
    check_output_file(args.out, overwrite=args.overwrite)
    table_format(args.out)  # an unknown suffix fails before the work
    model = load_student(args.model)  # on the CPU, whatever it trained on
    if device.type != "cpu":
        model.student.move_to(device)
    return model, folder_config(args.model, model)


def write_output(table: pd.DataFrame, kept: pd.DataFrame | None, notes: list[str], args: argparse.Namespace) -> None:
    """Write ``table`` (the ``--keep`` columns in front) to ``--out``, then the notes about the input rows."""
    import pandas as pd

    from gbdt2nn_core.cli._files import note, write_table

    if kept is not None and args.keep:
        table = pd.concat([kept, table], axis=1)
    write_table(table, args.out)
    for text in notes:
        note(text)
