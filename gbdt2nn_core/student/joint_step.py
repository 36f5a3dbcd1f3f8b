"""The steps of a student's joint training (task terms + λ · alignment) on one process or several.

Every student's loop draws its epoch's steps with :func:`epoch_plan` (the batches, which of them carry the
alignment term and the term's factor), and with several processes
(:mod:`gbdt2nn_core.student.distributed`) wraps a :class:`JointStep` in ``DistributedDataParallel`` and
back-propagates :func:`data_parallel_loss` once per step; :func:`fitting_rows` counts the rows it trains on over
every process, and :func:`epoch_shares` gives each batch's share of the global batch. The built-in GBDT2NN student
and the ``mlp`` plugin train data-parallel through these alone, so that both keep the same guarantees: one process
and N processes on the same global batch take the same step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import attrs
import torch
from torch import nn

from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.kit.alignment import Alignment
from gbdt2nn_core.student.batchnorm import row_batches
from gbdt2nn_core.student.distributed import all_reduce_sum, batch_shares, shard_batches, world
from gbdt2nn_core.student.kit import AlignmentTargets, AlignmentWeight, check_finite_loss

__all__ = [
    "EpochPlan",
    "JointStep",
    "data_parallel_loss",
    "epoch_batches",
    "epoch_plan",
    "epoch_shares",
    "fitting_rows",
]

#: A batch's task terms, from its encoded rows and their training-row positions (e.g. GBDT2NN's task and
#: embedding losses, the mlp's task loss alone).
TaskTerms = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]


def fitting_rows(n: int) -> int:
    """The number of rows the student fits over every process, ``n`` being this process's (its shard's); a
    :class:`ConfigError` below two rows per process (BatchNorm and the variance of the targets need two)."""
    processes = world()
    n_all = int(all_reduce_sum(torch.tensor([n])).item()) if processes.distributed else n
    if n_all < 2 * processes.size:
        fix = "train on at least two rows" + (" per process (--nproc)" if processes.distributed else "")
        raise ConfigError(setting="training rows", value=n_all, fix=fix)
    return n_all


@attrs.frozen
class EpochPlan:
    """An epoch's steps: the batches of this process's training rows, which of them carry the alignment term, and
    the factor on the term of a batch that carries it (:func:`epoch_plan`)."""

    batches: list[torch.Tensor]
    #: ``(len(batches),)`` booleans.
    carry: torch.Tensor
    #: ``steps / aligned steps`` when the aligned rows are grouped into batches of their own, else 1.
    alignment_factor: float = 1.0


def epoch_plan(
    n: int,
    n_all: int,
    batch_size: int,
    generator: torch.Generator,
    alignment: Alignment | None,
    targets: AlignmentTargets | None,
) -> EpochPlan:
    """An epoch's batches (:func:`epoch_batches`) and which carry the alignment term: a share ``alignment.fraction``
    of them, drawn from ``generator``, and with ``alignment.batches == "grouped"`` only those made of aligned rows.

    Grouped: the epoch's shuffled rows are split into aligned and other rows, each cut into batches of about the
    same size (``k`` aligned batches of ``steps``, ``k`` the aligned rows' share of the steps, at least 1), placed in
    a random order drawn from ``generator`` — every batch is still a random draw of the training rows, so the task
    loss trains as before — and the term of an aligned batch is weighted by ``steps / k``, so that the epoch's
    alignment gradient is what every batch carrying its aligned rows gives. The layout stays mixed where grouping
    cannot help or would cut a batch below two rows (BatchNorm needs two): every row aligned, one step an epoch, or
    too few rows of a kind (on any process: every process takes the same steps).
    """
    batches = epoch_batches(n, n_all, batch_size, generator)
    # one process draws one number per batch_size rows (as before a one-row last batch joined the one before it),
    # several one per batch: the random stream of earlier versions either way
    draws = len(batches) if world().distributed else math.ceil(n / batch_size)
    carry = (torch.rand(draws, generator=generator) < (alignment.fraction if alignment else 0.0))[: len(batches)]
    if alignment is None or targets is None or alignment.batches == "mixed":
        return EpochPlan(batches, carry)
    order = torch.cat(batches) if batches else torch.zeros(0, dtype=torch.int64)
    is_aligned = (targets.position[order.to(targets.position.device)] >= 0).cpu()
    aligned, others = order[is_aligned], order[~is_aligned]
    steps = len(batches)
    # decided on every process's count, never on this shard's alone: a process that left here while the others
    # went on to the collective below would leave them waiting
    aligned_all = int(all_reduce_sum(torch.tensor([len(aligned)], dtype=torch.int64))[0])
    if aligned_all >= n_all:  # every row aligned: every batch carries the term anyway
        return EpochPlan(batches, carry)
    k = min(steps - 1, max(1, round(steps * aligned_all / n_all)))
    # every process must decide alike: any process whose batches would fall below two rows keeps them mixed
    too_few = int(steps < 2 or len(aligned) < 2 * k or len(others) < 2 * (steps - k))
    if int(all_reduce_sum(torch.tensor([too_few], dtype=torch.int64))[0]):
        return EpochPlan(batches, carry)
    kinds = torch.randperm(steps, generator=generator) < k  # which steps are aligned batches
    aligned_batches = iter(torch.tensor_split(aligned, k))
    other_batches = iter(torch.tensor_split(others, steps - k))
    grouped = [next(aligned_batches) if kind else next(other_batches) for kind in kinds.tolist()]
    return EpochPlan(grouped, kinds & carry, steps / k)


def epoch_batches(n: int, n_all: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """An epoch's batches of this process's ``n`` rows (positions) in a random order drawn from ``generator``.

    One process: a permutation of the rows cut by :func:`row_batches`. Several: the rows of a permutation of all
    ``n_all`` positions that fall in this shard, cut into as many batches as every other process's
    (:func:`shard_batches`): the generator draws the same numbers on every process and stays in step everywhere.
    """
    if not world().distributed:
        return row_batches(torch.randperm(n, generator=generator), batch_size)
    order = torch.randperm(n_all, generator=generator)
    return shard_batches(order[order < n], batch_size)


class JointStep(nn.Module):
    """A batch's loss parts as a module's forward, so that ``DistributedDataParallel`` wraps one forward per step
    (its gradient all-reduce fires in the backward of what the forward returns).

    The attributions inside are gradients with respect to inputs (``create_graph=True``), never parameters. A batch
    that carries the alignment term computes it on every process, as zero where the process's rows have no
    aligned row (:meth:`AlignmentTargets.empty_loss`), so that every process runs the same backward graph.
    """

    def __init__(self, module: nn.Module, terms: TaskTerms, alignment: AlignmentTargets | None) -> None:
        super().__init__()
        self.module = module  # a submodule: its parameters are the ones DistributedDataParallel syncs
        self.terms, self.alignment = terms, alignment

    def forward(
        self, z: torch.Tensor, rows: torch.Tensor, carry: bool
    ) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None, int]:
        """``(task terms, L_align or None, aligned rows)`` of the batch ``z`` (training rows ``rows``)."""
        terms = self.terms(z, rows)
        if not carry or self.alignment is None:
            return terms, None, 0
        aligned = self.alignment.batch_loss(self.module, z, rows)
        if aligned is None:
            return terms, self.alignment.empty_loss(self.module, z), 0
        return terms, aligned[0], aligned[1]


def epoch_shares(
    batches: list[torch.Tensor], carry: torch.Tensor, alignment: AlignmentTargets | None
) -> list[tuple[float, float]]:
    """Each batch's shares of the global batch's rows and aligned rows (:func:`batch_shares`), for an epoch's
    ``batches`` of which those where ``carry`` is true carry the alignment term: one collective for the epoch, since
    the counts are known before it starts (a collective costs ~1 ms of latency on gloo)."""
    aligned = [
        alignment.aligned_count(rows) if alignment is not None and bool(carry[b]) else 0
        for b, rows in enumerate(batches)
    ]
    return batch_shares([len(rows) for rows in batches], aligned)


def data_parallel_loss(
    rest: torch.Tensor,
    loss_align: torch.Tensor | None,
    share: float,
    aligned_share: float,
    *,
    alignment: Alignment | None,
    weight: AlignmentWeight | None,
    rest_name: str,
    epoch: int,
    lr: float,
    alignment_factor: float = 1.0,
) -> torch.Tensor:
    """What this process back-propagates in a data-parallel step: its share of the global batch's loss
    ``rest + λ · L_align``, so that ``DistributedDataParallel``'s gradient average is the gradient of one process's
    loss on the global batch.

    ``rest`` is the batch's loss without the alignment term (named ``rest_name`` in errors), ``loss_align`` the term
    over the batch's aligned rows (``None`` when the step carries none); ``share`` and ``aligned_share`` are this
    process's shares of the global batch's rows and aligned rows (:func:`epoch_shares`). One collective per step
    tells every process whether every process's losses are finite — a non-finite loss stops every process at once
    (a process that stopped alone would leave the others waiting) — and gives the global batch's losses, on which
    ``weight`` caps λ, so that every process uses the same λ; ``alignment_factor`` multiplies the term
    (:attr:`EpochPlan.alignment_factor`).
    """
    local = [
        0.0 if bool(torch.isfinite(rest)) else 1.0,
        0.0 if loss_align is None or bool(torch.isfinite(loss_align)) else 1.0,
        float(rest.detach()) * share,
        float(loss_align.detach()) * aligned_share if loss_align is not None else 0.0,
    ]
    bad_rest, bad_align, rest_global, align_global = all_reduce_sum(torch.tensor(local, dtype=torch.float64)).tolist()
    if bad_rest:
        check_finite_loss(torch.tensor(math.nan), rest_name, epoch, lr, alignment)
    loss = share * rest
    if alignment is None or loss_align is None:
        return loss
    if bad_align:
        check_finite_loss(torch.tensor(math.nan), "the alignment loss", epoch, lr, alignment)
    lam = alignment.weight
    if weight is not None:
        lam = weight.weight(torch.tensor(rest_global), torch.tensor(align_global))
    return loss + alignment_factor * lam * aligned_share * loss_align
