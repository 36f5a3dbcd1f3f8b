"""Fuzzing a teacher's model-file loader: :func:`fuzz_model_file`, :func:`byte_mutations`, :func:`list_mutation`.

Model files are untrusted input, and a tree library's native loader may abort the whole process on a damaged
one (LightGBM: "double free or corruption"). So each mutant is loaded in a worker **subprocess**: a native
abort shows up as a signal there, not as the end of the test run. One worker loads many mutants in turn and
reports each before starting the next; when it dies, the mutant it was on is recorded as a crash and a new
worker carries on with the following one.

The worker is :mod:`gbdt2nn_core.testing._fuzz_worker`.
"""

from __future__ import annotations

import json
import os
import random
import select
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import attrs

__all__ = ["FuzzReport", "byte_mutations", "fuzz_model_file", "list_mutation"]

V = TypeVar("V")

#: Outcomes that keep the promise: a one-line gbdt2nn error, or a model whose predictions are all finite.
GOOD_OUTCOMES = frozenset({"error", "ok"})


@attrs.frozen(kw_only=True)
class FuzzReport:
    """How every mutant of a model file ended.

    ``outcomes[i]`` is one of ``"error"`` (a one-line :class:`~gbdt2nn_core.Gbdt2nnError`), ``"ok"`` (loaded,
    and margins, leaves, TreeSHAP and structure are finite), ``"nonfinite"`` (loaded but predicts NaN or
    infinity), ``"exception"`` (another Python exception: an "internal error" for a user), ``"crash"`` (the
    process died: a signal or an abort) or ``"hang"`` (no answer within the time limit).
    """

    outcomes: tuple[str, ...]
    details: tuple[str, ...]

    @property
    def counts(self) -> dict[str, int]:
        return dict(Counter(self.outcomes))

    @property
    def bad(self) -> list[str]:
        """``"mutant N: outcome: detail"`` for every mutant that broke the promise."""
        return [
            f"mutant {index}: {outcome}: {detail}"
            for index, (outcome, detail) in enumerate(zip(self.outcomes, self.details, strict=True))
            if outcome not in GOOD_OUTCOMES
        ]


def byte_mutations(data: bytes, *, seed: int, count: int) -> Iterator[bytes]:
    """``count`` format-blind mutants of ``data``: truncations at random points and random byte flips."""
    rng = random.Random(seed)
    for index in range(count):
        if index % 2 == 0:
            yield data[: rng.randrange(len(data))]
        else:
            mutant = bytearray(data)
            for _ in range(rng.randint(1, 8)):
                mutant[rng.randrange(len(mutant))] = rng.randrange(256)
            yield bytes(mutant)


def list_mutation(
    values: Sequence[V], rng: random.Random, *, ints: Sequence[V], floats: Sequence[V], repeats: Sequence[int]
) -> list[V]:
    """One format-aware mutation of a model file's array (tree sizes, child indices, thresholds...).

    Replaces an entry by one of ``ints`` or ``floats`` (out-of-range indices, NaN, infinity, huge values), drops or
    inserts one, or replaces the whole array by ``k`` copies of one of ``ints`` (``k`` from ``repeats``): the
    lengths and values a loader must check before it trusts them.
    """
    mutant = list(values)
    operation = rng.randrange(5)
    if operation == 0 and mutant:
        mutant[rng.randrange(len(mutant))] = rng.choice(ints)
    elif operation == 1 and mutant:
        mutant[rng.randrange(len(mutant))] = rng.choice(floats)
    elif operation == 2 and mutant:
        mutant.pop(rng.randrange(len(mutant)))
    elif operation == 3:
        mutant.insert(rng.randrange(len(mutant) + 1), rng.choice(ints))
    else:
        mutant = [rng.choice(ints)] * rng.choice(repeats)
    return mutant


def fuzz_model_file(
    factory: str,
    mutants: Sequence[bytes],
    *,
    folder: str | os.PathLike[str],
    suffix: str,
    dataset: str = "adult",
    rows: int = 200,
    task: str = "binary",
    timeout: float = 30.0,
) -> FuzzReport:
    """Load every mutant as a teacher model file in a subprocess and report how each ended.

    ``factory`` is the teacher factory as ``"module:function"`` (called as ``factory(model=path)``); the
    wrapped teacher is fitted on the first ``rows`` rows of the bundled ``dataset`` (through the core's
    :class:`~gbdt2nn_core.data.TabularSchema`, as the pipeline does) and asked for margins, leaf indices,
    TreeSHAP values and its structure. Mutants are written to ``folder`` with ``suffix``. A mutant that takes
    longer than ``timeout`` seconds counts as a hang.
    """
    paths = []
    for index, mutant in enumerate(mutants):
        written = Path(folder) / f"mutant-{index:04d}{suffix}"
        written.write_bytes(mutant)
        paths.append(str(written))
    outcomes: list[str] = []
    details: list[str] = []
    command = [sys.executable, "-m", "gbdt2nn_core.testing._fuzz_worker", factory, dataset, str(rows), task]
    worker: _Worker | None = None
    try:
        for path in paths:
            if worker is None:
                worker = _Worker(command, Path(folder) / "worker-stderr.txt", startup=max(timeout, 60.0))
            outcome, detail = worker.load(path, timeout=timeout)
            outcomes.append(outcome)
            details.append(detail)
            if outcome in ("crash", "hang"):
                worker.close()
                worker = None
    finally:
        if worker is not None:
            worker.close()
    return FuzzReport(outcomes=tuple(outcomes), details=tuple(details))


class _Worker:
    """A worker subprocess that loads one mutant per request and answers with one ``MUTANT`` line."""

    def __init__(self, command: list[str], stderr: Path, *, startup: float) -> None:
        self._stderr_path = stderr
        self._stderr = stderr.open("wb")
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0
        )
        outcome, detail = self._answer(timeout=startup, ready=True)
        if outcome != "ready":
            self.close()
            raise AssertionError(f"the fuzz worker could not start: {detail}")

    def load(self, path: str, *, timeout: float) -> tuple[str, str]:
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(path.encode() + b"\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            pass  # it died; _answer says how
        return self._answer(timeout=timeout, ready=False)

    def _answer(self, *, timeout: float, ready: bool) -> tuple[str, str]:
        stdout = self._process.stdout
        assert stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([stdout], [], [], left)[0]:
                return "hang", f"no answer within {timeout:g} s"
            line = stdout.readline()
            if not line:
                status = self._process.wait()
                how = f"signal {-status}" if status < 0 else f"exit status {status}"
                tail = self._stderr_path.read_text(errors="replace").strip().splitlines()[-2:]
                return "crash", f"{how}: {' / '.join(tail)[:300]}"
            text = line.decode(errors="replace")
            if ready and text.startswith("READY"):
                return "ready", ""
            if text.startswith("MUTANT "):
                record = json.loads(text[len("MUTANT ") :])
                return str(record["outcome"]), str(record["detail"])

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._stderr.close()
