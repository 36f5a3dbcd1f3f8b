"""Export a distilled student to TorchScript or ONNX, checked against PyTorch on real rows before it is written.

What the exported graph computes: the GBDT2NN network alone, from **encoded rows** ``z`` (input ``"z"``,
float32, shape ``(n, D)``; any batch size ``n``) to **margins** (output ``"margin"``, raw scores: shape ``(n,)``
for regression and binary models, ``(n, c)`` for a ``c``-class model). Divide them by the recorded
``output.temperature`` (the student's calibration) and apply a sigmoid (binary) or a softmax (multiclass) for
probabilities, as :meth:`DistilledModel.predict_proba
<gbdt2nn_core.pipeline.persistence.DistilledModel.predict_proba>` does.

Raw rows (strings, categories, missing values) become ``z`` through the student's input encoder:
:meth:`DistilledModel.encode <gbdt2nn_core.pipeline.persistence.DistilledModel.encode>` in Python, or a port of the
encoder recorded in ``student.json`` (see :mod:`gbdt2nn_core.data.encoding`). Every export carries that record, so a
served model never loses its preprocessing: TorchScript as the extra file ``gbdt2nn.json``
(``torch.jit.load(path, _extra_files={"gbdt2nn.json": ""})``), ONNX as the metadata property ``gbdt2nn``.

Every export is checked before it is written: the exported bytes are loaded back (``torch.jit.load``,
``onnxruntime``), run on real rows in one batch and on a single row, and compared with the PyTorch student.
The largest absolute margin difference is returned in an :class:`ExportReport`; above the tolerance (default
``1e-4``) nothing is written and :class:`~gbdt2nn_core.errors.ExportError` is raised. The file itself is
written atomically (a temporary file renamed into place). Example::

    from gbdt2nn_core.pipeline.export import export_onnx
    from gbdt2nn_core.pipeline.persistence import load_model

    model = load_model("runs/adult")
    report = export_onnx(model, "adult.onnx")          # rows: the bundled dataset with the model's columns
    print(report.max_abs_diff)                         # e.g. 2.4e-07

    import onnxruntime
    session = onnxruntime.InferenceSession("adult.onnx")
    margin = session.run(["margin"], {"z": model.encode(raw_rows)})[0]

ONNX export needs the ``export`` extra (``pip install 'gbdt2nn-core[export]'``: onnx and onnxruntime) and
writes opset 17 through torch's TorchScript-based exporter. TorchScript export needs nothing beyond torch.
PyTorch has deprecated both TorchScript and that exporter in favour of ``torch.export`` (whose ONNX exporter
needs onnxscript and onnx >= 1.17); libtorch (C++), TorchServe and every ONNX runtime still load their files.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np
import pandas as pd
import torch

from gbdt2nn_core.data import check_finite_margins
from gbdt2nn_core.data.encoding import check_rows_near_training
from gbdt2nn_core.errors import ConfigError, DataError, ExportError
from gbdt2nn_core.model_files import write_atomic
from gbdt2nn_core.pipeline.persistence import DistilledModel, load_model
from gbdt2nn_core.validators import is_positive_number

__all__ = [
    "DEFAULT_TOLERANCE",
    "EXTRA_FILE",
    "FORMATS",
    "METADATA_KEY",
    "OPSET",
    "PARITY_ROWS",
    "ExportError",
    "ExportReport",
    "export_model",
    "export_onnx",
    "export_torchscript",
    "format_from_suffix",
    "parity_rows",
]

ExportFormat = Literal["torchscript", "onnx"]
FORMATS: tuple[ExportFormat, ...] = ("torchscript", "onnx")
#: Largest absolute margin difference an export may show against PyTorch.
DEFAULT_TOLERANCE = 1e-4
#: At most this many real rows are compared (a random sample of larger inputs).
PARITY_ROWS = 1000
#: Name of the record of task, classes and encoder inside a TorchScript file.
EXTRA_FILE = "gbdt2nn.json"
#: Key of the same record in an ONNX file's metadata properties.
METADATA_KEY = "gbdt2nn"
#: ONNX opset of exported graphs.
OPSET = 17
#: File name endings that tell the format when none is given.
_SUFFIXES: dict[str, ExportFormat] = {
    ".onnx": "onnx",
    ".pt": "torchscript",
    ".pth": "torchscript",
    ".ts": "torchscript",
    ".torchscript": "torchscript",
}
_EXTRA_FIX = "install the export extra: pip install 'gbdt2nn-core[export]'"


@attrs.frozen(kw_only=True)
class ExportReport:
    """What an export wrote and how closely it matches the PyTorch student."""

    path: str
    format: ExportFormat
    #: Real rows compared (in one batch, and the first of them alone).
    rows: int
    batch_sizes: tuple[int, ...]
    #: Largest absolute margin difference between the export and PyTorch over those rows.
    max_abs_diff: float
    tolerance: float
    #: Where the rows came from (a file name, ``"bundled dataset 'adult'"``, ``"the rows given"``).
    source: str
    #: Width ``D`` of the encoded input ``z``.
    n_inputs: int
    #: Margins per row (1, or the number of classes).
    n_outputs: int

    def summary(self) -> str:
        """One line for a terminal."""
        margin = "(n,)" if self.n_outputs == 1 else f"(n, {self.n_outputs})"
        sizes = " and ".join(str(size) for size in self.batch_sizes)
        return (
            f"wrote {self.path} ({self.format}: z float32 (n, {self.n_inputs}) -> margin {margin}); "
            f"parity on {self.rows} rows of {self.source} (batch sizes {sizes}): "
            f"max |margin difference| {self.max_abs_diff:.3g} <= tolerance {self.tolerance:g}"
        )

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def format_from_suffix(path: str | os.PathLike[str]) -> ExportFormat:
    """The export format a file name asks for (``.onnx``; ``.pt``, ``.pth``, ``.ts``, ``.torchscript``)."""
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise DataError(
            problem=f"cannot tell the export format from the name {Path(path).name!r}",
            fix="pass --format torchscript or --format onnx, or name the file *.pt or *.onnx",
        )
    return _SUFFIXES[suffix]


def export_torchscript(
    model: DistilledModel | str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    rows: pd.DataFrame | np.ndarray | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    source: str | None = None,
) -> ExportReport:
    """Write the student as a TorchScript module (``torch.jit.load(path)(z) -> margin``); see the module docs.

    ``model`` is a :class:`DistilledModel` or a folder written by ``gbdt2nn distill``; ``rows`` are raw rows
    to check parity on (default: the bundled dataset with the model's columns); ``source`` names them in the
    report. An existing file at ``path`` is replaced.
    """
    return export_model(model, path, "torchscript", rows=rows, tolerance=tolerance, source=source)


def export_onnx(
    model: DistilledModel | str | os.PathLike[str],
    path: str | os.PathLike[str],
    *,
    rows: pd.DataFrame | np.ndarray | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    source: str | None = None,
) -> ExportReport:
    """Write the student as an ONNX model (input ``"z"``, output ``"margin"``); see the module docs.

    Arguments as for :func:`export_torchscript`. Needs onnx and onnxruntime (the ``export`` extra).
    """
    return export_model(model, path, "onnx", rows=rows, tolerance=tolerance, source=source)


def export_model(
    model: DistilledModel | str | os.PathLike[str],
    path: str | os.PathLike[str],
    format: str,
    *,
    rows: pd.DataFrame | np.ndarray | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    source: str | None = None,
) -> ExportReport:
    """Export ``model`` to ``path`` in ``format`` (``"torchscript"`` or ``"onnx"``) after a parity check."""
    if format not in FORMATS:
        raise ConfigError(setting="format", value=format, fix=f"use one of {', '.join(FORMATS)}")
    if not is_positive_number(tolerance):
        raise ConfigError(setting="tolerance", value=tolerance, fix="use a positive number, e.g. 1e-4")
    target = Path(path)
    _check_target(target)
    if format == "onnx":
        _require_onnx()
    if not isinstance(model, DistilledModel):
        model = load_model(Path(model))
    frame, where = parity_rows(model, rows)
    z = model.encode(frame)
    module = copy.deepcopy(model.student.module).cpu().float().eval()  # the caller's module stays as it was
    with torch.no_grad():
        reference = module(torch.from_numpy(z)).numpy()
    check_finite_margins(reference, model.encoder.schema.to_frame(frame))  # the rows' fault, not the exporter's
    record = json.dumps(_record(model, z.shape[1]), default=str)

    if format == "torchscript":
        data = _torchscript_bytes(module, record)
        run = _torchscript_runner(data)
    else:
        data = _onnx_bytes(module, z[: min(2, len(z))], record)
        run = _onnx_runner(data)
    batch_sizes = (1, len(z)) if len(z) > 1 else (1,)
    worst = 0.0
    for size in batch_sizes:
        worst = max(worst, _max_abs_diff(run(z[:size]), reference[:size]))
    if not worst <= tolerance:
        check_rows_near_training(model.encoder, model.encoder.schema.to_frame(frame))  # the rows, not the export
        raise ExportError(
            format=format,
            path=str(target),
            max_abs_diff=worst,
            tolerance=float(tolerance),
            rows=len(z),
            fix="try the other format, or report it with the model folder",
        )
    write_atomic(target, data)
    return ExportReport(
        path=str(target),
        format=format,  # type: ignore[arg-type]
        rows=len(z),
        batch_sizes=batch_sizes,
        max_abs_diff=worst,
        tolerance=float(tolerance),
        source=source or where,
        n_inputs=int(z.shape[1]),
        n_outputs=model.student.n_outputs,
    )


def parity_rows(model: DistilledModel, rows: pd.DataFrame | np.ndarray | None) -> tuple[pd.DataFrame, str]:
    """Up to :data:`PARITY_ROWS` raw rows to compare on, and where they came from.

    Without ``rows``, a bundled dataset that has every column of the model (adult, california) serves.
    """
    from gbdt2nn_core.data import BUNDLED_DATASETS, load_bundled

    names = model.encoder.schema.names
    if rows is None:
        for name in BUNDLED_DATASETS:
            dataset = load_bundled(name)
            if set(names) <= {str(c) for c in dataset.frame.columns}:
                frame, where = dataset.frame, f"bundled dataset {name!r}"
                break
        else:
            shown = ", ".join(map(repr, names[:4])) + (", ..." if len(names) > 4 else "")
            raise DataError(
                problem=f"no real rows to check the export on: no bundled dataset has the model's columns ({shown})",
                fix="pass rows with those columns (--data FILE, or rows=frame)",
            )
    elif isinstance(rows, np.ndarray):
        if rows.ndim != 2 or rows.shape[1] != len(names):
            raise DataError(
                problem=f"expected a 2-D array with {len(names)} columns, got shape {rows.shape}",
                fix="pass rows with the same columns as the training data",
            )
        frame, where = pd.DataFrame(rows, columns=list(names)), "the rows given"
    elif isinstance(rows, pd.DataFrame):
        frame, where = rows, "the rows given"
    else:
        raise DataError(problem=f"rows is a {type(rows).__name__}", fix="pass a pandas DataFrame or a 2-D array")
    if len(frame) > PARITY_ROWS:
        frame = frame.sample(PARITY_ROWS, random_state=0)
    return frame, where


# ---------------------------------------------------------------------------------------------------- helpers
def _check_target(target: Path) -> None:
    if target.is_dir():
        raise DataError(problem=f"{str(target)!r} is a folder", fix="pass a file path for the export, e.g. model.onnx")
    if not target.parent.is_dir():
        raise DataError(
            problem=f"the folder {str(target.parent)!r} does not exist", fix="create it first or choose another path"
        )


def _require_onnx() -> None:
    """Fail before any work when a package that ONNX export or its check needs is missing."""
    for package in ("onnx", "onnxruntime"):
        try:
            __import__(package)
        except ImportError:
            raise ConfigError(
                setting="format", value="onnx", fix=f"ONNX export needs {package}, which is not installed; {_EXTRA_FIX}"
            ) from None


def _record(model: DistilledModel, n_inputs: int) -> dict[str, Any]:
    """What a server needs besides the graph: task, labels, and how raw rows become ``z``."""
    from gbdt2nn_core.version import __version__

    n_outputs = model.student.n_outputs
    return {
        "format": "gbdt2nn-export",
        "gbdt2nn_version": __version__,
        "task": model.task,
        "classes": [c.item() if isinstance(c, np.generic) else c for c in model.target.classes],
        "input": {
            "name": "z",
            "dtype": "float32",
            "shape": ["n", n_inputs],
            "how": "encoded rows: DistilledModel.encode(frame), i.e. the 'encoder' below applied to the 'columns'",
        },
        "output": {
            "name": "margin",
            "shape": ["n"] if n_outputs == 1 else ["n", n_outputs],
            "how": {
                "regression": "the prediction",
                "binary": "logit of the second class: sigmoid(margin / temperature) is its probability",
                "multiclass": "one logit per class: softmax(margin / temperature) gives the probabilities",
            }[model.task],
            "temperature": model.student.temperature,
        },
        "columns": list(model.encoder.schema.names),
        "encoder": model.encoder.to_json(),
        "metadata": model.metadata,
    }


@contextlib.contextmanager
def _quiet_torch() -> Iterator[None]:
    """Hide torch's own deprecation notices and exporter chatter: the user asked for this format on purpose."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)  # the ONNX exporter's notes on constant folding
            yield
    finally:
        logger.setLevel(level)


def _torchscript_bytes(module: torch.nn.Module, record: str) -> bytes:
    with _quiet_torch():
        scripted = torch.jit.script(module)
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer, _extra_files={EXTRA_FILE: record})
    return buffer.getvalue()


