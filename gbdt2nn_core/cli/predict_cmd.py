"""``gbdt2nn predict``: predictions of a distilled student for the rows of a CSV or Parquet file.

The output has one row per input row, in input order: ``prediction`` (the class label, or the value for
regression), ``probability_<class>`` for each class of a classifier, and the margin (``margin``; one
``margin_<class>`` per class for multiclass). ``--keep COL`` copies input columns (an id) in front.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "output_columns", "predictions", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``gbdt2nn predict`` on the CLI's subparsers."""
    from gbdt2nn_core.cli.serving import add_io_arguments

    parser = subparsers.add_parser(
        "predict",
        help="predict with a distilled student (a run folder) for the rows of a CSV or Parquet file",
        description=(
            "Predict with the student of a run folder written by 'gbdt2nn distill'. Columns the model does not "
            "use are ignored, categories not seen in training count as missing; both with a note on stderr."
        ),
    )
    add_io_arguments(parser)
    parser.set_defaults(func=run)


def predictions(model: Any, frame: Any) -> Any:
    """The output table of ``gbdt2nn predict`` for ``model`` (a DistilledModel) on raw rows ``frame``."""
    import numpy as np
    import pandas as pd

    from gbdt2nn_core.student.calibration import probabilities

    margin = model.predict_margin(frame)
    columns: dict[str, Any] = {}
    if model.task == "regression":
        columns["prediction"] = margin
        columns["margin"] = margin
    else:
        classes = list(model.target.classes)
        # calibrated by the student's temperature; the margin column stays the network's own (TreeSHAP units)
        probability = probabilities(margin, model.student.temperature)
        columns["prediction"] = pd.Series(np.asarray(classes, dtype=object)[probability.argmax(axis=1)]).infer_objects()
        for index, label in enumerate(classes):
            columns[f"probability_{label}"] = probability[:, index]
        if margin.ndim == 1:
            columns["margin"] = margin
        else:
            for index, label in enumerate(classes):
                columns[f"margin_{label}"] = margin[:, index]
    return pd.DataFrame(columns)


def output_columns(model: Any) -> list[str]:
    """The columns :func:`predictions` returns for ``model``."""
    if model.task == "regression":
        return ["prediction", "margin"]
    classes = [str(label) for label in model.target.classes]
    margins = ["margin"] if model.task == "binary" else [f"margin_{label}" for label in classes]
    return ["prediction", *(f"probability_{label}" for label in classes), *margins]


def run(args: argparse.Namespace) -> int:
    """Predict and write the table."""
    from gbdt2nn_core.cli._files import keep_columns, read_rows
    from gbdt2nn_core.cli.serving import open_run, write_output

    model, _ = open_run(args)
    frame, notes = read_rows(args.data, model)
    kept = keep_columns(frame, args.keep, output_columns(model))
    table = predictions(model, frame)
    write_output(table, kept, notes, args)
    print(f"wrote {len(table):,} predictions ({model.task}) to {args.out}")
    return 0
