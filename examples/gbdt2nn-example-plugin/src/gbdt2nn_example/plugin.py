"""An example gbdt2nn plugin: the ``huber`` alignment loss and the ``smoothgrad`` attributor.

torch is imported inside the functions, so that loading the plugin (``gbdt2nn plugins``) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gbdt2nn_core import AlignmentLossSpec, Attributor, AttributorSpec, hookimpl

if TYPE_CHECKING:
    import torch

    from gbdt2nn_core.host.attribution import MarginModel


def huber(student_attr: torch.Tensor, teacher_attr: torch.Tensor, /) -> torch.Tensor:
    """Squared difference of attributions near agreement, absolute difference beyond 1 (robust to outliers)."""
    import torch.nn.functional as F

    from gbdt2nn_core.kit.losses import check_attribution_pair

    student, teacher = check_attribution_pair(student_attr, teacher_attr)
    return F.huber_loss(student, teacher, delta=1.0)


class SmoothGrad(Attributor):
    """Gradient × input averaged over Gaussian noise added to the rows (Smilkov et al., 2017); differentiable."""

    reference = "baseline"  # like gradient × input: explains f(z) - f(0), and z = 0 is the training mean

    def __init__(self, samples: int = 8, noise: float = 0.1, seed: int = 0) -> None:
        self.samples, self.noise, self.seed = samples, noise, seed

    def __repr__(self) -> str:  # its options: a checkpoint resumes only a run with the same ones
        return f"SmoothGrad(samples={self.samples}, noise={self.noise}, seed={self.seed})"

    def attribute(self, model: MarginModel, z: torch.Tensor, *, create_graph: bool = False) -> torch.Tensor:
        import torch

        from gbdt2nn_core.host.attribution import check_encoded_rows, input_gradients

        z = check_encoded_rows(z)
        noise = torch.randn((self.samples, *z.shape), generator=torch.Generator().manual_seed(self.seed))
        with torch.enable_grad():
            noisy = (z + self.noise * noise.to(z)).reshape(-1, z.shape[1])  # every sample in one batch
            grads = input_gradients(model, noisy, create_graph=create_graph)  # (s·n, D) or (s·n, k, D)
            products = grads * (noisy if grads.ndim == 2 else noisy.unsqueeze(1))
            result = products.reshape(self.samples, -1, *products.shape[1:]).mean(dim=0)
        return result if create_graph else result.detach()


@hookimpl
def gbdt2nn_register_alignment_losses() -> list[AlignmentLossSpec]:
    return [AlignmentLossSpec(name="huber", factory=lambda: huber, summary="Huber loss between attributions")]


@hookimpl
def gbdt2nn_register_attributors() -> list[AttributorSpec]:
    return [AttributorSpec(name="smoothgrad", factory=SmoothGrad, summary="gradient x input averaged over noise")]
