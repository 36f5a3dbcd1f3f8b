"""cosine: one minus the per-row cosine similarity, safe for rows of zeros."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from gbdt2nn_core import Registry
from gbdt2nn_core.errors import ConfigError, DataError
from gbdt2nn_core.testing import check_alignment_loss
from gbdt2nn_cosine import CosineDistance
from gbdt2nn_cosine.plugin import gbdt2nn_register_alignment_losses


def test_conforms_to_the_alignment_loss_contract():
    (spec,) = gbdt2nn_register_alignment_losses()
    check_alignment_loss(spec)


def test_registered_under_its_public_name():
    assert isinstance(Registry(strict=True).alignment_loss("cosine"), CosineDistance)


def test_equals_one_minus_torch_cosine_similarity():
    student, teacher = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 5, dtype=torch.float64)
    expected = (1 - F.cosine_similarity(student, teacher, dim=1)).mean()
    torch.testing.assert_close(CosineDistance()(student, teacher), expected)


def test_ignores_scale_and_spans_zero_to_two():
    teacher = torch.randn(5, 4, dtype=torch.float64)
    loss = CosineDistance()
    scales = torch.tensor([[0.01], [1.0], [3.0], [100.0], [1e4]], dtype=torch.float64)
    assert loss(teacher * scales, teacher).item() == pytest.approx(0.0, abs=1e-12)
    assert loss(-teacher * scales, teacher).item() == pytest.approx(2.0)


def test_rows_of_zeros_are_finite_and_a_zero_teacher_row_adds_one():
    teacher = torch.randn(3, 4)
    teacher[0] = 0.0
    student = teacher.clone()
    student[0] = torch.randn(4)
    student[2] = 0.0
    student.requires_grad_(True)
    value = CosineDistance()(student, teacher)
    value.backward()
    assert value.item() == pytest.approx((1 + 0 + 1) / 3, abs=1e-6)
    assert torch.isfinite(student.grad).all()
    assert student.grad[0].abs().max() == 0  # nothing to learn from a teacher that attributes nothing


def test_rejects_bad_options_and_shapes_in_one_line():
    with pytest.raises(ConfigError, match="eps=0"):
        CosineDistance(eps=0)
    with pytest.raises(DataError, match=r"\(2, 3, 4\) and teacher attributions \(2, 3, 4\)"):
        CosineDistance()(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4))


def test_plugin_module_does_not_import_torch():
    code = "import sys, gbdt2nn_cosine.plugin; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
