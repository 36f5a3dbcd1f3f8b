"""Synthetic training rows for the student, labelled by the teacher: MUNGE (Bucilă, Caruana & Niculescu-Mizil,
"Model compression", KDD 2006).

A student that learns the teacher's function from the training rows alone sees it only where the data is; the
teacher can be asked anywhere. MUNGE makes rows near the data: each synthetic row starts as a training row and,
column by column with probability ``swap_probability``, takes a value near its nearest neighbour's instead (a
numeric column: drawn from a normal centred on the neighbour's value with the two rows' distance as its spread; a
categorical one: the neighbour's category). The teacher then labels the rows (see
:class:`~gbdt2nn_core.pipeline.core.Prepared`).
"""

from __future__ import annotations

import attrs
import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from gbdt2nn_core.host.interfaces import Task

__all__ = ["SyntheticRows", "munge", "teacher_labels"]

#: Rows per nearest-neighbour search: each row's neighbour is searched among a random block of this many rows, so
#: the search costs O(n · block) rather than O(n²) on large data (a block is a random sample of the rows: its nearest
#: neighbour is a near one, if not always the nearest of all).
BLOCK_ROWS = 4096


def munge(
    frame: pd.DataFrame, copies: int, *, seed: int, swap_probability: float = 0.5, block_rows: int = BLOCK_ROWS
) -> pd.DataFrame:
    """``copies`` synthetic rows per row of ``frame`` (a teacher-ready frame: numeric and categorical columns), in
    the order ``copy · n + row``: synthetic row ``j · n + i`` is made from row ``i``. Same columns and dtypes."""
    n = len(frame)
    if copies < 1 or n < 2:
        return frame.iloc[:0].copy()
    rng = np.random.default_rng(seed)
    partner = _neighbours(frame, rng, block_rows)
    source = np.tile(np.arange(n), copies)
    other = partner[source]
    columns = {}
    for name in frame.columns:
        column = frame[name]
        swap = rng.random(len(source)) < swap_probability
        if isinstance(column.dtype, pd.CategoricalDtype):
            codes = column.cat.codes.to_numpy()
            mixed = np.where(swap, codes[other], codes[source])
            columns[name] = pd.Categorical.from_codes(mixed, dtype=column.dtype)
        elif pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            values = column.to_numpy(dtype=np.float64)
            own, near = values[source], values[other]
            spread = np.abs(own - near)
            drawn = rng.normal(np.nan_to_num(near), np.nan_to_num(spread))
            # a missing value on either side: take the neighbour's value as it is (missing stays missing)
            drawn = np.where(np.isnan(own) | np.isnan(near), near, drawn)
            columns[name] = np.where(swap, drawn, own)
        else:  # booleans, strings: the neighbour's value
            values = column.to_numpy()
            columns[name] = np.where(swap, values[other], values[source])
    synthetic = pd.DataFrame(columns, columns=frame.columns)
    return synthetic.astype({name: frame[name].dtype for name in frame.columns if name not in _categoricals(frame)})


def _categoricals(frame: pd.DataFrame) -> set[str]:
    return {name for name in frame.columns if isinstance(frame[name].dtype, pd.CategoricalDtype)}


def _neighbours(frame: pd.DataFrame, rng: np.random.Generator, block_rows: int) -> np.ndarray:
    """Each row's nearest other row (Euclidean over standardised numeric columns and one-hot categories, missing
    values at the column's mean), searched within random blocks of ``block_rows`` rows."""
    points = _search_space(frame)
    n = len(points)
    order = rng.permutation(n)
    partner = np.empty(n, dtype=np.int64)
    blocks = max(1, round(n / block_rows))
    for block in np.array_split(order, blocks):
        if len(block) < 2:  # a lone row (only when n is tiny) pairs with any other
            partner[block] = order[0] if order[0] != block[0] else order[1]
            continue
        search = NearestNeighbors(n_neighbors=2).fit(points[block])
        nearest = search.kneighbors(points[block], return_distance=False)
        # the first neighbour is the row itself unless a duplicate comes first: take the one that is not the row
        chosen = np.where(nearest[:, 0] == np.arange(len(block)), nearest[:, 1], nearest[:, 0])
        partner[block] = block[chosen]
    return partner


#: Categorical columns with more categories than this stay out of the neighbour search (a one-hot block that wide
#: would dominate the distance and the memory); their values are still taken from the neighbour.
MAX_SEARCH_CATEGORIES = 64


def _search_space(frame: pd.DataFrame) -> np.ndarray:
    parts = []
    for name in frame.columns:
        column = frame[name]
        if isinstance(column.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(column):
            codes = pd.Categorical(column).codes
            width = int(codes.max()) + 2 if len(codes) else 1
            if width - 1 > MAX_SEARCH_CATEGORIES:
                continue
            one_hot = np.zeros((len(column), width))
            one_hot[np.arange(len(column)), codes + 1] = 1.0  # code -1 (missing) is a category of its own
            parts.append(one_hot / np.sqrt(2.0))  # two rows of different categories are 1 apart
            continue
        values = column.to_numpy(dtype=np.float64)
        known = values[~np.isnan(values)]
        mean, std = (float(known.mean()), float(known.std())) if len(known) else (0.0, 0.0)
        scaled = (values - mean) / (std if std > 0 else 1.0)
        parts.append(np.nan_to_num(scaled)[:, None])
    return np.hstack(parts) if parts else np.zeros((len(frame), 1))


@attrs.frozen(kw_only=True)
class SyntheticRows:
    """Teacher-labelled rows made by :func:`munge` from the student's fitting rows, ready for the student:
    ``copies`` per fitting row, row ``j · n + i`` made from fitting row ``i`` (so that a process's shard of the
    fitting rows takes the synthetic rows made from its own rows)."""

    copies: int
    #: How the count was chosen, for the run's record ("auto (regression: ...)" with the rule, or "configured").
    chosen: str
    #: Encoded like the training rows ``(copies · n, D)`` (in memory, or a file of the run's rows folder).
    z: np.ndarray = attrs.field(eq=False, repr=False)
    #: The teacher's labels (:func:`teacher_labels`).
    y: np.ndarray = attrs.field(eq=False, repr=False)
    #: The teacher's leaf index of every row in every tree.
    leaves: np.ndarray = attrs.field(eq=False, repr=False)
    #: The teacher's margins.
    teacher_margin: np.ndarray = attrs.field(eq=False, repr=False)

    def positions(self, fitting: int, shard: np.ndarray | None) -> np.ndarray:
        """The synthetic rows made from the fitting rows at positions ``shard`` (all when ``None``) of ``fitting``."""
        own = np.arange(fitting) if shard is None else np.asarray(shard)
        return (np.arange(self.copies)[:, None] * fitting + own[None, :]).reshape(-1)

    def describe(self) -> dict[str, object]:
        """What the run's record says about them."""
        return {
            "synthetic_rows": len(self.y),
            "per_fitting_row": self.copies,
            "chosen": self.chosen,
            "labels": "the teacher's",
        }


def teacher_labels(margin: np.ndarray, task: Task) -> np.ndarray:
    """Targets from the teacher's margins, as the student's targets are coded: its prediction for regression (the
    margin: the pipeline's regression teachers predict their margin), its class for classification (binary: margin
    above 0; multiclass: the largest margin)."""
    if task == "regression":
        return np.asarray(margin, dtype=np.float64).reshape(len(margin))
    if task == "binary":
        return (np.asarray(margin).reshape(len(margin)) > 0).astype(np.int64)
    classes: np.ndarray = np.asarray(margin).argmax(axis=1).astype(np.int64)
    return classes
