"""Tabular data in, teacher-ready frames out: loading files, the bundled datasets, column schemas, targets.

The :class:`TabularSchema` fixes, once, which columns exist, which are categorical and what their categories
are, so that teacher and student see identical columns at training and prediction time.
"""

from __future__ import annotations

import gzip
import re
import zlib
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np
import pandas as pd

from gbdt2nn_core.errors import ConfigError, DataError, warn
from gbdt2nn_core.host.interfaces import TASKS, Task

__all__ = [
    "BUNDLED_DATASETS",
    "ColumnSchema",
    "Dataset",
    "TabularSchema",
    "TargetEncoder",
    "check_finite_margins",
    "infer_task",
    "load_bundled",
    "read_table",
    "split_features_target",
    "warn_if_few_test_rows",
]


@attrs.frozen(kw_only=True)
class Dataset:
    """A table with a known target column and task."""

    name: str
    frame: pd.DataFrame = attrs.field(eq=False, repr=False)
    target: str
    task: Task


#: name -> (file inside gbdt2nn_core/data/datasets, target column, task)
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
    with resources.as_file(resources.files("gbdt2nn_core.data.datasets") / filename) as path:
        frame = read_table(path)
    return Dataset(name=name, frame=frame, target=target, task=task)


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV (optionally gzip-compressed) or Parquet file, with one-line errors for the usual mistakes.

    In a CSV, only an empty cell is missing in a text column: ``NA``, ``None`` or ``null`` are categories like any
    other (a country code, a blood group). A column whose cells are all numbers or missing-value words (``NA``,
    ``NaN``, ``null``, ...) is numeric, those words being missing. A file separated by ``;``, tabs or ``|``
    instead of commas is read with its own separator.
    """
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
            frame = _read_csv(path)
        else:
            raise DataError(
                problem=f"cannot tell the format of {path.name!r}",
                fix="use a .csv, .csv.gz or .parquet file",
            )
    except DataError:
        raise
    except ImportError as exc:
        raise DataError(
            problem=f"reading {path.name} needs pyarrow, which is not installed", fix="pip install pyarrow"
        ) from exc
    except (ValueError, OSError, EOFError, gzip.BadGzipFile, zlib.error, pd.errors.ParserError) as exc:
        raise DataError(
            problem=f"cannot read {path.name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            fix="check that the file is a complete, valid CSV or Parquet file",
        ) from exc
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DataError(problem=f"{path.name} has no rows or no columns", fix="pass a file with data in it")
    return frame


#: Cell texts pandas reads as missing by default; here they are missing only in numeric columns.
MISSING_WORDS = frozenset(
    [
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    ]
)
#: Separators tried when a CSV file comes out as a single column.
_OTHER_SEPARATORS = ";\t|"


def _read_csv(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
    if frame.shape[1] == 1:
        separator = _sniff_separator(path)
        if separator is not None:
            frame = pd.read_csv(path, sep=separator, keep_default_na=False, na_values=[""])
            shown = "tabs" if separator == "\t" else repr(separator)
            warn(f"{path.name}: the first line has no commas; read as separated by {shown}")
    _check_header(frame, path)
    for name in frame.columns:
        if frame[name].dtype == object or pd.api.types.is_string_dtype(frame[name].dtype):
            numbers = _as_numbers(frame[name])
            if numbers is not None:
                frame[name] = numbers
    return frame


def _sniff_separator(path: Path) -> str | None:
    """The separator of a CSV file that is not comma-separated, from its first lines; ``None`` if unclear."""
    import csv

    opener = gzip.open if path.suffix.lower() == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        head = "".join(line for _, line in zip(range(20), handle, strict=False))
    try:
        separator = csv.Sniffer().sniff(head, delimiters=_OTHER_SEPARATORS).delimiter
    except csv.Error:
        return None
    return separator if separator in _OTHER_SEPARATORS else None


def _check_header(frame: pd.DataFrame, path: Path) -> None:
    """An empty header cell, which pandas would silently name ``Unnamed: N``, is an error naming its position."""
    empty = [i for i, name in enumerate(frame.columns) if re.fullmatch(rf"Unnamed: {i}(\.\d+)?", str(name))]
    if empty:
        positions = ", ".join(str(i + 1) for i in empty[:5]) + (" ..." if len(empty) > 5 else "")
        raise DataError(
            problem=f"{path.name}: the header has no name for column {positions} (counting from 1)",
            fix="name every column in the first line (a row index written by DataFrame.to_csv: write with index=False)",
        )


def _as_numbers(column: pd.Series) -> pd.Series | None:
    """A text column as float64 when every cell is a number or a missing-value word; else ``None`` (text)."""
    text = column.astype("object")
    present = text[text.notna()]
    if present.empty:
        return None
    words = present.isin(MISSING_WORDS)
    numbers = pd.to_numeric(present[~words], errors="coerce")
    if numbers.isna().any() or not words.any():
        return None  # text (a category), or numbers pandas would already have parsed
    return pd.to_numeric(text.where(~text.isin(MISSING_WORDS)), errors="coerce").astype("float64")


def split_features_target(frame: pd.DataFrame, target: str) -> tuple[pd.DataFrame, pd.Series]:
    """Separate the target column from the features, naming close matches when it is missing.

    ``target`` is the column's name (labels held apart from the features go to the estimators' ``fit(X, y)``).
    """
    if not pd.api.types.is_hashable(target):  # a Series, an array, a list: pandas would fail deep inside
        named = getattr(target, "name", None)
        fix = (
            f"pass its name, {named!r}"
            if pd.api.types.is_hashable(named) and named in frame.columns
            else "pass the name of the target column (kept in the data), or fit GBDT2NNClassifier / "
            "GBDT2NNRegressor with the labels apart: fit(X, y)"
        )
        raise DataError(
            problem=f"the target must be the name of a column of the data, not a {type(target).__name__}", fix=fix
        )
    if target not in frame.columns:
        import difflib

        close = difflib.get_close_matches(str(target), [str(c) for c in frame.columns], n=3)
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


#: Fewer held-out rows than this make the test metrics noisy, or undefined (NaN) when a class is absent from them.
MIN_TEST_ROWS = 30


def warn_if_few_test_rows(n_test: int, n_rows: int) -> None:
    """A :class:`~gbdt2nn_core.errors.Gbdt2nnWarning` when the test split is too small to measure anything."""
    if n_test < MIN_TEST_ROWS:
        warn(
            f"only {n_test} of the {n_rows} rows are held out for testing, too few for the test metrics (noisy, NaN "
            f"where a class is absent); distil from more rows, or raise test_size to hold out {MIN_TEST_ROWS} or more"
        )


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
    #: A numeric column that held ``True``/``False`` in training; other numeric columns refuse them.
    boolean: bool = False

    def unseen(self, values: pd.Series) -> pd.Series:
        """The non-missing ``values`` of a categorical column that are none of its categories, matched by value."""
        known = {_category_key(c) for c in self.categories}
        present = values[values.notna()].astype(object)  # Python scalars: 42, not np.int64(42)
        return present[~present.map(_category_key).isin(known)]


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
                boolean = pd.api.types.is_bool_dtype(series.dtype)
                columns.append(ColumnSchema(name=str(name), kind="numeric", boolean=boolean))
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
                _check_numeric_range(column.name, values)
                if not column.boolean and _holds_booleans(series):
                    raise DataError(
                        problem=f"column {column.name!r} holds true/false values but held numbers in training",
                        fix="pass the column's numbers (true/false are not read as 1/0)",
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
        # ``boolean`` only where true, so that files stay as they were for every other column
        return [attrs.asdict(c, filter=lambda field, value: field.name != "boolean" or value) for c in self.columns]

    @classmethod
    def from_json(cls, data: list[dict[str, Any]]) -> TabularSchema:
        return cls(
            columns=[
                ColumnSchema(
                    name=c["name"],
                    kind=c["kind"],
                    categories=tuple(c["categories"]),
                    boolean=bool(c.get("boolean", False)),
                )
                for c in data
            ]
        )


#: The largest magnitude the student's 32-bit floats hold (``numpy.finfo(numpy.float32).max``).
FLOAT32_LIMIT = float(np.finfo(np.float32).max)


def _row_numbers(mask: np.ndarray, limit: int = 5) -> str:
    """Positions (from 1) of the true entries of ``mask``, the first ``limit`` of them."""
    rows = np.flatnonzero(mask) + 1
    text = ", ".join(str(r) for r in rows[:limit])
    return text + (f" and {len(rows) - limit} more" if len(rows) > limit else "")


def _check_numeric_range(name: str, values: pd.Series) -> None:
    """Values the network cannot hold (beyond ±3.4e38, float32) are an error naming the column and the rows."""
    array = values.to_numpy(dtype=np.float64)
    huge = np.abs(np.nan_to_num(array)) > FLOAT32_LIMIT
    if huge.any():
        raise DataError(
            problem=f"column {name!r} holds values beyond ±3.4e38, too large for the student's 32-bit floats "
            f"(e.g. {array[huge][0]:g}), in row(s) {_row_numbers(huge)} of the data",
            fix="rescale the column (another unit) or make those cells empty (missing)",
        )


def _holds_booleans(series: pd.Series) -> bool:
    """True for a bool column, or an object column whose values include Python or numpy booleans."""
    if pd.api.types.is_bool_dtype(series.dtype):
        return True
    if series.dtype != object:
        return False
    return any(isinstance(v, (bool, np.bool_)) for v in series.dropna().unique())


def check_finite_margins(margins: np.ndarray, frame: pd.DataFrame) -> None:
    """Refuse to turn non-finite margins (or attributions) into output: an error naming the rows and a column.

    ``margins`` has one entry (or one row of entries) per row of ``frame``, the rows they were computed from.
    Values the network's 32-bit floats cannot carry through its layers overflow to ``inf`` or ``NaN``; a
    probability, a label or an attribution computed from them would be blank or meaningless.
    """
    values = np.asarray(margins, dtype=np.float64).reshape(len(margins), -1)
    bad = np.asarray(~np.isfinite(values).all(axis=1))
    if not bad.any():
        return
    culprit = ""
    numeric = frame.select_dtypes("number")
    if numeric.shape[1]:
        magnitude = numeric[bad].abs().max(axis=0)
        if magnitude.notna().any():
            name = str(magnitude.idxmax())
            culprit = f"; their largest value is {float(magnitude.max()):g}, in column {name!r}"
    raise DataError(
        problem=f"the student's margins are not finite for {int(bad.sum())} row(s) (row(s) {_row_numbers(bad)} of "
        f"the data){culprit}",
        fix="values this far outside the training data overflow the network's 32-bit floats: check the column's "
        "unit, or make those cells empty (missing)",
    )


#: Largest regression target the student trains on: its margins, and their squares in the loss, must stay finite
#: in 32-bit floats (large targets are scaled by a power of two inside the student, see ``GBDT2NNStudent.fit``).
REGRESSION_TARGET_LIMIT = 1e30
#: Most classes a classification target may have: one network output and one set of trees per class.
MAX_CLASSES = 100


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
        numeric = pd.to_numeric(values, errors="coerce")
        # a label spelt "inf" is a label; a float that is infinite (read from a number column) is not
        floats = numeric if task == "regression" else values[values.map(lambda v: isinstance(v, (float, np.floating)))]
        if np.isinf(floats.to_numpy(dtype=float)).any():
            raise DataError(problem="the target contains infinite values", fix="drop or fix those rows")
        if task == "regression":
            if numeric.isna().any():
                raise DataError(
                    problem="a regression target must be numeric but holds non-numbers",
                    fix="pass --task binary/multiclass for labels, or clean the target",
                )
            largest = float(np.abs(numeric.to_numpy(dtype=float)).max())
            if largest > REGRESSION_TARGET_LIMIT:
                raise DataError(
                    problem=f"the regression target reaches {largest:g}, beyond the ±{REGRESSION_TARGET_LIMIT:g} the "
                    "student's 32-bit floats train on",
                    fix="rescale the target (e.g. divide it by a power of ten) and scale predictions back",
                )
            return cls(task=task)
        classes = tuple(sorted(values.unique().tolist(), key=lambda v: (str(type(v)), v)))
        if len(classes) < 2:
            raise DataError(
                problem=f"the target has a single class ({classes[0]!r}); a classifier needs at least two",
                fix="check the target column or the rows selected",
            )
        if task == "multiclass" and len(classes) > MAX_CLASSES:
            examples = ", ".join(repr(_plain(c)) for c in classes[:3])
            raise DataError(
                problem=f"task 'multiclass' but the target has {len(classes):,} classes (e.g. {examples}, ...), more "
                f"than the {MAX_CLASSES} a classifier is distilled for",
                fix="pass --task regression for a numeric target, or group the labels into fewer classes",
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
