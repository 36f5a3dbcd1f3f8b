"""Building blocks for :class:`~gbdt2nn_core.interfaces.Attributor` plugins: input checks and batched gradients.

Every attributor receives a model and encoded rows ``z`` and must reject bad rows with the same one-line
:class:`~gbdt2nn_core.errors.DataError`, then differentiate the model's margin with respect to ``z``. Both steps
are here, so that an attributor plugin only writes its own method::

    from gbdt2nn_core.attribution import MarginModel, check_encoded_rows, input_gradients
    from gbdt2nn_core.interfaces import Attributor


    class GradientXInput(Attributor):
        reference = "baseline"

        def attribute(self, model: MarginModel, z, *, create_graph=False):
            z = check_encoded_rows(z)
            grads = input_gradients(model, z, create_graph=create_graph)  # (n, D) or (n, k, D)
            attributions = grads * (z if grads.ndim == 2 else z.unsqueeze(1))
            return attributions if create_graph else attributions.detach()

This module imports torch: import it from the module that defines the attributor, not from the plugin's entry
point module (which must stay cheap to import).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

from gbdt2nn_core.errors import DataError

__all__ = ["MarginModel", "check_encoded_rows", "column_attributions", "input_gradients"]

#: What attributors explain: a differentiable function from encoded rows ``(n, D)`` to margins ``(n,)`` or ``(n, k)``.
MarginModel = Callable[[torch.Tensor], torch.Tensor]


def check_encoded_rows(z: object, *, name: str = "z", n_features: int | None = None) -> torch.Tensor:
    """Return ``z`` unchanged if it is a finite 2-D floating-point tensor; raise :class:`DataError` otherwise.

    ``name`` is how the error message calls the tensor (``"background"``, ``"baseline"``...); with
    ``n_features`` the tensor must also have that many columns (those of the background sample).
    """
    if not isinstance(z, torch.Tensor):
        raise DataError(problem=f"{name} is a {type(z).__name__}", fix="pass a torch.Tensor of shape (rows, features)")
    if z.ndim != 2:
        raise DataError(
            problem=f"{name} has shape {tuple(z.shape)}, expected (rows, features)",
            fix="pass one 2-D tensor of encoded rows (use z[None] for a single row)",
        )
    if not z.is_floating_point():
        raise DataError(problem=f"{name} has dtype {z.dtype}", fix="pass floating-point rows (z.float())")
    if n_features is not None and z.shape[1] != n_features:
        raise DataError(
            problem=f"{name} has {z.shape[1]} columns but the background sample had {n_features}",
            fix="encode the rows with the same encoder as the background",
        )
    bad = ~torch.isfinite(z).all(dim=1)
    if bad.any():
        raise DataError(
            problem=f"{name} has NaN or infinite values in {int(bad.sum())} of {z.shape[0]} rows",
            fix="encode the rows with the core's encoder, which imputes missing values",
        )
    return z


def input_gradients(model: MarginModel, points: torch.Tensor, *, create_graph: bool) -> torch.Tensor:
    """``∂f/∂z`` at every row of ``points`` ``(m, D)``: ``(m, D)`` for one output, ``(m, k, D)`` for ``k``.

    One forward pass over all rows and one backward pass per output. Rows must be independent (the core runs
    BatchNorm on running statistics while it attributes), so the gradient of the summed output is each row's
    own gradient. With ``create_graph=True`` the result stays differentiable with respect to the model's
    parameters (for an alignment loss in joint training); otherwise it is still attached to a graph, so
    detach it before returning it. Raises :class:`DataError` when the model returns the wrong shape or an
    output that does not depend on its input through autograd.
    """
    with torch.enable_grad():
        inputs = points.detach().requires_grad_(True)
        outputs = model(inputs)
        m = inputs.shape[0]
        if not isinstance(outputs, torch.Tensor) or outputs.ndim not in (1, 2) or outputs.shape[0] != m:
            shape = tuple(outputs.shape) if isinstance(outputs, torch.Tensor) else type(outputs).__name__
            raise DataError(
                problem=f"the model returned {shape} for {m} rows",
                fix=f"make it return margins of shape ({m},) or ({m}, k)",
            )
        if not outputs.requires_grad:
            raise DataError(
                problem="the model's output does not depend on its input through autograd",
                fix="do not run the model under torch.no_grad() or detach its output",
            )
        columns = [outputs] if outputs.ndim == 1 else list(outputs.unbind(dim=1))
        grads = []
        for c, column in enumerate(columns):
            # Keep the forward graph until the last output is done (and for good with create_graph).
            retain = create_graph or c < len(columns) - 1
            (grad,) = torch.autograd.grad(
                column.sum(), inputs, create_graph=create_graph, retain_graph=retain, allow_unused=True
            )
            grads.append(torch.zeros_like(inputs) if grad is None else grad)
    return grads[0] if outputs.ndim == 1 else torch.stack(grads, dim=1)


class _Attributes(Protocol):
    """What :func:`column_attributions` needs of an :class:`~gbdt2nn_core.interfaces.Attributor`."""

    def attribute(self, model: MarginModel, z: torch.Tensor, *, create_graph: bool = False) -> torch.Tensor: ...


def column_attributions(
    attributor: _Attributes,
    model: MarginModel,
    z: torch.Tensor,
    aggregation: torch.Tensor,
    *,
    create_graph: bool = False,
) -> torch.Tensor:
    """Attributions summed over each input column's encoded block: ``(n, d)`` or ``(n, c, d)``."""
    encoded = attributor.attribute(model, z, create_graph=create_graph)
    return encoded @ aggregation
