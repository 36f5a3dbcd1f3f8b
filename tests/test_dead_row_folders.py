"""A rows folder (``spill_bytes``) left by a process killed with ``kill -9`` is removed by the next run that makes
one under the same parent — and never a live process's folder, another host's, or anything else there."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from gbdt2nn_core.data import rowowner
from gbdt2nn_core.data.rowfile import FOLDER_PREFIX, RowFolder

#: Makes a rows folder under argv[1], writes a matrix into it, prints the folder, then waits to be killed.
HOLDER = """
import sys, time
import numpy as np
from gbdt2nn_core.data.rowfile import RowFolder

folder = RowFolder(sys.argv[1])
matrix = np.arange(4000, dtype=np.float32).reshape(1000, 4)
folder.write("rows", matrix.shape, lambda: iter([matrix]))
print(folder.path, flush=True)
time.sleep(600)
"""


def _holder(parent: Path) -> tuple[subprocess.Popen[str], Path]:
    """A process that holds a rows folder with a matrix in it under ``parent``, and that folder."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(parent)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    folder = Path(process.stdout.readline().strip())
    assert folder.parent == parent, folder
    assert any(folder.glob("*.bin")), folder
    return process, folder


def _killed(process: subprocess.Popen[str]) -> None:
    """Kill ``process`` as ``kill -9`` does (no handler, no ``atexit``) and reap it."""
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=30) == -signal.SIGKILL


def _dead_pid() -> int:
    """The id of a process that has ended and been reaped."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait(timeout=60)
    return process.pid


def test_the_folder_of_a_killed_process_goes_with_the_next_folder(tmp_path: Path) -> None:
    process, left = _holder(tmp_path)
    _killed(process)
    assert any(left.glob("*.bin")), "kill -9 leaves the folder behind"
    fresh = RowFolder(tmp_path)
    assert not left.exists()
    assert sorted(tmp_path.iterdir()) == [fresh.path]
    fresh.close()
    assert list(tmp_path.iterdir()) == []


def test_live_foreign_and_unrelated_folders_stay(tmp_path: Path) -> None:
    own = RowFolder(tmp_path)  # this process's: alive
    process, sleeping = _holder(tmp_path)  # another live process's
    try:
        host, _, start = own.path.name[len(FOLDER_PREFIX) :].split("-")[:3]
        other_host = "0" * 8 if host != "0" * 8 else "1" * 8
        foreign = tmp_path / f"{FOLDER_PREFIX}{other_host}-{_dead_pid()}-{start}-a1b2c3d4"  # its pid means nothing here
        reused = tmp_path / f"{FOLDER_PREFIX}{host}-{os.getpid()}-{'f' * 8 if start != 'f' * 8 else 'e' * 8}-x"
        dead = tmp_path / f"{FOLDER_PREFIX}{host}-{_dead_pid()}-{start}-e5f6g7h8"
        unowned_new = tmp_path / f"{FOLDER_PREFIX}old_v1"  # made before owners were recorded, used just now
        unowned_old = tmp_path / f"{FOLDER_PREFIX}old_v2"  # the same, unchanged for two days
        unrelated = tmp_path / "gbdt2nn-other-1234"
        a_file = tmp_path / f"{FOLDER_PREFIX}{host}-{_dead_pid()}-{start}-file"
        for folder in (foreign, reused, dead, unowned_new, unowned_old, unrelated):
            folder.mkdir()
            (folder / "rows.bin").write_bytes(b"\0" * 64)
        a_file.write_bytes(b"not a folder")
        two_days_ago = time.time() - 2 * 86400
        for path in (unowned_old / "rows.bin", unowned_old):
            os.utime(path, (two_days_ago, two_days_ago))

        fresh = RowFolder(tmp_path)
        kept = {own.path, sleeping, foreign, unowned_new, unrelated, a_file, fresh.path}
        assert set(tmp_path.iterdir()) == kept  # the dead pid, the reused pid and the old unowned folder went
        assert process.poll() is None
        assert any(sleeping.glob("*.bin"))
    finally:
        _killed(process)
    RowFolder(tmp_path).close()  # now the sleeping process is dead too
    assert not sleeping.exists()
    assert own.path.exists()


def test_a_folder_another_process_removes_first_is_no_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    process, left = _holder(tmp_path)
    _killed(process)
    is_dead = rowowner._is_dead

    def raced(folder: Path, prefix: str) -> bool:
        dead = is_dead(folder, prefix)
        shutil.rmtree(folder)  # another new run removes it between this one's check and its removal
        return dead

    monkeypatch.setattr(rowowner, "_is_dead", raced)
    fresh = RowFolder(tmp_path)
    assert not left.exists()
    assert fresh.path.exists()
    fresh.close()


def test_a_killed_cli_run_leaves_a_folder_the_next_run_removes(adult_small: pd.DataFrame, tmp_path: Path) -> None:
    data = tmp_path / "adult.csv"
    adult_small.to_csv(data, index=False)
    (tmp_path / "run.toml").write_text("[run]\nspill_bytes = 0\n", encoding="utf-8")
    rows = tmp_path / "cache" / "rows"
    env = {**os.environ, "GBDT2NN_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}

    def distill(out: str, epochs: int) -> subprocess.Popen[str]:
        argv = ["distill", "--data", str(data), "--target", "income_gt_50k", "--config", str(tmp_path / "run.toml"),
                "--epochs", str(epochs), "--teacher-option", "n_estimators=10", "--teacher-option", "num_threads=1",
                "--threads", "1", "--out", str(tmp_path / out)]  # fmt: skip
        command = [sys.executable, "-m", "gbdt2nn_core.cli", *argv]
        return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    training = distill("killed", epochs=10_000)
    deadline = time.monotonic() + 120
    while not (rows.exists() and list(rows.glob("*/targets-*.bin"))):  # the student's training has started
        assert training.poll() is None, training.stderr and training.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    _killed(training)
    left = list(rows.iterdir())
    assert len(left) == 1
    assert list(left[0].glob("*.bin"))

    finished = distill("next", epochs=1)
    _, stderr = finished.communicate(timeout=300)
    assert finished.returncode == 0, stderr
    assert (tmp_path / "next" / "metrics.json").exists()
    assert list(rows.iterdir()) == []  # the killed run's folder went too, not only the finished run's own


@pytest.mark.parametrize("start_of", [rowowner._start_tag, rowowner._ps_start], ids=["proc", "ps"])
def test_start_time_tells_live_zombie_and_gone_apart(start_of: Callable[[int], str | None]) -> None:
    """Linux's /proc reading and the ``ps`` one used where there is no /proc (macOS)."""
    assert start_of(os.getpid()) == start_of(os.getpid()) not in (None, "zombie")
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    alive = start_of(process.pid)
    assert alive not in (None, "zombie")
    process.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 30
    while start_of(process.pid) != "zombie":  # killed, not yet reaped by its parent (this process)
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.wait(timeout=30)
    assert start_of(process.pid) is None
