"""TorchScript and ONNX exports give the PyTorch student's margins on real rows, at any batch size.

The references are independent runtimes: ``torch.jit.load`` and onnxruntime run the written files, and their
margins are compared with the PyTorch module's on real encoded rows (adult for binary, wine for multiclass).
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from gbdt2nn_core.cli import main
from gbdt2nn_core.data.encoding import InputEncoder
from gbdt2nn_core.errors import ExportError
from gbdt2nn_core.pipeline.distill import DistillRun
from gbdt2nn_core.pipeline.export import (
    EXTRA_FILE,
    METADATA_KEY,
    ExportReport,
    export_model,
    export_onnx,
    export_torchscript,
)
from gbdt2nn_core.pipeline.persistence import DistilledModel

try:
    import onnx
    import onnxruntime
except ImportError:  # pragma: no cover - the test dependency group installs both
    onnx = onnxruntime = None

#: ONNX tests need onnx and onnxruntime (the ``export`` extra); TorchScript tests need only torch.
needs_onnx = pytest.mark.skipif(onnxruntime is None or onnx is None, reason="pip install 'gbdt2nn-core[export]'")

pytestmark = [
    pytest.mark.usefixtures("single_thread_torch"),
    # the tests load TorchScript as a user would; torch warns that TorchScript is deprecated
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.load` is deprecated:DeprecationWarning"),
]

TARGET = "income_gt_50k"
#: What "matches" means for the independent runtimes (the export's own check uses 1e-4).
CLOSE = 1e-5


def _model(run: DistillRun) -> DistilledModel:
    return DistilledModel(
        student=run.student, encoder=run.data.encoder, target=run.data.target, metadata={"teacher": "lightgbm"}
    )


@pytest.fixture(scope="module")
def binary(adult_run: DistillRun) -> DistilledModel:
    return _model(adult_run)


@pytest.fixture(scope="module")
def adult_rows(adult_dataset: Any) -> pd.DataFrame:
    """1,000 real adult rows as a user has them (strings, integers, the target column too)."""
    return adult_dataset.frame.sample(1000, random_state=3).reset_index(drop=True)


@pytest.fixture(scope="module")
def wine() -> pd.DataFrame:
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    return sklearn_datasets.load_wine(as_frame=True).frame


@pytest.fixture(scope="module")
def multiclass(wine: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory, single_thread_torch: None) -> Any:
    """A 3-class student distilled from scikit-learn's wine data (178 rows, 13 numeric columns)."""
    from gbdt2nn_core.pipeline.distill import DistillConfig, distill

    config = DistillConfig(
        teacher_options={"n_estimators": 5, "num_leaves": 7, "min_child_samples": 5, "num_threads": 1},
        student_options={"epochs": 1, "n_groups": 3, "hidden": (16, 16), "batch_size": 64},
        alignment_weight=0.0,
        cache_dir=str(tmp_path_factory.mktemp("wine-cache")),
    )
    return _model(distill(wine, "target", config))


def _pytorch_margins(model: DistilledModel, z: np.ndarray) -> np.ndarray:
    module = copy.deepcopy(model.student.module).eval()
    module.use_lookup(None)  # exported graphs hold the dense first layer (the lookup reads z): like for like
    with torch.no_grad():
        return module(torch.from_numpy(z)).numpy()  # type: ignore[no-any-return]


def _torchscript_margins(path: Path, z: np.ndarray) -> np.ndarray:
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        return loaded(torch.from_numpy(z)).numpy()  # type: ignore[no-any-return]


def _onnx_margins(path: Path, z: np.ndarray) -> np.ndarray:
    assert onnxruntime is not None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["margin"], {"z": z})[0]  # type: ignore[no-any-return]


RUNTIMES = {"torchscript": _torchscript_margins, "onnx": _onnx_margins}
SUFFIX = {"torchscript": ".pt", "onnx": ".onnx"}


@pytest.mark.parametrize("export_format", ["torchscript", pytest.param("onnx", marks=needs_onnx)])
def test_binary_export_matches_pytorch_at_batch_sizes_1_and_1000(
    binary: DistilledModel, adult_rows: pd.DataFrame, tmp_path: Path, export_format: str
) -> None:
    path = tmp_path / f"adult{SUFFIX[export_format]}"
    report = export_model(binary, path, export_format, rows=adult_rows, source="adult sample")

    assert isinstance(report, ExportReport)
    assert report.rows == 1000
    assert report.batch_sizes == (1, 1000)
    assert report.max_abs_diff <= 1e-4
    assert report.source == "adult sample"
    assert report.n_outputs == 1
    z = binary.encode(adult_rows)
    assert report.n_inputs == z.shape[1]
    expected = _pytorch_margins(binary, z)
    for size in (1, 1000):
        margins = RUNTIMES[export_format](path, z[:size])
        assert margins.shape == (size,)
        np.testing.assert_allclose(margins, expected[:size], rtol=0, atol=CLOSE)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary file left


