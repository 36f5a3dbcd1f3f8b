"""Integrated gradients from a baseline, all path steps in one batched forward/backward pass."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from gbdt2nn_core.errors import ConfigError, DataError
from gbdt2nn_core.host.attribution import (
    FirstLayerModel,
    MarginModel,
    check_encoded_rows,
    first_layer_gradients,
    input_gradients,
)
from gbdt2nn_core.host.interfaces import Attributor
from gbdt2nn_integrated_gradients._quadrature import check_method, nodes_and_weights

__all__ = ["IntegratedGradients"]

_NAMED_BASELINES = ("zero", "background-mean")


class IntegratedGradients(Attributor):
    """Integrated gradients: ``(z − b) ⊙ ∫₀¹ ∂f/∂z(b + α(z − b)) dα``, approximated by quadrature.

    The attributions of a row sum to ``f(z) − f(b)`` up to the quadrature error (see :meth:`completeness_gap`).

    Per column, for a model whose first layer is linear (:class:`~gbdt2nn_core.host.attribution.FirstLayerModel`),
    :meth:`attribute_columns` gives the same values exactly: the first layer's output ``h1`` moves on a straight
    line too, so column ``c`` gets ``ΔH_c · ∫₀¹ ∂f/∂h1(h1(b) + α(h1(z) − h1(b))) dα`` with ``ΔH_c`` its share of
    ``h1(z) − h1(b)``. The first layer runs once; each path point runs only the layers after it.

    Parameters
    ----------
    steps:
        Number of points on the path (Captum's ``n_steps``). The default, 8 Gauss-Legendre points, is within about
        2 % (relative L2) of the integral on a trained GBDT2NN student, whose gradient along the path is piecewise
        constant (a ReLU network), so the error falls only as ``1/steps``; 16 points halve that error and leave the
        attributions' rank agreement with the teacher's TreeSHAP where it was (BENCHMARKS.md, "Integrated
        gradients: how many points"). Raise it for explanations that must sum to ``f(z) − f(b)`` more closely (see
        :meth:`completeness_gap`). Explanations only: joint training takes ``training_steps``.
    training_steps:
        Points on the path of a differentiable result (``create_graph=True``: the alignment term of a joint training
        step), where each point costs about one plain training step. The default, 4 Gauss-Legendre points, is within
        about 4 % of the integral and ranks the columns as 8 points do (BENCHMARKS.md, "how many points"); students
        aligned with 4 points predict as those aligned with 8 and agree with the teacher's TreeSHAP within their
        seed spread (adult +0.007, california −0.004; RESULTS.md, "Integrated gradients trained at 4 points"), at
        about half the aligned step. ``None``: ``steps``.
    method:
        Quadrature rule, as in Captum: ``"gausslegendre"`` (default, most accurate for few steps),
        ``"riemann_trapezoid"``, ``"riemann_middle"``, ``"riemann_left"`` or ``"riemann_right"``.
    baseline:
        ``"zero"`` (default): ``z = 0``, which is the training mean because ``z`` is centred;
        ``"background-mean"``: the mean of the background sample given to :meth:`fit`;
        or an explicit baseline, ``(D,)`` or ``(1, D)`` (one for all rows) or ``(n, D)`` (one per row).
    internal_batch_size:
        Most rows (``steps × n``) per forward pass; ``None`` does all steps at once. Lower it to save memory.
    """

    differentiable = True
    reference = "baseline"

    def __init__(
        self,
        steps: int = 8,
        method: str = "gausslegendre",
        baseline: str | Sequence[float] | torch.Tensor = "zero",
        internal_batch_size: int | None = None,
        training_steps: int | None = 4,
    ) -> None:
        check_method(method, steps)
        if training_steps is not None:
            check_method(method, training_steps, setting="training_steps")
        if internal_batch_size is not None and (not isinstance(internal_batch_size, int) or internal_batch_size < 1):
            raise ConfigError(setting="internal_batch_size", value=internal_batch_size, fix="use a positive integer")
        self.steps = steps
        self.training_steps = steps if training_steps is None else training_steps
        self.method = method
        self.internal_batch_size = internal_batch_size
        self._baseline: torch.Tensor | None = None
        if isinstance(baseline, str):
            if baseline not in _NAMED_BASELINES:
                raise ConfigError(
                    setting="baseline", value=baseline, fix="use 'zero', 'background-mean' or a tensor of shape (D,)"
                )
        else:
            explicit = torch.as_tensor(baseline, dtype=torch.float64).detach()
            if explicit.ndim == 1:
                explicit = explicit[None]
            self._baseline = check_encoded_rows(explicit, name="baseline")
        self.baseline = baseline if isinstance(baseline, str) else "explicit"
        # the path's (nodes, weights) by create_graph: explaining, and a differentiable result for training
        self._nodes = {False: nodes_and_weights(method, steps), True: nodes_and_weights(method, self.training_steps)}

    def fit(self, model: MarginModel, background: torch.Tensor) -> IntegratedGradients:
        """Take the baseline from ``background`` when ``baseline="background-mean"``; otherwise nothing to do."""
        if self.baseline == "background-mean":
            self._baseline = check_encoded_rows(background, name="background").detach().mean(dim=0, keepdim=True)
        return self

    def baseline_for(self, z: torch.Tensor) -> torch.Tensor:
        """The baseline of every row of ``z``, ``(n, D)``, in ``z``'s dtype and device."""
        if self.baseline == "zero":
            return torch.zeros_like(z)
        if self._baseline is None:
            raise DataError(
                problem="baseline='background-mean' needs a background sample",
                fix="call fit(model, background) before attribute",
            )
        baseline = self._baseline.to(dtype=z.dtype, device=z.device)
        if baseline.shape[1] != z.shape[1] or baseline.shape[0] not in (1, z.shape[0]):
            raise DataError(
                problem=f"the baseline has shape {tuple(baseline.shape)} but z has shape {tuple(z.shape)}",
                fix="give a baseline of shape (D,), (1, D) or (n, D) matching z",
            )
        return baseline.expand_as(z)

    def attribute(self, model: MarginModel, z: torch.Tensor, *, create_graph: bool = False) -> torch.Tensor:
        """Integrated gradients of rows ``z`` ``(n, D)``: ``(n, D)``, or ``(n, k, D)`` for ``k`` outputs."""
        z = check_encoded_rows(z)
        n, width = z.shape
        baseline = self.baseline_for(z)
        delta = z - baseline
        alphas, weights, chunk = self._path(z, create_graph)
        with torch.enable_grad():
            total: torch.Tensor | None = None
            for start in range(0, len(alphas), chunk):
                a, w = alphas[start : start + chunk], weights[start : start + chunk]
                points = (baseline.unsqueeze(0) + a[:, None, None] * delta.unsqueeze(0)).reshape(-1, width)
                grads = input_gradients(model, points, create_graph=create_graph)
                grads = grads.reshape(len(a), n, *grads.shape[1:])
                weighted = torch.einsum("s,sn...->n...", w, grads)
                total = weighted if total is None else total + weighted
            assert total is not None  # steps >= 1
            attributions = total * (delta if total.ndim == 2 else delta.unsqueeze(1))
        return attributions if create_graph else attributions.detach()

    def attribute_columns(
        self, model: FirstLayerModel, z: torch.Tensor, aggregation: torch.Tensor, *, create_graph: bool = False
    ) -> torch.Tensor:
        """``attribute(model, z) @ aggregation`` through the model's first layer: ``(n, d)`` or ``(n, k, d)``."""
        z = check_encoded_rows(z)
        n = z.shape[0]
        baseline = self.baseline_for(z)
        alphas, weights, chunk = self._path(z, create_graph)
        # one shared baseline row goes through the first layer once
        shared = self.baseline == "zero" or (self._baseline is not None and self._baseline.shape[0] == 1)
        with torch.enable_grad():
            layer = model.column_first_layer(z, aggregation)
            base = model.column_first_layer(baseline[:1] if shared else baseline, aggregation)
            start = base.first  # h1(b): (1 or n, *first)
            step = layer.first - start  # h1(z) − h1(b): (n, *first)
            total: torch.Tensor | None = None
            for first in range(0, len(alphas), chunk):
                a, w = alphas[first : first + chunk], weights[first : first + chunk]
                path = a.reshape(-1, *([1] * step.ndim))
                points = (start.unsqueeze(0) + path * step.unsqueeze(0)).reshape(-1, *step.shape[1:])
                grads = first_layer_gradients(model, points, create_graph=create_graph)
                grads = grads.reshape(len(a), n, *grads.shape[1:])
                # a broadcast product: einsum makes this a matmul with an inner size of 1, 3x slower backwards
                weighted = (grads * w.reshape(-1, *([1] * (grads.ndim - 1)))).sum(dim=0)
                total = weighted if total is None else total + weighted
            assert total is not None  # steps >= 1
            attributions = layer.contract(total)
            if self.baseline != "zero":  # the zero row has no share in any column
                rows = torch.zeros(n, dtype=torch.long, device=z.device) if shared else None
                attributions = attributions - base.contract(total, rows)
        return attributions if create_graph else attributions.detach()

    def _path(self, z: torch.Tensor, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The path's nodes and weights in ``z``'s dtype and device — ``training_steps`` of them for a differentiable
        result, else ``steps`` — and how many of them one forward pass takes."""
        alphas, weights = self._nodes[create_graph]
        chunk = len(alphas) if self.internal_batch_size is None else max(1, self.internal_batch_size // max(len(z), 1))
        return (
            torch.as_tensor(alphas, dtype=z.dtype, device=z.device),
            torch.as_tensor(weights, dtype=z.dtype, device=z.device),
            chunk,
        )

    def completeness_gap(self, model: MarginModel, z: torch.Tensor, attributions: torch.Tensor) -> torch.Tensor:
        """Per row ``Σ attributions − (f(z) − f(baseline))``: ``(n,)``, or ``(n, k)`` for ``k`` outputs.

        Zero for exact integration; its size shows how many ``steps`` the model needs.
        """
        z = check_encoded_rows(z)
        with torch.no_grad():
            difference = model(z) - model(self.baseline_for(z))
            return attributions.detach().sum(dim=-1) - difference

    def __repr__(self) -> str:
        baseline = self.baseline
        if baseline == "explicit" and self._baseline is not None:
            # which explicit baseline, in a few characters: a training checkpoint's fingerprint reads this repr
            values = self._baseline.detach().cpu().numpy().tobytes()
            baseline = f"explicit:{hashlib.sha256(values).hexdigest()[:12]}"
        return (
            f"{type(self).__name__}(steps={self.steps}, training_steps={self.training_steps}, method={self.method!r}, "
            f"baseline={baseline!r}, internal_batch_size={self.internal_batch_size})"
        )
