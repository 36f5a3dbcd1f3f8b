"""The example's components keep the gbdt2nn contracts (one line each), and gbdt2nn finds them by name."""

from __future__ import annotations

import torch

from gbdt2nn_core import Registry
from gbdt2nn_core.testing import check_alignment_loss, check_attributor
from gbdt2nn_example.plugin import SmoothGrad, gbdt2nn_register_alignment_losses, gbdt2nn_register_attributors


def test_huber_keeps_the_alignment_loss_contract() -> None:
    check_alignment_loss(*gbdt2nn_register_alignment_losses())


def test_smoothgrad_keeps_the_attributor_contract() -> None:
    check_attributor(*gbdt2nn_register_attributors())


def test_installed_components_are_found_by_name() -> None:
    registry = Registry(strict=True)
    assert isinstance(registry.attributor("smoothgrad", samples=4), SmoothGrad)
    assert registry.alignment_loss("huber")(torch.zeros(2, 3), torch.ones(2, 3)).item() == 0.5


def test_smoothgrad_without_noise_is_gradient_x_input() -> None:
    weights = torch.tensor([1.0, -2.0, 3.0])
    z = torch.randn(5, 3)
    attributions = SmoothGrad(noise=1e-9).attribute(lambda rows: (rows * weights).sum(dim=1), z)
    torch.testing.assert_close(attributions, z * weights)
