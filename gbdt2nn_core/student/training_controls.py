"""What every student's training loop does around its steps: the epoch's learning rate, the clip of each step's
gradient and the moving average of the weights that is monitored and served.

Both shipped students (GBDT2NN and the ``mlp`` plugin) and any plugin student that wants the same behaviour build one
:class:`TrainingControls` from their settings, so that these three options mean the same thing everywhere and are
checkpointed and reported alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any, Protocol

import torch
from torch import nn

from gbdt2nn_core.student.gradient_clip import GradientClip
from gbdt2nn_core.student.learning_rate import epoch_learning_rate, set_learning_rate
from gbdt2nn_core.student.weight_average import WeightAverage

__all__ = ["ControlSettings", "TrainingControls"]


class ControlSettings(Protocol):
    """The fields of a student config that :meth:`TrainingControls.from_config` reads."""

    @property
    def epochs(self) -> int: ...
    @property
    def lr_schedule(self) -> str: ...
    @property
    def weight_average_epochs(self) -> float: ...
    @property
    def clip_gradients(self) -> float: ...


class TrainingControls:
    """The learning-rate schedule, the gradient clip and the weight average of one fit.

    ``weight_average_epochs`` and ``clip_gradients`` of 0 turn the average and the clip off (see
    :class:`~gbdt2nn_core.student.weight_average.WeightAverage` and
    :class:`~gbdt2nn_core.student.gradient_clip.GradientClip`); ``lr_schedule`` is ``"constant"`` or ``"cosine"``
    over ``epochs`` (:func:`~gbdt2nn_core.student.learning_rate.epoch_learning_rate`). Both hooks sit on
    ``optimizer``: build this after the optimizer and before the first step.
    """

    def __init__(
        self,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        lr: float,
        epochs: int,
        lr_schedule: str = "constant",
        weight_average_epochs: float = 0.0,
        clip_gradients: float = 0.0,
    ) -> None:
        self.optimizer = optimizer
        self.lr, self.epochs, self.lr_schedule = lr, epochs, lr_schedule
        self.average = WeightAverage(module, optimizer, epochs=weight_average_epochs) if weight_average_epochs else None
        self.clip = GradientClip(optimizer, multiple=clip_gradients) if clip_gradients else None

    @classmethod
    def from_config(
        cls, module: nn.Module, optimizer: torch.optim.Optimizer, config: ControlSettings
    ) -> TrainingControls:
        """Built from a student config's fields of the same names (``epochs``, ``lr_schedule``,
        ``weight_average_epochs``, ``clip_gradients``); the base rate is the one ``optimizer`` was built with (a
        config's ``lr`` may be ``"auto"``, resolved by the student before it builds the optimizer)."""
        return cls(
            module,
            optimizer,
            lr=float(optimizer.param_groups[0]["lr"]),
            epochs=config.epochs,
            lr_schedule=config.lr_schedule,
            weight_average_epochs=config.weight_average_epochs,
            clip_gradients=config.clip_gradients,
        )

    def start_epoch(self, epoch: int) -> float:
        """Set the learning rate of ``epoch``'s steps; returns it (for the epoch's record)."""
        rate = epoch_learning_rate(self.lr_schedule, self.lr, epoch, self.epochs)
        set_learning_rate(self.optimizer, rate)
        return rate

    def end_epoch(self) -> None:
        """After an epoch's steps (the average fixes its decay after the first)."""
        if self.average is not None:
            self.average.end_epoch()

    def served(self) -> contextlib.AbstractContextManager[None]:
        """The network as it would be served inside the block: the averaged weights when averaging (the live ones
        back after it), else the live ones."""
        return self.average.averaged() if self.average is not None else contextlib.nullcontext()

    def state_dict(self) -> dict[str, Any]:
        """The average's and the clip's state, for a checkpoint (``None`` where off)."""
        return {
            "weight_average": self.average.state_dict() if self.average is not None else None,
            "gradient_clip": self.clip.state_dict() if self.clip is not None else None,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict`'s keys in a checkpoint (a checkpoint written with one of them off, or before
        it existed, leaves it as built)."""
        if self.average is not None and state.get("weight_average") is not None:
            self.average.load_state_dict(state["weight_average"])
        if self.clip is not None and state.get("gradient_clip") is not None:
            self.clip.load_state_dict(state["gradient_clip"])

    def finish(self, stopping: dict[str, Any]) -> None:
        """After the last epoch (and early stopping's :meth:`~gbdt2nn_core.student.kit.EarlyStopping.finish`):
        remove the hooks, leave the last average in the module where early stopping restored no best epoch, and
        record what they did in ``stopping`` (``gradient_clip``, ``weight_average``)."""
        if self.clip is not None:
            self.clip.close()
            stopping["gradient_clip"] = self.clip.describe()
        if self.average is not None:
            if not stopping.get("restored_best"):  # no validation rows, or no early stopping: the last average
                self.average.use()
            self.average.close()
            stopping["weight_average"] = {"epochs": self.average.epochs, "decay": self.average.decay}
