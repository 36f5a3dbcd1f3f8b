"""Tabular data in, teacher-ready frames out: loading files, the bundled datasets, column schemas, targets.

The :class:`TabularSchema` fixes, once, which columns exist, which are categorical and what their categories
are, so that teacher and student see identical columns at training and prediction time.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np
import pandas as pd

from gbdt2nn_core.errors import ConfigError, DataError
from gbdt2nn_core.interfaces import TASKS, Task

__all__ = [
    "BUNDLED_DATASETS",
    "ColumnSchema",
    "Dataset",
    "TabularSchema",
    "TargetEncoder",
    "infer_task",
    "load_bundled",
    "read_table",
    "split_features_target",
]


@attrs.frozen(kw_only=True)
class Dataset:
    """A table with a known target column and task."""

    name: str
    frame: pd.DataFrame = attrs.field(eq=False, repr=False)
    target: str
    task: Task


#: name -> (file inside gbdt2nn_core/datasets, target column, task)
BUNDLED_DATASETS: dict[str, tuple[str, str, Task]] = {
    "adult": ("adult.csv.gz", "income_gt_50k", "binary"),
    "california": ("california_housing.csv.gz", "MedHouseVal", "regression"),
}


def load_bundled(name: str = "adult") -> Dataset:
    """Load a real dataset shipped inside the package (``"adult"`` or ``"california"``)."""
    if name not in BUNDLED_DATASETS:
        raise DataError(
            problem=f"no bundled dataset named {name!r}",
            fix=f"choose one of {', '.join(sorted(BUNDLED_DATASETS))} or pass --data FILE",
        )
    filename, target, task = BUNDLED_DATASETS[name]
    with resources.as_file(resources.files("gbdt2nn_core.datasets") / filename) as path:
        frame = read_table(path)
    return Dataset(name=name, frame=frame, target=target, task=task)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (optionally gzip-compressed) or Parquet file, with one-line errors for the usual mistakes."""
    path = Path(path)
    if not path.exists():
        raise DataError(problem=f"data file {str(path)!r} does not exist", fix="check the path passed to --data")
    if path.is_dir():
        raise DataError(problem=f"{str(path)!r} is a directory, not a data file", fix="pass a .csv or .parquet file")
    suffixes = [s.lower() for s in path.suffixes]
    try:
        if suffixes[-1:] == [".parquet"] or suffixes[-1:] == [".pq"]:
            frame = pd.read_parquet(path)
        elif suffixes[-1:] == [".csv"] or suffixes[-2:] == [".csv", ".gz"]:
            frame = pd.read_csv(path)
        else:
            raise DataError(
                problem=f"cannot tell the format of {path.name!r}",
                fix="use a .csv, .csv.gz or .parquet file",
            )
    except DataError:
        raise
    except ImportError as exc:
        raise DataError(
            problem=f"reading {path.name} needs an extra package ({exc})", fix="pip install pyarrow"
        ) from exc
    except (ValueError, OSError, EOFError, gzip.BadGzipFile, zlib.error, pd.errors.ParserError) as exc:
        raise DataError(
            problem=f"cannot read {path.name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            fix="check that the file is a complete, valid CSV or Parquet file",
        ) from exc
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DataError(problem=f"{path.name} has no rows or no columns", fix="pass a file with data in it")
    return frame


def split_features_target(frame: pd.DataFrame, target: str) -> tuple[pd.DataFrame, pd.Series]:
    """Separate the target column from the features, naming close matches when it is missing."""
    if target not in frame.columns:
        import difflib

        close = difflib.get_close_matches(target, [str(c) for c in frame.columns], n=3)
        examples = ", ".join(repr(c) for c in (close or [str(c) for c in frame.columns[:5]]))
        lead = "did you mean" if close else "the data has columns such as"
        raise DataError(
            problem=f"target column {target!r} is not in the data",
            fix=f"{lead} {examples}? Pass one of the {frame.shape[1]} columns as the target",
        )
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise DataError(problem="the data has no feature columns besides the target", fix="add feature columns")
    return features, frame[target]


