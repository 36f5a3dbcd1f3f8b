"""An exponential moving average of a student's weights over its last steps: what is monitored and what is served.

With a constant learning rate the weights after the last step carry that step's noise, and so does the validation
loss early stopping reads: students often stopped right after β's warm-up (8 epochs) while other seeds of the same
data ran to 17–20 with better figures (RESULTS.md, "The average of the last steps' weights"). An exponential moving
average of the weights over about the last half epoch of steps (as ``torch.optim.swa_utils.get_ema_multi_avg_fn``
computes one) is a smoother point on the same trajectory; training itself still steps the live weights.

The window is given in epochs, not as a decay per step, so that it means the same thing on 1,000 rows as on
300,000: the decay is set from the number of steps of the first epoch, and until then it grows as TensorFlow's
``ExponentialMovingAverage(num_updates=...)`` lets it, ``min(decay, (1 + t) / (10 + t))``, so that the first average
follows the weights instead of holding their random start.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["WeightAverage"]


class WeightAverage:
    """The moving average of ``module``'s parameters, updated after every ``optimizer`` step (a post-step hook).

    :meth:`averaged` puts the average in the module for a while (the validation monitor, early stopping's copy of
    the best weights); :meth:`end_epoch` fixes the decay after the first epoch; :meth:`use` leaves the average in
    for good (the end of training without early stopping's copy). BatchNorm's running statistics are not averaged:
    they belong to the weights they were measured with, and the pass after training re-estimates them.
    """

    def __init__(self, module: nn.Module, optimizer: torch.optim.Optimizer, *, epochs: float) -> None:
        if epochs <= 0:
            raise ValueError(f"the averaging window must be positive epochs, not {epochs}")
        self.epochs = epochs
        self.parameters: list[torch.Tensor] = [p for p in module.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.parameters]
        self.steps = 0
        self.decay: float | None = None  # set by end_epoch after the first epoch
        self._hook = optimizer.register_step_post_hook(self._update)

    def _update(self, _optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        self.steps += 1
        warm = (1 + self.steps) / (10 + self.steps)
        decay = warm if self.decay is None else min(self.decay, warm)
        with torch.no_grad():
            torch._foreach_lerp_(self.average, [p.detach() for p in self.parameters], 1.0 - decay)

    def end_epoch(self) -> None:
        """After the first epoch: the decay whose window is :attr:`epochs` epochs of that epoch's steps."""
        if self.decay is None and self.steps > 0:
            self.decay = 1.0 - 1.0 / max(1.0, self.epochs * self.steps)

    @contextmanager
    def averaged(self) -> Iterator[None]:
        """The average in the module's parameters inside the block; the live weights back after it."""
        live = [p.detach().clone() for p in self.parameters]
        self.use()
        try:
            yield
        finally:
            with torch.no_grad():
                torch._foreach_copy_(self.parameters, live)

    def use(self) -> None:
        """Copy the average into the module's parameters."""
        with torch.no_grad():
            torch._foreach_copy_(self.parameters, self.average)

    def close(self) -> None:
        """Stop following the optimizer's steps."""
        self._hook.remove()

    def state_dict(self) -> dict[str, Any]:
        """What a per-epoch checkpoint needs to continue the average exactly."""
        return {"average": [t.clone() for t in self.average], "steps": self.steps, "decay": self.decay}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put :meth:`state_dict`'s content back."""
        with torch.no_grad():
            for mine, saved in zip(self.average, state["average"], strict=True):
                mine.copy_(saved)
        self.steps, self.decay = int(state["steps"]), state["decay"]
