"""``gbdt2nn export``: write a distilled student as TorchScript or ONNX, after a parity check on real rows.

The exported graph maps encoded rows ``z`` (float32, ``(n, D)``) to margins; see :mod:`gbdt2nn_core.pipeline.export`.
The rows of ``--data`` (default: the bundled dataset with the model's columns) are run through the export and
through PyTorch; the largest margin difference is printed, and above ``--tolerance`` nothing is written.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> None:
    """Register ``gbdt2nn export`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "export",
        help="export a distilled student to TorchScript or ONNX, checked against PyTorch on real rows",
        description=(
            "Export the student of a run folder written by 'gbdt2nn distill'. The graph maps encoded rows z "
            "(float32, (n, D)) to margins; the export carries the encoder (student.json) it needs as metadata. "
            "It is checked on real rows before it is written."
        ),
    )
    parser.add_argument("--model", type=Path, required=True, help="run folder (student.safetensors + student.json)")
    parser.add_argument("--out", type=Path, required=True, help="file to write, e.g. model.onnx or model.pt")
    parser.add_argument(
        "--format", choices=["torchscript", "onnx"], help="default: from the --out suffix (.onnx; .pt, .pth, .ts)"
    )
    parser.add_argument(
        "--data", type=Path, help="rows for the parity check (default: the bundled dataset with the model's columns)"
    )
    parser.add_argument(
        "--tolerance", type=float, default=None, help="largest margin difference allowed (default: 1e-4)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export, check and write."""
    from gbdt2nn_core.cli._files import check_output_file, load_student, note, read_rows
    from gbdt2nn_core.pipeline.export import DEFAULT_TOLERANCE, export_model, format_from_suffix

    check_output_file(args.out, overwrite=args.overwrite)
    export_format = args.format or format_from_suffix(args.out)
    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    model = load_student(args.model)
    rows, notes = read_rows(args.data, model) if args.data is not None else (None, [])
    source = args.data.name if args.data is not None else None
    report = export_model(model, args.out, export_format, rows=rows, tolerance=tolerance, source=source)
    for text in notes:
        note(text)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.summary())
    return 0
