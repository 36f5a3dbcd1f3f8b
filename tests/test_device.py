"""The ``device`` setting (issue 13): resolving it, refusing what this machine lacks, and everything after the
teacher on the resolved device. No test needs a GPU: CUDA's presence is simulated where the answer depends on it,
and the tests that train use ``auto``, which is the GPU on a machine that has one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pandas as pd
import pytest
import torch

from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.host.device import (
    check_device,
    in_chunks,
    inference_chunk_rows,
    module_device,
    resolve_device,
    rows_on,
)

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def _gpus(monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """Pretend this machine has ``count`` CUDA devices (0: none)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


# ------------------------------------------------------------------------------------------------ resolution
@pytest.mark.parametrize(
    ("name", "count", "expected"),
    [
        ("auto", 0, "cpu"),
        ("auto", 2, "cuda:0"),
        ("cpu", 2, "cpu"),
        ("cuda", 1, "cuda:0"),
        ("cuda:1", 2, "cuda:1"),
        (" CUDA:1 ", 2, "cuda:1"),
    ],
)
def test_resolve_device(monkeypatch: pytest.MonkeyPatch, name: str, count: int, expected: str) -> None:
    _gpus(monkeypatch, count)
    assert resolve_device(name) == torch.device(expected)


def test_resolve_device_accepts_a_torch_device(monkeypatch: pytest.MonkeyPatch) -> None:
    _gpus(monkeypatch, 1)
    assert resolve_device(torch.device("cuda", 0)) == torch.device("cuda", 0)
    assert check_device(torch.device("cpu")) == "cpu"


@pytest.mark.parametrize(
    ("name", "count", "says"),
    [
        ("cuda", 0, "this machine has no CUDA GPU that PyTorch can use; use --device cpu or auto"),
        ("cuda:0", 0, "this machine has no CUDA GPU that PyTorch can use; use --device cpu or auto"),
        ("cuda:3", 2, "this machine has 2 CUDA devices (cuda:0 to cuda:1); use --device cpu or auto"),
        ("cuda:1", 1, "this machine has 1 CUDA device (cuda:0 to cuda:0); use --device cpu or auto"),
    ],
)
def test_a_missing_device_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, name: str, count: int, says: str
) -> None:
    _gpus(monkeypatch, count)
    with pytest.raises(ConfigError) as raised:
        resolve_device(name)
    assert raised.value.setting == "device"
    assert raised.value.value == name
    assert says in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("name", "hint"),
    [("gpu", "did you mean 'cuda'?"), ("tpu", "did you mean 'cpu'?"), ("atuo", "did you mean 'auto'?")],
)
def test_an_unknown_device_name_suggests_the_closest(name: str, hint: str) -> None:
    with pytest.raises(ConfigError) as raised:
        check_device(name)
    assert str(raised.value) == f"invalid device={name!r}: {hint} use one of auto, cpu, cuda, cuda:N"


@pytest.mark.parametrize("value", [0, None, "cuda:-1", "cuda:x", ""])
def test_malformed_device_settings_are_refused(value: object) -> None:
    with pytest.raises(ConfigError):
        check_device(value)


def test_config_and_estimators_check_the_spelling() -> None:
    from gbdt2nn_core import GBDT2NNClassifier
    from gbdt2nn_core.pipeline import DistillConfig

    assert DistillConfig().device == "auto"
    assert DistillConfig(device="CPU").device == "cpu"
    with pytest.raises(ConfigError, match="did you mean 'cuda'"):
        DistillConfig(device="gpu")
    with pytest.raises(ConfigError, match="did you mean 'cuda'"):
        GBDT2NNClassifier(device="gpu").fit(np.zeros((4, 2)), [0, 1, 0, 1])


def test_seeded_fits_fork_the_random_state_of_their_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from gbdt2nn_core.host.device import rng_devices

    _gpus(monkeypatch, 2)
    assert rng_devices("cpu") == []
    assert rng_devices(torch.device("cuda", 1)) == [1]
    assert rng_devices("cuda") == [0]


def test_inference_chunks_are_large_on_an_accelerator() -> None:
    assert inference_chunk_rows(torch.device("cpu"), 2048) == 2048
    assert inference_chunk_rows(torch.device("cuda", 0), 2048) >= 65_536


