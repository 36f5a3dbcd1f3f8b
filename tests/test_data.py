"""Reading tables, inferring tasks, encoding targets and fixing the column schema, with one-line errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gbdt2nn_core.data import (
    TabularSchema,
    TargetEncoder,
    infer_task,
    load_bundled,
    read_table,
    split_features_target,
)
from gbdt2nn_core.errors import ConfigError, DataError


@pytest.fixture
def table() -> pd.DataFrame:
    """A small mixed table: integers, floats with a gap, strings."""
    return pd.DataFrame(
        {
            "age": [25, 38, 28, 44, 18],
            "income": [1.5, np.nan, 3.25, 4.0, 0.5],
            "job": ["clerk", "farmer", "clerk", "nurse", "farmer"],
        }
    )


# ----------------------------------------------------------------------------------------------------------------
# read_table
# ----------------------------------------------------------------------------------------------------------------
def _compare(read: pd.DataFrame, written: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(read, written, check_dtype=False)
    assert pd.api.types.is_integer_dtype(read["age"])
    assert pd.api.types.is_float_dtype(read["income"])


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".CSV"])
def test_read_csv(table: pd.DataFrame, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"data{suffix}"
    table.to_csv(path, index=False, compression="gzip" if suffix.endswith(".gz") else None)
    if suffix.endswith(".gz"):
        assert path.read_bytes()[:2] == b"\x1f\x8b"  # really compressed
    _compare(read_table(path), table)


def test_read_parquet(table: pd.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    table.to_parquet(path)
    _compare(read_table(str(path)), table)


def _truncated_gzip(path: Path, table: pd.DataFrame) -> None:
    big = pd.concat([table] * 200, ignore_index=True)
    data = gzip.compress(big.to_csv(index=False).encode())
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("missing.csv", None, "does not exist"),
        ("folder.csv", lambda p, t: p.mkdir(), "is a directory"),
        ("data.xlsx", lambda p, t: p.write_text("a,b\n1,2\n"), "cannot tell the format"),
        ("data", lambda p, t: p.write_text("a,b\n1,2\n"), "cannot tell the format"),
        ("empty.csv", lambda p, t: p.write_text(""), "cannot read empty.csv"),
        ("header.csv", lambda p, t: p.write_text("a,b\n"), "no rows"),
        ("cut.csv.gz", _truncated_gzip, "cannot read cut.csv.gz"),
        ("plain.csv.gz", lambda p, t: p.write_text("a,b\n1,2\n"), "cannot read plain.csv.gz"),
        ("ragged.csv", lambda p, t: p.write_text("a,b\n1,2\n3,4,5,6\n"), "cannot read ragged.csv"),
        ("cut.parquet", lambda p, t: p.write_bytes(b"PAR1" + b"\x00" * 20), "cannot read cut.parquet"),
    ],
)
def test_read_table_errors(table: pd.DataFrame, tmp_path: Path, name: str, make: object, message: str) -> None:
    path = tmp_path / name
    if make is not None:
        make(path, table)  # type: ignore[operator]
    with pytest.raises(DataError) as info:
        read_table(path)
    text = str(info.value)
    assert message in text
    assert "\n" not in text
    assert info.value.fix


def test_load_bundled_datasets() -> None:
    adult = load_bundled("adult")
    assert adult.frame.shape == (48842, 15)
    assert (adult.target, adult.task) == ("income_gt_50k", "binary")
    california = load_bundled("california")
    assert california.frame.shape == (20640, 9)
    assert (california.target, california.task) == ("MedHouseVal", "regression")
    with pytest.raises(DataError, match="adult, california"):
        load_bundled("iris")


# ----------------------------------------------------------------------------------------------------------------
# targets
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("y", "task"),
    [
        ([0, 1, 1, 0], "binary"),
        (["yes", "no", "no"], "binary"),
        ([1.0, 2.0, np.nan, 1.0], "binary"),  # NaN is not a class
        (["a", "b", "c"], "multiclass"),
        ([0, 1, 2, 3, 4, 0], "multiclass"),
        ([0.0, 1.0, 2.0], "multiclass"),
        (list(range(50)), "regression"),  # too many integer values for classes
        ([0.5, 1.7, 2.25], "regression"),
    ],
)
def test_infer_task(y: list[object], task: str) -> None:
    assert infer_task(pd.Series(y)) == task
    assert infer_task(np.asarray(y, dtype=object if isinstance(y[0], str) else float)) == task


def test_target_encoder_maps_labels_to_class_indices() -> None:
    encoder = TargetEncoder.fit(pd.Series(["mid", "low", "high", "low"]), "multiclass")
    assert encoder.classes == ("high", "low", "mid")
    np.testing.assert_array_equal(encoder.transform(["low", "mid", "high"]), [1, 2, 0])
    regression = TargetEncoder.fit(np.array([1, 2, 3]), "regression")
    assert regression.transform(np.array([1, 2])).dtype == np.float64


@pytest.mark.parametrize(
    ("y", "task", "message"),
    [
        ([1, 1, 1], "binary", "single class"),
        ([0, 1, np.nan], "binary", "missing value"),
        ([0, 1, 2], "binary", "3 classes"),
        (["a", "b", "x1"], "regression", "must be numeric"),
        ([1.0, np.inf], "regression", "infinite"),
    ],
)
def test_target_encoder_errors(y: list[object], task: str, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        TargetEncoder.fit(pd.Series(y), task)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


def test_target_encoder_rejects_an_unknown_task() -> None:
    with pytest.raises(ConfigError) as info:
        TargetEncoder.fit(pd.Series([0, 1]), "ranking")  # type: ignore[arg-type]
    assert info.value.setting == "task"


def test_target_encoder_rejects_unseen_labels() -> None:
    encoder = TargetEncoder.fit(pd.Series(["a", "b"]), "binary")
    with pytest.raises(DataError, match="'c'"):
        encoder.transform(pd.Series(["a", "c"]))


def test_missing_target_column_suggests_close_names(table: pd.DataFrame) -> None:
    with pytest.raises(DataError) as info:
        split_features_target(table, "incme")
    assert "'incme'" in str(info.value)
    assert "did you mean 'income'" in str(info.value)
    features, target = split_features_target(table, "job")
    assert list(features.columns) == ["age", "income"]
    assert target.tolist() == table["job"].tolist()


# ----------------------------------------------------------------------------------------------------------------
# schema
# ----------------------------------------------------------------------------------------------------------------
def test_schema_infers_kinds_and_categories(table: pd.DataFrame) -> None:
    schema = TabularSchema.infer(table.assign(flag=[True, False, True, True, False]))
    kinds = {c.name: (c.kind, c.categories) for c in schema.columns}
    assert kinds == {
        "age": ("numeric", ()),
        "income": ("numeric", ()),
        "job": ("categorical", ("clerk", "farmer", "nurse")),
        "flag": ("numeric", ()),  # booleans are numbers to LightGBM and XGBoost alike
    }
    forced = TabularSchema.infer(table, categorical=["age"])
    assert forced.columns[0].kind == "categorical"
    # categories keep their values: a booster trained on integer categories matches rows by those integers
    assert forced.columns[0].categories == (18, 25, 28, 38, 44)
    frame = forced.to_frame(table.assign(age=["25", 18.0, 99, None, 44]))
    # "25" and 18.0 match the integer categories; 99 is unseen and None is missing: both become missing
    assert frame["age"].astype(object).where(frame["age"].notna(), None).tolist() == [25, 18, None, None, 44]
    with pytest.raises(DataError, match="not in the data"):
        TabularSchema.infer(table, categorical=["nope"])


def test_to_frame_gives_teacher_ready_columns(table: pd.DataFrame) -> None:
    schema = TabularSchema.infer(table)
    frame = schema.to_frame(table[["job", "income", "age"]].assign(extra=1))  # any order, extra columns dropped
    assert list(frame.columns) == ["age", "income", "job"]
    assert frame["age"].dtype == np.float64
    assert frame["income"].dtype == np.float64
    assert isinstance(frame["job"].dtype, pd.CategoricalDtype)
    assert list(frame["job"].cat.categories) == ["clerk", "farmer", "nurse"]
    assert np.isnan(frame["income"].iloc[1])


def test_to_frame_turns_unseen_categories_into_missing(table: pd.DataFrame) -> None:
    schema = TabularSchema.infer(table)
    rows = table.head(3).assign(job=["clerk", "astronaut", None])
    frame = schema.to_frame(rows)
    assert frame["job"].iloc[0] == "clerk"
    assert frame["job"].isna().tolist() == [False, True, True]


def test_to_frame_accepts_a_numpy_array_of_the_right_width(table: pd.DataFrame) -> None:
    schema = TabularSchema.infer(table)
    frame = schema.to_frame(table.to_numpy(dtype=object))
    pd.testing.assert_frame_equal(frame, schema.to_frame(table))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (lambda t: t.drop(columns=["income"]), "'income'"),
        (lambda t: t.assign(income=[1.0, np.inf, 0.0, 1.0, 2.0]), "column 'income' contains infinite values"),
        (lambda t: t.assign(age=["1", "two", "3", "4", "5"]), "column 'age' should be numeric"),
        (lambda t: t.to_numpy()[:, :2], "expected a 2-D array with 3 columns, got shape (5, 2)"),
        (lambda t: t.to_numpy()[0], "expected a 2-D array with 3 columns"),
        (lambda t: t.head(0), "no rows"),
        (lambda t: [[1, 2, "a"]], "expected a pandas DataFrame, got list"),
    ],
)
def test_to_frame_errors(table: pd.DataFrame, rows: object, message: str) -> None:
    schema = TabularSchema.infer(table)
    with pytest.raises(DataError) as info:
        schema.to_frame(rows(table))  # type: ignore[operator]
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_schema_json_round_trip(table: pd.DataFrame) -> None:
    import json

    schema = TabularSchema.infer(table)
    assert TabularSchema.from_json(json.loads(json.dumps(schema.to_json()))) == schema


# ------------------------------------------------------------------------------------------- issue 10: reading CSV
def test_missing_value_words_are_categories_in_text_columns_and_missing_in_numeric_ones(tmp_path: Path) -> None:
    """pandas reads NA, None, null... as missing everywhere; a country code NA or a category 'None' is data."""
    (tmp_path / "t.csv").write_text("code,score,label\nNA,1.5,a\nnull,NA,b\n,2.5,None\nFR,n/a,NA\n")

    frame = read_table(tmp_path / "t.csv")

    assert frame["code"].tolist()[:2] == ["NA", "null"]
    assert pd.isna(frame["code"].iloc[2])  # an empty cell is still missing
    assert frame["label"].tolist() == ["a", "b", "None", "NA"]
    assert frame["score"].dtype == np.float64
    np.testing.assert_array_equal(frame["score"].isna(), [False, True, False, True])
    assert frame["score"].iloc[[0, 2]].tolist() == [1.5, 2.5]


@pytest.mark.parametrize(("separator", "shown"), [(";", "';'"), ("\t", "tabs"), ("|", "'|'")])
def test_files_separated_otherwise_than_by_commas_are_read_with_a_warning(
    table: pd.DataFrame, tmp_path: Path, separator: str, shown: str
) -> None:
    from gbdt2nn_core.errors import Gbdt2nnWarning

    table.to_csv(tmp_path / "t.csv", index=False, sep=separator)
    with pytest.warns(Gbdt2nnWarning, match=f"read as separated by {shown}"):
        frame = read_table(tmp_path / "t.csv")
    pd.testing.assert_frame_equal(frame, read_table(_comma_copy(table, tmp_path)), check_dtype=False)


def _comma_copy(table: pd.DataFrame, tmp_path: Path) -> Path:
    table.to_csv(tmp_path / "comma.csv", index=False)
    return tmp_path / "comma.csv"


def test_an_empty_header_cell_names_its_position(table: pd.DataFrame, tmp_path: Path) -> None:
    table.to_csv(tmp_path / "t.csv")  # the index, under an empty header cell
    with pytest.raises(DataError, match=r"the header has no name for column 1 \(counting from 1\)"):
        read_table(tmp_path / "t.csv")


def test_unseen_categories_are_matched_by_value() -> None:
    from gbdt2nn_core.data import ColumnSchema

    column = ColumnSchema(name="grade", kind="categorical", categories=(1, 2, 3))
    unseen = column.unseen(pd.Series([1, 2.0, "3", 4, None], dtype=object))
    assert unseen.tolist() == [4]


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_an_infinite_number_in_a_classification_target_is_an_error_but_the_label_inf_is_a_label(task: str) -> None:
    """Issue 10 (7): inf became a class of its own (and 'Infinity' was written into student.json)."""
    labels = [0.0, 1.0, 2.0, np.inf] if task == "multiclass" else [0.0, 1.0, np.inf]
    with pytest.raises(DataError, match="the target contains infinite values"):
        TargetEncoder.fit(pd.Series(labels), task)  # type: ignore[arg-type]
    assert TargetEncoder.fit(pd.Series(["a", "inf", "a"]), "binary").classes == ("a", "inf")
