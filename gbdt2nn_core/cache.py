"""On-disk cache of teacher explanations: TreeSHAP costs far more than a prediction, so compute it once per
(model, data, method) and reuse it.

The key hashes the teacher's fingerprint (its serialised model), the exact rows and the explanation method.
Entries are ``.npz`` files read with ``allow_pickle=False`` and written atomically (temporary file, then
rename), so an interrupted run never leaves a half-written entry behind.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from gbdt2nn_core.interfaces import Teacher, TreeShap
from gbdt2nn_core.model_files import write_atomic

__all__ = ["CACHE_ENV", "ExplanationCache", "default_cache_dir"]

CACHE_ENV = "GBDT2NN_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$GBDT2NN_CACHE_DIR``, else ``$XDG_CACHE_HOME/gbdt2nn``, else ``~/.cache/gbdt2nn``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gbdt2nn"


def frame_digest(frame: pd.DataFrame) -> str:
    """A hash of a frame's values, column names and dtypes (row order matters)."""
    digest = hashlib.sha256()
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


class ExplanationCache:
    """Stores :class:`~gbdt2nn_core.TreeShap` results keyed by (teacher, rows, method); ``None`` disables it."""

    def __init__(self, directory: Path | str | None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.hits = 0
        self.misses = 0

    def key(self, teacher: Teacher, frame: pd.DataFrame, method: str) -> str:
        text = f"{teacher.fingerprint()}|{frame_digest(frame)}|{method}"
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    def get_or_compute(
        self, teacher: Teacher, frame: pd.DataFrame, method: str, compute: Callable[[], TreeShap]
    ) -> TreeShap:
        """The cached explanation, or ``compute()`` stored for next time."""
        if self.directory is None:
            self.misses += 1
            return compute()
        path = self.directory / f"treeshap-{self.key(teacher, frame, method)}.npz"
        if path.exists():
            try:
                with np.load(path, allow_pickle=False) as stored:
                    result = TreeShap(
                        values=stored["values"], expected_value=stored["expected_value"], method=str(stored["method"])
                    )
                self.hits += 1
                return result
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
                path.unlink(missing_ok=True)  # a corrupt entry is recomputed, never trusted
        self.misses += 1
        result = compute()
        self.directory.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, values=result.values, expected_value=result.expected_value, method=result.method)
        write_atomic(path, buffer.getvalue())
        return result
