"""``gbdt2nn distill``: one-line errors that leave nothing behind, and a complete tiny run folder."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from gbdt2nn_core.cli import main
from gbdt2nn_core.host.registry import get_registry
from gbdt2nn_core.pipeline.persistence import load_model

pytestmark = pytest.mark.usefixtures("single_thread_torch")

TARGET = "income_gt_50k"


@pytest.fixture(autouse=True)
def quiet_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A private TreeSHAP cache, no debug tracebacks, a wide plain terminal and a fresh plugin registry."""
    monkeypatch.setenv("GBDT2NN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "160")
    for name in ("GBDT2NN_DEBUG", "GBDT2NN_DISABLE_PLUGINS", "FORCE_COLOR"):
        monkeypatch.delenv(name, raising=False)
    get_registry.cache_clear()
    yield
    get_registry.cache_clear()


#: A 10-tree single-thread teacher: OpenMP threads spinning on shared cores make LightGBM very slow.
SMALL_TEACHER = [
    *("--teacher-option", "n_estimators=10"),
    *("--teacher-option", "num_leaves=15"),
    *("--teacher-option", "num_threads=1"),
]


@pytest.fixture
def workdir(adult_dataset: Any, tmp_path: Path) -> Path:
    """A folder with ``small.csv`` (500 adult rows) and nothing else (the cache lives beside it)."""
    folder = tmp_path / "work"
    folder.mkdir()
    adult_dataset.frame.sample(500, random_state=0).to_csv(folder / "small.csv", index=False)
    return folder


def _assert_one_line_error(capsys: pytest.CaptureFixture[str], code: int, *needles: str) -> str:
    captured = capsys.readouterr()
    assert code != 0
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("gbdt2nn: error: ")
    assert "Traceback" not in captured.err + captured.out
    for needle in needles:
        assert needle in lines[0]
    return lines[0]


def _assert_nothing_written(workdir: Path) -> None:
    assert sorted(p.name for p in workdir.iterdir()) == ["small.csv"]  # no run folder, no *.partial staging


@pytest.mark.parametrize(
    ("arguments", "needles"),
    [
        pytest.param(["--data", "nowhere.csv", "--target", TARGET], ["'nowhere.csv' does not exist"], id="no-file"),
        pytest.param(["--data", "small.csv", "--target", "income"], ["'income'", "'income_gt_50k'"], id="no-target"),
        pytest.param(
            ["--data", "small.csv", "--target", TARGET, "--attributor", "gradiant"],
            ["Did you mean 'gradient'"],
            id="attributor-typo",
        ),
        pytest.param(
            ["--data", "small.csv", "--target", TARGET, "--alignment", "cosin"],
            ["Did you mean 'cosine'"],
            id="loss-typo",
        ),
        pytest.param(["--data", "small.csv", "--target", TARGET, "--epochs", "-1"], ["epochs", "-1"], id="epochs"),
        pytest.param(
            ["--data", "small.csv", "--target", TARGET, "--alignment-weight", "-0.5"],
            ["alignment", "-0.5"],
            id="weight",
        ),
        pytest.param(
            ["--data", "small.csv", "--target", TARGET, "--teacher-option", "n_estimators"],
            ["--teacher-option", "KEY=VALUE"],
            id="option-without-value",
        ),
        pytest.param(["--data", "small.csv"], ["--target"], id="data-without-target"),
    ],
)
def test_errors_are_one_line_and_leave_nothing_behind(
    workdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    arguments: list[str],
    needles: list[str],
) -> None:
    monkeypatch.chdir(workdir)
    code = main(["distill", *arguments, "--out", "run"])
    _assert_one_line_error(capsys, code, *needles)
    _assert_nothing_written(workdir)


def test_corrupt_csv(workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workdir)
    text = (workdir / "small.csv").read_text().splitlines()
    text[40] += ",1,2,3"  # one ragged row in the middle
    (workdir / "small.csv").write_text("\n".join(text))
    code = main(["distill", "--data", "small.csv", "--target", TARGET, "--out", "run"])
    _assert_one_line_error(capsys, code, "small.csv")
    _assert_nothing_written(workdir)


def test_existing_output_folder_needs_overwrite(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workdir)
    (workdir / "run").mkdir()
    (workdir / "run" / "keep.txt").write_text("mine")
    code = main(["distill", "--data", "small.csv", "--target", TARGET, "--out", "run"])
    _assert_one_line_error(capsys, code, "--overwrite")
    assert [p.name for p in (workdir / "run").iterdir()] == ["keep.txt"]  # untouched
    assert (workdir / "run" / "keep.txt").read_text() == "mine"


def test_tiny_run_writes_a_complete_run_folder(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workdir)
    arguments = ["--data", "small.csv", "--target", TARGET, "--epochs", "1", "--out", "run", "--compare"]
    code = main(["distill", *arguments, "--attributor", "gradient-x-input", *SMALL_TEACHER])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    run = workdir / "run"
    names = {p.relative_to(run).as_posix() for p in run.rglob("*")}
    expected = {"student.safetensors", "student.json", "config.json", "metrics.json", "history.json", "teacher.txt"}
    assert expected <= names
    assert {f"plain/{name}" for name in expected - {"teacher.txt"}} <= names
    assert not [name for name in names if name.endswith((".tmp", ".partial"))]
    assert sorted(p.name for p in workdir.iterdir()) == ["run", "small.csv"]  # no staging folder left

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == "binary"
    assert set(metrics["teacher"]["test"]) == {"auc", "logloss", "accuracy"}
    for student in (metrics["student"], metrics["plain"]):
        assert set(student["test"]) == {"auc", "logloss", "accuracy"}
        assert {"margin_rmse", "margin_r2", "label_agreement"} <= set(student["fidelity"])
        assert {"spearman", "cosine", "top5", "sign"} <= set(student["agreement"])
    assert metrics["student"]["alignment"]["weight"] == 1.0
    assert metrics["plain"]["alignment"]["weight"] == 0.0
    history = json.loads((run / "history.json").read_text())
    assert len(history["epochs"]) == 1
    assert history["epochs"][0]["alignment_loss"] is not None
    assert json.loads((run / "plain" / "history.json").read_text())["epochs"][0]["alignment_loss"] is None
    config = json.loads((run / "config.json").read_text())
    assert config["student_options"]["epochs"] == 1
    assert config["teacher_options"] == {"n_estimators": 10, "num_leaves": 15, "num_threads": 1}
    assert config["attributor"] == "gradient-x-input"

    import lightgbm

    booster = lightgbm.Booster(model_file=str(run / "teacher.txt"))
    assert booster.num_trees() == 10
    raw = pd.read_csv(workdir / "small.csv").drop(columns=[TARGET])
    assert load_model(run).predict_margin(raw).shape == (500,)
    assert load_model(run / "plain").predict_margin(raw).shape == (500,)

    # the table on stdout: teacher, plain and aligned students
    assert "teacher (lightgbm)" in captured.out
    assert "plain student (λ=0)" in captured.out
    assert "aligned student (λ=1, cosine)" in captured.out  # alignment="auto": cosine for a binary task
    assert "run folder: run" in captured.out
    # alignment's cost on the held-out rows: the two students' best validation losses, as their folders record them
    best = [
        json.loads((folder / "history.json").read_text())["stopping"]["best_validation_loss"]
        for folder in (run, run / "plain")
    ]
    assert metrics["validation_cost"] == pytest.approx(best[0] / best[1] - 1.0)
    assert f"held-out rows: the aligned student's task loss is {metrics['validation_cost']:+.2%}" in captured.out
    assert "Traceback" not in captured.err


def test_json_output_and_overwrite(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(workdir)
    (workdir / "run").mkdir()
    (workdir / "run" / "stale.txt").write_text("old")
    arguments = ["distill", "--data", "small.csv", "--target", TARGET, "--epochs", "1", "--out", "run", *SMALL_TEACHER]
    code = main([*arguments, "--alignment-weight", "0", "--json", "--overwrite"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    payload = json.loads(captured.out)
    assert payload["student"]["alignment"]["weight"] == 0.0
    assert "plain" not in payload
    assert "validation_cost" not in payload  # nothing to compare with
    assert not (workdir / "run" / "stale.txt").exists()  # replaced, not merged
    assert (workdir / "run" / "student.safetensors").is_file()
    assert not (workdir / "run" / "plain").exists()


def test_console_script_reports_one_line_errors(workdir: Path) -> None:
    script = shutil.which("gbdt2nn") or str(Path(sys.executable).with_name("gbdt2nn"))
    env = {k: v for k, v in os.environ.items() if k != "GBDT2NN_DEBUG"}
    (workdir / "small.csv").write_bytes(b"\x00\xff" * 100)
    result = subprocess.run(
        [script, "distill", "--data", "small.csv", "--target", TARGET, "--out", "run"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("gbdt2nn: error: cannot read small.csv")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    _assert_nothing_written(workdir)


def test_the_cost_line_says_whether_alignment_costs_accuracy() -> None:
    from gbdt2nn_core.cli.distill_cmd import _cost_line
    from gbdt2nn_core.pipeline.metrics import ALIGNMENT_COST_NOTICE

    within = _cost_line(ALIGNMENT_COST_NOTICE / 2)
    assert "costs no accuracy" in within
    assert "--alignment-weight" not in within
    above = _cost_line(2 * ALIGNMENT_COST_NOTICE)
    assert "+1.00%" in above
    assert "costs accuracy" in above
    assert "--alignment-weight 0.1" in above
    assert "\n" not in above  # one line
    checked = _cost_line(2 * ALIGNMENT_COST_NOTICE, advise=False)  # --alignment-check has already acted
    assert "still costs accuracy" in checked
    assert "--alignment-weight" not in checked


def test_alignment_check_writes_the_student_it_kept_and_why(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import gbdt2nn_core.pipeline.distill as distill_module

    monkeypatch.setattr(distill_module, "ALIGNMENT_COST_NOTICE", -math.inf)  # the check always trips
    monkeypatch.chdir(workdir)
    arguments = ["distill", "--data", "small.csv", "--target", TARGET, "--epochs", "1", "--out", "run", *SMALL_TEACHER]
    code = main([*arguments, "--alignment-check"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    config = json.loads((workdir / "run" / "config.json").read_text())
    assert config["alignment_check"] is True
    assert config["alignment_weight"] == pytest.approx(0.1)  # the student kept, trained at a tenth of λ
    record = config["student_choices"]["alignment_check"]
    assert [tried["weight"] for tried in record["tried"]] == pytest.approx([1.0, 0.1])
    assert (workdir / "run" / "plain" / "student.safetensors").is_file()  # the yardstick, as with --compare
    assert "aligned student (λ=0.1, cosine)" in captured.out
    assert not list(workdir.glob(".run.checkpoints"))  # every student's checkpoints removed with the run complete
