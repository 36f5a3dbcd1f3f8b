"""Pairwise logistic rank loss: the student must order each row's features as the teacher does, at any scale."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.kit.losses import check_attribution_pair, check_positive

__all__ = ["PAIRS_AT_ONCE", "PairwiseRankLoss"]

#: The feature pairs held in memory at once by default, rows × columns²: 2**26 is 256 MB a float32 ``(rows, d, d)``
#: tensor, about 1.5 GB at the peak of a forward and backward. A batch with more is computed a slice of rows at a
#: time (a 512-row batch of 10 classes and 784 pixels has 3.1e9 pairs: 12.6 GB a tensor, several a step, if held
#: at once). Slicing costs time: 5,120 rows of 128 columns (84M pairs) in slices of 2**24 took 5.0 s against 3.2 s
#: whole on one core, at 0.66 GB of peak memory against 1.94 GB.
PAIRS_AT_ONCE = 2**26


class PairwiseRankLoss:
    """Mean over rows of the mean over teacher-ordered feature pairs of ``softplus(−(ŝ_i − ŝ_j) / τ)``.

    A pair ``(i, j)`` counts when the teacher puts ``i`` above ``j`` on the *signed* attributions:
    ``φ_t,i − φ_t,j > tie_tolerance · max|φ_t|`` of the row. ``ŝ`` is the student row divided by its standard
    deviation, so the loss depends on the student's order and spacing only, never on its scale: multiplying a
    student row by any positive number leaves the loss unchanged. Rows without ordered pairs (all ties) are
    left out of the mean.

    Parameters
    ----------
    temperature:
        ``τ``, in units of the student row's standard deviation. With Adam the order is learnt equally fast for
        any ``τ`` from 0.03 to 3 (mean Spearman after a fixed step budget agrees to 3 decimals), so ``τ`` mainly
        sets the size of the loss and its gradient next to the distillation loss. The default 1 keeps both
        O(1) (the loss is log 2 ≈ 0.69 for a constant student, like cosine's 1), so one λ means about the
        same for ``rank`` and ``cosine``; a small ``τ`` (0.1) approaches the fraction of misordered pairs and
        scales the gradient by ``1/τ``.
    tie_tolerance:
        Teacher differences below this fraction of the row's largest absolute attribution are ties, not an
        order to learn (e.g. two features with near-zero SHAP values).
    pairs_at_once:
        The most feature pairs (rows × columns²) held in memory at once. A larger batch is computed a slice of rows
        at a time, each slice's pairs recomputed in the backward pass instead of kept (activation checkpointing):
        the same loss and gradient, memory bounded on wide data, about one more forward of the loss in time.
    """

    def __init__(
        self,
        temperature: float = 1.0,
        tie_tolerance: float = 1e-3,
        eps: float = 1e-12,
        pairs_at_once: int = PAIRS_AT_ONCE,
    ) -> None:
        self.temperature = check_positive("temperature", temperature)
        if isinstance(tie_tolerance, bool) or not isinstance(tie_tolerance, (int, float)) or not 0 <= tie_tolerance < 1:
            raise ConfigError(setting="tie_tolerance", value=tie_tolerance, fix="use a number in [0, 1)")
        self.tie_tolerance = float(tie_tolerance)
        self.eps = check_positive("eps", eps)
        if isinstance(pairs_at_once, bool) or not isinstance(pairs_at_once, int) or pairs_at_once < 1:
            raise ConfigError(setting="pairs_at_once", value=pairs_at_once, fix="use a whole number of at least 1")
        self.pairs_at_once = pairs_at_once

    def __call__(self, student_attr: torch.Tensor, teacher_attr: torch.Tensor, /) -> torch.Tensor:
        """The loss, a scalar tensor differentiable in ``student_attr``; both arguments are ``(n, d)``."""
        student, teacher = check_attribution_pair(student_attr, teacher_attr)
        centred = student - student.mean(dim=1, keepdim=True)
        # Clamp the variance, not the std: the std's gradient at a constant row would be 0/0.
        spread = centred.pow(2).mean(dim=1, keepdim=True).clamp_min(self.eps).sqrt()
        standardised = centred / spread
        n, d = standardised.shape
        step = max(1, self.pairs_at_once // (d * d))
        if n <= step:
            per_row, has_pairs = self._rows(standardised, teacher)
        else:
            slices = [
                checkpoint(
                    self._rows, standardised[start : start + step], teacher[start : start + step], use_reentrant=False
                )
                for start in range(0, n, step)
            ]
            per_row = torch.cat([loss for loss, _ in slices])
            has_pairs = torch.cat([counted for _, counted in slices])
        return per_row.sum() / has_pairs.sum().clamp_min(1)

    def _rows(self, standardised: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's mean pair loss, and whether the row has any ordered pair (``(rows, d, d)`` in memory)."""
        tolerance = self.tie_tolerance * teacher.abs().amax(dim=1, keepdim=True).unsqueeze(2)
        ordered = (teacher.unsqueeze(2) - teacher.unsqueeze(1)) > tolerance  # (n, d, d): teacher puts i above j
        gaps = standardised.unsqueeze(2) - standardised.unsqueeze(1)
        pair_losses = F.softplus(-gaps / self.temperature) * ordered
        pairs = ordered.sum(dim=(1, 2))
        return pair_losses.sum(dim=(1, 2)) / pairs.clamp_min(1), pairs > 0

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(temperature={self.temperature}, tie_tolerance={self.tie_tolerance}, "
            f"eps={self.eps}, pairs_at_once={self.pairs_at_once})"
        )
