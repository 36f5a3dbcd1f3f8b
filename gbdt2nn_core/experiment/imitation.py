"""Independent imitation: a separate explanation network learns the teacher's TreeSHAP values.

The ablation of the joint method: the network explains, but it cannot change the prediction (which is the plain
student's), because it shares no weights with the student. It maps the encoded row ``z`` to one attribution per
input column (per output for multiclass) and is fitted with MSE to the teacher's TreeSHAP. Like the student it
saves a checkpoint after every epoch and resumes to the identical result.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gbdt2nn_core.experiment.config import ImitationConfig
from gbdt2nn_core.host.device import in_chunks, rows_on
from gbdt2nn_core.student.kit import (
    adamw,
    load_checkpoint,
    restore_training_state,
    save_checkpoint,
    training_state,
)

__all__ = ["ExplanationNetwork"]


class ExplanationNetwork:
    """An MLP ``z -> φ`` trained with MSE on the teacher's attributions ``(n, d)`` or ``(n, k, d)``."""

    def __init__(
        self, config: ImitationConfig, *, epochs: int, batch_size: int, seed: int, device: torch.device | str = "cpu"
    ) -> None:
        self.config = config
        #: Where it trains and predicts (the experiment's resolved device), rows copied there whole, once.
        self.device = torch.device(device)
        self.epochs = config.epochs or epochs
        self.batch_size = config.batch_size or batch_size
        self.seed = seed
        self.module_: nn.Sequential | None = None
        self.output_shape_: tuple[int, ...] = ()
        #: One dict per epoch: ``epoch``, ``loss`` (training MSE), ``seconds``, plus what ``on_epoch_end`` returned.
        self.history_: list[dict[str, float]] = []

    def _build(self, inputs: int, outputs: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        width = inputs
        for size in self.config.hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, outputs))
        return nn.Sequential(*layers)

    def fit(
        self,
        z: np.ndarray,
        attributions: np.ndarray,
        *,
        on_epoch_end: Callable[[ExplanationNetwork, int], dict[str, float] | None] | None = None,
        checkpoint: Path | None = None,
    ) -> ExplanationNetwork:
        torch.manual_seed(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        self.output_shape_ = tuple(attributions.shape[1:])
        outputs = int(np.prod(self.output_shape_))
        module = self._build(z.shape[1], outputs).to(self.device)
        optimizer = adamw(module.parameters(), lr=self.config.lr, weight_decay=self.config.weight_decay)
        z_t = rows_on(z, self.device, torch.float32)
        # a copy (TreeShap is read-only), on the device
        target = torch.tensor(attributions.reshape(len(z), outputs), dtype=torch.float32).to(self.device)
        # the scale of TreeSHAP differs per dataset; standardising the target makes one learning rate fit all
        scale = target.std().clamp_min(1e-12)
        self.module_ = module
        self._scale = float(scale)
        fingerprint = self._fingerprint(z, attributions)
        resumed = load_checkpoint(checkpoint, fingerprint) if checkpoint is not None else None
        first = 0
        self.history_ = []
        if resumed is not None:
            restore_training_state(resumed, module, optimizer, generator)
            self.history_ = json.loads(resumed["history"])
            first = int(resumed["epochs_done"])

        def save(done: int) -> None:
            if checkpoint is not None:
                save_checkpoint(
                    checkpoint,
                    {
                        "fingerprint": fingerprint,
                        "epochs_done": done,
                        **training_state(module, optimizer, generator),
                        "history": json.dumps(self.history_),
                    },
                )

        if resumed is None:
            save(0)
        n = len(z_t)
        for epoch in range(first, self.epochs):
            started = time.perf_counter()
            module.train()
            order = torch.randperm(n, generator=generator).to(self.device)
            total = 0.0
            for start in range(0, n, self.batch_size):
                rows = order[start : start + self.batch_size]
                loss = nn.functional.mse_loss(module(z_t[rows]), target[rows] / scale)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                total += float(loss.detach()) * len(rows)
            module.eval()
            record: dict[str, float] = {"epoch": epoch, "loss": total / n * self._scale**2}
            if on_epoch_end is not None:
                record.update(on_epoch_end(self, epoch) or {})
            record["seconds"] = time.perf_counter() - started
            self.history_.append(record)
            save(epoch + 1)
        module.eval()
        return self

    @torch.no_grad()
    def predict(self, z: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """The network's attributions for encoded rows: shaped like the teacher's, ``(n, d)`` or ``(n, k, d)``."""
        if self.module_ is None:
            raise RuntimeError("ExplanationNetwork.predict called before fit")
        module = self.module_.eval()
        z_t = torch.as_tensor(z, dtype=torch.float32)
        flat = in_chunks(module, z_t, batch_size, self.device, to_cpu=True).numpy() * self._scale
        return np.asarray(flat, dtype=np.float64).reshape(len(z), *self.output_shape_)

    def _fingerprint(self, z: np.ndarray, attributions: np.ndarray) -> str:
        digest = hashlib.sha256()
        settings: dict[str, Any] = {
            "hidden": list(self.config.hidden),
            "lr": self.config.lr,
            "weight_decay": self.config.weight_decay,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "seed": self.seed,
        }
        digest.update(json.dumps(settings, sort_keys=True).encode())
        digest.update(np.ascontiguousarray(z).tobytes())
        digest.update(np.ascontiguousarray(attributions).tobytes())
        return digest.hexdigest()
