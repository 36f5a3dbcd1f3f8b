"""On-disk cache of teacher explanations: TreeSHAP costs far more than a prediction, so compute it once per
(model, data, method) and reuse it.

The key hashes the teacher's fingerprint (its serialised model), the exact rows and the explanation method.
Entries are ``.npz`` files read with ``allow_pickle=False`` and written atomically (temporary file, then
rename), so an interrupted run never leaves a half-written entry behind (and the temporary file of a killed
writer is swept by the next write, see :func:`~gbdt2nn_core.model_files.write_atomic`). Each entry records its
key, and is checked against it and against the rows' shape when read: an entry that does not match (a file
copied or renamed by hand, a damaged disk) is recomputed with a warning, never trusted.
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

from gbdt2nn_core.errors import ConfigError, warn
from gbdt2nn_core.host.interfaces import Teacher, TreeShap
from gbdt2nn_core.model_files import write_atomic

__all__ = ["CACHE_ENV", "ExplanationCache", "check_cache_dir", "default_cache_dir"]

CACHE_ENV = "GBDT2NN_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$GBDT2NN_CACHE_DIR``, else ``$XDG_CACHE_HOME/gbdt2nn``, else ``~/.cache/gbdt2nn``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gbdt2nn"


def check_cache_dir(directory: Path) -> None:
    """Create the cache folder now, so that a path that cannot be one fails before any work, not after it.

    :class:`ConfigError` when ``directory`` or a folder above it is a file, or it cannot be created.
    """
    blocked = next((p for p in (directory, *directory.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        where = "it is" if blocked == directory else f"{str(blocked)!r} is"
        raise ConfigError(
            setting="cache_dir",
            value=str(directory),
            fix=f"{where} a file, not a folder; point {CACHE_ENV} (or cache_dir) at a folder, or turn the cache off",
        )
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            setting="cache_dir",
            value=str(directory),
            fix=f"cannot create it ({exc.strerror}); point {CACHE_ENV} (or cache_dir) at a writable folder",
        ) from None


def frame_digest(frame: pd.DataFrame) -> str:
    """A hash of a frame's values, column names and dtypes (row order matters)."""
    digest = hashlib.sha256()
    digest.update(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


class ExplanationCache:
    """Stores :class:`~gbdt2nn_core.TreeShap` results keyed by (teacher, rows, method); ``None`` disables it.

    The folder is checked (and created) when the cache is made: see :func:`check_cache_dir`.
    """

    def __init__(self, directory: Path | str | None) -> None:
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            check_cache_dir(self.directory)
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
        key = self.key(teacher, frame, method)
        path = self.directory / f"treeshap-{key}.npz"
        if path.exists():
            stored = _read_entry(path, key, frame)
            if stored is not None:
                self.hits += 1
                return stored
            path.unlink(missing_ok=True)  # a corrupt or mismatched entry is recomputed, never trusted
        self.misses += 1
        result = compute()
        self.directory.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.savez(buffer, values=result.values, expected_value=result.expected_value, method=result.method, key=key)
        write_atomic(path, buffer.getvalue())
        return result


def _read_entry(path: Path, key: str, frame: pd.DataFrame) -> TreeShap | None:
    """The entry at ``path`` if it is readable and made for these rows; else ``None`` (with a warning)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            result = TreeShap(
                values=stored["values"], expected_value=stored["expected_value"], method=str(stored["method"])
            )
            recorded = str(stored["key"]) if "key" in stored.files else key  # entries of older versions
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # unreadable: recomputed silently, as an interrupted copy would be
    shape = result.values.shape
    problem = None
    if recorded != key:
        problem = "it was written for other rows or another model"
    elif result.values.ndim not in (2, 3) or shape[0] != len(frame) or shape[-1] != frame.shape[1]:
        problem = f"it holds values of shape {shape} for {len(frame)} rows of {frame.shape[1]} columns"
    if problem is None:
        return result
    warn(f"TreeSHAP cache entry {path.name} does not match its rows ({problem}); recomputing it")
    return None
