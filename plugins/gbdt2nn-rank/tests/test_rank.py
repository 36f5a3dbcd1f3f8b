"""rank: pairwise logistic loss on teacher-ordered feature pairs, invariant to the student's scale."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from gbdt2nn_core import Registry
from gbdt2nn_core.errors import ConfigError, DataError
from gbdt2nn_core.testing import check_alignment_loss
from gbdt2nn_rank import PairwiseRankLoss
from gbdt2nn_rank.plugin import gbdt2nn_register_alignment_losses


@pytest.mark.parametrize("options", [{}, {"temperature": 0.1, "tie_tolerance": 0.0}], ids=str)
def test_conforms_to_the_alignment_loss_contract(options):
    (spec,) = gbdt2nn_register_alignment_losses()
    check_alignment_loss(spec, options=options)


def test_registered_under_its_public_name():
    loss = Registry(strict=True).alignment_loss("rank", temperature=0.5)
    assert isinstance(loss, PairwiseRankLoss)
    assert loss.temperature == 0.5


def test_matches_a_pair_by_pair_reference():
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    teacher[1, 3] = teacher[1, 0]  # a tie, which must be skipped
    tau = 0.7
    rows = []
    for s, t in zip(student, teacher, strict=True):
        s_hat = (s - s.mean()) / s.std(unbiased=False)
        pairs = [(i, j) for i, j in itertools.permutations(range(5), 2) if t[i] - t[j] > 1e-3 * t.abs().max()]
        rows.append(sum(F.softplus(-(s_hat[i] - s_hat[j]) / tau) for i, j in pairs) / len(pairs))
    expected = torch.stack(rows).mean()
    torch.testing.assert_close(PairwiseRankLoss(temperature=tau)(student, teacher), expected)


def test_invariant_to_positive_rescaling_and_shifting_of_student_rows():
    torch.manual_seed(1)
    student, teacher = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    scales = torch.tensor([1e-3, 0.5, 1.0, 7.0, 100.0, 1e4], dtype=torch.float64)[:, None]
    loss = PairwiseRankLoss()
    torch.testing.assert_close(loss(student * scales, teacher), loss(student, teacher), rtol=1e-12, atol=0)
    torch.testing.assert_close(loss(student + 5.0, teacher), loss(student, teacher), rtol=1e-12, atol=0)


def test_lower_for_the_teachers_order_than_for_a_shuffled_one():
    generator = torch.Generator().manual_seed(2)
    teacher = torch.randn(32, 10, generator=generator)
    same_order = torch.sign(teacher) * teacher.abs().sqrt() * 50  # another scale, same order
    shuffled = same_order[:, torch.randperm(10, generator=generator)]
    loss = PairwiseRankLoss()
    assert loss(same_order, teacher) < loss(shuffled, teacher) < loss(-same_order, teacher)


def test_ties_and_constant_rows_give_no_pairs_and_no_nan():
    teacher = torch.tensor([[1.0, 1.0, 1.0], [3.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    student = torch.tensor([[0.0, 0.0, 0.0], [5.0, 5.0, 5.0], [1.0, 2.0, 3.0]], requires_grad=True)
    value = PairwiseRankLoss()(student, teacher)
    value.backward()
    # Only row 1 has ordered pairs, and its student row is constant: every gap is 0, softplus(0) = log 2.
    assert value.item() == pytest.approx(np.log(2.0))
    assert torch.isfinite(student.grad).all()
    assert PairwiseRankLoss()(student, torch.ones(3, 3)).item() == 0.0


def test_tie_tolerance_is_relative_to_the_rows_largest_attribution():
    teacher = torch.tensor([[100.0, 0.0, 0.05], [1.0, 0.0, 0.05]])
    student = torch.tensor([[1.0, 0.0, -1.0], [1.0, 0.0, -1.0]])
    loose = PairwiseRankLoss(tie_tolerance=1e-3)  # 0.05 vs 0 is a tie next to 100, an order next to 1
    per_row = [loose(student[i : i + 1], teacher[i : i + 1]).item() for i in range(2)]
    assert per_row[0] < per_row[1]


def test_rejects_bad_options_and_shapes_in_one_line():
    with pytest.raises(ConfigError, match="temperature=-1"):
        PairwiseRankLoss(temperature=-1)
    with pytest.raises(ConfigError, match="tie_tolerance=2"):
        PairwiseRankLoss(tie_tolerance=2)
    with pytest.raises(DataError, match=r"\(4, 3\) and teacher attributions \(4, 2\)"):
        PairwiseRankLoss()(torch.zeros(4, 3), torch.zeros(4, 2))


def _optimise(loss, teacher: torch.Tensor, start: torch.Tensor, *, lr: float, steps: int) -> torch.Tensor:
    student = start.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([student], lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        loss(student, teacher).backward()
        optimiser.step()
    return student.detach()


def _normalised_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    # The same as gbdt2nn-mse with normalize=True, written out so that this plugin's tests stand alone.
    return F.mse_loss(student / teacher.norm(dim=1, keepdim=True), teacher / teacher.norm(dim=1, keepdim=True))


def _mean_spearman(student: torch.Tensor, teacher: torch.Tensor) -> float:
    return float(np.mean([spearmanr(s, t).statistic for s, t in zip(student.numpy(), teacher.numpy(), strict=True)]))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("lr_fraction", "steps"), [(1e-2, 100), (3e-3, 300)])
@pytest.mark.parametrize("normalize", [False, True], ids=["mse", "normalised-mse"])
def test_rank_moves_spearman_more_than_mse_when_scales_differ(seed, lr_fraction, steps, normalize):
    """Free student attributions at 100× the teacher's scale, Adam, the same step budget for both losses.

    MSE spends its steps shrinking the student towards the teacher's scale, which leaves the order as random as
    it started; rank changes the order directly. Every seed and budget must show it (no best-of): over ten
    seeds the smallest gap seen was 0.50 at (1e-2, 100) and 0.53 at (3e-3, 300). Adam moves each value by about
    lr per step, so lr is a fraction of the student's scale. With the student 100× *smaller* than the teacher
    both losses reach Spearman ≈ 1 quickly under Adam, so no claim is made for that direction.
    """
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(64, 12, generator=generator) * torch.randn(1, 12, generator=generator).exp()
    start = 100 * teacher.std() * torch.randn(64, 12, generator=generator)
    lr = lr_fraction * start.std().item()
    assert abs(_mean_spearman(start, teacher)) < 0.1
    rank = _mean_spearman(_optimise(PairwiseRankLoss(), teacher, start, lr=lr, steps=steps), teacher)
    mse_loss = _normalised_mse if normalize else F.mse_loss
    mse_student = _optimise(mse_loss, teacher, start, lr=lr, steps=steps)
    assert mse_loss(mse_student, teacher) < mse_loss(start, teacher)  # MSE did make progress on its own loss
    mse = _mean_spearman(mse_student, teacher)
    assert rank > mse + 0.25, (rank, mse)


def test_plugin_module_does_not_import_torch():
    code = "import sys, gbdt2nn_rank.plugin; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_batch_beyond_pairs_at_once_gives_the_same_loss_and_gradients_a_slice_at_a_time():
    # the reference is the whole batch at once; the attributions are gradients themselves (created with
    # create_graph, as an attributor's are), so the weights' gradient passes through the recomputed slices
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(23, 9, dtype=torch.float64, generator=generator, requires_grad=True)
    teacher = torch.randn(23, 9, dtype=torch.float64, generator=generator)
    teacher[4] = 0.0  # a row of ties only, left out of the mean
    weights = torch.randn(9, 4, dtype=torch.float64, generator=generator, requires_grad=True)

    def loss_and_gradient(pairs_at_once: int) -> tuple[torch.Tensor, torch.Tensor]:
        (attributions,) = torch.autograd.grad(torch.tanh(x @ weights).sum(), x, create_graph=True)
        loss = PairwiseRankLoss(pairs_at_once=pairs_at_once)(attributions, teacher)
        (gradient,) = torch.autograd.grad(loss, weights)
        return loss.detach(), gradient

    whole, whole_gradient = loss_and_gradient(23 * 81)
    for pairs in (5 * 81, 81, 1):  # slices of 5 rows (the last of 3), of one row, and fewer pairs than a row has
        sliced, sliced_gradient = loss_and_gradient(pairs)
        torch.testing.assert_close(sliced, whole, rtol=1e-12, atol=0)
        torch.testing.assert_close(sliced_gradient, whole_gradient, rtol=1e-10, atol=1e-14)


def test_pairs_at_once_must_be_a_positive_whole_number():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="pairs_at_once"):
            PairwiseRankLoss(pairs_at_once=bad)
