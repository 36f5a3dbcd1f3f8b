"""Reading XGBoost model files (JSON or UBJSON) with one-line errors."""

from __future__ import annotations

import os
import re

import xgboost as xgb

from gbdt2nn_core.errors import ModelFileError
from gbdt2nn_core.model_files import read_model_file

__all__ = ["clean_message", "load_booster", "read_model_bytes"]

_FIX = "save the model again (Booster.save_model or teacher.save), or pass model=None to train a new one"
# XGBoost prefixes its messages with a time stamp and the C++ source line: noise for a user.
_PREFIX = re.compile(r"^\s*\[[\d:]+\]\s+\S+:\d+:\s*")


def clean_message(exc: BaseException) -> str:
    """The first line of an XGBoost error without its time stamp and source location."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return _PREFIX.sub("", lines[0]).strip() if lines else type(exc).__name__


def read_model_bytes(path: str | os.PathLike[str]) -> bytes:
    """The content of a model file; ``ModelFileError`` when it is missing, unreadable or empty."""
    data = read_model_file(path)
    if not data:
        raise ModelFileError(path=str(path), problem="the file is empty", fix=_FIX)
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
