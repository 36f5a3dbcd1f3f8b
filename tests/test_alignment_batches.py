"""How an epoch's batches hold the aligned rows (``Alignment.batches``): grouped into batches of their own, weighted
up so that the epoch aligns as much, or mixed into every batch — checked against the layout's own definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.kit.alignment import Alignment
from gbdt2nn_core.pipeline import DistillConfig
from gbdt2nn_core.student.joint_step import epoch_batches, epoch_plan
from gbdt2nn_core.student.kit import AlignmentTargets

D = 3  # encoded columns = input columns (an identity aggregation)


def _targets(
    n: int, aligned: np.ndarray, batches: str = "grouped", fraction: float = 1.0
) -> tuple[Alignment, AlignmentTargets]:
    alignment = Alignment(
        attributor=object(),  # type: ignore[arg-type]  # the layout never calls it
        loss=torch.nn.functional.mse_loss,
        teacher_attributions=np.ones((len(aligned), D)),
        rows=np.sort(aligned),
        fraction=fraction,
        batches=batches,  # type: ignore[arg-type]
    )
    return alignment, AlignmentTargets(alignment, n, torch.eye(D))


def _aligned(n: int, share: float, seed: int = 0) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n, size=round(n * share), replace=False))


@pytest.mark.parametrize(("n", "share", "batch_size"), [(35_166, 0.1, 256), (3_000, 0.25, 64), (1_000, 0.05, 100)])
def test_grouped_batches_hold_aligned_rows_alone_and_align_as_much_per_epoch(
    n: int, share: float, batch_size: int
) -> None:
    aligned = _aligned(n, share)
    alignment, targets = _targets(n, aligned)
    plan = epoch_plan(n, n, batch_size, torch.Generator().manual_seed(0), alignment, targets)
    mixed = epoch_batches(n, n, batch_size, torch.Generator().manual_seed(0))
    steps = len(mixed)
    assert len(plan.batches) == steps  # as many steps as the mixed layout
    every = torch.cat(plan.batches).numpy()
    np.testing.assert_array_equal(np.sort(every), np.arange(n))  # every row once
    is_aligned = np.isin(np.arange(n), aligned)
    kinds = [bool(is_aligned[rows.numpy()].all()) for rows in plan.batches]
    for rows, kind in zip(plan.batches, kinds, strict=True):
        assert is_aligned[rows.numpy()].any() == kind  # never mixed: all aligned or none
        assert len(rows) >= 2  # BatchNorm trains on it
    k = sum(kinds)
    assert k == min(steps - 1, max(1, round(steps * len(aligned) / n)))
    assert plan.carry.tolist() == kinds  # fraction 1: every aligned batch carries the term, no other
    assert plan.alignment_factor == pytest.approx(steps / k)
    # the epoch's total weight on the (per-batch mean) term is the number of steps, as in the mixed layout where
    # every batch carries it; and each aligned row weighs about the same (factor / rows of its batch ≈ steps / m)
    assert plan.alignment_factor * int(plan.carry.sum()) == pytest.approx(steps)
    per_row = [plan.alignment_factor / len(rows) for rows, kind in zip(plan.batches, kinds, strict=True) if kind]
    assert max(per_row) / min(per_row) < 1.1
    assert np.mean(per_row) == pytest.approx(steps / len(aligned), rel=0.1)
    # the other rows come in batches of about the batch size: the task loss trains as before
    sizes = [len(rows) for rows, kind in zip(plan.batches, kinds, strict=True) if not kind]
    assert max(sizes) - min(sizes) <= 1


def test_mixed_keeps_the_random_draw_of_earlier_versions() -> None:
    n, batch_size = 5_000, 128
    alignment, targets = _targets(n, _aligned(n, 0.1), batches="mixed", fraction=0.5)
    plan = epoch_plan(n, n, batch_size, torch.Generator().manual_seed(3), alignment, targets)
    generator = torch.Generator().manual_seed(3)
    batches = epoch_batches(n, n, batch_size, generator)
    carry = torch.rand(math.ceil(n / batch_size), generator=generator) < 0.5
    assert [rows.tolist() for rows in plan.batches] == [rows.tolist() for rows in batches]
    assert plan.carry.tolist() == carry[: len(batches)].tolist()
    assert plan.alignment_factor == 1.0


@pytest.mark.parametrize(
    ("n", "aligned_rows", "batch_size", "why"),
    [
        (400, 400, 64, "every row aligned"),
        (400, 40, 512, "one step an epoch"),
        (400, 1, 64, "one aligned row cannot make a batch"),
        (400, 399, 64, "one other row cannot make a batch"),
    ],
)
def test_grouping_falls_back_to_mixed_where_it_cannot_help(
    n: int, aligned_rows: int, batch_size: int, why: str
) -> None:
    aligned = np.arange(n)[:aligned_rows] if aligned_rows == n else _aligned(n, aligned_rows / n)
    alignment, targets = _targets(n, aligned)
    plan = epoch_plan(n, n, batch_size, torch.Generator().manual_seed(1), alignment, targets)
    mixed_alignment, mixed_targets = _targets(n, aligned, batches="mixed")
    mixed = epoch_plan(n, n, batch_size, torch.Generator().manual_seed(1), mixed_alignment, mixed_targets)
    assert [rows.tolist() for rows in plan.batches] == [rows.tolist() for rows in mixed.batches], why
    assert plan.carry.tolist() == mixed.carry.tolist(), why
    assert plan.alignment_factor == 1.0, why


def test_a_share_of_the_aligned_batches_carries_the_term() -> None:
    n = 20_000
    alignment, targets = _targets(n, _aligned(n, 0.2), fraction=0.5)
    plan = epoch_plan(n, n, 100, torch.Generator().manual_seed(0), alignment, targets)
    is_aligned = np.isin(np.arange(n), alignment.rows)
    kinds = torch.tensor([bool(is_aligned[rows.numpy()].all()) for rows in plan.batches])
    assert not bool((plan.carry & ~kinds).any())  # only aligned batches carry it
    assert 0.3 < float(plan.carry.sum()) / float(kinds.sum()) < 0.7  # about half of them (40 aligned batches)


def test_an_unknown_layout_is_a_one_line_error() -> None:
    with pytest.raises(ConfigError, match=r"^invalid alignment_batches='random': use 'grouped' or 'mixed'$"):
        DistillConfig(alignment_batches="random")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^invalid alignment_batches='random': use 'grouped' or 'mixed'$"):
        _targets(10, np.arange(2), batches="random")
