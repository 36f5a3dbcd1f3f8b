"""Per-epoch training checkpoints: an interrupted run (even ``kill -9``) resumes losing at most one epoch.

A checkpoint is a ``torch.save`` file of tensors, numbers, strings and plain containers only, loaded with
``torch.load(weights_only=True)`` — no arbitrary code is unpickled. It is written atomically, so a kill during
the write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from gbdt2nn_core.model_files import write_atomic

FORMAT = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (plus the format number) atomically."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buffer.getvalue())


def load_checkpoint(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it exists, is readable and belongs to this exact training setup."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except Exception:
        return None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("fingerprint") != fingerprint:
        return None
    return state
