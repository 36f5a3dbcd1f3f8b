"""``gbdt2nn explain``: per-row, per-column attributions of a distilled student, in margin space.

Layouts (``--layout``):

- ``wide`` (default): one row per input row, one column per input column, named like the column; for a
  multiclass model one column per (class, column), named ``<column>[<class>]``, all columns of the first class
  first;
- ``long``: one row per (input row, column) — or (input row, class, column) — with the columns ``row``
  (0-based position in ``--data``), ``class`` (multiclass only), ``feature`` and ``attribution``.

The attributor defaults to the one the run was trained with (its ``config.json``), else ``structure``. Its
reference point is, in this order, the rows of ``--background``, the background sample saved with the student,
or the encoded training-mean row ``z = 0``; with ``structure`` each row's attributions then add up to
``margin(x) − E[margin]`` over that reference.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "attribution_table", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``gbdt2nn explain`` on the CLI's subparsers."""
    from gbdt2nn_core.cli.serving import add_io_arguments

    parser = subparsers.add_parser(
        "explain",
        help="per-row, per-column attributions of a distilled student (margin space)",
        description=(
            "Explain the predictions of the student of a run folder written by 'gbdt2nn distill': one "
            "attribution per row and input column (per class for multiclass), in margin space."
        ),
    )
    add_io_arguments(parser)
    parser.add_argument("--attributor", help="attributor plugin (default: the run's, else structure)")
    parser.add_argument(
        "--attributor-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="option for the attributor (VALUE in TOML syntax; repeatable), e.g. steps=32",
    )
    parser.add_argument(
        "--background", type=Path, help="rows to measure attributions against (default: the saved background)"
    )
    parser.add_argument("--layout", choices=["wide", "long"], default="wide", help="output layout (default: wide)")
    parser.set_defaults(func=run)


def attribution_table(model: Any, values: Any, layout: str) -> Any:
    """Attributions ``(n, d)`` or ``(n, c, d)`` as the ``wide`` or ``long`` table described in the module docs."""
    import numpy as np
    import pandas as pd

    names = list(model.encoder.schema.names)
    n = values.shape[0]
    classes = [str(c) for c in model.target.classes] if values.ndim == 3 else []
    if layout == "wide":
        if not classes:
            return pd.DataFrame(values, columns=names)
        columns = [f"{name}[{label}]" for label in classes for name in names]
        return pd.DataFrame(values.reshape(n, -1), columns=columns)
    d = len(names)
    per_row = d * max(1, len(classes))
    long: dict[str, Any] = {"row": np.repeat(np.arange(n), per_row)}
    if classes:
        long["class"] = np.tile(np.repeat(np.asarray(classes, dtype=object), d), n)
    long["feature"] = np.tile(np.asarray(names, dtype=object), n * max(1, len(classes)))
    long["attribution"] = values.reshape(-1)
    return pd.DataFrame(long)


def run(args: argparse.Namespace) -> int:
    """Explain and write the table."""
    import numpy as np
    import torch

    from gbdt2nn_core.cli._files import keep_columns, read_rows
    from gbdt2nn_core.cli.serving import open_run, parse_options, write_output
    from gbdt2nn_core.pipeline import BACKGROUND_ROWS, background_index
    from gbdt2nn_core.registry import get_registry

    model, trained = open_run(args)
    name = args.attributor or trained.attributor
    options = dict(trained.attributor_options) if name == trained.attributor else {}
    options.update(parse_options(args.attributor_option, "--attributor-option"))
    attributor = get_registry().attributor(name, **options)  # a misspelt name fails before reading data
    frame, notes = read_rows(args.data, model)
    names = list(model.encoder.schema.names)
    taken = ["row", "class", "feature", "attribution"] if args.layout == "long" else names
    if args.layout == "wide" and model.task == "multiclass":
        taken = [f"{n}[{c}]" for c in model.target.classes for n in names]
    kept = keep_columns(frame, args.keep, taken)
    z = model.encode(frame)
    model.predict_margin(frame)  # rows whose margins overflow are an error, not blank attributions

    if args.background is not None:
        background_frame, more = read_rows(args.background, model, flag="--background")
        notes += [f"--background {text}" for text in more]
        rows = model.encode(background_frame)
        background = rows[background_index(len(rows), BACKGROUND_ROWS, trained.seed)]
    elif model.background is not None:
        background = np.asarray(model.background, dtype=np.float32)
    else:
        background = np.zeros((1, z.shape[1]), dtype=np.float32)  # the encoded training-mean row
    attributor.fit(model.student.module.eval(), torch.as_tensor(background, dtype=torch.float32))
    values = model.student.attributions(z, attributor, model.encoder.aggregation())
    table = attribution_table(model, values, args.layout)
    if args.layout == "long":
        kept = kept.iloc[table["row"].to_numpy()].reset_index(drop=True)
    write_output(table, kept, notes, args)
    print(f"wrote {name} attributions of {len(z):,} rows ({args.layout} layout, margin space) to {args.out}")
    return 0
