"""Argument checks shared by this plugin's loss (the same few lines live in each alignment-loss plugin)."""

from __future__ import annotations

import torch

from gbdt2nn_core.errors import ConfigError, DataError


def check_pair(student_attr: object, teacher_attr: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Both attributions as ``(n, d)`` tensors of one shape; the teacher detached, in the student's dtype."""
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
    # The teacher is a fixed target: no gradient flows into it, and float64 SHAP values meet a float32 student.
    return student_attr, teacher_attr.detach().to(dtype=student_attr.dtype, device=student_attr.device)


def check_positive(setting: str, value: object) -> float:
    """``value`` as a float if it is a positive finite number; else a :class:`ConfigError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ConfigError(setting=setting, value=value, fix="use a positive number")
    return float(value)
