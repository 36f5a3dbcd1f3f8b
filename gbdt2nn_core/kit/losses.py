"""Building blocks for :class:`~gbdt2nn_core.host.interfaces.AlignmentLoss` plugins: argument and option checks.

An alignment loss is called with the student's and the teacher's attributions, both ``(n, d)``; it should refuse
anything else with the same one-line :class:`~gbdt2nn_core.errors.DataError`, and treat the teacher as a fixed
target. :func:`check_attribution_pair` does both::

    from gbdt2nn_core.kit.losses import check_attribution_pair, check_positive


    class L1Loss:
        def __init__(self, scale: float = 1.0) -> None:
            self.scale = check_positive("scale", scale)

        def __call__(self, student_attr, teacher_attr, /):
            student, teacher = check_attribution_pair(student_attr, teacher_attr)
            return self.scale * (student - teacher).abs().mean()

This module imports torch: import it from the module that defines the loss, not from the plugin's entry point
module (which must stay cheap to import).
"""

from __future__ import annotations

import torch

from gbdt2nn_core.errors import ConfigError, DataError
from gbdt2nn_core.validators import is_positive_number

__all__ = ["check_attribution_pair", "check_positive"]


def check_attribution_pair(student_attr: object, teacher_attr: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Both attributions as ``(n, d)`` tensors of one shape; raise :class:`DataError` for anything else.

    The student tensor comes back unchanged (so gradients flow into it). The teacher's is detached and moved
    to the student's dtype and device: it is a fixed target, and float64 TreeSHAP values meet a float32 student.
    """
    if not isinstance(student_attr, torch.Tensor) or not isinstance(teacher_attr, torch.Tensor):
        raise DataError(
            problem=f"attributions are {type(student_attr).__name__} and {type(teacher_attr).__name__}",
            fix="pass torch tensors (torch.as_tensor(values))",
        )
    if student_attr.ndim != 2 or student_attr.shape != teacher_attr.shape:
        raise DataError(
            problem=f"student attributions {tuple(student_attr.shape)} and teacher attributions "
            f"{tuple(teacher_attr.shape)} do not match",
            fix="pass two (rows, features) tensors of one shape (flatten (n, k, d) outputs to (n * k, d) first)",
        )
    return student_attr, teacher_attr.detach().to(dtype=student_attr.dtype, device=student_attr.device)


def check_positive(setting: str, value: object) -> float:
    """``value`` as a float if it is a positive finite number (not a bool); a :class:`ConfigError` otherwise."""
    if not is_positive_number(value):
        raise ConfigError(setting=setting, value=value, fix="use a positive number")
    return float(value)