def infer_task(y: pd.Series | np.ndarray) -> Task:
    """Guess the task from the target: few distinct integer-like values mean classification."""
    values = pd.Series(np.asarray(y)).dropna()
    n_unique = values.nunique()
    if n_unique == 2:
        return "binary"
    numeric = pd.api.types.is_numeric_dtype(values)
    if not numeric:
        return "multiclass"
    integer_like = bool(np.all(np.asarray(values, dtype=float) == np.round(np.asarray(values, dtype=float))))
    if integer_like and n_unique <= 20:
        return "multiclass"
    return "regression"


@attrs.frozen(kw_only=True)
class ColumnSchema:
    """One input column: numeric (float64, NaN = missing) or categorical (fixed categories).

    Categories keep their original values (strings, integers...), because a booster trained on a ``category``
    column of integers matches rows by those values: turning them into strings would make every row missing.
    """

    name: str
    kind: Literal["numeric", "categorical"]
    categories: tuple[Any, ...] = ()


def _is_categorical(series: pd.Series) -> bool:
    """Categories, strings and objects are categorical; numbers and booleans are numeric (as in both backends)."""
    if isinstance(series.dtype, pd.CategoricalDtype):
        return True
    return not (pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype))


def _plain(value: Any) -> Any:
    """A category value as a JSON-friendly Python scalar (numpy integers become int, and so on)."""
    return value.item() if isinstance(value, np.generic) else value


def _category_key(value: Any) -> str:
    """How values are matched to categories: ``1``, ``1.0``, ``"1"`` and ``np.int64(1)`` are the same category."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _sorted_categories(values: Any) -> tuple[Any, ...]:
    plain = {_plain(v) for v in values}
    return tuple(sorted(plain, key=lambda v: (type(v).__name__, str(v) if isinstance(v, str) else v)))


def _column_tuple(columns: Iterable[ColumnSchema]) -> tuple[ColumnSchema, ...]:
    return tuple(columns)


@attrs.frozen(kw_only=True)
class TabularSchema:
    """Which columns a model takes, in order, and how to turn a user's frame into a teacher-ready one."""

    columns: tuple[ColumnSchema, ...] = attrs.field(converter=_column_tuple)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @classmethod
    def infer(cls, frame: pd.DataFrame, categorical: Sequence[str] | None = None) -> TabularSchema:
        """Numeric columns stay numeric; strings, booleans, categories and the ``categorical`` names are categorical."""
        forced = set(categorical or ())
        unknown = forced - {str(c) for c in frame.columns}
        if unknown:
            raise DataError(
                problem=f"categorical column(s) {sorted(unknown)} are not in the data",
                fix="check the names given as categorical",
            )
        columns = []
        for name in frame.columns:
            series = frame[name]
            if str(name) in forced or _is_categorical(series):
                if isinstance(series.dtype, pd.CategoricalDtype):
                    categories = tuple(_plain(c) for c in series.cat.categories)
                else:
                    categories = _sorted_categories(series.dropna().unique())
                columns.append(ColumnSchema(name=str(name), kind="categorical", categories=categories))
            else:
                columns.append(ColumnSchema(name=str(name), kind="numeric"))
        return cls(columns=columns)

    def to_frame(self, frame: pd.DataFrame | np.ndarray) -> pd.DataFrame:
        """A teacher-ready copy of ``frame``: the schema's columns, float64 numerics, fixed categoricals.

        Unseen categories become missing (NaN) — both backends route missing values down a learned default
        branch, and the student encodes them as the training mean. Infinite numeric values are rejected.
        """
        if isinstance(frame, np.ndarray):
            if frame.ndim != 2 or frame.shape[1] != len(self.columns):
                raise DataError(
                    problem=f"expected a 2-D array with {len(self.columns)} columns, got shape {frame.shape}",
                    fix="pass rows with the same columns as the training data",
                )
            frame = pd.DataFrame(frame, columns=list(self.names))
        if not isinstance(frame, pd.DataFrame):
            raise DataError(problem=f"expected a pandas DataFrame, got {type(frame).__name__}", fix="pass a DataFrame")
        present = [str(c) for c in frame.columns]
        missing = [n for n in self.names if n not in present]
        if missing:
            raise DataError(
                problem=f"the data lacks column(s) {', '.join(map(repr, missing))} that the model was trained on",
                fix="pass data with the same columns as the training data",
            )
        if frame.shape[0] == 0:
            raise DataError(problem="the data has no rows", fix="pass at least one row")
        frame = frame.rename(columns=str)
        out: dict[str, Any] = {}
        for column in self.columns:
            series = frame[column.name]
            if column.kind == "numeric":
                try:
                    values = pd.to_numeric(series, errors="raise").astype("float64")
                except (ValueError, TypeError) as exc:
                    coerced = pd.to_numeric(series, errors="coerce")
                    bad = series[coerced.isna() & series.notna()]
                    example = f" such as {bad.iloc[0]!r}" if len(bad) else ""
                    raise DataError(
                        problem=f"column {column.name!r} should be numeric but holds text{example}"
                        + (f" in {len(bad)} row(s)" if len(bad) else ""),
                        fix="clean the column or declare it categorical",
                    ) from exc
                if np.isinf(values.to_numpy()).any():
                    raise DataError(
                        problem=f"column {column.name!r} contains infinite values",
                        fix="replace inf with NaN (missing) or a finite value",
                    )
                out[column.name] = values
            else:
                lookup = {_category_key(c): c for c in column.categories}
                # unseen categories become missing, like missing values
                values = series.astype("object")
                mapping = {v: lookup.get(_category_key(v)) for v in pd.unique(values[values.notna()])}
                known = values.map(mapping).where(values.notna(), None)
                out[column.name] = pd.Categorical(known, categories=list(column.categories))
        return pd.DataFrame(out, index=frame.index)

    def to_json(self) -> list[dict[str, Any]]:
        return [attrs.asdict(c) for c in self.columns]

    @classmethod
    def from_json(cls, data: list[dict[str, Any]]) -> TabularSchema:
        return cls(
            columns=[ColumnSchema(name=c["name"], kind=c["kind"], categories=tuple(c["categories"])) for c in data]
        )


