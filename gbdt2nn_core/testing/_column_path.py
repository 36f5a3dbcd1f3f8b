"""Conformance check for an attributor's first-layer column path: :func:`check_column_path`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gbdt2nn_core.host.specs import AttributorSpec

__all__ = ["check_column_path"]


def check_column_path(
    spec: AttributorSpec,
    *,
    options: Mapping[str, Any] | None = None,
    n_rows: int = 12,
    seed: int = 0,
    tolerance: float = 1e-8,
) -> None:
    """Check that ``attribute_columns`` of the attributor built by ``spec.factory(**options)`` equals its dense path.

    On small random GBDT2NN networks (float64; one output and two; BatchNorm running statistics that are not the
    identity, frozen as joint training freezes them) over 9 encoded values in 5 columns, one of which no group
    sees: the per-column values equal ``attribute(model, z) @ aggregation`` and, with ``create_graph=True``, the
    gradient of a squared error of them with respect to every parameter equals the double-backward one, both to
    ``tolerance``. Two instances are built and fitted alike, so a seeded attributor draws alike on both paths.

    Raises ``AssertionError`` naming the broken promise.
    """
    import torch

    from gbdt2nn_core.host.attribution import ColumnAttributor, column_attributions
    from gbdt2nn_core.kit.alignment import frozen_batchnorm
    from gbdt2nn_core.student.module import GBDT2NNModule

    options = dict(options or {})
    where = f"attributor {spec.name!r}"
    assert isinstance(spec.factory(**options), ColumnAttributor), f"{where}: it has no attribute_columns"
    column_of = torch.tensor([0, 0, 0, 1, 2, 2, 3, 4, 4])  # column 4 (values 7, 8) is in no group
    aggregation = torch.nn.functional.one_hot(column_of, 5).double()
    generator = torch.Generator().manual_seed(seed)
    for n_outputs in (1, 2):
        torch.manual_seed(seed)
        module = GBDT2NNModule(
            group_input_index=torch.tensor([[0, 1, 2, 9], [2, 3, 9, 9], [4, 5, 6, 0]]),
            group_output=torch.tensor([0, 0, 1]) if n_outputs == 2 else torch.zeros(3, dtype=torch.long),
            n_outputs=n_outputs,
            hidden=(8, 6),
            embedding_dim=4,
        ).double()
        with torch.no_grad():
            module.head_weight.normal_(generator=generator)
            for _ in range(3):  # running statistics
                module(1.5 * torch.randn(64, 9, generator=generator, dtype=torch.float64) + 0.3)
        background = torch.randn(40, 9, generator=generator, dtype=torch.float64)
        z = torch.randn(n_rows, 9, generator=generator, dtype=torch.float64)
        fast_attributor, dense_attributor = spec.factory(**options), spec.factory(**options)
        fast_attributor.fit(module, background)
        dense_attributor.fit(module, background)
        label = f"{where} with {n_outputs} output{'s' if n_outputs > 1 else ''}"
        parameters = list(module.parameters())
        with frozen_batchnorm(module):
            fast = column_attributions(fast_attributor, module, z, aggregation, create_graph=True)
            dense = dense_attributor.attribute(module, z, create_graph=True) @ aggregation
            assert fast.shape == dense.shape, f"{label}: shape {tuple(fast.shape)}, the dense path gives {dense.shape}"
            gap = float((fast - dense).detach().abs().max())
            assert gap <= tolerance, f"{label}: attribute_columns differs from the dense path by {gap:.2e}"
            target = torch.randn(fast.shape, generator=generator, dtype=torch.float64)
            fast_grads = torch.autograd.grad(((fast - target) ** 2).sum(), parameters, materialize_grads=True)
            dense_grads = torch.autograd.grad(((dense - target) ** 2).sum(), parameters, materialize_grads=True)
        for (name, _), f, d in zip(module.named_parameters(), fast_grads, dense_grads, strict=True):
            gap = float((f - d).abs().max())
            assert gap <= tolerance * max(1.0, float(d.abs().max())), (
                f"{label}: the alignment gradient of {name} differs from the double backward by {gap:.2e}"
            )
