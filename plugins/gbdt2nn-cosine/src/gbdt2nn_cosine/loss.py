"""One minus the cosine similarity of student and teacher attribution rows, averaged over rows."""

from __future__ import annotations

import torch

from gbdt2nn_core.kit.losses import check_attribution_pair, check_positive

__all__ = ["CosineDistance"]


class CosineDistance:
    """``mean over rows of 1 − cos(φ_s, φ_t)``: 0 when rows point the same way, whatever their scale; 2 at worst.

    Parameters
    ----------
    eps:
        Floor of ``‖φ_s‖ · ‖φ_t‖``. A row of zeros (student or teacher) then has cosine 0 and a finite gradient
        instead of NaN; rows where the teacher is all zero add a constant 1 and no gradient.
    """

    def __init__(self, eps: float = 1e-8) -> None:
        self.eps = check_positive("eps", eps)

    def __call__(self, student_attr: torch.Tensor, teacher_attr: torch.Tensor, /) -> torch.Tensor:
        """The loss, a scalar tensor differentiable in ``student_attr``; both arguments are ``(n, d)``."""
        student, teacher = check_attribution_pair(student_attr, teacher_attr)
        dot = (student * teacher).sum(dim=1)
        squared_norms = student.pow(2).sum(dim=1) * teacher.pow(2).sum(dim=1)
        # Clamp before the square root: sqrt's gradient at 0 is infinite, and inf × 0 would give NaN.
        cosine = dot / squared_norms.clamp_min(self.eps**2).sqrt()
        return (1.0 - cosine).mean()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(eps={self.eps})"
