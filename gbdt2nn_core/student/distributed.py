"""Data-parallel training on ``torch.distributed``: what a student's loop needs when several processes train it.

The pipeline starts the process group (:mod:`gbdt2nn_core.pipeline.processes`) and hands every process its own
disjoint shard of the training rows; a student's loop then asks :func:`world` who it is and, with more than one
process:

- wraps its network in ``DistributedDataParallel`` (:func:`data_parallel`), so that the **one** backward of the
  joint loss all-reduces the gradients once per step (attributions are gradients with respect to *inputs*, taken
  with ``create_graph=True`` inside the forward, never with respect to parameters);
- normalises with the **global** batch's moments (:func:`synchronised_batchnorm`): ``torch.nn.SyncBatchNorm``
  refuses CPU tensors (torch 2.13: "SyncBatchNorm expected input tensor to be on GPU"), so every BatchNorm layer
  all-reduces its batch sums instead (differentiably, one all-reduce per layer and direction), on gloo and NCCL
  alike;
- cuts its shard into the same number of batches as every other process (:func:`shard_batches`), weights its
  losses by its share of the global batch (:func:`batch_shares`), and takes dataset statistics over every shard
  (:func:`global_mean_var`).

With one process (no process group) every function here is the identity or the single-process computation.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Sequence
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

__all__ = [
    "World",
    "all_reduce_sum",
    "batch_shares",
    "broadcast_buffers",
    "broadcast_bytes",
    "broadcast_state",
    "data_parallel",
    "global_mean_var",
    "shard_batches",
    "shard_rows",
    "synchronised_batchnorm",
    "world",
]


@attrs.frozen(kw_only=True)
class World:
    """This process's place among the processes that train one student together."""

    rank: int = 0
    size: int = 1

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def leader(self) -> bool:
        """Whether this process writes (the run folder, checkpoints) and reports: rank 0."""
        return self.rank == 0


def world() -> World:
    """The initialised default process group's rank and size, or a world of one process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(rank=dist.get_rank(), size=dist.get_world_size())


def shard_rows(n_rows: int, rank: int, size: int) -> np.ndarray:
    """The positions of process ``rank``'s shard of ``n_rows`` rows: every ``size``-th row from ``rank`` on.

    Shards are disjoint, cover every row, and differ in length by at most one (``DistributedSampler``'s strided
    split, without its padding).
    """
    return np.arange(rank, n_rows, size, dtype=np.int64)


def _collective_device() -> torch.device:
    """Where the tensors of a collective live: NCCL reduces CUDA tensors only, gloo CPU ones."""
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The sum of ``values`` over every process (not differentiable); ``values`` itself with one process."""
    if not world().distributed:
        return values
    import torch.distributed as dist

    summed = values.detach().to(_collective_device(), copy=True)
    dist.all_reduce(summed)
    return summed.to(values.device)


def global_mean_var(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Column means, unbiased variances and the row count of ``values`` ``(n, ...)`` over every process's rows."""
    flat = values.detach().double().reshape(len(values), -1)
    n = all_reduce_sum(torch.tensor([float(len(values))], dtype=torch.float64))
    count = int(n.item())
    mean = all_reduce_sum(flat.sum(0)) / count
    squares = all_reduce_sum(((flat - mean) ** 2).sum(0))
    var = squares / max(count - 1, 1)
    shape = values.shape[1:]
    return mean.reshape(shape).to(values.dtype), var.reshape(shape).to(values.dtype), count


def shard_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """``order`` (this process's shard, shuffled) cut into as many batches as every other process cuts its own.

    The count is that of the largest shard in batches of ``batch_size`` rows (every process runs a collective per
    batch, so the counts must agree); the batches of a shard differ in size by at most one row. (One process
    trains on :func:`~gbdt2nn_core.student.batchnorm.row_batches`.)
    """
    largest = torch.tensor([len(order)], dtype=torch.int64)
    if world().distributed:
        import torch.distributed as dist

        largest = largest.to(_collective_device())
        dist.all_reduce(largest, op=dist.ReduceOp.MAX)
    steps = max(1, math.ceil(int(largest.item()) / batch_size))
    return list(torch.tensor_split(order, steps))


def batch_shares(rows: Sequence[int], aligned_rows: Sequence[int]) -> list[tuple[float, float]]:
    """This process's share of each batch's global rows and of its global aligned rows, times the number of
    processes, from this process's row counts per batch (``rows``) and aligned-row counts (``aligned_rows``): one
    all-reduce for an epoch, since the counts are known before it starts.

    ``DistributedDataParallel`` averages gradients over the processes; a loss that is a mean over this process's
    rows, multiplied by its share, makes that average the gradient of the mean over the global batch (as one
    process training on the global batch computes it), also when the shards' batches differ in size. A batch
    without aligned rows anywhere gets an aligned share of 0.
    """
    if not world().distributed:
        return [(1.0, 1.0)] * len(rows)
    size = world().size
    local = torch.tensor([list(rows), list(aligned_rows)], dtype=torch.float64)
    totals = all_reduce_sum(local)
    shares = size * local[0] / totals[0].clamp_min(1.0)
    aligned = torch.where(totals[1] > 0, size * local[1] / totals[1].clamp_min(1.0), torch.zeros_like(totals[1]))
    return list(zip(shares.tolist(), aligned.tolist(), strict=True))


def broadcast_bytes(payload: bytes | None, *, source: int = 0) -> bytes:
    """``payload`` of process ``source``, on every process (a raw byte tensor: nothing is pickled)."""
    import torch.distributed as dist

    device = _collective_device()
    size = torch.tensor([len(payload) if payload is not None else 0], dtype=torch.int64, device=device)
    dist.broadcast(size, source)
    buffer = torch.zeros(int(size.item()), dtype=torch.uint8, device=device)
    if dist.get_rank() == source:
        assert payload is not None
        buffer = torch.frombuffer(bytearray(payload), dtype=torch.uint8).to(device)
    dist.broadcast(buffer, source)
    return buffer.cpu().numpy().tobytes()


def broadcast_state(state: dict[str, Any] | None, *, source: int = 0) -> dict[str, Any] | None:
    """Process ``source``'s ``state`` (tensors, numbers, strings, containers: a checkpoint) on every process;
    saved with ``torch.save`` and read back with ``torch.load(weights_only=True)``."""
    buffer = io.BytesIO()
    if world().rank == source:
        torch.save({"state": state}, buffer)
    payload = broadcast_bytes(buffer.getvalue() if world().rank == source else None, source=source)
    received: dict[str, Any] | None = torch.load(io.BytesIO(payload), weights_only=True)["state"]
    return received


def broadcast_buffers(module: nn.Module, *, source: int = 0) -> None:
    """Copy process ``source``'s buffers of ``module`` (BatchNorm's running statistics) to every process."""
    if not world().distributed:
        return
    import torch.distributed as dist

    device = _collective_device()
    for buffer in module.buffers():
        carried = buffer.detach().to(device, copy=True)
        dist.broadcast(carried, source)
        buffer.copy_(carried.to(buffer.device))


def data_parallel(module: nn.Module) -> nn.Module:
    """``module`` wrapped in ``DistributedDataParallel`` when several processes train, else ``module``.

    Buffers are broadcast from rank 0 once, not at every forward: the synchronised BatchNorm keeps every
    process's running statistics equal by construction.
    """
    if not world().distributed:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, forward_sync_buffers=False)


