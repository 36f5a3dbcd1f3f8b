"""The student's input encoding: centred numbers the network can use, traceable back to columns.

Every input column becomes a *block* of encoded values:

- numeric: ``(x - mean) / std`` with missing values at 0, plus a centred missing-indicator when the column had
  missing values in training;
- categorical: a centred one-hot vector ``1[x == c] - p_c`` (``p_c`` = training frequency); missing and unseen
  categories encode as all zeros, i.e. as the average category.

Because every block is centred, ``z = 0`` is the training mean: gradient × input and integrated gradients from
the zero baseline explain ``f(x) - f(mean row)``. Summing an attribution over a column's block (the
:attr:`InputEncoder.aggregation` matrix) gives that column's attribution, which lines up with per-column TreeSHAP.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from gbdt2nn_core.data import TabularSchema

__all__ = ["InputEncoder"]


class InputEncoder:
    """Turns a teacher-ready frame (see :meth:`TabularSchema.to_frame`) into the student's encoded matrix."""

    def __init__(self, schema: TabularSchema, state: dict[str, Any]) -> None:
        self.schema = schema
        self._state = state
        column_of: list[int] = []
        for index, column in enumerate(schema.columns):
            column_of.extend([index] * self._block_width(column.name))
        #: encoded dimension -> index of the input column it belongs to
        self.column_of = np.asarray(column_of, dtype=np.int64)

    @classmethod
    def fit(cls, frame: pd.DataFrame, schema: TabularSchema) -> InputEncoder:
        """Learn means, scales and category frequencies from training rows."""
        state: dict[str, Any] = {}
        for column in schema.columns:
            series = frame[column.name]
            if column.kind == "numeric":
                values = series.to_numpy(dtype=np.float64)
                observed = values[~np.isnan(values)]
                mean = float(observed.mean()) if observed.size else 0.0
                std = float(observed.std()) if observed.size else 1.0
                missing_rate = float(np.isnan(values).mean())
                state[column.name] = {
                    "mean": mean,
                    "std": std if std > 1e-12 else 1.0,
                    "missing_rate": missing_rate if missing_rate > 0 else None,
                }
            else:
                codes = series.cat.codes.to_numpy()
                counts = np.bincount(codes[codes >= 0], minlength=len(column.categories)).astype(np.float64)
                state[column.name] = {"frequencies": (counts / max(len(codes), 1)).tolist()}
        return cls(schema, state)

    def _block_width(self, name: str) -> int:
        entry = self._state[name]
        if "frequencies" in entry:
            return len(entry["frequencies"])
        return 1 + (entry["missing_rate"] is not None)

    @property
    def n_encoded(self) -> int:
        """Width ``D`` of the encoded matrix."""
        return int(self.column_of.shape[0])

    @property
    def n_columns(self) -> int:
        return len(self.schema.columns)

    def aggregation(self) -> np.ndarray:
        """``(D, d)`` 0/1 matrix: ``attr_columns = attr_encoded @ aggregation()`` sums each column's block."""
        matrix = np.zeros((self.n_encoded, self.n_columns), dtype=np.float32)
        matrix[np.arange(self.n_encoded), self.column_of] = 1.0
        return matrix

    def encoded_indices(self, column: int) -> np.ndarray:
        """Positions in the encoded matrix that belong to input column ``column``."""
        return np.flatnonzero(self.column_of == column)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """``(n, D)`` float32 encoded rows."""
        blocks = []
        for column in self.schema.columns:
            entry = self._state[column.name]
            series = frame[column.name]
            if column.kind == "numeric":
                values = series.to_numpy(dtype=np.float64)
                missing = np.isnan(values)
                scaled = np.where(missing, 0.0, (values - entry["mean"]) / entry["std"])
                blocks.append(scaled[:, None])
                if entry["missing_rate"] is not None:
                    blocks.append((missing.astype(np.float64) - entry["missing_rate"])[:, None])
            else:
                frequencies = np.asarray(entry["frequencies"])
                codes = series.cat.codes.to_numpy()
                onehot = np.zeros((len(codes), len(frequencies)))
                known = codes >= 0
                onehot[np.flatnonzero(known), codes[known]] = 1.0
                # missing / unseen rows stay at zero = the average category
                onehot[known] -= frequencies
                blocks.append(onehot)
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def to_json(self) -> dict[str, Any]:
        return {"schema": self.schema.to_json(), "state": self._state}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputEncoder:
        return cls(TabularSchema.from_json(data["schema"]), data["state"])

