"""Conformance check for alignment losses: :func:`check_alignment_loss`."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from gbdt2nn_core.errors import Gbdt2nnError
from gbdt2nn_core.host.specs import AlignmentLossSpec

__all__ = ["check_alignment_loss"]


def check_alignment_loss(
    spec: AlignmentLossSpec,
    *,
    options: Mapping[str, Any] | None = None,
    n_rows: int = 8,
    n_features: int = 6,
    seed: int = 0,
) -> None:
    """Check that the loss built by ``spec.factory(**options)`` keeps the :class:`AlignmentLoss` contract.

    Checked on random ``(n, d)`` attributions: the result is a finite scalar tensor; it is differentiable in the
    student argument (finite, not all-zero gradient) and does not need the teacher to require grad; a student
    equal to the teacher scores no worse than a random one; the same inputs give the same value; all-zero rows
    and a single feature stay finite; and mismatched shapes raise a one-line error that names both shapes. A loss that
    declares ``quadratic = True`` must be a quadratic form of ``student − teacher`` with weights from the teacher
    only: zero at agreement, four times the value at twice the difference, and the parallelogram law.

    Raises ``AssertionError`` naming the broken promise.
    """
    import torch

    where = f"alignment loss {spec.name!r}"
    loss = spec.factory(**dict(options or {}))
    assert callable(loss), f"{where}: factory returned a {type(loss).__name__}, which is not callable"

    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(n_rows, n_features, generator=generator)
    student = torch.randn(n_rows, n_features, generator=generator, requires_grad=True)

    value = loss(student, teacher)
    assert isinstance(value, torch.Tensor), f"{where}: returned {type(value).__name__}, expected a tensor"
    assert value.ndim == 0, f"{where}: returned shape {tuple(value.shape)}, expected a scalar"
    assert value.is_floating_point(), f"{where}: returned a {value.dtype} tensor, expected floating point"
    assert torch.isfinite(value), f"{where}: returned {value.item()!r}"
    _check_gradient(loss, student, teacher, f"{where} on random rows")

    assert torch.equal(loss(student, teacher).detach(), value.detach()), f"{where}: same inputs gave another value"
    same = loss(teacher.clone(), teacher)
    assert same.item() <= value.item() + 1e-6, (
        f"{where}: a student equal to the teacher scores {same.item():.4g}, worse than a random one "
        f"({value.item():.4g}); the loss must be minimal at agreement"
    )

    # Edge cases the core meets: teacher rows of zeros (no feature used), a student at zero, and d = 1.
    zero_teacher = teacher.clone()
    zero_teacher[0] = 0.0
    zero_student = student.detach().clone()
    zero_student[1] = 0.0
    _check_gradient(loss, zero_student.requires_grad_(True), zero_teacher, f"{where} with all-zero rows")
    narrow = torch.randn(3, 1, generator=generator)
    _check_gradient(
        loss, narrow.clone().requires_grad_(True), narrow.flip(0), f"{where} with one feature", nonzero=False
    )

    if getattr(loss, "quadratic", False) is True:
        _check_quadratic(loss, teacher, generator, where)

    for student_shape, teacher_shape in (((n_rows, n_features - 1), (n_rows, n_features)), ((n_rows,), (n_rows,))):
        try:
            loss(torch.randn(student_shape), torch.randn(teacher_shape))
        except (ValueError, TypeError, Gbdt2nnError) as exc:
            text = str(exc).strip()
            assert text, f"{where}: the shape error has no message"
            assert "\n" not in text, f"{where}: the shape error is not one line: {text!r}"
            if student_shape != teacher_shape:
                for shape in (student_shape, teacher_shape):
                    assert str(tuple(shape)) in text, f"{where}: the shape error does not name {tuple(shape)}: {text!r}"
        except Exception as exc:  # whatever leaked out of torch is the finding
            raise AssertionError(
                f"{where}: student {student_shape} with teacher {teacher_shape} raised {type(exc).__name__} from "
                "deep inside; check the shapes first and raise a one-line error naming both"
            ) from exc
        else:
            raise AssertionError(f"{where}: accepted student {student_shape} with teacher {teacher_shape}")


def _check_gradient(
    loss: Callable[[Any, Any], Any], student: Any, teacher: Any, where: str, *, nonzero: bool = True
) -> None:
    import torch

    value = loss(student, teacher)
    assert torch.isfinite(value), f"{where}: returned {value.item()!r}"
    (grad,) = torch.autograd.grad(value, student, allow_unused=True)
    assert grad is not None, f"{where}: the value does not depend on the student attributions"
    assert torch.isfinite(grad).all(), f"{where}: the gradient contains NaN or inf"
    if nonzero:
        assert grad.abs().sum() > 0, f"{where}: the gradient is all zero"


def _check_quadratic(loss: Callable[[Any, Any], Any], teacher: Any, generator: Any, where: str) -> None:
    """``quadratic = True`` promises ``L(t + d, t) = ⟨d, d⟩_W(t)``: the core then trains on the cross term
    ``⟨d₁, d₂⟩ = (L(t + d₁ + d₂) − L(t + d₁ − d₂)) / 4`` of two noisy estimates, unbiased only for such a loss."""
    import torch

    teacher = teacher.double()
    first, second = (torch.randn(teacher.shape, generator=generator, dtype=torch.float64) for _ in range(2))

    def at(difference: Any) -> float:
        return float(loss(teacher + difference, teacher))

    claim = f"{where} declares quadratic = True"
    assert abs(at(0 * first)) <= 1e-9, f"{claim} but is {at(0 * first):.4g} at agreement, not 0"
    assert math.isclose(at(2 * first), 4 * at(first), rel_tol=1e-6), (
        f"{claim} but twice the difference gives {at(2 * first):.6g}, not 4 × {at(first):.6g}; "
        "drop the declaration or make the loss a weighted mean of squared differences"
    )
    sides, diagonals = 2 * at(first) + 2 * at(second), at(first + second) + at(first - second)
    assert math.isclose(diagonals, sides, rel_tol=1e-6), (
        f"{claim} but breaks the parallelogram law ({diagonals:.6g} against {sides:.6g}): its weights depend on "
        "the student's values; drop the declaration"
    )
