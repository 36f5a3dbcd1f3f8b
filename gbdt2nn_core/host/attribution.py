"""Building blocks for :class:`~gbdt2nn_core.host.interfaces.Attributor` plugins: input checks and batched gradients.

Every attributor receives a model and encoded rows ``z`` and must reject bad rows with the same one-line
:class:`~gbdt2nn_core.errors.DataError`, then differentiate the model's margin with respect to ``z``. Both steps
are here, so that an attributor plugin only writes its own method::

    from gbdt2nn_core.host.attribution import MarginModel, check_encoded_rows, input_gradients
    from gbdt2nn_core.host.interfaces import Attributor


    class GradientXInput(Attributor):
        reference = "baseline"

        def attribute(self, model: MarginModel, z, *, create_graph=False):
            z = check_encoded_rows(z)
            grads = input_gradients(model, z, create_graph=create_graph)  # (n, D) or (n, k, D)
            attributions = grads * (z if grads.ndim == 2 else z.unsqueeze(1))
            return attributions if create_graph else attributions.detach()

**The first-layer fast path.** A model whose first layer is linear in ``z`` can say so by offering
:class:`FirstLayerModel` (GBDT2NN's module and the mlp student's do): its first layer's output ``h1 = Σ_c H_c +
bias`` known per input column (``H_c``, column ``c``'s share), and the rest of the network ``F`` with ``f(z) =
F(h1)``. By the chain rule the gradient × input of column ``c`` is ``Σ_j ∂F/∂h1_j · H_cj``, and along a straight
path ``h1`` moves on a straight line too, so integrated and expected gradients need ``F`` alone at each path
point. An attributor that can use this offers :class:`ColumnAttributor`; :func:`column_attributions` takes that
path when both sides offer it (and the aggregation maps each encoded value to at most one column), so joint
training's double backward runs through the wide first layer once per row instead of once per path point, and
never differentiates it twice. Otherwise it attributes the encoded values and sums each column's block: the
reference path, which the fast paths are tested against.

This module imports torch: import it from the module that defines the attributor, not from the plugin's entry
point module (which must stay cheap to import).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

import torch

from gbdt2nn_core.errors import ConfigError, DataError

__all__ = [
    "ColumnAttributor",
    "FirstLayerColumns",
    "FirstLayerGradients",
    "FirstLayerModel",
    "IndependentEstimates",
    "LinearColumns",
    "MarginModel",
    "check_aggregation",
    "check_encoded_rows",
    "column_attributions",
    "column_of_encoded",
    "first_layer_gradients",
    "independent_column_attributions",
    "input_gradients",
    "output_gradients",
]

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
        return output_gradients(model, points.detach().requires_grad_(True), create_graph=create_graph)


def output_gradients(model: MarginModel, inputs: torch.Tensor, *, create_graph: bool) -> torch.Tensor:
    """``∂f/∂inputs`` for inputs ``(m, ...)`` that may depend on parameters: ``(m, ...)``, or ``(m, k, ...)``.

    :func:`input_gradients` for a tensor that is not a leaf, e.g. the first layer's output ``h1`` of a
    :class:`FirstLayerModel`: it stays attached to the parameters it was computed from, so with
    ``create_graph=True`` the gradient is differentiable through them too. A tensor that requires no gradient
    is differentiated as a leaf.
    """
    with torch.enable_grad():
        if not inputs.requires_grad:
            inputs = inputs.detach().requires_grad_(True)
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


class FirstLayerColumns(Protocol):
    """A batch's first linear layer, known per input column (what :meth:`FirstLayerModel.column_first_layer` returns).

    ``first`` is the layer's output ``h1`` ``(n, *shape)``, bias included, differentiable in the parameters;
    ``h1 = bias + Σ_c H_c`` with ``H_c = Σ_{s ∈ c} z_s W[s]`` column ``c``'s share. ``contract(gradient)`` returns
    ``Σ_j gradient_j · H_cj`` for gradients ``(n, *shape)`` or ``(n, k, *shape)``: ``(n, d)`` or ``(n, k, d)``;
    with ``rows`` ``(m,)`` the gradients ``(m, ...)`` are taken against the shares of rows ``rows`` of the batch.
    """

    @property
    def first(self) -> torch.Tensor: ...

    def contract(self, gradient: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor: ...


@runtime_checkable
class FirstLayerModel(Protocol):
    """Optional capability of a model whose first layer is linear in ``z``: ``f(z) = after_first_layer(h1)`` with
    ``h1 = column_first_layer(z, aggregation).first`` (see :class:`FirstLayerColumns`).

    ``aggregation`` is the encoder's ``(D, d)`` 0/1 matrix whose rows each name at most one column.
    ``after_first_layer`` maps ``(m, *shape)`` to margins ``(m,)`` or ``(m, k)`` in the model's current mode
    (BatchNorm as the caller left it). :class:`LinearColumns` implements the batch side for any linear first layer.
    """

    def __call__(self, z: torch.Tensor, /) -> torch.Tensor: ...

    def column_first_layer(self, z: torch.Tensor, aggregation: torch.Tensor) -> FirstLayerColumns: ...

    def after_first_layer(self, first: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class FirstLayerGradients(Protocol):
    """Optional capability of a :class:`FirstLayerModel` that computes ``∂f/∂h1`` its own exact way (GBDT2NN with
    BatchNorm frozen: a tangent pass instead of a double backward when the result must stay differentiable)."""

    def after_first_layer_gradients(self, first: torch.Tensor, *, create_graph: bool = False) -> torch.Tensor: ...


def first_layer_gradients(model: FirstLayerModel, first: torch.Tensor, *, create_graph: bool) -> torch.Tensor:
    """``∂f/∂h1`` at first-layer outputs ``first`` ``(m, *shape)``: ``(m, *shape)``, or ``(m, k, *shape)`` for ``k``
    outputs — the model's :class:`FirstLayerGradients` where it has them, else :func:`output_gradients` of
    ``after_first_layer``. With ``create_graph`` the result is differentiable in the parameters ``first`` came from."""
    if isinstance(model, FirstLayerGradients):
        return model.after_first_layer_gradients(first, create_graph=create_graph)
    return output_gradients(model.after_first_layer, first, create_graph=create_graph)


@runtime_checkable
class ColumnAttributor(Protocol):
    """Optional capability of an :class:`~gbdt2nn_core.host.interfaces.Attributor`: per-column attributions
    ``(n, d)`` or ``(n, k, d)`` of a :class:`FirstLayerModel` straight from its first layer, equal to
    ``attribute(model, z) @ aggregation`` (the structure attributor defines its column attribution there)."""

    def attribute_columns(
        self, model: FirstLayerModel, z: torch.Tensor, aggregation: torch.Tensor, *, create_graph: bool = False
    ) -> torch.Tensor: ...


class LinearColumns:
    """:class:`FirstLayerColumns` of ``h1 = z @ weight + bias`` (``weight`` ``(D, J)``, reshaped to ``shape``).

    ``contract`` multiplies the gradients back through the weights once, ``(gradient @ weightᵀ) ⊙ z``, and sums each
    column's encoded values: the column shares ``H_c`` themselves (``n × d × J`` values) are never written.
    """

    def __init__(
        self,
        z: torch.Tensor,
        aggregation: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        shape: tuple[int, ...],
    ) -> None:
        check_aggregation(aggregation, z.shape[1])
        self.z, self.aggregation = z.detach(), aggregation.to(z.dtype)
        self.weight, self.bias, self.shape = weight, bias, shape
        self.first = self._first_layer()

    def _first_layer(self) -> torch.Tensor:
        """``h1`` of the batch; a subclass may compute it another exact way."""
        return torch.addmm(self.bias.reshape(1, -1), self.z, self.weight).reshape(-1, *self.shape)

    def contract(self, gradient: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        flat, outputs = self._flat(gradient)  # (m, k, J)
        z = self.z if rows is None else self.z.index_select(0, rows)
        encoded = (flat @ self.weight.t()) * z.unsqueeze(1)  # (m, k, D)
        return self._unflat(encoded @ self.aggregation, outputs)

    def _flat(self, gradient: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """``gradient`` as ``(m, k, J)`` and whether it had an output dimension ``k``."""
        outputs = gradient.ndim == len(self.shape) + 2
        m = gradient.shape[0]
        return gradient.reshape(m, gradient.shape[1] if outputs else 1, -1), outputs

    @staticmethod
    def _unflat(result: torch.Tensor, outputs: bool) -> torch.Tensor:
        return result if outputs else result[:, 0]


def check_aggregation(aggregation: torch.Tensor, encoded: int) -> torch.Tensor:
    """The column of every encoded value (:func:`column_of_encoded`) of an aggregation matrix that a first-layer
    fast path can read: ``(encoded, d)``, 0/1, at most one 1 per row; a one-line :class:`ConfigError` otherwise."""
    column_of = column_of_encoded(aggregation)
    if column_of is None or aggregation.shape[0] != encoded:
        raise ConfigError(
            setting="aggregation",
            value=tuple(aggregation.shape),
            fix=f"pass the encoder's ({encoded}, d) 0/1 aggregation matrix (each encoded value in one column)",
        )
    return column_of


def column_of_encoded(aggregation: torch.Tensor) -> torch.Tensor | None:
    """``(D,)`` the column of every encoded value (``-1`` for none) when ``aggregation`` ``(D, d)`` is 0/1 with at most
    one 1 per row, as the core's encoder makes it; ``None`` for any other matrix (only the reference path applies)."""
    if aggregation.ndim != 2:
        return None
    ones = aggregation == 1
    if not bool(((aggregation == 0) | ones).all()) or bool((ones.sum(dim=1) > 1).any()):
        return None
    return torch.where(ones.any(dim=1), ones.to(torch.int64).argmax(dim=1), -1)