class _SumOverProcesses(torch.autograd.Function):
    """The sum of a tensor over every process, differentiable: the gradient of a sum that every process uses is
    the sum of their gradients (``torch.distributed.nn.functional.all_reduce``, which torch 2.13 deprecates)."""

    @staticmethod
    def forward(ctx: Any, values: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        summed = values.clone()
        dist.all_reduce(summed)
        return summed

    @staticmethod
    def backward(ctx: Any, gradient: torch.Tensor) -> torch.Tensor:
        # through the Function again, so that a double backward (attributions taken with create_graph=True and
        # then differentiated) sums over the processes too
        return _sum_over_processes(gradient)


def _sum_over_processes(values: torch.Tensor) -> torch.Tensor:
    summed: torch.Tensor = _SumOverProcesses.apply(values)  # type: ignore[no-untyped-call]  # torch leaves it untyped
    return summed


class _GlobalBatchNorm(nn.BatchNorm1d):
    """``BatchNorm1d`` whose training-mode moments are those of the global batch (every process's rows).

    Only ever the class of an existing layer inside :func:`synchronised_batchnorm`; in eval mode (running
    statistics: attributions, serving) it is the plain layer and communicates nothing.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(input)
        # One all-reduce per layer (a gloo all-reduce costs ~1 ms of latency on a small VM, and a training step
        # crosses every layer several times): the sums of the rows and of their squares, shifted by the running
        # mean (equal on every process) and in float64, so that E[x²] - E[x]² does not cancel.
        shift = self.running_mean.detach().clone() if self.running_mean is not None else None
        centred = (input if shift is None else input - shift).double()
        count_local = torch.tensor([float(input.shape[0])], dtype=torch.float64, device=input.device)
        sums = _sum_over_processes(torch.cat([centred.sum(0), (centred * centred).sum(0), count_local]))
        channels = input.shape[1]
        count = sums[-1]
        shifted_mean = sums[:channels] / count
        var = (sums[channels:-1] / count - shifted_mean * shifted_mean).clamp_min(0.0).to(input.dtype)
        mean = (shifted_mean if shift is None else shifted_mean + shift).to(input.dtype)
        with torch.no_grad():
            self._track(mean.detach(), var.detach(), float(count))
        normed = (input - mean) * torch.rsqrt(var + self.eps)
        return normed * self.weight + self.bias if self.affine else normed

    def _track(self, mean: torch.Tensor, var: torch.Tensor, count: float) -> None:
        """Update the running statistics as ``BatchNorm1d`` does (unbiased variance; ``momentum=None``: the
        cumulative average)."""
        if not self.track_running_stats or self.running_mean is None or self.running_var is None:
            return
        assert self.num_batches_tracked is not None
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * count / max(count - 1.0, 1.0)
        self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)


@contextlib.contextmanager
def synchronised_batchnorm(module: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block, every ``BatchNorm1d`` of ``module`` normalises with the global batch's moments when
    several processes train; afterwards the layers are plain ``BatchNorm1d`` again (for saving and export).

    The layers change class in place rather than being replaced, so that the optimizer's parameters, the
    state-dict keys and the running-statistics tensors stay the very same objects. ``enabled=False`` leaves every
    layer on its own process's rows (``DistributedDataParallel`` without ``SyncBatchNorm``): the running statistics
    then differ between processes until :func:`broadcast_buffers` or a synchronised BatchNorm pass.
    """
    if not (enabled and world().distributed):
        yield
        return
    norms = [m for m in module.modules() if type(m) is nn.BatchNorm1d]
    for norm in norms:
        norm.__class__ = _GlobalBatchNorm
    try:
        yield
    finally:
        for norm in norms:
            norm.__class__ = nn.BatchNorm1d