def _torchscript_runner(data: bytes) -> Callable[[np.ndarray], np.ndarray]:
    with _quiet_torch():
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()  # type: ignore[no-untyped-call]

    def run(z: np.ndarray) -> np.ndarray:
        with torch.no_grad(), _quiet_torch():
            return loaded(torch.from_numpy(z)).numpy()  # type: ignore[no-any-return]

    return run


def _onnx_bytes(module: torch.nn.Module, example: np.ndarray, record: str) -> bytes:
    # torch's TorchScript-based exporter: it needs no onnxscript (whose onnx>=1.17 clashes with the pinned
    # onnx), takes a tenth of a second instead of seconds, and opset 17 runs on onnxruntime >= 1.14.
    import onnx

    buffer = io.BytesIO()
    with _quiet_torch():
        torch.onnx.export(
            module,
            (torch.from_numpy(example),),
            buffer,  # type: ignore[arg-type]  # the TorchScript-based exporter writes to file objects too
            input_names=["z"],
            output_names=["margin"],
            dynamic_axes={"z": {0: "n"}, "margin": {0: "n"}},
            opset_version=OPSET,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.helper.set_model_props(proto, {METADATA_KEY: record})
    proto.doc_string = "gbdt2nn GBDT2NN student: encoded rows z (n, D) -> margins; see metadata 'gbdt2nn'"
    return proto.SerializeToString()  # type: ignore[no-any-return]


def _onnx_runner(data: bytes) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])

    def run(z: np.ndarray) -> np.ndarray:
        return session.run(["margin"], {"z": z})[0]  # type: ignore[no-any-return]

    return run


def _max_abs_diff(exported: np.ndarray, reference: np.ndarray) -> float:
    exported = np.asarray(exported)
    if exported.shape != reference.shape:
        return math.inf
    difference = float(np.max(np.abs(exported.astype(np.float64) - reference.astype(np.float64))))
    return difference if math.isfinite(difference) else math.inf
