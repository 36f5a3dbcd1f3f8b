"""Timing, memory and machine description for the benchmark harness (no third-party imports at module level)."""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import re
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------------------------------------ timing
def measure(
    cases: dict[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 1,
    sync: Callable[[], None] | None = None,
) -> dict[str, list[float]]:
    """Seconds per call of every case: ``warmup`` untimed rounds, then ``repeats`` interleaved timed rounds.

    Round ``r`` runs the cases in their order rotated by ``r``, so that no case always follows the same one. The
    garbage collector is off inside a timed call; between calls it collects the garbage of the last call only
    (the objects alive at the start are frozen out of its sight, or each collection would take half a second).
    ``sync`` (e.g. ``torch.cuda.synchronize``) runs before and after every call, inside the timing, so that
    asynchronous work is counted where it was launched.
    """
    wait = sync or (lambda: None)
    names = list(cases)
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc.collect()
    gc.freeze()
    try:
        for _ in range(warmup):
            for name in names:
                cases[name]()
                wait()
        for round_ in range(repeats):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                gc.collect()
                gc.disable()
                try:
                    wait()
                    started = time.perf_counter()
                    cases[name]()
                    wait()
                    samples[name].append(time.perf_counter() - started)
                finally:
                    gc.enable()
    finally:
        gc.unfreeze()
    return samples


def summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, float]:
    """Median, min and max of the per-round ratios ``numerator[r] / denominator[r]``."""
    return summary([a / b for a, b in zip(numerator, denominator, strict=True)])


# ------------------------------------------------------------------------------------------------------ memory
def _status_kib(field: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    found = re.search(rf"^{field}:\s+(\d+) kB", text, flags=re.MULTILINE)
    return int(found.group(1)) if found else None


class PeakRSS:
    """Peak resident memory of a stretch of code.

    On Linux the kernel's high-water mark (``VmHWM``) is reset by writing 5 to ``/proc/self/clear_refs``, so
    each phase gets its own peak. Where that is not possible the peak is the process's lifetime maximum
    (``resource.getrusage``), which is only an upper bound for a later phase; :attr:`method` says which.
    """

    def __init__(self) -> None:
        self.method = "VmHWM (reset per phase)" if self._reset() else "ru_maxrss (process lifetime)"
        self.process_peak = 0.0

    @staticmethod
    def _reset() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            return False
        return _status_kib("VmHWM") is not None

    def start(self) -> None:
        self._reset()

    def read(self) -> float:
        kib = _status_kib("VmHWM")
        if kib is None:
            import resource

            kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        peak = kib / 1024
        self.process_peak = max(self.process_peak, peak)
        return peak


class PhaseRecorder:
    """A gbdt2nn :class:`~gbdt2nn_core.progress.Progress` that records wall time and peak RSS of every step.

    Time spent outside the pipeline's named steps is recorded too, as ``(outside steps, before <next step>)``.
    """

    def __init__(self) -> None:
        self.peak = PeakRSS()
        self.phases: list[dict[str, Any]] = []
        self._mark = time.perf_counter()
        self.peak.start()

    def _close_gap(self, before: str) -> None:
        seconds = time.perf_counter() - self._mark
        if not self.phases and seconds < 1e-3:
            return  # nothing ran before the first phase
        self.phases.append(
            {"phase": f"(outside steps, before {before})", "seconds": seconds, "peak_mib": self.peak.read()}
        )

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._close_gap(name)
        self.peak.start()
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phases.append({"phase": name, "seconds": time.perf_counter() - started, "peak_mib": self.peak.read()})
            self._mark = time.perf_counter()
            self.peak.start()

    def step(self, description: str, total: float | None = None) -> contextlib.AbstractContextManager[None]:
        return self.phase(description)

    def advance(self, amount: float = 1.0, **fields: Any) -> None:
        pass

    def finish(self) -> None:
        self._close_gap("the end")


def run_process_tree(
    command: Sequence[str], *, env: dict[str, str] | None = None, log: Path | None = None, interval_s: float = 0.2
) -> dict[str, Any]:
    """Run ``command`` to its end; its exit code, wall seconds and peak RSS of the whole process tree (MiB).

    The peak is the largest sum of the resident memory of the process and all its descendants (launcher,
    workers) over samples every ``interval_s`` seconds (psutil), so a spike shorter than that can be missed.
    Output goes to ``log`` (or is discarded).
    """
    import psutil

    peak = 0
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(log.open("w", encoding="utf-8")) if log is not None else subprocess.DEVNULL
        child = subprocess.Popen(list(command), env=env, stdout=out, stderr=subprocess.STDOUT)
        root = psutil.Process(child.pid)
        while child.poll() is None:
            total = 0
            with contextlib.suppress(psutil.Error):
                for process in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):  # a child that ended between listing and reading
                        total += process.memory_info().rss
            peak = max(peak, total)
            time.sleep(interval_s)
    return {
        "returncode": child.returncode,
        "wall_s": time.perf_counter() - started,
        "peak_rss_mib": peak / 2**20,
        "rss_sample_interval_s": interval_s,
    }


# ------------------------------------------------------------------------------------------------------ machine
def configure_threads(threads: int) -> None:
    """Pin every library to ``threads``: call before numpy, torch or LightGBM are imported."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)


def machine() -> dict[str, Any]:
    import lightgbm
    import numpy
    import torch

    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), flags=re.MULTILINE)
        cpu = found.group(1).strip() if found else cpu
    memory = _meminfo_gib()
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    versions["lightgbm"] = lightgbm.__version__
    for module in ("shap", "hummingbird", "gbdt2nn_core"):
        try:
            versions[module] = getattr(__import__(module), "__version__", "?")
        except ImportError:
            versions[module] = "not installed"
    return {
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": memory,
        "torch_threads": torch.get_num_threads(),
        "omp_threads": os.environ.get("OMP_NUM_THREADS", "(unset)"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "platform": platform.platform(),
        "versions": versions,
        "git": _git_revision(),
    }


def _meminfo_gib() -> float | None:
    with contextlib.suppress(OSError, AttributeError):
        found = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), flags=re.MULTILINE)
        return round(int(found.group(1)) / 1024 / 1024, 1) if found else None
    return None


def _git_revision() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head} (with uncommitted changes)" if dirty else head
