"""Clip a step's gradient when its norm is far above the norms of the steps before it.

A few steps of a joint (aligned) run have gradients hundreds of times the usual size: on diamonds' price, seed 1,
the median step's global gradient norm was about 0.1 and single steps reached 20–60 (the double-backward alignment
term and the task loss spiking together). AdamW normalises each step by its running second moment, so one such
step moves every weight it touches by several ordinary steps and then damps the following ones; that run's
validation loss jumped at epochs 4 and 6, early stopping restored epoch 3, and the student's test RMSE was 749 USD
against the plain student's 578. Clipping every step at twice the median norm of the steps before it (205 of 5,016
steps) trained the same seed to 582 USD, its validation loss falling every epoch to the budget.

The threshold is relative, not a norm in the loss's units (``torch.nn.utils.clip_grad_norm_``'s ``max_norm``), so it
means the same on every dataset and loss scale — the rule of AutoClip (Seetharaman et al. 2020, "AutoClip: Adaptive
Gradient Clipping for Source Separation Networks"), with the median of a moving window of recent steps instead of a
percentile of all of them, so that it follows the norms as they drift over a long run.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch

__all__ = ["GradientClip"]


class GradientClip:
    """Scale each ``optimizer`` step's gradients down to ``multiple`` × the median global norm of the last
    :attr:`window` steps of the same :attr:`kind` before it (an optimizer pre-step hook); the first :attr:`warmup`
    steps of each kind are not clipped.

    The training loop names each step's kind before ``optimizer.step()``: a joint student's batches that carry the
    alignment term (weighted up, a tenth of the steps under grouped alignment batches) have gradients several times
    those of the plain batches, and measured against the plain steps' median nearly every one of them was clipped —
    alignment weakened, not spikes removed (california, three seeds: Spearman 0.922 → 0.891). The norm is the 2-norm
    of all of the optimizer's gradients together, as ``clip_grad_norm_`` computes it; under data parallelism every
    process sees the same all-reduced gradients and the same kind, so every process clips alike.
    """

    #: Steps of one kind whose norms set its threshold (at about 100 steps an epoch, the last ten epochs).
    window = 1000
    #: Steps of one kind before its first clip: the median of fewer norms is too rough a yardstick.
    warmup = 20

    def __init__(self, optimizer: torch.optim.Optimizer, *, multiple: float) -> None:
        if multiple <= 0:
            raise ValueError(f"the clipping multiple must be positive, not {multiple}")
        self.multiple = multiple
        #: The kind of the next step (set by the training loop), e.g. ``"plain"`` or ``"aligned"``.
        self.kind = "plain"
        self.norms: dict[str, deque[float]] = {}
        self.steps: dict[str, int] = {}
        self.clipped: dict[str, int] = {}
        self._hook = optimizer.register_step_pre_hook(self._clip)

    def _clip(self, optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not grads:
            return
        kind = self.kind
        norms = self.norms.setdefault(kind, deque(maxlen=self.window))
        with torch.no_grad():
            norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
            if len(norms) >= self.warmup and np.isfinite(norm):
                limit = self.multiple * float(np.median(norms))
                if norm > limit:
                    torch._foreach_mul_(grads, limit / norm)
                    self.clipped[kind] = self.clipped.get(kind, 0) + 1
        self.steps[kind] = self.steps.get(kind, 0) + 1
        if np.isfinite(norm):  # a non-finite loss is the finite-loss check's to report, not a yardstick
            norms.append(norm)

    def close(self) -> None:
        """Stop clipping the optimizer's steps."""
        self._hook.remove()

    def describe(self) -> dict[str, Any]:
        """What the clip did, for the run's record: steps and clipped steps of each kind."""
        return {
            "multiple": self.multiple,
            "steps": dict(self.steps),
            "clipped_steps": {kind: self.clipped.get(kind, 0) for kind in self.steps},
        }

    def state_dict(self) -> dict[str, Any]:
        """What a per-epoch checkpoint needs to continue clipping exactly."""
        return {
            "norms": {kind: list(norms) for kind, norms in self.norms.items()},
            "steps": dict(self.steps),
            "clipped": dict(self.clipped),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put :meth:`state_dict`'s content back."""
        self.norms = {
            str(kind): deque((float(n) for n in norms), maxlen=self.window) for kind, norms in state["norms"].items()
        }
        self.steps = {str(k): int(v) for k, v in state["steps"].items()}
        self.clipped = {str(k): int(v) for k, v in state["clipped"].items()}