@pytest.mark.parametrize("export_format", ["torchscript", pytest.param("onnx", marks=needs_onnx)])
def test_multiclass_export_gives_one_margin_per_class(
    multiclass: DistilledModel, wine: pd.DataFrame, tmp_path: Path, export_format: str
) -> None:
    path = tmp_path / f"wine{SUFFIX[export_format]}"
    report = export_model(multiclass, path, export_format, rows=wine)
    assert report.n_outputs == 3
    assert report.rows == len(wine)
    assert report.max_abs_diff <= 1e-4
    z = multiclass.encode(wine)
    expected = _pytorch_margins(multiclass, z)
    for size in (1, len(z)):
        margins = RUNTIMES[export_format](path, z[:size])
        assert margins.shape == (size, 3)
        np.testing.assert_allclose(margins, expected[:size], rtol=0, atol=CLOSE)
    # the exported margins give the student's own class probabilities
    probabilities = torch.softmax(torch.from_numpy(RUNTIMES[export_format](path, z)), dim=1).numpy()
    np.testing.assert_allclose(probabilities, multiclass.predict_proba(wine), atol=1e-5)


@needs_onnx
def test_exports_carry_the_encoder_that_prepares_their_input(
    binary: DistilledModel, adult_rows: pd.DataFrame, tmp_path: Path
) -> None:
    export_torchscript(binary, tmp_path / "m.pt", rows=adult_rows)
    export_onnx(binary, tmp_path / "m.onnx", rows=adult_rows)

    extra = {EXTRA_FILE: ""}
    torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    from_torchscript = json.loads(extra[EXTRA_FILE])
    proto = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(proto)
    from_onnx = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    assert from_torchscript == from_onnx

    record = from_onnx
    assert record["task"] == "binary"
    assert record["classes"] == [0, 1]
    assert record["columns"] == list(binary.encoder.schema.names)
    assert record["input"]["shape"] == ["n", binary.encoder.n_encoded]
    assert record["output"]["name"] == "margin"
    # a server can rebuild the encoding from the file alone
    encoder = InputEncoder.from_json(record["encoder"])
    raw = adult_rows.drop(columns=[TARGET]).head(50)
    np.testing.assert_array_equal(encoder.transform(encoder.schema.to_frame(raw)), binary.encode(raw))
    assert [i.name for i in proto.graph.input] == ["z"]
    assert [o.name for o in proto.graph.output] == ["margin"]


def test_without_rows_the_bundled_dataset_with_the_model_columns_is_used(
    binary: DistilledModel, tmp_path: Path
) -> None:
    report = export_torchscript(binary, tmp_path / "m.pt")
    assert report.source == "bundled dataset 'adult'"
    assert report.rows == 1000
    assert report.max_abs_diff <= 1e-4


def test_a_run_folder_path_is_accepted(adult_run: DistillRun, tmp_path: Path, adult_rows: pd.DataFrame) -> None:
    from gbdt2nn_core.pipeline.runfolder import write_run

    folder = write_run(tmp_path / "run", adult_run)
    report = export_torchscript(folder, tmp_path / "m.pt", rows=adult_rows.head(10))
    assert report.rows == 10
    z = _model(adult_run).encode(adult_rows.head(10))
    np.testing.assert_allclose(_torchscript_margins(tmp_path / "m.pt", z), _pytorch_margins(_model(adult_run), z))


