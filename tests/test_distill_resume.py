"""`gbdt2nn distill --out DIR` killed with SIGKILL and run again resumes from its last per-epoch checkpoint and
ends with the same metrics as an uninterrupted run (issue 10, item 12)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

TARGET = "income_gt_50k"
EPOCHS = 40


def _command(out: str) -> list[str]:
    return [
        *(sys.executable, "-m", "gbdt2nn_core.cli", "distill", "--data", "rows.csv", "--target", TARGET),
        *(
            "--teacher-option",
            "n_estimators=10",
            "--teacher-option",
            "num_leaves=15",
            "--teacher-option",
            "num_threads=1",
        ),
        *("--student-option", "n_groups=3", "--student-option", "hidden=[8]", "--student-option", "batch_size=128"),
        *("--epochs", str(EPOCHS), "--out", out, "--json"),
    ]


def _environment(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GBDT2NN_DEBUG", "COLUMNS")}
    env.update(GBDT2NN_CACHE_DIR=str(folder / "cache"), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _epochs_done(checkpoint: Path) -> int:
    try:
        state = torch.load(checkpoint, weights_only=True, map_location="cpu")
    except Exception:  # not written yet, or replaced while we read it
        return 0
    return int(state.get("epochs_done", 0))


def _metrics(out: Path) -> dict[str, Any]:
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    metrics.pop("timings", None)
    return metrics


@pytest.mark.slow
def test_a_killed_distill_resumes_and_ends_like_an_uninterrupted_run(tmp_path: Path, adult_dataset: Any) -> None:
    adult_dataset.frame.sample(1500, random_state=3).to_csv(tmp_path / "rows.csv", index=False)
    env = _environment(tmp_path)
    checkpoint = tmp_path / ".killed.checkpoints" / "aligned.pt"

    process = subprocess.Popen(
        _command("killed"), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 240
    while _epochs_done(checkpoint) < 3:
        assert process.poll() is None, "the run ended before it could be killed: raise EPOCHS"
        assert time.monotonic() < deadline, "no checkpoint after four minutes"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (tmp_path / "killed").exists()  # nothing half-written at the destination

    again = subprocess.run(_command("killed"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "aligned student: resuming from epoch" in again.stdout + again.stderr
    resumed_from = int((again.stdout + again.stderr).split("resuming from epoch ")[1].split()[0])
    assert 3 <= resumed_from < EPOCHS
    assert not checkpoint.parent.exists()  # removed once the run folder is complete

    whole = subprocess.run(_command("whole"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr
    assert "resuming" not in whole.stdout + whole.stderr
    assert _metrics(tmp_path / "killed") == _metrics(tmp_path / "whole")
    history = json.loads((tmp_path / "killed" / "history.json").read_text())
    whole_history = json.loads((tmp_path / "whole" / "history.json").read_text())
    # every epoch once, across the kill: as many as the uninterrupted run trained (early stopping may end both
    # before the budget, at the same epoch)
    epochs = [record["epoch"] for record in history["epochs"]]
    assert epochs == list(range(len(whole_history["epochs"])))
    assert resumed_from < len(epochs)
    assert history["stopping"] == whole_history["stopping"]
