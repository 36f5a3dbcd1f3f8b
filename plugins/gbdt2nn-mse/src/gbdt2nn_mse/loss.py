"""Mean squared difference of attributions, optionally measured in units of the teacher row's size."""

from __future__ import annotations

import torch

from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.kit.losses import check_attribution_pair, check_positive

__all__ = ["AttributionMSE"]


class AttributionMSE:
    """``mean over rows and features of (φ_s − φ_t)²``.

    Parameters
    ----------
    normalize:
        Divide both rows by the teacher row's L2 norm first, so that the loss weighs every row's *relative*
        error alike instead of letting rows with large attributions (large margins) dominate.
    eps:
        With ``normalize``, a row's norm is floored at ``eps ×`` the batch's mean teacher-row norm, so that a
        teacher row of (near) zeros cannot blow the loss up.
    """

    #: A weighted mean of squares of the difference, with weights from the teacher only (also with ``normalize``):
    #: the core may debias it for noisy (Monte Carlo) student attributions (:class:`AlignmentLoss`).
    quadratic = True

    def __init__(self, normalize: bool = False, eps: float = 1e-3) -> None:
        if not isinstance(normalize, bool):
            raise ConfigError(setting="normalize", value=normalize, fix="use true or false")
        self.normalize = normalize
        self.eps = check_positive("eps", eps)

    def __call__(self, student_attr: torch.Tensor, teacher_attr: torch.Tensor, /) -> torch.Tensor:
        """The loss, a scalar tensor differentiable in ``student_attr``; both arguments are ``(n, d)``."""
        student, teacher = check_attribution_pair(student_attr, teacher_attr)
        difference = student - teacher
        if self.normalize:
            norms = torch.linalg.vector_norm(teacher, dim=1, keepdim=True)
            floor = self.eps * norms.mean() + torch.finfo(norms.dtype).tiny
            difference = difference / torch.maximum(norms, floor)
        return difference.pow(2).mean()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(normalize={self.normalize}, eps={self.eps})"
