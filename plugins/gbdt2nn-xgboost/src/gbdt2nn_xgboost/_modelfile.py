"""Reading and writing XGBoost model files (JSON or UBJSON) with one-line errors and atomic writes."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import xgboost as xgb

from gbdt2nn_core.errors import ConfigError, ModelFileError

__all__ = ["clean_message", "load_booster", "read_model_bytes", "write_atomic"]

_FIX = "save the model again (Booster.save_model or teacher.save), or pass model=None to train a new one"
# XGBoost prefixes its messages with a time stamp and the C++ source line: noise for a user.
_PREFIX = re.compile(r"^\s*\[[\d:]+\]\s+\S+:\d+:\s*")


def clean_message(exc: BaseException) -> str:
    """The first line of an XGBoost error without its time stamp and source location."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return _PREFIX.sub("", lines[0]).strip() if lines else type(exc).__name__


def read_model_bytes(path: str | os.PathLike[str]) -> bytes:
    """The content of a model file; ``ModelFileError`` when it is missing, unreadable or empty."""
    where = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ModelFileError(path=where, problem="no such file", fix="check the path") from None
    except OSError as exc:
        raise ModelFileError(path=where, problem=exc.strerror or str(exc), fix="check the path") from None
    if not data:
        raise ModelFileError(path=where, problem="the file is empty", fix=_FIX)
    return data


def load_booster(data: bytes | bytearray, *, where: str) -> xgb.Booster:
    """A ``Booster`` from the bytes of a JSON or UBJSON model (XGBoost tells the two apart by content)."""
    booster = xgb.Booster()
    try:
        booster.load_model(bytearray(data))
    except (xgb.core.XGBoostError, ValueError, MemoryError) as exc:
        raise ModelFileError(
            path=where, problem=f"not a readable XGBoost model ({clean_message(exc)})", fix=_FIX
        ) from None
    return booster


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, so no half-written file remains."""
    target = Path(path)
    try:
        descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(
            setting="path", value=str(target), fix=f"cannot write there ({exc.strerror}); pick a writable folder"
        ) from None
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