@attrs.frozen(kw_only=True)
class TargetEncoder:
    """Maps user labels to what the models train on: floats for regression, 0..k-1 for classification."""

    task: Task
    classes: tuple[Any, ...] = ()

    @classmethod
    def fit(cls, y: pd.Series | np.ndarray, task: Task) -> TargetEncoder:
        if task not in TASKS:
            raise ConfigError(setting="task", value=task, fix=f"use one of {', '.join(TASKS)}")
        values = pd.Series(np.asarray(y))
        if len(values) == 0:
            raise DataError(problem="the data has no rows", fix="pass at least one row")
        if values.isna().any():
            raise DataError(
                problem=f"the target has {int(values.isna().sum())} missing value(s)", fix="drop those rows first"
            )
        if task == "regression":
            numeric = pd.to_numeric(values, errors="coerce")
            if numeric.isna().any():
                raise DataError(
                    problem="a regression target must be numeric but holds non-numbers",
                    fix="pass --task binary/multiclass for labels, or clean the target",
                )
            if np.isinf(numeric.to_numpy(dtype=float)).any():
                raise DataError(problem="the target contains infinite values", fix="drop or fix those rows")
            return cls(task=task)
        classes = tuple(sorted(values.unique().tolist(), key=lambda v: (str(type(v)), v)))
        if len(classes) < 2:
            raise DataError(
                problem=f"the target has a single class ({classes[0]!r}); a classifier needs at least two",
                fix="check the target column or the rows selected",
            )
        if task == "binary" and len(classes) > 2:
            raise DataError(
                problem=f"task 'binary' but the target has {len(classes)} classes",
                fix="pass --task multiclass (or --task regression for a numeric target)",
            )
        return cls(task=task, classes=classes)

    def transform(self, y: pd.Series | np.ndarray) -> np.ndarray:
        values = pd.Series(np.asarray(y))
        if self.task == "regression":
            floats: np.ndarray = values.astype("float64").to_numpy()
            return floats
        lookup = {c: i for i, c in enumerate(self.classes)}
        unknown = set(values.unique().tolist()) - set(lookup)
        if unknown:
            raise DataError(
                problem=f"target labels {sorted(map(str, unknown))[:5]} were not seen in training",
                fix=f"use labels among {list(self.classes)}",
            )
        codes: np.ndarray = values.map(lookup).to_numpy(dtype=np.int64)
        return codes
