"""What ``predict``, ``explain`` and ``export`` share: loading a run folder, reading rows, writing one output file.

Rules (docs/cli.md): columns the model does not use are ignored with a note; categories not seen in training are
treated as missing (the average category) with a note; a missing column is an error that names it. An output
file is written atomically, never over an existing file without ``--overwrite``.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gbdt2nn_core.data.encoding import far_from_training_note
from gbdt2nn_core.errors import DataError, ModelFileError

if TYPE_CHECKING:
    import pandas as pd

    from gbdt2nn_core.pipeline.persistence import DistilledModel

__all__ = [
    "check_output_file",
    "keep_columns",
    "load_student",
    "note",
    "read_rows",
    "table_format",
    "warnings_as_lines",
    "write_table",
]

TableFormat = Literal["csv", "csv.gz", "parquet"]
_RUN_FOLDER = "a run folder written by 'gbdt2nn distill' (it holds student.safetensors and student.json)"


def note(text: str) -> None:
    """A remark on stderr that does not stop the command (ignored columns, unseen categories)."""
    print(f"gbdt2nn: note: {text}", file=sys.stderr)


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Within the block, each :class:`~gbdt2nn_core.errors.Gbdt2nnWarning` prints as one ``gbdt2nn: warning:`` line.

    Other warnings keep Python's own format.
    """
    from gbdt2nn_core.errors import Gbdt2nnWarning

    shown: set[str] = set()  # a check made twice (before the title, then in the pipeline) warns once
    with warnings.catch_warnings():
        warnings.simplefilter("always", Gbdt2nnWarning)
        original = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
            if not issubclass(category, Gbdt2nnWarning):
                original(message, category, *args, **kwargs)
            elif str(message) not in shown:
                shown.add(str(message))
                print(f"gbdt2nn: warning: {message}", file=sys.stderr)

        warnings.showwarning = show
        yield


def _shown(names: list[str], limit: int = 5) -> str:
    text = ", ".join(repr(n) for n in names[:limit])
    return text + (f" and {len(names) - limit} more" if len(names) > limit else "")


def load_student(path: Path) -> DistilledModel:
    """The student saved in the run folder ``path`` (``--model``)."""
    from gbdt2nn_core.pipeline.persistence import METADATA, load_model

    if not path.exists():
        raise ModelFileError(path=str(path), problem="no such folder", fix=f"pass {_RUN_FOLDER}")
    if not path.is_dir():
        hint = f" ({str(path.parent)!r})" if (path.parent / METADATA).is_file() else ""
        raise ModelFileError(
            path=str(path), problem="it is a file, not a run folder", fix=f"pass the folder that holds it{hint}"
        )
    return load_model(path)


def read_rows(path: Path, model: DistilledModel, *, flag: str = "--data") -> tuple[pd.DataFrame, list[str]]:
    """Rows of ``path`` for ``model``, checked against its schema, and notes on what will be ignored.

    The caller prints the notes (:func:`note`) once its output is written, so that a failing command prints
    its error line alone.
    """
    from gbdt2nn_core.data import read_table

    frame = read_table(path)
    schema = model.encoder.schema
    present = [str(c) for c in frame.columns]
    missing = [n for n in schema.names if n not in present]
    if missing:
        raise DataError(
            problem=f"{path.name} lacks column(s) {_shown(missing)} that the model was trained on",
            fix=f"pass a {flag} file with the model's columns ({len(schema.names)} in all; see student.json)",
        )
    notes = []
    extra = [c for c in present if c not in schema.names]
    if extra:
        notes.append(f"{path.name}: ignoring {len(extra)} column(s) the model does not use: {_shown(extra)}")
    unseen = []
    for column in schema.columns:
        if column.kind != "categorical":
            continue
        strange = column.unseen(frame[column.name])
        if len(strange):
            unseen.append(f"{column.name!r} ({len(strange)} rows, e.g. {strange.iloc[0]!r})")
    far = far_from_training_note(model.encoder, schema.to_frame(frame))
    if far:
        notes.append(f"{path.name}: {far}")
    if unseen:
        notes.append(
            f"{path.name}: categories not seen in training are treated as missing (the average category): "
            + "; ".join(unseen)
        )
    return frame, notes


def table_format(out: Path) -> TableFormat:
    """The format an output file's name asks for."""
    name = out.name.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith(".csv.gz"):
        return "csv.gz"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise DataError(
        problem=f"cannot tell the output format of {out.name!r}", fix="name --out *.csv, *.csv.gz or *.parquet"
    )


def check_output_file(out: Path, *, overwrite: bool) -> None:
    """Fail before any work when ``--out`` cannot be written."""
    if out.is_dir():
        raise DataError(problem=f"--out {str(out)!r} is a folder", fix="pass a file path for --out")
    if out.exists() and not overwrite:
        raise DataError(problem=f"--out {str(out)!r} already exists", fix="pass --overwrite or choose another --out")
    if not out.parent.is_dir():
        raise DataError(
            problem=f"the folder of --out ({str(out.parent)!r}) does not exist",
            fix="create it first or choose another --out",
        )


def keep_columns(frame: pd.DataFrame, names: list[str], taken: list[str]) -> pd.DataFrame:
    """The ``--keep`` columns of ``frame`` (e.g. an id), checked to exist and not to clash with output columns."""
    present = [str(c) for c in frame.columns]
    absent = [n for n in names if n not in present]
    if absent:
        raise DataError(problem=f"--keep column(s) {_shown(absent)} are not in the data", fix="check the names")
    clash = [n for n in names if n in taken]
    if clash:
        raise DataError(
            problem=f"--keep column(s) {_shown(clash)} clash with output columns", fix="rename them in the data"
        )
    return frame.rename(columns=str)[names].reset_index(drop=True)


def write_table(frame: pd.DataFrame, out: Path) -> None:
    """Write ``frame`` as CSV (optionally gzip-compressed) or Parquet, atomically."""
    from gbdt2nn_core.model_files import write_atomic

    kind = table_format(out)
    if kind == "parquet":
        buffer = io.BytesIO()
        try:
            frame.to_parquet(buffer, index=False)
        except ImportError as exc:
            raise DataError(
                problem=f"writing {out.name} needs pyarrow, which is not installed", fix="pip install pyarrow"
            ) from exc
        data = buffer.getvalue()
    else:
        data = frame.to_csv(index=False).encode("utf-8")
        if kind == "csv.gz":
            data = gzip.compress(data, mtime=0)
    write_atomic(out, data)
