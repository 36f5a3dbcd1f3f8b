"""Categorical columns and missing values, as users have them: strings, pandas categories, NaN, new categories.

Documented behaviour (``gbdt2nn_core.data.encoding``, ``docs/python-api.md``):

- the teacher gets categorical columns as pandas categories (native categorical splits) and NaN as missing
  (its own default branch);
- the student gets a centred one-hot per categorical column, and for numeric columns the scaled value, the
  teacher-threshold interval one-hot and a centred missing indicator; a missing value encodes as 0 (the
  training mean) plus the indicator;
- a category not seen in training is missing for the teacher and the average category (all zeros) for the
  student;
- attributions are per input column: a categorical column's encoded block is summed back to one value, so
  the student's explanation lines up with per-column TreeSHAP.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from gbdt2nn_core import DataError, GBDT2NNClassifier
from gbdt2nn_core.data.encoding import teacher_category_slots
from gbdt2nn_core.host.attribution import column_attributions

pytestmark = pytest.mark.usefixtures("single_thread_torch")

SMALL: dict[str, Any] = {
    "teacher_options": {"n_estimators": 15, "num_leaves": 7, "num_threads": 1},
    "student_options": {"n_groups": 3, "hidden": (16, 16), "batch_size": 64},
    "epochs": 5,
    "cache_dir": False,
}


def _synthetic(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Numeric columns with NaN, a string column with NaN, a pandas category, an integer-coded category."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    a[rng.random(n) < 0.15] = np.nan
    color = rng.choice(np.array(["red", "green", "blue"], dtype=object), size=n)
    color[rng.random(n) < 0.1] = None
    size = pd.Categorical(rng.choice(["S", "M", "L"], size=n), categories=["S", "M", "L"])
    grade = pd.Categorical(rng.integers(1, 5, size=n))  # categories are the integers 1..4
    b = rng.uniform(0, 10, size=n)
    X = pd.DataFrame({"a": a, "color": color, "size": size, "grade": grade, "b": b})
    score = (
        1.5 * np.nan_to_num(a, nan=1.0)
        + 2.5 * (color == "red")
        - 1.0 * (np.asarray(size) == "L")
        + 0.8 * (np.asarray(grade) == 3)
        + 0.1 * b
    )
    y = (score + rng.normal(scale=0.5, size=n) > 1.5).astype(int)
    return X, y


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
    X, y = _synthetic(1200, seed=0)
    return X[:1000], y[:1000], X[1000:].reset_index(drop=True), y[1000:]


@pytest.fixture(scope="module")
def fitted(data: Any, single_thread_torch: None) -> GBDT2NNClassifier:
    X, y, _, _ = data
    return GBDT2NNClassifier(**SMALL).fit(X, y)


def test_the_schema_marks_strings_and_categories_categorical(fitted: GBDT2NNClassifier) -> None:
    kinds = {column.name: column.kind for column in fitted.encoder_.schema.columns}
    assert kinds == {
        "a": "numeric",
        "color": "categorical",
        "size": "categorical",
        "grade": "categorical",
        "b": "numeric",
    }
    categories = {column.name: column.categories for column in fitted.encoder_.schema.columns}
    assert categories["color"] == ("blue", "green", "red")
    assert categories["size"] == ("S", "M", "L")  # a category's own order is kept


def test_the_teacher_splits_natively_on_categories_and_predicts_like_lightgbm_on_the_users_frame(
    fitted: GBDT2NNClassifier, data: Any
) -> None:
    X_test = data[2]
    booster = fitted.teacher_.native_model
    dump = booster.dump_model()
    decisions: dict[int, set[str]] = {}
    stack = [tree["tree_structure"] for tree in dump["tree_info"]]
    while stack:
        node = stack.pop()
        if "split_index" in node:
            decisions.setdefault(node["split_feature"], set()).add(node["decision_type"])
            stack.extend((node["left_child"], node["right_child"]))
    assert decisions[1] == {"=="}  # color: categorical splits
    assert decisions[0] == {"<="}  # a: numeric
    # independent reference: LightGBM's own predict on the user's frame, strings turned into categories by pandas
    frame = X_test.astype({"color": "category"})
    np.testing.assert_allclose(fitted.teacher_margin(X_test), booster.predict(frame, raw_score=True), atol=1e-12)


def test_missing_numbers_encode_as_the_mean_plus_a_missing_indicator(fitted: GBDT2NNClassifier, data: Any) -> None:
    X_test = data[2]
    rows = X_test[X_test["a"].isna()][:5]
    assert len(rows) > 0
    z = fitted.encoder_.transform(fitted._teacher_frame(rows))
    block = fitted.encoder_.encoded_indices(0)
    rate = float(data[0]["a"].isna().mean())
    # [scaled value, threshold intervals..., missing indicator]
    np.testing.assert_allclose(z[:, block[:-1]], 0.0)
    np.testing.assert_allclose(z[:, block[-1]], 1.0 - rate, rtol=1e-6)
    assert np.isfinite(fitted.predict_proba(rows)).all()


def test_unseen_categories_are_missing_for_the_teacher_and_average_for_the_student(
    fitted: GBDT2NNClassifier, data: Any
) -> None:
    X_test = data[2][:40]
    unseen = X_test.assign(color="purple", grade=pd.Categorical([9] * len(X_test)))
    missing = X_test.assign(color=None, grade=pd.Categorical([np.nan] * len(X_test), categories=[1, 2, 3, 4]))
    np.testing.assert_array_equal(fitted.teacher_margin(unseen), fitted.teacher_margin(missing))
    np.testing.assert_array_equal(fitted.decision_function(unseen), fitted.decision_function(missing))
    assert np.isfinite(fitted.decision_function(unseen)).all()
    z = fitted.encoder_.transform(fitted._teacher_frame(unseen))
    for column in (1, 3):  # color, grade: the all-zero block of the average category
        assert np.all(z[:, fitted.encoder_.encoded_indices(column)] == 0.0)
    # and it is not what a known category gives
    assert not np.array_equal(fitted.decision_function(X_test.assign(color="red")), fitted.decision_function(unseen))


def test_infinite_values_are_refused_with_the_column_named(fitted: GBDT2NNClassifier, data: Any) -> None:
    X_test = data[2][:5].copy()
    X_test.loc[0, "b"] = np.inf
    with pytest.raises(DataError, match="column 'b' contains infinite values"):
        fitted.predict(X_test)


def test_attributions_are_per_column_and_line_up_with_per_column_treeshap(fitted: GBDT2NNClassifier, data: Any) -> None:
    X_test = data[2]
    student = fitted.explain(X_test, as_frame=True)
    teacher = fitted.explain(X_test, "teacher", as_frame=True)
    assert list(student.columns) == list(teacher.columns) == list(X_test.columns)
    assert student.shape == teacher.shape == (len(X_test), 5)
    # a categorical column's value is the attribution of its whole encoded block: structure shares each group's
    # residual between columns (docs/attributions.md), so it is column_attributions of the module, and it adds up
    # to what the per-encoded-value attribution adds up to (f(x) − E[f])
    z = torch.as_tensor(fitted._encode(X_test))
    module = fitted.student_.module
    aggregation = torch.as_tensor(fitted.encoder_.aggregation(), dtype=z.dtype)
    columns = column_attributions(fitted.attributor_, module, z, aggregation).numpy()
    np.testing.assert_allclose(student.to_numpy(), columns, rtol=1e-5, atol=1e-6)
    encoded = fitted.attributor_.attribute(module, z).numpy()
    np.testing.assert_allclose(student.to_numpy().sum(axis=1), encoded.sum(axis=1), rtol=1e-5, atol=1e-5)
    # color: one slot per group of categories the teacher tells apart (merge_categories), at most one per category
    slots = teacher_category_slots(fitted.teacher_.structure(), fitted.encoder_.schema)
    assert slots is not None
    assert len(fitted.encoder_.encoded_indices(1)) == len(set(slots["color"].tolist())) <= 3
    # the columns that drive the teacher (a, color) drive the student too
    teacher_rank = teacher.abs().mean().sort_values(ascending=False).index[:2]
    student_rank = student.abs().mean().sort_values(ascending=False).index[:2]
    assert set(teacher_rank) == set(student_rank) == {"a", "color"}


def test_numpy_object_arrays_with_strings_and_none_work(data: Any) -> None:
    X, y, X_test, _ = data
    array = X.astype(object).where(X.notna(), None).to_numpy()
    est = GBDT2NNClassifier(**{**SMALL, "epochs": 1}).fit(array, y)
    assert est.feature_names_ == ("x0", "x1", "x2", "x3", "x4")
    assert not hasattr(est, "feature_names_in_")
    assert [c.kind for c in est.encoder_.schema.columns] == [
        "numeric",
        "categorical",
        "categorical",
        "numeric",  # integer codes in an object array are numbers, not categories
        "numeric",
    ]
    test_array = X_test.astype(object).where(X_test.notna(), None).to_numpy()
    assert np.isfinite(est.predict_proba(test_array)).all()


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
def test_a_users_booster_trained_on_integer_categories_is_wrapped_faithfully(library: str, data: Any) -> None:
    """The schema keeps categories as strings; a booster that saw integers must still get integers."""
    X, y, X_test, _ = data
    X = X.astype({"color": "category"})
    X_test = X_test.astype({"color": pd.CategoricalDtype(X["color"].cat.categories)})
    if library == "lightgbm":
        import lightgbm as lgb

        model: Any = lgb.LGBMClassifier(n_estimators=10, num_leaves=7, num_threads=1, verbose=-1).fit(X, y)
        own = model.predict(X_test, raw_score=True)
    else:
        import xgboost as xgb

        model = xgb.XGBClassifier(n_estimators=10, max_depth=3, nthread=1, enable_categorical=True).fit(X, y)
        own = model.predict(X_test, output_margin=True)
    est = GBDT2NNClassifier(**{**SMALL, "epochs": 1, "teacher_options": None}).fit(X, y, teacher=model)
    assert est.teacher_name_ == library
    np.testing.assert_allclose(est.teacher_margin(X_test), own, rtol=1e-6, atol=1e-6)