@pytest.mark.parametrize("rows", [0, 1, 7, 512, 1000])
def test_in_chunks_gives_the_whole_pass(rows: int) -> None:
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3)).eval()
    z = torch.randn(rows, 6)
    with torch.no_grad():
        whole = network(z)
    chunked = in_chunks(network, z, 256, torch.device("cpu"), to_cpu=True)
    assert chunked.shape == (rows, 3)  # no rows: the empty result keeps the trailing shape
    assert not chunked.requires_grad  # detached even outside no_grad
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)


def test_rows_on_the_cpu_are_the_same_values_without_a_copy() -> None:
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    tensor = rows_on(values, torch.device("cpu"))
    assert tensor.device == torch.device("cpu")
    assert np.shares_memory(tensor.numpy(), values)
    assert torch.equal(
        rows_on(values, torch.device("cpu"), torch.float64), torch.as_tensor(values, dtype=torch.float64)
    )


def test_rows_that_do_not_fit_on_the_gpu_are_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused before any copy (no GPU needed: the free memory is simulated), rather than CUDA's out-of-memory error
    half-way through training."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1_000_000, 80 * 2**30))
    with pytest.raises(ConfigError) as raised:
        rows_on(np.zeros((1000, 250), dtype=np.float32), torch.device("cuda", 0))  # 1 MB of rows, 1 MB free
    assert raised.value.setting == "device"
    assert "more than half of its free" in str(raised.value)
    assert "use --device cpu" in str(raised.value)


# ------------------------------------------------------------------------------------------------ before the teacher
def test_a_missing_gpu_stops_fit_before_the_teacher_trains(
    monkeypatch: pytest.MonkeyPatch, adult_tiny: pd.DataFrame
) -> None:
    from gbdt2nn_core import GBDT2NNClassifier
    from gbdt2nn_core.kit.booster_teacher import BoosterTeacher

    _gpus(monkeypatch, 0)
    trained: list[str] = []
    monkeypatch.setattr(BoosterTeacher, "fit", lambda self, *a, **k: trained.append("teacher"))
    X, y = adult_tiny.drop(columns="income_gt_50k"), adult_tiny["income_gt_50k"]
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        GBDT2NNClassifier(device="cuda").fit(X, y)
    assert trained == []


