"""The student's input encoding: centred blocks per column, missing and unseen values, aggregation, JSON."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest

from gbdt2nn_core.data import TabularSchema
from gbdt2nn_core.data.encoding import InputEncoder, teacher_thresholds

if TYPE_CHECKING:
    from conftest import TeacherOnRows


@pytest.fixture
def mixed_frame() -> pd.DataFrame:
    """200 rows: numbers with and without gaps, a categorical column with gaps, a boolean column."""
    rng = np.random.default_rng(0)
    n = 200
    with_gaps = rng.normal(50.0, 10.0, n)
    with_gaps[rng.random(n) < 0.2] = np.nan
    colour = rng.choice(["red", "green", "blue"], n, p=[0.5, 0.3, 0.2]).astype(object)
    colour[rng.random(n) < 0.1] = None
    return pd.DataFrame(
        {
            "income": with_gaps,
            "age": rng.integers(18, 90, n),
            "colour": colour,
            "member": rng.random(n) < 0.3,
        }
    )


@pytest.fixture
def fitted(mixed_frame: pd.DataFrame) -> tuple[TabularSchema, InputEncoder, pd.DataFrame]:
    """The schema, an encoder fitted on the mixed frame, and the teacher-ready training frame."""
    schema = TabularSchema.infer(mixed_frame)
    train = schema.to_frame(mixed_frame)
    return schema, InputEncoder.fit(train, schema), train


def _block(encoder: InputEncoder, z: np.ndarray, column: str) -> np.ndarray:
    index = list(encoder.schema.names).index(column)
    return z[:, encoder.encoded_indices(index)]


def test_blocks_follow_the_schema(fitted: tuple[TabularSchema, InputEncoder, pd.DataFrame]) -> None:
    schema, encoder, _ = fitted
    assert [c.kind for c in schema.columns] == ["numeric", "numeric", "categorical", "numeric"]
    # income: value + missing indicator; age: value; colour: 3 categories; member (boolean): a number
    assert encoder.column_of.tolist() == [0, 0, 1, 2, 2, 2, 3]
    assert encoder.n_encoded == 7
    assert encoder.n_columns == 4


def test_every_encoded_column_is_centred_on_the_training_rows(
    fitted: tuple[TabularSchema, InputEncoder, pd.DataFrame],
) -> None:
    _, encoder, train = fitted
    z = encoder.transform(train)
    assert z.dtype == np.float32
    assert z.shape == (200, 7)
    np.testing.assert_allclose(z.astype(np.float64).mean(axis=0), 0.0, atol=1e-6)


def test_adult_encoding_is_centred(adult_tiny: pd.DataFrame) -> None:
    features = adult_tiny.drop(columns=["income_gt_50k"])
    schema = TabularSchema.infer(features)
    train = schema.to_frame(features)
    z = InputEncoder.fit(train, schema).transform(train)
    np.testing.assert_allclose(z.astype(np.float64).mean(axis=0), 0.0, atol=1e-6)


def test_numeric_values_are_standardised(
    mixed_frame: pd.DataFrame, fitted: tuple[TabularSchema, InputEncoder, pd.DataFrame]
) -> None:
    _, encoder, train = fitted
    z = encoder.transform(train)
    age = mixed_frame["age"].astype(float)
    np.testing.assert_allclose(_block(encoder, z, "age")[:, 0], (age - age.mean()) / age.std(ddof=0), atol=1e-5)
    income = mixed_frame["income"]
    observed = income.notna().to_numpy()
    expected = (income - income.mean()) / income.std(ddof=0)  # pandas skips NaN
    block = _block(encoder, z, "income")
    np.testing.assert_allclose(block[observed, 0], expected[observed], atol=1e-5)


def test_missing_numbers_encode_as_zero_with_a_centred_indicator(
    mixed_frame: pd.DataFrame, fitted: tuple[TabularSchema, InputEncoder, pd.DataFrame]
) -> None:
    _, encoder, train = fitted
    block = _block(encoder, encoder.transform(train), "income")
    missing = mixed_frame["income"].isna().to_numpy()
    rate = missing.mean()
    assert 0 < rate < 1
    assert (block[missing, 0] == 0).all()
    np.testing.assert_allclose(block[:, 1], missing - rate, atol=1e-6)


def test_missing_number_without_missing_in_training_is_the_mean(
    fitted: tuple[TabularSchema, InputEncoder, pd.DataFrame], mixed_frame: pd.DataFrame
) -> None:
    schema, encoder, _ = fitted
    rows = mixed_frame.head(3).copy()
    rows["age"] = [np.nan, 30.0, np.nan]
    block = _block(encoder, encoder.transform(schema.to_frame(rows)), "age")
    assert block.shape == (3, 1)  # no indicator: training had no missing ages
    assert block[0, 0] == 0.0
    assert block[2, 0] == 0.0
    assert block[1, 0] != 0.0


def test_categories_are_centred_one_hot_blocks(
    mixed_frame: pd.DataFrame, fitted: tuple[TabularSchema, InputEncoder, pd.DataFrame]
) -> None:
    schema, encoder, train = fitted
    block = _block(encoder, encoder.transform(train), "colour").astype(np.float64)
    categories = list(schema.columns[2].categories)
    assert categories == ["blue", "green", "red"]
    observed = mixed_frame["colour"].notna().to_numpy()
    frequencies = mixed_frame["colour"].value_counts(normalize=True).reindex(categories).to_numpy()
    one_hot = pd.get_dummies(mixed_frame["colour"]).reindex(columns=categories).to_numpy(dtype=np.float64)
    np.testing.assert_allclose(block[observed], one_hot[observed] - frequencies, atol=1e-6)
    assert (block[~observed] == 0).all()  # missing category = the average category


def test_unseen_category_encodes_as_zeros(
    fitted: tuple[TabularSchema, InputEncoder, pd.DataFrame], mixed_frame: pd.DataFrame
) -> None:
    schema, encoder, _ = fitted
    rows = mixed_frame.head(2).copy()
    rows["colour"] = ["purple", "red"]
    z = encoder.transform(schema.to_frame(rows))
    block = _block(encoder, z, "colour")
    assert (block[0] == 0).all()
    assert block[1, 2] > 0  # red is known
    # the other columns are untouched by the unknown category
    same = encoder.transform(schema.to_frame(mixed_frame.head(2)))
    others = encoder.column_of != 2
    np.testing.assert_array_equal(z[:, others], same[:, others])


def test_aggregation_sums_each_columns_block(fitted: tuple[TabularSchema, InputEncoder, pd.DataFrame]) -> None:
    _, encoder, _ = fitted
    aggregation = encoder.aggregation()
    assert aggregation.shape == (7, 4)
    assert set(np.unique(aggregation).tolist()) == {0.0, 1.0}
    np.testing.assert_array_equal(aggregation.sum(axis=1), 1.0)  # every encoded value belongs to one column
    np.testing.assert_array_equal(aggregation.sum(axis=0), [2, 1, 3, 1])  # block widths
    attributions = np.random.default_rng(1).normal(size=(5, 7))
    expected = np.stack([attributions[:, encoder.encoded_indices(j)].sum(axis=1) for j in range(4)], axis=1)
    np.testing.assert_allclose(attributions @ aggregation, expected, atol=1e-12)


def test_json_round_trip_gives_an_identical_transform(
    fitted: tuple[TabularSchema, InputEncoder, pd.DataFrame], mixed_frame: pd.DataFrame
) -> None:
    schema, encoder, train = fitted
    restored = InputEncoder.from_json(json.loads(json.dumps(encoder.to_json())))
    assert restored.schema == schema
    np.testing.assert_array_equal(restored.column_of, encoder.column_of)
    np.testing.assert_array_equal(restored.transform(train), encoder.transform(train))
    odd = mixed_frame.head(4).copy()
    odd["colour"] = ["purple", None, "red", "blue"]
    odd["age"] = [np.nan, 1.0, 2.0, 3.0]
    np.testing.assert_array_equal(restored.transform(schema.to_frame(odd)), encoder.transform(schema.to_frame(odd)))


# ----------------------------------------------------------------------------------------------------------------
# interval one-hot between the teacher's split thresholds
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("split_rule", ["<=", "<"])
def test_threshold_intervals_follow_the_split_rule(split_rule: str) -> None:
    frame = pd.DataFrame({"x": [0.0, 1.0, 1.5, 2.0, 3.0, np.nan, 2.5, 1.0]})
    schema = TabularSchema.infer(frame)
    cuts = [2.0, 1.0]  # unsorted on purpose
    encoder = InputEncoder.fit(schema.to_frame(frame), schema, thresholds={"x": cuts}, split_rule=split_rule)
    z = encoder.transform(schema.to_frame(frame)).astype(np.float64)

    assert encoder.column_of.tolist() == [0, 0, 0, 0, 0]  # value, 3 intervals, missing indicator
    values = frame["x"].to_numpy()
    observed = ~np.isnan(values)
    # which interval a value lies in: how many thresholds send it right
    goes_right = (lambda v, t: v > t) if split_rule == "<=" else (lambda v, t: v >= t)
    interval = np.array([sum(goes_right(v, t) for t in cuts) for v in values[observed]])
    one_hot = np.eye(3)[interval]
    intervals = z[:, 1:4]
    np.testing.assert_allclose(intervals[observed], one_hot - one_hot.mean(axis=0), atol=1e-6)
    assert (intervals[~observed] == 0).all()
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-6)  # still centred
    np.testing.assert_array_equal(
        InputEncoder.from_json(json.loads(json.dumps(encoder.to_json()))).transform(schema.to_frame(frame)),
        encoder.transform(schema.to_frame(frame)),
    )


def test_intervals_of_a_column_missing_in_every_training_row_are_plain_one_hots() -> None:
    # no observed training value: the intervals have no training mean to centre on (the shares are zero, not NaN)
    train = pd.DataFrame({"x": [np.nan, np.nan, np.nan], "y": [1.0, 2.0, 3.0]})
    schema = TabularSchema.infer(train)
    encoder = InputEncoder.fit(schema.to_frame(train), schema, thresholds={"x": [1.0, 2.0]})
    rows = schema.to_frame(pd.DataFrame({"x": [1.5, np.nan], "y": [1.0, 1.0]}))
    block = _block(encoder, encoder.transform(rows), "x")
    np.testing.assert_array_equal(block[0, 1:4], [0.0, 1.0, 0.0])
    assert (block[1, :4] == 0).all()


def test_teacher_thresholds_are_lightgbms_top_numeric_splits_by_gain(adult_teacher: TeacherOnRows) -> None:
    booster = adult_teacher.teacher.native_model
    schema = TabularSchema.infer(adult_teacher.X)
    splits = booster.trees_to_dataframe()
    numeric = splits[splits["decision_type"] == "<="]

    thresholds = teacher_thresholds(adult_teacher.teacher.structure(), schema, max_bins=3)

    numeric_columns = {c.name for c in schema.columns if c.kind == "numeric"}
    assert set(thresholds) == set(numeric["split_feature"]) & numeric_columns
    for column, cuts in thresholds.items():
        gain = numeric[numeric["split_feature"] == column].groupby("threshold")["split_gain"].sum()
        top = gain.sort_values(ascending=False, kind="stable")
        if len(top) > 3:
            assert top.iloc[2] > top.iloc[3], "a tie at the cut-off would make the test ambiguous"
        np.testing.assert_allclose(np.asarray(cuts), np.sort(top.index[:3].to_numpy(dtype=float)), rtol=0, atol=0)


def _snap_to_interval_minimum(X: pd.DataFrame, thresholds: dict[str, np.ndarray]) -> pd.DataFrame:
    """Move every numeric value to the smallest value of its encoded interval (read back from the encoding)."""
    schema = TabularSchema.infer(X)
    encoder = InputEncoder.fit(X, schema, thresholds=thresholds)
    z = encoder.transform(X)
    snapped = X.copy()
    for j, column in enumerate(schema.columns):
        if column.name not in thresholds:
            continue
        # block: scaled value, one entry per interval, [missing indicator]
        block = encoder.encoded_indices(j)[1 : len(thresholds[column.name]) + 2]
        intervals = z[:, block].argmax(axis=1)  # the centred one-hot's largest entry marks the interval
        values = X[column.name]
        snapped[column.name] = values.groupby(intervals).transform("min")
    return snapped


def test_teacher_is_constant_within_encoded_intervals(adult_teacher: TeacherOnRows) -> None:
    """Moving numbers within their interval never changes the teacher: the encoding keeps all of its steps."""
    teacher, X = adult_teacher.teacher, adult_teacher.X
    schema = TabularSchema.infer(X)
    moved = _snap_to_interval_minimum(X, teacher_thresholds(teacher.structure(), schema, max_bins=10_000))
    assert (moved != X).any(axis=None)
    np.testing.assert_allclose(teacher.predict_margin(moved), teacher.predict_margin(X), rtol=0, atol=1e-12)
    # with one threshold per column the intervals are too coarse, and the teacher notices
    coarse = _snap_to_interval_minimum(X, teacher_thresholds(teacher.structure(), schema, max_bins=1))
    change = np.abs(teacher.predict_margin(coarse) - teacher.predict_margin(X))
    assert change.max() > 1e-3


def test_encoding_in_chunks_equals_one_batch(mixed_frame: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    """transform writes chunk after chunk into its result (memory bounded by the chunk): same rows as one pass."""
    from gbdt2nn_core.data import encoding

    schema = TabularSchema.infer(mixed_frame)
    train = schema.to_frame(mixed_frame)
    encoder = InputEncoder.fit(train, schema, thresholds={"income": [40.0, 55.0], "age": [30.0]})
    whole = encoder.transform(train)
    assert whole.dtype == np.float32
    monkeypatch.setattr(encoding, "TRANSFORM_CHUNK", 7)
    chunked = encoder.transform(train)
    assert chunked.dtype == np.float32
    np.testing.assert_array_equal(chunked, whole)
    np.testing.assert_array_equal(encoder.transform(train.iloc[:0]), whole[:0])
