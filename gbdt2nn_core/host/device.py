"""Where the network runs: the ``device`` setting (``auto``, ``cpu``, ``cuda``, ``cuda:N``) and moving rows there.

Everything after the teacher — leaf embedding, student training with and without alignment, the BatchNorm pass,
calibration, predict / explain, online updates — runs on one torch device, chosen once by :func:`resolve_device`
where the run is set up (the pipeline, the estimators), never inside model code. A student reads it from
:attr:`~gbdt2nn_core.host.interfaces.StudentInputs.device`; a fitted network's device is where its weights are
(:func:`module_device`).

Rows move in large pieces, never one host→device copy per batch: a training matrix goes to the device whole, once
(:func:`rows_on`), and batches are gathered there; inference copies :func:`inference_chunk_rows` rows at a time.
Whole matrices are the simple choice that fits the data this toolkit trains on (1 M rows × 1,000 encoded columns of
float32 are 4 GB, and an H200 holds 141 GB); :func:`rows_on` refuses, with the fix, a matrix that does not fit in
the device's free memory rather than failing half-way with CUDA's out-of-memory error.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from gbdt2nn_core.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEVICE_CHOICES",
    "INFERENCE_CHUNK_ROWS",
    "check_device",
    "in_chunks",
    "inference_chunk_rows",
    "module_device",
    "resolve_device",
    "rng_devices",
    "rows_on",
]

#: The accepted spellings of the setting (``cuda:N`` is any device number).
DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N")
#: Rows per host→device copy at inference on an accelerator (predict, explain, evaluation): large enough that the
#: copy costs little beside the forward, small enough for the widest students' activations.
INFERENCE_CHUNK_ROWS = 65_536
_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
#: Share of a device's free memory that the resident training matrices may take (the rest: weights, activations,
#: the alignment term's double backward).
_RESIDENT_SHARE = 0.5


def _fix(extra: str = "") -> str:
    return f"{extra}use --device cpu or auto (auto: the first CUDA device when there is one, else the CPU)"


def check_device(value: object) -> str:
    """The ``device`` setting normalised (``"CUDA:0"`` → ``"cuda:0"``), or a :class:`ConfigError` with a
    did-you-mean for an unknown name (``"gpu"`` → ``cuda``). Checks the spelling only; whether the device is there
    is :func:`resolve_device`'s question, asked where the run starts."""
    if not isinstance(value, str) and type(value).__module__ == "torch":  # a torch.device (torch stays unimported)
        value = str(value)
    text = value.strip().lower() if isinstance(value, str) else None
    if text is not None and _PATTERN.match(text):
        return text
    # "gpu" is the usual slip, and too far from "cuda" for difflib
    close = {"gpu": "cuda"}.get(text or "") or next(
        iter(difflib.get_close_matches(text or "", ["auto", "cpu", "cuda"], 1)), None
    )
    hint = f"did you mean {close!r}? " if close else ""
    raise ConfigError(setting="device", value=value, fix=f"{hint}use one of {', '.join(DEVICE_CHOICES)}")


def resolve_device(value: str | torch.device = "auto") -> torch.device:
    """The torch device that ``value`` (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``) names on this machine.

    ``auto`` is the first CUDA device when ``torch.cuda.is_available()``, else the CPU; ``cuda`` is the current CUDA
    device. A CUDA device this machine does not have is a one-line :class:`ConfigError` naming the fix. Data-parallel
    ranks call it with ``f"cuda:{local_rank}"``.
    """
    import torch

    name = check_device(value)
    if name == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    if name == "auto":
        return torch.device("cuda", 0) if available else torch.device("cpu")
    if not available:
        raise ConfigError(setting="device", value=name, fix=_fix("this machine has no CUDA GPU that PyTorch can use; "))
    count = torch.cuda.device_count()
    index = int(name.split(":")[1]) if ":" in name else torch.cuda.current_device()
    if index >= count:
        raise ConfigError(
            setting="device",
            value=name,
            fix=_fix(f"this machine has {count} CUDA device{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1}); "),
        )
    return torch.device("cuda", index)


def module_device(module: torch.nn.Module) -> torch.device:
    """Where a network's weights are (its first parameter or buffer; the CPU for one with neither)."""
    import torch

    for parameter in module.parameters():
        return parameter.device
    for buffer in module.buffers():
        return buffer.device
    return torch.device("cpu")


def rng_devices(device: torch.device | str) -> list[int]:
    """The CUDA devices whose random state ``torch.random.fork_rng(devices=...)`` must fork for work on ``device``
    (none on the CPU), so that a seeded fit leaves the caller's random streams as they were on a GPU too."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def inference_chunk_rows(device: torch.device, batch_size: int) -> int:
    """Rows per forward at inference: ``batch_size`` on the CPU (small chunks stay in cache: BENCHMARKS.md),
    at least :data:`INFERENCE_CHUNK_ROWS` on an accelerator (each chunk is one host→device copy)."""
    return batch_size if device.type == "cpu" else max(batch_size, INFERENCE_CHUNK_ROWS)


def in_chunks(
    function: Callable[[torch.Tensor], torch.Tensor],
    rows: torch.Tensor,
    chunk_rows: int,
    device: torch.device | None = None,
    *,
    to_cpu: bool = False,
) -> torch.Tensor:
    """``function`` of ``rows``, ``chunk_rows`` rows at a time, the pieces concatenated: what a network's forward
    (or an attribution) of many rows costs in memory is then one chunk's activations, not every row's.

    Each chunk goes to ``device`` first (where given) and each result is detached, and brought to the CPU with
    ``to_cpu``. No rows still call ``function`` once, on the empty slice, so the result has the right trailing shape.
    """
    import torch

    def one(chunk: torch.Tensor) -> torch.Tensor:
        result = function(chunk if device is None else chunk.to(device)).detach()
        return result.cpu() if to_cpu else result

    if len(rows) == 0:
        return one(rows)
    return torch.cat([one(rows[start : start + chunk_rows]) for start in range(0, len(rows), chunk_rows)])


def rows_on(values: np.ndarray | torch.Tensor, device: torch.device, dtype: Any = None) -> torch.Tensor:
    """``values`` as one tensor on ``device``, copied there whole (pinned first on the way to a GPU, so the copy
    runs at full bandwidth). On the CPU this is ``torch.as_tensor`` (no copy when the type already fits).

    Refuses (:class:`ConfigError`) rows that would take more than half of the GPU's free memory.
    """
    import torch

    if isinstance(values, np.ndarray) and not values.flags.writeable:  # torch cannot share a read-only array
        values = values.copy()
    tensor = torch.as_tensor(values, dtype=dtype)
    if device.type == "cpu" or tensor.device == device:
        return tensor.to(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        needed = tensor.element_size() * tensor.numel()
        if needed > _RESIDENT_SHARE * free:
            raise ConfigError(
                setting="device",
                value=str(device),
                fix=f"the training rows need {needed / 2**30:.1f} GiB on it, more than half of its free "
                f"{free / 2**30:.1f} GiB; train on fewer rows, or use --device cpu",
            )
        if tensor.device.type == "cpu":
            tensor = tensor.pin_memory()
    return tensor.to(device, non_blocking=True)