def test_a_missing_gpu_stops_the_cli_before_the_teacher_trains(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from gbdt2nn_core.cli import main
    from gbdt2nn_core.kit.booster_teacher import BoosterTeacher

    _gpus(monkeypatch, 0)
    trained: list[str] = []
    monkeypatch.setattr(BoosterTeacher, "fit", lambda self, *a, **k: trained.append("teacher"))
    for command in (["distill"], ["experiment", "--out", str(tmp_path / "experiment")]):
        assert main([*command, "--device", "cuda"]) != 0
        assert capsys.readouterr().err.strip().startswith("gbdt2nn: error: invalid device='cuda': this machine has")
    assert trained == []
    assert not (tmp_path / "experiment").exists()


# ------------------------------------------------------------------------------------------------ training on it
class _DeviceSpy:
    """Records the device of every tensor that enters any module's forward (losses included) or the alignment loss."""

    def __init__(self) -> None:
        self.seen: set[torch.device] = set()
        self.calls = 0

    def record(self, *values: Any) -> None:
        for value in values:
            if isinstance(value, torch.Tensor):
                self.seen.add(value.device)
                self.calls += 1


def _small_inputs(student_inputs: Any, adult_teacher: Any, *, device: Any, alignment: Any = None) -> Any:
    from gbdt2nn_core.data.encoding import InputEncoder
    from gbdt2nn_core.host.interfaces import ValidationRows

    teacher, X, y = adult_teacher
    encoder = InputEncoder.fit(X, _schema(X))
    inputs = student_inputs(
        teacher, encoder, X, y, "binary", margin=teacher.predict_margin(X), background_rows=50,
        alignment=alignment, device=device,
    )  # fmt: skip
    # validation rows: early stopping's loss and the calibration's temperature are computed on the device too
    return attrs.evolve(inputs, validation=ValidationRows(z=inputs.z[:60], y=inputs.y[:60]))


def _schema(X: pd.DataFrame) -> Any:
    from gbdt2nn_core.data import TabularSchema

    return TabularSchema.infer(X)


@pytest.mark.parametrize("student_name", ["gbdt2nn", "mlp"])
def test_every_tensor_a_training_step_touches_is_on_the_modules_device(
    student_inputs: Any, adult_teacher: Any, monkeypatch: pytest.MonkeyPatch, student_name: str
) -> None:
    """Aligned training (attributor, background, TreeSHAP targets), the BatchNorm pass and calibration: every input
    of every forward and of the alignment loss is on the device the run asked for (the GPU, where there is one)."""
    from gbdt2nn_core.host.registry import Registry
    from gbdt2nn_core.kit.alignment import Alignment

    registry = Registry()
    device = resolve_device("auto")
    spy = _DeviceSpy()
    teacher, X, _ = adult_teacher
    aligned = np.arange(0, len(X), 3)
    shap = teacher.shap_values(X.iloc[aligned]).values
    loss = registry.alignment_loss("mse")

    def spied_loss(student_attr: torch.Tensor, teacher_attr: torch.Tensor) -> torch.Tensor:
        spy.record(student_attr, teacher_attr)
        return loss(student_attr, teacher_attr)

    alignment = Alignment(
        attributor=registry.attributor("gradient-x-input"),
        loss=spied_loss,
        teacher_attributions=shap,
        weight=1.0,
        rows=aligned,
    )
    student = registry.student(student_name, seed=0, epochs=1, batch_size=64, hidden=(16, 8))
    original = torch.nn.Module.__call__

    def watched_call(module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        spy.record(*args)
        return original(module, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__call__", watched_call)
    student.fit(_small_inputs(student_inputs, adult_teacher, device=device, alignment=alignment))
    assert spy.calls > 100
    assert spy.seen == {device}
    assert module_device(student.module) == device


def test_device_cpu_is_the_default_bit_for_bit(student_inputs: Any, adult_teacher: Any) -> None:
    """Inputs that name no device (as every student plugin written before the option got them) and ``"cpu"``
    give the same network, to the bit."""
    from gbdt2nn_core.host.interfaces import StudentInputs
    from gbdt2nn_core.host.registry import Registry

    registry = Registry()
    explicit = _small_inputs(student_inputs, adult_teacher, device="cpu")
    fields = {name: getattr(explicit, name) for name in ("teacher", "leaves", "z", "y", "task", "teacher_margin")}
    implicit = StudentInputs(
        **fields,
        column_of=explicit.column_of,
        aggregation=explicit.aggregation,
        background=explicit.background,
        validation=explicit.validation,
    )
    options = {"seed": 0, "epochs": 2, "batch_size": 64, "hidden": (16, 8)}
    first = registry.student("gbdt2nn", **options).fit(implicit)
    second = registry.student("gbdt2nn", **options).fit(explicit)
    for (name, a), (_, b) in zip(first.module.state_dict().items(), second.module.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert np.array_equal(first.predict_margin(explicit.z), second.predict_margin(explicit.z))


# ------------------------------------------------------------------------------------------------ saving, loading
def test_a_saved_student_loads_on_the_cpu(adult_run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights are written from the CPU and read with safetensors' ``device="cpu"`` (its ``map_location``), so a
    student trained on a GPU loads on a machine without one; ``device=`` at load moves it."""
    import safetensors.torch

    from gbdt2nn_core import GBDT2NNClassifier
    from gbdt2nn_core.pipeline.runfolder import write_run

    _description, tensors = adult_run.student.state()
    assert {tensor.device for tensor in tensors.values()} == {torch.device("cpu")}
    write_run(tmp_path / "run", adult_run)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["device"] == "auto"
    assert config["resolved_device"] == str(resolve_device("auto"))

    asked: list[Any] = []
    load_file = safetensors.torch.load_file

    def spied_load_file(path: str, device: Any = "cpu") -> dict[str, torch.Tensor]:
        asked.append(device)
        return load_file(path, device=device)

    monkeypatch.setattr(safetensors.torch, "load_file", spied_load_file)
    loaded = GBDT2NNClassifier.load(tmp_path / "run")
    assert "cpu" in asked
    assert set(asked) == {"cpu"}
    assert module_device(loaded.student_.module) == torch.device("cpu")
    assert loaded.device == "cpu"
    assert loaded.device_ == "cpu"
    rows = adult_run.data.test_frame.iloc[:50]
    expected = adult_run.student.predict_margin(adult_run.data.encoder.transform(rows))
    assert np.allclose(loaded.predict_margin(rows), expected, atol=1e-5)


def test_load_with_a_missing_device_is_refused(adult_run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gbdt2nn_core import GBDT2NNClassifier
    from gbdt2nn_core.pipeline.runfolder import write_run

    write_run(tmp_path / "run", adult_run)
    _gpus(monkeypatch, 0)
    with pytest.raises(ConfigError, match="no CUDA GPU"):
        GBDT2NNClassifier.load(tmp_path / "run", device="cuda")


def test_estimator_params_round_trip_with_device(adult_tiny: pd.DataFrame) -> None:
    from sklearn.base import clone

    from gbdt2nn_core import GBDT2NNClassifier, GBDT2NNRegressor

    for cls in (GBDT2NNClassifier, GBDT2NNRegressor):
        estimator = cls(device="cuda:1", epochs=3)
        assert estimator.get_params()["device"] == "cuda:1"
        assert clone(estimator).get_params()["device"] == "cuda:1"
        assert estimator.set_params(device="cpu").get_params()["device"] == "cpu"
        assert cls().get_params()["device"] == "auto"
    X, y = adult_tiny.drop(columns="income_gt_50k"), adult_tiny["income_gt_50k"]
    fitted = GBDT2NNClassifier(
        device="cpu", epochs=1, teacher_options={"n_estimators": 5, "num_threads": 1}, alignment_weight=0.0
    ).fit(X, y)
    assert fitted.device_ == "cpu"
    before = fitted.predict_proba(X)
    fitted.set_params(device="auto")  # the same device here; a GPU where there is one
    assert np.allclose(fitted.predict_proba(X), before, atol=1e-5)
    assert fitted.device_ == str(resolve_device("auto"))
    fitted.partial_fit(X.iloc[:64], y.iloc[:64])  # online update on the estimator's device
    assert module_device(fitted.student_.module) == resolve_device("auto")


def test_predict_and_explain_run_on_the_device_asked_for(
    adult_run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``gbdt2nn predict/explain --device``: the same table on ``auto`` (the GPU where there is one) as on the CPU,
    and the network is moved there (``Student.move_to``)."""
    from gbdt2nn_core.cli import main
    from gbdt2nn_core.host.interfaces import Student
    from gbdt2nn_core.pipeline.runfolder import write_run

    write_run(tmp_path / "run", adult_run)
    adult_run.data.test_frame.iloc[:100].to_csv(tmp_path / "rows.csv", index=False)
    moved: list[str] = []
    move_to = Student.move_to

    def spied(self: Student, device: Any) -> Student:
        moved.append(str(device))
        return move_to(self, device)

    monkeypatch.setattr(Student, "move_to", spied)
    tables = {}
    for command in ("predict", "explain"):
        for device in ("cpu", "auto"):
            out = tmp_path / f"{command}-{device}.csv"
            argv = [command, "--model", str(tmp_path / "run"), "--data", str(tmp_path / "rows.csv"), "--out", str(out)]
            assert main([*argv, "--device", device]) == 0
            tables[command, device] = pd.read_csv(out)
        pd.testing.assert_frame_equal(tables[command, "cpu"], tables[command, "auto"], atol=1e-5)
    assert moved == ([str(resolve_device("auto"))] * 2 if resolve_device("auto").type != "cpu" else [])


def test_experiment_settings_carry_the_device_and_resume_anywhere() -> None:
    from gbdt2nn_core.experiment.config import ExperimentConfig

    on_gpu, on_cpu = ExperimentConfig(device="cuda:1"), ExperimentConfig(device="cpu")
    assert on_gpu.distill_config(3).device == "cuda:1"
    assert on_gpu.digest() == on_cpu.digest()  # the device changes where, not what: a run resumes on any machine
    with pytest.raises(ConfigError, match="did you mean 'cuda'"):
        ExperimentConfig(device="gpu")


def test_the_run_file_and_the_flag_set_the_device(tmp_path: Path) -> None:
    from gbdt2nn_core.cli import build_parser
    from gbdt2nn_core.cli.distill_cmd import _settings

    run_file = tmp_path / "run.toml"
    run_file.write_text('[run]\ndevice = "cpu"\n', encoding="utf-8")
    parser = build_parser()
    assert _settings(parser.parse_args(["distill", "--config", str(run_file)]))["config"]["device"] == "cpu"
    flagged = parser.parse_args(["distill", "--config", str(run_file), "--device", "cuda:1"])
    assert _settings(flagged)["config"]["device"] == "cuda:1"  # the flag wins
    assert "device" not in _settings(parser.parse_args(["distill"]))["config"]  # DistillConfig's default: auto