@runtime_checkable
class IndependentEstimates(Protocol):
    """Optional capability of a Monte Carlo :class:`ColumnAttributor`: ``estimates`` independent per-column
    estimates ``(estimates, n, ...)`` from one pass through the first layer, each equal to what one
    ``attribute_columns`` call would give with the same random stream (so the pass is the only saving)."""

    def attribute_columns_independently(
        self,
        model: FirstLayerModel,
        z: torch.Tensor,
        aggregation: torch.Tensor,
        *,
        estimates: int,
        create_graph: bool = False,
    ) -> torch.Tensor: ...


class _Attributes(Protocol):
    """What :func:`column_attributions` needs of an :class:`~gbdt2nn_core.host.interfaces.Attributor`."""

    def attribute(self, model: MarginModel, z: torch.Tensor, *, create_graph: bool = False) -> torch.Tensor: ...


def column_attributions(
    attributor: _Attributes,
    model: MarginModel,
    z: torch.Tensor,
    aggregation: torch.Tensor,
    *,
    create_graph: bool = False,
) -> torch.Tensor:
    """Attributions summed over each input column's encoded block: ``(n, d)`` or ``(n, c, d)``.

    Through the attributor's first-layer fast path when the attributor offers :class:`ColumnAttributor`, the model
    :class:`FirstLayerModel` and ``aggregation`` maps each encoded value to at most one column; otherwise the
    encoded attributions times ``aggregation`` (the reference).
    """
    if (
        isinstance(attributor, ColumnAttributor)
        and isinstance(model, FirstLayerModel)
        and column_of_encoded(aggregation) is not None
    ):
        return attributor.attribute_columns(model, z, aggregation, create_graph=create_graph)
    encoded = attributor.attribute(model, z, create_graph=create_graph)
    return encoded @ aggregation


def independent_column_attributions(
    attributor: _Attributes,
    model: MarginModel,
    z: torch.Tensor,
    aggregation: torch.Tensor,
    *,
    estimates: int,
    create_graph: bool = False,
) -> list[torch.Tensor]:
    """``estimates`` successive :func:`column_attributions` of a Monte Carlo attributor (independent draws): from one
    first-layer pass where the attributor offers :class:`IndependentEstimates` and the column path applies."""
    if (
        isinstance(attributor, IndependentEstimates)
        and isinstance(attributor, ColumnAttributor)
        and isinstance(model, FirstLayerModel)
        and column_of_encoded(aggregation) is not None
    ):
        stacked = attributor.attribute_columns_independently(
            model, z, aggregation, estimates=estimates, create_graph=create_graph
        )
        return list(stacked.unbind(dim=0))
    return [column_attributions(attributor, model, z, aggregation, create_graph=create_graph) for _ in range(estimates)]