@needs_onnx
def test_a_failed_parity_check_writes_nothing_and_keeps_an_older_file(
    binary: DistilledModel, adult_rows: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gbdt2nn_core.pipeline import export

    original = export._onnx_runner
    monkeypatch.setattr(export, "_onnx_runner", lambda data: lambda z: original(data)(z) + 1e-3)
    older = tmp_path / "m.onnx"
    older.write_bytes(b"the export of yesterday")
    with pytest.raises(ExportError) as info:
        export_onnx(binary, older, rows=adult_rows)
    error = info.value
    assert error.format == "onnx"
    assert error.rows == 1000
    assert error.max_abs_diff == pytest.approx(1e-3, rel=1e-2)
    assert error.tolerance == 1e-4
    assert "\n" not in str(error)
    assert older.read_bytes() == b"the export of yesterday"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@needs_onnx
def test_export_leaves_the_model_as_it_was(binary: DistilledModel, tmp_path: Path, adult_rows: pd.DataFrame) -> None:
    module = binary.student.module
    before = {k: v.clone() for k, v in module.state_dict().items()}
    training = module.training
    export_onnx(binary, tmp_path / "m.onnx", rows=adult_rows.head(20))
    assert module.training == training
    for key, value in module.state_dict().items():
        assert torch.equal(value, before[key]), key


@needs_onnx
def test_the_exported_graph_is_what_a_server_runs_end_to_end(
    binary: DistilledModel, adult_rows: pd.DataFrame, tmp_path: Path
) -> None:
    """Raw rows -> DistilledModel.encode -> onnxruntime -> sigmoid(margin / temperature) gives the student's
    (calibrated) probabilities; the temperature is the one the export records."""
    export_onnx(binary, tmp_path / "m.onnx", rows=adult_rows)
    raw = adult_rows.drop(columns=[TARGET]).head(300)
    margin = _onnx_margins(tmp_path / "m.onnx", binary.encode(raw))
    proto = onnx.load(str(tmp_path / "m.onnx"))
    record = json.loads({p.key: p.value for p in proto.metadata_props}[METADATA_KEY])
    temperature = record["output"]["temperature"]
    assert temperature == binary.student.temperature
    np.testing.assert_allclose(1 / (1 + np.exp(-margin / temperature)), binary.predict_proba(raw)[:, 1], atol=1e-5)


# ------------------------------------------------------------------------------------------- the command
@pytest.fixture
def run_folder(
    adult_run: DistillRun, tmp_path: Path, adult_rows: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> Path:
    from gbdt2nn_core.pipeline.runfolder import write_run

    write_run(tmp_path / "run", adult_run)
    adult_rows.head(300).to_csv(tmp_path / "rows.csv", index=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GBDT2NN_DEBUG", raising=False)
    return tmp_path / "run"


@pytest.mark.parametrize(
    ("out", "export_format"), [pytest.param("m.onnx", "onnx", marks=needs_onnx), ("m.pt", "torchscript")]
)
def test_export_command_reports_parity_and_writes_a_loadable_file(
    run_folder: Path, capsys: pytest.CaptureFixture[str], out: str, export_format: str
) -> None:
    code = main(["export", "--model", "run", "--out", out, "--data", "rows.csv", "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    report = json.loads(captured.out)
    assert report["format"] == export_format  # from the suffix
    assert report["rows"] == 300
    assert report["source"] == "rows.csv"
    assert report["max_abs_diff"] <= 1e-4
    notes = captured.err.splitlines()
    assert "gbdt2nn: note: rows.csv: ignoring 1 column(s) the model does not use: 'income_gt_50k'" in notes
    assert all(line.startswith("gbdt2nn: note: ") for line in notes)
    from gbdt2nn_core.pipeline.persistence import load_model

    model = load_model(run_folder)
    raw = pd.read_csv("rows.csv")
    z = model.encode(raw)
    np.testing.assert_allclose(RUNTIMES[export_format](Path(out), z), model.predict_margin(raw), atol=CLOSE)


@needs_onnx
def test_export_command_prints_one_summary_line(run_folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", "--model", "run", "--out", "m.bin", "--format", "torchscript"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    (line,) = captured.out.splitlines()
    assert line.startswith("wrote m.bin (torchscript: z float32 (n, ")
    assert "parity on 1000 rows of bundled dataset 'adult' (batch sizes 1 and 1000): max |margin difference| " in line
    assert captured.err == ""
    # --overwrite replaces it; without it, the file is kept
    assert main(["export", "--model", "run", "--out", "m.bin", "--format", "onnx"]) == 2
    assert torch.jit.load("m.bin") is not None
    assert main(["export", "--model", "run", "--out", "m.bin", "--format", "onnx", "--overwrite"]) == 0
    onnx.checker.check_model(onnx.load("m.bin"))


def test_torchscript_file_round_trips_through_bytes(binary: DistilledModel, tmp_path: Path) -> None:
    """The file is plain TorchScript: loadable from bytes too (as a model server does)."""
    export_torchscript(binary, tmp_path / "m.pt")
    loaded = torch.jit.load(io.BytesIO((tmp_path / "m.pt").read_bytes()))
    assert loaded(torch.zeros(2, binary.encoder.n_encoded)).shape == (2,)
