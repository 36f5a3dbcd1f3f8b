"""Several processes training one student: the process group, who trains the teacher, and each process's shard.

``gbdt2nn distill --nproc N`` starts N copies of the command on this machine through torch's elastic launcher;
``torchrun`` starts them on several machines (docs/scaling-out.md has the commands). Either way
every copy finds ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in its environment
and joins the process group in :func:`process_group` (gloo on CPU; NCCL when the student trains on CUDA,
``cuda:{LOCAL_RANK}``). Then:

- rank 0 trains the teacher (or wraps the given booster) and sends its model file to every process
  (:func:`shared_teacher`): every process wraps the very same booster, so encoder, leaves and margins agree;
- every process takes its own disjoint shard of the student's fitting rows (:func:`shard_of`; the aligned rows'
  teacher TreeSHAP is computed by the process whose shard holds them, nobody else) and trains data-parallel
  (:mod:`gbdt2nn_core.student.distributed`);
- rank 0 alone evaluates on the test rows and writes the run folder and the checkpoints.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np

from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.host.interfaces import Student, Teacher
from gbdt2nn_core.student.distributed import World, broadcast_bytes, shard_rows, world

__all__ = [
    "backend_for",
    "check_data_parallel",
    "launched",
    "process_group",
    "shard_of",
    "shared_teacher",
]

#: The variables torchrun (and ``--nproc``) set in every process.
_LAUNCH_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched() -> bool:
    """Whether this process was started by torchrun or ``--nproc`` (its environment names a process group)."""
    return all(name in os.environ for name in _LAUNCH_VARIABLES)


def backend_for(device: str) -> str:
    """The collective backend for a student on ``device``: NCCL for CUDA, gloo otherwise (CPU)."""
    return "nccl" if device.startswith("cuda") else "gloo"


@contextlib.contextmanager
def process_group(device: str = "cpu", timeout: timedelta = timedelta(minutes=30)) -> Iterator[World]:
    """Join the process group the environment describes (see :func:`launched`) for the block, and leave it after;
    without one, a world of one process. ``device`` picks the backend (:func:`backend_for`)."""
    import torch.distributed as dist

    if not launched() or dist.is_initialized():
        yield world()
        return
    backend = backend_for(device)
    if backend == "nccl":
        import torch

        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend, timeout=timeout)
    try:
        yield world()
        # leave together: gloo's TCP transport aborts a process (SIGABRT, "Connection reset by peer") whose peer
        # closes its connections while I/O is in flight; after an error, leave at once (a barrier could hang)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def check_data_parallel(student: Student, name: str, nproc: int) -> None:
    """Refuse to train ``student`` (registered as ``name``) on ``nproc`` > 1 processes when it cannot."""
    if nproc > 1 and not student.supports_data_parallel:
        raise ConfigError(
            setting="--nproc",
            value=nproc,
            fix=f"the {name!r} student trains in one process only; use the gbdt2nn student or leave --nproc out",
        )


def shard_of(n_rows: int) -> np.ndarray | None:
    """This process's rows among ``n_rows`` (see :func:`~gbdt2nn_core.student.distributed.shard_rows`), or
    ``None`` with one process (every row)."""
    processes = world()
    return shard_rows(n_rows, processes.rank, processes.size) if processes.distributed else None


def shared_teacher(train: Callable[[], Teacher], wrap: Callable[[str], Teacher], suffix: str) -> Teacher:
    """The teacher ``train()`` returns on rank 0, on every process: rank 0 saves its model file (``suffix``) and
    sends the bytes; every other process writes them to a temporary file and ``wrap``s it. One process: ``train()``.

    A booster trained once and shared, rather than trained on every process from the same seed: tree libraries
    promise the same model for the same seed only for the same thread count, and N copies would cost N trainings.
    """
    processes = world()
    if not processes.distributed:
        return train()
    payload: bytes | None = None
    teacher = None
    if processes.leader:
        teacher = train()
        with tempfile.TemporaryDirectory(prefix="gbdt2nn-teacher-") as folder:
            path = Path(folder) / f"teacher{suffix}"
            teacher.save(path)
            payload = path.read_bytes()
    payload = broadcast_bytes(payload)
    if teacher is not None:
        return teacher
    with tempfile.TemporaryDirectory(prefix="gbdt2nn-teacher-") as folder:
        path = Path(folder) / f"teacher{suffix}"
        path.write_bytes(payload)
        return wrap(str(path))
