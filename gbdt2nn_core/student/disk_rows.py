"""Training matrices that stay on disk: batches gathered from the file as the training loop asks for them.

The pipeline hands a student its encoded rows as an on-disk ``np.memmap`` when they are large (see
:mod:`gbdt2nn_core.data.rowfile`); :func:`training_rows` turns such a matrix into :class:`DiskRows`, which the
training loops, the validation monitor and the BatchNorm pass index like a CPU tensor (``rows[index]``,
``rows[start:stop]``, ``len``, ``shape``, ``device``). Every other matrix, and any matrix bound for a GPU (copied
there whole, once: :func:`~gbdt2nn_core.host.device.rows_on`), becomes a tensor as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from gbdt2nn_core.data.rowfile import RowFolder, is_on_disk, read_rows, take_rows
from gbdt2nn_core.host.device import rows_on

__all__ = ["DiskRows", "RowSource", "rows_like", "select_rows", "training_rows"]


class DiskRows:
    """A CPU tensor's indexing over an on-disk matrix: ``rows[index]`` gathers those rows from the file."""

    def __init__(self, values: np.ndarray, dtype: torch.dtype) -> None:
        self.values, self.dtype = values, dtype
        self.shape = torch.Size(values.shape)
        self.device = torch.device("cpu")

    def remove(self) -> None:
        """Delete the file (the rows can no longer be read): for a matrix that its reader made for itself."""
        Path(str(getattr(self.values, "filename", ""))).unlink(missing_ok=True)

    def __len__(self) -> int:
        return int(self.shape[0])

    def __getitem__(self, index: torch.Tensor | slice) -> torch.Tensor:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("DiskRows: only contiguous slices")
            block = read_rows(self.values, start, stop)
        else:
            block = take_rows(self.values, index.cpu().numpy())
        return torch.from_numpy(block).to(self.dtype)


#: What the training loop indexes: a tensor on the training device, or rows on disk.
RowSource = torch.Tensor | DiskRows


def select_rows(source: RowSource, rows: torch.Tensor) -> torch.Tensor:
    """The batch ``rows`` (a 1-d index tensor) of ``source``: ``index_select`` on a tensor, which on the CPU takes a
    fifth of the time of ``source[rows]`` (68 against 13 µs for 512 rows of adult's ``(n, 10, 20)`` targets)."""
    if isinstance(source, DiskRows):
        return source[rows]
    return source.index_select(0, rows)


def training_rows(values: np.ndarray, device: torch.device, dtype: torch.dtype) -> RowSource:
    """``values`` as the training loop reads it: :class:`DiskRows` for an on-disk matrix trained on the CPU, else
    one tensor on ``device`` (:func:`~gbdt2nn_core.host.device.rows_on`)."""
    if device.type == "cpu" and is_on_disk(values):
        return DiskRows(values, dtype)
    return rows_on(values, device, dtype)


def rows_like(
    like: np.ndarray, shape: tuple[int, ...], chunks: Callable[[], Iterator[torch.Tensor]], device: torch.device
) -> RowSource:
    """A matrix of ``shape`` computed chunk by chunk (``chunks()`` yields consecutive row blocks): written beside
    ``like`` when ``like`` is in one of the pipeline's on-disk folders (:meth:`RowFolder.holds`) and the work is on the
    CPU, else filled into one tensor on ``device`` (no second copy, as a concatenation would make)."""
    if device.type == "cpu" and RowFolder.holds(like):
        arrays = lambda: (chunk.detach().cpu().numpy() for chunk in chunks())  # noqa: E731
        written = RowFolder.beside(like).write("targets", shape, arrays)
        return training_rows(written, device, torch.float32)
    out = torch.empty(shape, dtype=torch.float32, device=device)
    start = 0
    for chunk in chunks():
        out[start : start + len(chunk)] = chunk
        start += len(chunk)
    return out
