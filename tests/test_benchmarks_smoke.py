"""The benchmark harness (benchmarks/run.py) on toy sizes, so that its code paths cannot rot unnoticed.

Benchmarks are not tests: this checks that every suite runs and that the report holds what it promises (the
command, the machine, ratio tables, the value checks), not how fast anything is.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def adult_alignment_loss() -> str:
    """The loss ``alignment="auto"`` takes for adult's binary target with the alignment losses installed here."""
    from gbdt2nn_core.host.registry import get_registry
    from gbdt2nn_core.pipeline import DistillConfig

    return DistillConfig().alignment_for("binary", 1, 14, get_registry().names("alignment loss"))[0]


@pytest.fixture(scope="module")
def harness(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("run.py")


@pytest.fixture(scope="module")
def quick_run(
    harness: ModuleType, tmp_path_factory: pytest.TempPathFactory, single_thread_torch: None
) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            patch.setenv(name, "1")  # the harness pins them; the patch puts the old values back
        args = ["--quick", "--repeats", "1", "--e2e-in-process", "--threads", "1"]
        results = harness.main([*args, "--out", str(out / "BENCH.md"), "--json", str(out / "bench.json")])
    assert json.loads((out / "bench.json").read_text())["meta"]["quick"] is True
    return results, (out / "BENCH.md").read_text(encoding="utf-8")


def test_report_has_the_command_machine_and_every_section(quick_run: tuple[dict[str, Any], str]) -> None:
    _, report = quick_run
    assert "`python benchmarks/run.py --out BENCHMARKS.md`" in report
    assert "smoke run" in report
    for heading in ("## Headline ratios", "## 1. Teacher explanations", "## 2. Student training step",
                    "## 3. Inference", "## 4. End to end", "## Reading"):  # fmt: skip
        assert heading in report
    assert "logical cores" in report
    assert "load average 1/5/15 min" in report
    assert "quoted" in report
    assert "not re-measured" in report


def test_teacher_explanations_agree_and_the_cache_hits(quick_run: tuple[dict[str, Any], str]) -> None:
    results, _ = quick_run
    explain = results["explain"]
    assert explain["agree_1e-6"], explain["max_abs_diff"]
    assert set(explain["timings"]) == {
        "ours: plugin shap_values + ExplanationCache, first run",
        "ours: cached second run",
        "LightGBM predict(pred_contrib=True)",
        "shap.TreeExplainer(booster).shap_values",
    }
    assert all(t["median"] > 0 for t in explain["timings"].values())


def test_every_attributor_trains_a_joint_step(quick_run: tuple[dict[str, Any], str]) -> None:
    results, _ = quick_run
    ratios = results["train"]["ratio_to_plain"]
    assert ratios["plain (λ = 0)"]["median"] == pytest.approx(1.0)
    assert "plain (λ = 0), lookup first layer" in ratios
    with_column_path = {
        "structure (core default)",
        "gradient-x-input",
        "integrated gradients",
        "integrated gradients (default points)",
        "expected gradients (shap)",
        "expected gradients (default draws)",
    }
    variants = {", dense path (before)", "", ", lookup first layer"}
    expected = {f"{name}{variant}" for name in with_column_path for variant in variants} | {"gradient (saliency)"}
    assert {name.removeprefix("joint: ") for name in ratios if name.startswith("joint")} == expected
    assert set(results["train"]["ratio_to_lookup_plain"]) == {
        f"joint: {name}, lookup first layer" for name in with_column_path
    }


def test_inference_counts_flops_and_checks_compiled_teachers(quick_run: tuple[dict[str, Any], str]) -> None:
    results, _ = quick_run
    infer = results["infer"]
    assert infer["student_output_finite"]
    context = results["context"]
    hidden = [context["group_width"], *context["hidden"], 20]
    assert infer["macs_per_row"] == sum(context["groups"] * a * b for a, b in itertools.pairwise(hidden))
    for strategy, entry in infer["hummingbird"].items():
        if "error" not in entry:
            assert entry["max_abs_diff_vs_lightgbm"] < 1e-4, strategy
    pytest.importorskip("hummingbird.ml")
    assert "max_abs_diff_vs_lightgbm" in infer["hummingbird"]["default"]


def test_end_to_end_records_every_phase(quick_run: tuple[dict[str, Any], str]) -> None:
    results, _ = quick_run
    for mode in ("plain", "aligned"):
        (run,) = results["e2e"]["runs"][mode]
        phases = [p["phase"] for p in run["phases"]]
        for step in ("teacher (lightgbm)", "teacher TreeSHAP (test rows)", "leaf embedding", "student training"):
            assert step in phases, (mode, phases)
        # only the aligned student needs the training rows' TreeSHAP
        # the aligned run explains its aligned training rows ("teacher TreeSHAP (N aligned training rows)")
        training = [phase for phase in phases if phase.startswith("teacher TreeSHAP") and "training rows" in phase]
        assert bool(training) == (mode == "aligned"), phases
        assert len(run["epoch_s"]) == results["meta"]["sizes"]["epochs"]
        assert run["process_peak_mib"] > 0
        # the phases cover the run; a quick run lasts under a second, so a loaded machine's scheduling gaps
        # between phases (tens of milliseconds) get an absolute allowance too
        assert sum(p["seconds"] for p in run["phases"]) == pytest.approx(run["total_s"], rel=0.05, abs=0.25)
    # the report names the loss the aligned run recorded, the one alignment="auto" takes for adult's binary target
    expected = adult_alignment_loss()
    (aligned,) = results["e2e"]["runs"]["aligned"]
    assert aligned["alignment_loss"] == expected
    assert f"time per epoch, aligned (structure + `{expected}`)" in quick_run[1]


def test_report_renders_again_from_the_raw_json(
    harness: ModuleType, quick_run: tuple[dict[str, Any], str], tmp_path: Path
) -> None:
    results, report = quick_run
    (tmp_path / "raw.json").write_text(json.dumps(results, default=str), encoding="utf-8")
    harness.main(["--render-from", str(tmp_path / "raw.json"), "--out", str(tmp_path / "again.md")])
    assert (tmp_path / "again.md").read_text(encoding="utf-8") == report


def test_measure_interleaves_and_rotates(harness: ModuleType) -> None:
    from bench_measure import measure, paired_ratio

    calls: list[str] = []
    samples = measure({n: (lambda n=n: calls.append(n)) for n in "ABC"}, repeats=3, warmup=1)
    assert calls == list("ABC" + "ABC" + "BCA" + "CAB")
    assert all(len(times) == 3 for times in samples.values())
    assert paired_ratio([2.0, 4.0, 9.0], [1.0, 1.0, 3.0]) == {"median": 3.0, "min": 2.0, "max": 4.0, "n": 3}


# ------------------------------------------------------------------------------------------------ serving on a GPU
@pytest.fixture(scope="module")
def gpu_serving(load_benchmark: Callable[[str], ModuleType]) -> ModuleType:
    return load_benchmark("gpu_serving.py")


def test_gpu_serving_prepares_and_measures_every_case_on_the_cpu(
    gpu_serving: ModuleType, tmp_path: Path, single_thread_torch: None
) -> None:
    # the GPU machine is lent only now and then: the same code path runs here with --device cpu
    gpu_serving.main(["prepare", "--quick", "--dir", str(tmp_path / "in")])
    gpu_serving.main(["measure", "--dir", str(tmp_path / "in"), "--device", "cpu", "--batches", "300"])
    record = gpu_serving.measure(tmp_path / "in", device="cpu", batches=[300])
    cases = record["batches"]["300"]
    assert {"student: GPU, float32", "student: GPU, float32, per-group gather first layer"} <= set(cases)
    assert any(name.startswith("teacher: LightGBM predict") for name in cases)
    # the exported student and the reloaded boosters give the margins computed before export, on fresh hardware
    assert record["parity"]["student gpu float32 vs cpu"] < 1e-5
    assert record["parity"]["student gpu gather first layer vs cpu"] < 1e-5
    assert record["parity"]["teacher lightgbm on this machine vs prepared"] < 1e-9
    assert record["flops"]["finite"]


def test_gpu_record_renders_as_section_5(harness: ModuleType, quick_run: tuple[dict[str, Any], str]) -> None:
    from bench_report import render

    results, _ = quick_run
    record = json.loads((BENCHMARKS / "results" / "gpu-serving.json").read_text(encoding="utf-8"))
    report = render({**results, "gpu_serving": record})
    assert "## 5. Serving on a GPU" in report
    assert f"Measured **{record['generated']}**" in report
    assert "GPU serving (1,000,000 rows): student ÷ LightGBM predict" in report
    assert "**On a GPU**" in report


def test_report_says_whether_other_processes_shared_the_machine(harness: ModuleType) -> None:
    from bench_report import _load_words

    assert "shared with other busy processes" in _load_words([3.2, 2.0, 1.0], [1.1, 1.0, 1.0])
    assert "no other busy process" in _load_words([0.4, 0.6, 1.1], [1.0, 0.9, 1.0])


def test_measure_syncs_around_every_call(harness: ModuleType) -> None:
    # asynchronous (GPU) work is counted inside the timing: a sync before and after each call, warm-up included
    from bench_measure import measure

    events: list[str] = []
    measure({"A": lambda: events.append("A")}, repeats=2, warmup=1, sync=lambda: events.append("sync"))
    assert events == ["A", "sync"] + ["sync", "A", "sync"] * 2


def test_time_to_agreement_runs_every_schedule_and_plots(
    tmp_path: Path, single_thread_torch: None, load_benchmark: Callable[[str], ModuleType]
) -> None:
    script = load_benchmark("time_to_agreement.py")
    with pytest.MonkeyPatch.context() as patch:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            patch.setenv(name, "1")  # the script pins them; the patch puts the old values back
        assert script.main(["--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "time-to-agreement.json").read_text())
    assert set(result["runs"]) == set(script.SCHEDULES)
    assert all(len(run["curve"]) == result["epochs"] for run in result["runs"].values())
    assert result["runs"]["plain"]["treeshap_train_cpu_s"] == 0.0
    # every aligned run records the loss it trained with: the one alignment="auto" takes for adult's binary target
    expected = adult_alignment_loss()
    aligned = [run for run in result["runs"].values() if run["alignment_weight"] > 0]
    assert aligned
    assert {run["alignment_loss"] for run in aligned} == {expected}
    assert (tmp_path / "time-to-agreement.png").stat().st_size > 1000


def test_time_to_agreement_only_takes_names_with_commas_and_refuses_unknown_ones(
    load_benchmark: Callable[[str], ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    script = load_benchmark("time_to_agreement.py")
    parser = argparse.ArgumentParser()
    chosen = script._schedule_names(["all rows, every batch", "rows 0.1,rows 0.05"], parser)
    assert chosen == {"plain", "all rows, every batch", "rows 0.1", "rows 0.05"}
    assert script._schedule_names(None, parser) is None
    with pytest.raises(SystemExit):
        script._schedule_names(["rows 0.2"], parser)
    assert "no schedule named 'rows 0.2'" in capsys.readouterr().err


def test_deepgbm_measured_in_the_same_rounds_is_compared_round_by_round(
    harness: ModuleType, quick_run: tuple[dict[str, Any], str], tmp_path: Path
) -> None:
    """With ``--deepgbm``, DeepGBM's records (as deepgbm_reference.py writes them) replace the quoted figures and
    every ratio is paired by round; records built from ours at known multiples give known ratios."""
    import statistics

    from deepgbm_reference import TRAINING_PHASE

    results, quoted = quick_run
    assert "not re-measured" in quoted  # no --deepgbm: quoted
    measured = json.loads(json.dumps(results, default=str))
    plain = measured["e2e"]["runs"]["plain"]
    measured["e2e"]["runs"]["deepgbm"] = [
        {
            "epoch_s": [2 * statistics.median(run["epoch_s"])] * 3,
            "total_s": 4 * run["total_s"],
            "process_peak_mib": 0.5 * run["process_peak_mib"],
            "features": 52,
            "phases": [{"phase": TRAINING_PHASE, "seconds": 1.0, "peak_mib": 1.0}],
            "metrics": {"student_test_auc": 0.9, "teacher_test_auc": 0.92},
        }
        for run in plain
    ]
    (tmp_path / "raw.json").write_text(json.dumps(measured), encoding="utf-8")
    harness.main(["--render-from", str(tmp_path / "raw.json"), "--out", str(tmp_path / "measured.md")])
    report = (tmp_path / "measured.md").read_text(encoding="utf-8")
    assert "not re-measured" not in report
    assert "**measured in this run**" in report
    assert "| plain epoch ÷ DeepGBM's (measured in this run" in report
    assert "**0.5×** (0.5–0.5) against DeepGBM's" in report  # issue 11's row: ours ÷ twice ours
    assert "**2×** (2–2) against DeepGBM's" in report  # peak RSS: ours ÷ half of ours
    assert "| time | **0.25×** (0.25–0.25) |" in report  # end to end: ours ÷ four times ours
