"""Expected gradients: SHAP values of a network, and the door to interventional TreeSHAP for the teacher."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from gbdt2nn_core.errors import ConfigError, DataError
from gbdt2nn_core.host.attribution import (
    FirstLayerModel,
    MarginModel,
    check_encoded_rows,
    first_layer_gradients,
    input_gradients,
)
from gbdt2nn_core.host.interfaces import Attributor, TreeShap

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["ExpectedGradients"]


class ExpectedGradients(Attributor):
    """Expected gradients (Erion et al. 2021; Captum's ``GradientShap`` without noise).

    For each row and each of ``samples`` draws, a baseline ``b`` is taken from the background and a point
    ``α ~ U(0, 1)`` on the path from ``b`` to ``z``; the attribution is the mean of ``(z − b) ⊙ ∂f/∂z(b + α(z − b))``.
    That is integrated gradients averaged over baselines from the data, an unbiased estimate of SHAP values
    whose rows sum to ``f(z) − E[f]`` in expectation: the match for interventional TreeSHAP on the same
    background (see :meth:`explain_teacher`).

    Per column, for a model whose first layer is linear (:class:`~gbdt2nn_core.host.attribution.FirstLayerModel`),
    :meth:`attribute_columns` gives the same values from the same draws: each draw's point is
    ``h1(b) + α(h1(z) − h1(b))`` in the first layer's output, and column ``c`` gets ``ΔH_c · ∂f/∂h1`` there, with
    ``ΔH_c`` its share of ``h1(z) − h1(b)``. The first layer runs once per row and background row.

    Parameters
    ----------
    samples:
        Draws (baseline, α) per row when explaining; the estimate's noise falls like ``1 / sqrt(samples)``. Most of
        it is the baseline's draw, not α's: on a GBDT2NN student of adult the per-row Spearman correlation of an
        estimate with the exact expectation over the background is 0.88 at 16 draws and 0.95 at 64
        (``benchmarks/eg_samples.py``).
    training_samples:
        Draws per row of one differentiable estimate (``create_graph=True``: the alignment term of a joint training
        step). The attributor is :attr:`~gbdt2nn_core.host.interfaces.Attributor.monte_carlo`: a joint step takes
        two independent estimates, so it draws ``2 × training_samples`` per aligned row, and with the ``mse`` loss
        it trains on their unbiased cross term instead of the squared error of a noisy estimate, whose noise term
        cost accuracy (:func:`gbdt2nn_core.student.kit.alignment_loss`). The default, 4 (8 draws a step), trained
        california students within 3 % of the plain student's RMSE (seeds 0–1) that explain more like the teacher
        than with 16 draws of the biased loss, and adult students as accurate that explain 0.007 less like it
        (``benchmarks/eg_samples.py``). ``None``: ``samples``.
    seed:
        Seeds the draws. :meth:`fit` restarts the stream, so a fitted attributor gives the same sequence of
        results for the same sequence of calls; successive calls draw afresh (new noise per training batch).
    internal_batch_size:
        Most rows (``samples × n``) per forward pass; ``None`` does all draws at once.
    """

    differentiable = True
    reference = "expectation"
    monte_carlo = True

    def __init__(
        self,
        samples: int = 64,
        training_samples: int | None = 4,
        seed: int = 0,
        internal_batch_size: int | None = None,
    ) -> None:
        _check_int("samples", samples, smallest=1)
        if training_samples is not None:
            _check_int("training_samples", training_samples, smallest=1)
        _check_int("seed", seed, smallest=0)
        if internal_batch_size is not None:
            _check_int("internal_batch_size", internal_batch_size, smallest=1)
        self.samples = samples
        self.training_samples = samples if training_samples is None else training_samples
        self.seed = seed
        self.internal_batch_size = internal_batch_size
        self._background: torch.Tensor | None = None
        self._generator = torch.Generator()

    def fit(self, model: MarginModel, background: torch.Tensor) -> ExpectedGradients:
        """Keep ``background`` (encoded training rows) as the baseline distribution and restart the draws."""
        self._background = check_encoded_rows(background, name="background").detach()
        if self._background.shape[0] == 0:
            raise DataError(problem="the background sample is empty", fix="pass some encoded training rows")
        self._generator.manual_seed(self.seed)
        return self

    def attribute(self, model: MarginModel, z: torch.Tensor, *, create_graph: bool = False) -> torch.Tensor:
        """Expected gradients of rows ``z`` ``(n, D)``: ``(n, D)``, or ``(n, k, D)`` for ``k`` outputs."""
        z, picks, alphas = self._draw(z, create_graph)
        draws = picks.shape[0]
        n, width = z.shape
        assert self._background is not None  # _draw checked it
        baselines = self._background[picks].to(dtype=z.dtype, device=z.device)  # (draws, n, D)
        deltas = z.unsqueeze(0) - baselines
        points = baselines + alphas.to(dtype=z.dtype, device=z.device) * deltas
        chunk = self._chunk(n, draws)
        with torch.enable_grad():
            total: torch.Tensor | None = None
            for start in range(0, draws, chunk):
                stop = min(start + chunk, draws)
                grads = input_gradients(model, points[start:stop].reshape(-1, width), create_graph=create_graph)
                grads = grads.reshape(stop - start, n, *grads.shape[1:])
                delta = deltas[start:stop] if grads.ndim == 3 else deltas[start:stop].unsqueeze(2)
                part = (grads * delta).sum(dim=0)
                total = part if total is None else total + part
            assert total is not None  # draws >= 1
            attributions = total / draws
        return attributions if create_graph else attributions.detach()

    def attribute_columns(
        self, model: FirstLayerModel, z: torch.Tensor, aggregation: torch.Tensor, *, create_graph: bool = False
    ) -> torch.Tensor:
        """``attribute(model, z) @ aggregation`` through the model's first layer, from the same draws."""
        return self.attribute_columns_independently(model, z, aggregation, estimates=1, create_graph=create_graph)[0]

    def attribute_columns_independently(
        self,
        model: FirstLayerModel,
        z: torch.Tensor,
        aggregation: torch.Tensor,
        *,
        estimates: int,
        create_graph: bool = False,
    ) -> torch.Tensor:
        """``estimates`` successive :meth:`attribute_columns` results, stacked ``(estimates, n, ...)``, from one pass
        of the rows and of the drawn baselines through the first layer (a joint step's two estimates)."""
        _check_int("estimates", estimates, smallest=1)
        drawn = [self._draw(z, create_graph) for _ in range(estimates)]  # the stream successive calls would use
        z = drawn[0][0]
        assert self._background is not None  # _draw checked it
        # only the background rows some draw picked go through the first layer
        used, picked = torch.unique(torch.stack([picks for _, picks, _ in drawn]), return_inverse=True)
        # Explaining, the first layer's outputs are constants: left attached to the parameters, every chunk's
        # products would keep its graph alive until the end (12 GiB for 2,048 draws of 500 california rows).
        with torch.enable_grad() if create_graph else torch.no_grad():
            layer = model.column_first_layer(z, aggregation)
            background = model.column_first_layer(
                self._background[used.to(self._background.device)].to(dtype=z.dtype, device=z.device), aggregation
            )
        results = [
            self._estimate(model, layer, background, picked[e], alphas, create_graph)
            for e, (_, _, alphas) in enumerate(drawn)
        ]
        stacked = torch.stack(results)
        return stacked if create_graph else stacked.detach()

    def _estimate(
        self,
        model: FirstLayerModel,
        layer: Any,
        background: Any,
        picked: torch.Tensor,
        alphas: torch.Tensor,
        create_graph: bool,
    ) -> torch.Tensor:
        """One estimate from first-layer outputs: ``picked (draws, n)`` indexes ``background``'s rows."""
        first_z, first_b = layer.first, background.first  # (n, *first), (used, *first)
        draws, n = picked.shape
        chunk = self._chunk(n, draws)
        with torch.enable_grad():
            alphas = alphas.to(dtype=first_z.dtype, device=first_z.device)
            alphas = alphas.reshape(draws, n, *([1] * (first_z.ndim - 1)))
            at_row: torch.Tensor | None = None  # Σ over draws of ∂f/∂h1, against the row's own shares
            at_baselines: torch.Tensor | None = None  # Σ over draws of ∂f/∂h1 against the drawn baseline's shares
            for start in range(0, draws, chunk):
                stop = min(start + chunk, draws)
                index = picked[start:stop].to(first_z.device)  # (s, n)
                base = first_b[index]  # (s, n, *first)
                points = base + alphas[start:stop] * (first_z.unsqueeze(0) - base)
                grads = first_layer_gradients(model, points.reshape(-1, *first_z.shape[1:]), create_graph=create_graph)
                if not create_graph:
                    grads = grads.detach()
                row_part = grads.reshape(stop - start, n, *grads.shape[1:]).sum(dim=0)
                base_part = background.contract(grads, index.reshape(-1))
                base_part = base_part.reshape(stop - start, n, *base_part.shape[1:]).sum(dim=0)
                at_row = row_part if at_row is None else at_row + row_part
                at_baselines = base_part if at_baselines is None else at_baselines + base_part
            assert at_row is not None  # draws >= 1
            assert at_baselines is not None
            result: torch.Tensor = (layer.contract(at_row) - at_baselines) / draws
        return result

    def _draw(self, z: torch.Tensor, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Check ``z``; draw baselines and path points: ``z``, ``picks (draws, n)``, ``alphas (draws, n, 1)``, with
        ``training_samples`` draws for a differentiable result and ``samples`` otherwise.

        Both paths draw here, in the same order, so that they consume the random stream alike."""
        if self._background is None:
            raise DataError(
                problem="shap (expected gradients) needs a background sample", fix="call fit(model, background) first"
            )
        z = check_encoded_rows(z, n_features=self._background.shape[1])
        n = z.shape[0]
        draws = self.training_samples if create_graph else self.samples
        # Draw on the CPU generator so that results do not depend on the device.
        picks = torch.randint(self._background.shape[0], (draws, n), generator=self._generator)
        alphas = torch.rand((draws, n, 1), generator=self._generator, dtype=torch.float64)
        return z, picks, alphas

    def _chunk(self, n: int, draws: int) -> int:
        """Draws per forward pass."""
        return draws if self.internal_batch_size is None else max(1, self.internal_batch_size // max(n, 1))

    def explain_teacher(
        self, teacher: Any, X: pd.DataFrame | np.ndarray, background: pd.DataFrame | np.ndarray
    ) -> TreeShap:
        """Interventional TreeSHAP of ``teacher`` on ``X`` against ``background`` (the teacher's rows, not ``z``).

        The same reference as this attributor: both explain ``f(x) − E[f]`` over the background sample.
        """
        from gbdt2nn_shap.teacher import interventional_tree_shap

        return interventional_tree_shap(teacher, X, background)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(samples={self.samples}, training_samples={self.training_samples}, "
            f"seed={self.seed}, internal_batch_size={self.internal_batch_size})"
        )


def _check_int(setting: str, value: object, *, smallest: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < smallest:
        raise ConfigError(setting=setting, value=value, fix=f"use an integer >= {smallest}")
