"""Existing boosters as teachers, through the estimator: every form a user has them in, checked against the
booster's own predictions and TreeSHAP (the independent reference), and a clear error for mismatched columns.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from gbdt2nn_core import (
    ConfigError,
    DataError,
    GBDT2NNClassifier,
    GBDT2NNRegressor,
    ModelFileError,
)

pytestmark = pytest.mark.usefixtures("single_thread_torch")

STUDENT: dict[str, Any] = {
    "student_options": {"n_groups": 2, "hidden": (8, 8), "batch_size": 128},
    "epochs": 1,
    "cache_dir": False,
}


@pytest.fixture(scope="module")
def housing() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """500 California rows for training and 100 for testing (numeric features, regression)."""
    from gbdt2nn_core.data import load_bundled

    frame = load_bundled("california").frame.sample(600, random_state=3).reset_index(drop=True)
    y = frame.pop("MedHouseVal").to_numpy()
    return frame[:500], y[:500], frame[500:]


@pytest.fixture(scope="module")
def adult() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame]:
    """500 adult rows for training and 100 for testing, strings as pandas categories (binary)."""
    from gbdt2nn_core.data import load_bundled

    frame = load_bundled("adult").frame.sample(600, random_state=3).reset_index(drop=True)
    y = frame.pop("income_gt_50k").to_numpy()
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    frame = frame.astype(dict.fromkeys(text, "category"))
    return frame[:500], y[:500], frame[500:]


def _lgb_params(**extra: Any) -> dict[str, Any]:
    return {"num_leaves": 7, "num_threads": 1, "verbose": -1, **extra}


def _xgb_params(**extra: Any) -> dict[str, Any]:
    return {"max_depth": 3, "nthread": 1, **extra}


# Each case: build the model from (X, y, tmp_path) → (what fit gets, own raw margin fn, own contributions fn)
Own = tuple[Any, Callable[[pd.DataFrame], np.ndarray], Callable[[pd.DataFrame], np.ndarray]]


def _lgb_booster(X: pd.DataFrame, y: np.ndarray, _: Path) -> Own:
    booster = lgb.train(_lgb_params(objective="regression"), lgb.Dataset(X, y), num_boost_round=8)
    return booster, lambda T: booster.predict(T, raw_score=True), lambda T: booster.predict(T, pred_contrib=True)


def _lgb_regressor(X: pd.DataFrame, y: np.ndarray, _: Path) -> Own:
    model = lgb.LGBMRegressor(n_estimators=8, **_lgb_params()).fit(X, y)
    return model, lambda T: model.predict(T, raw_score=True), lambda T: model.predict(T, pred_contrib=True)


def _lgb_file(X: pd.DataFrame, y: np.ndarray, tmp: Path) -> Own:
    booster = lgb.train(_lgb_params(objective="regression"), lgb.Dataset(X, y), num_boost_round=8)
    booster.save_model(str(tmp / "model.txt"))
    return (
        tmp / "model.txt",
        lambda T: booster.predict(T, raw_score=True),
        lambda T: booster.predict(T, pred_contrib=True),
    )


def _xgb_booster(X: pd.DataFrame, y: np.ndarray, _: Path) -> Own:
    booster = xgb.train(_xgb_params(), xgb.DMatrix(X, y), num_boost_round=8)
    return (
        booster,
        lambda T: booster.predict(xgb.DMatrix(T), output_margin=True),
        lambda T: booster.predict(xgb.DMatrix(T), pred_contribs=True),
    )


def _xgb_regressor(X: pd.DataFrame, y: np.ndarray, _: Path) -> Own:
    model = xgb.XGBRegressor(n_estimators=8, **_xgb_params()).fit(X, y)
    return (
        model,
        lambda T: model.predict(T, output_margin=True),
        lambda T: model.get_booster().predict(xgb.DMatrix(T), pred_contribs=True),
    )


def _xgb_file(suffix: str) -> Callable[[pd.DataFrame, np.ndarray, Path], Own]:
    def build(X: pd.DataFrame, y: np.ndarray, tmp: Path) -> Own:
        booster = xgb.train(_xgb_params(), xgb.DMatrix(X, y), num_boost_round=8)
        path = tmp / f"model{suffix}"
        booster.save_model(str(path))
        return (
            str(path),
            lambda T: booster.predict(xgb.DMatrix(T), output_margin=True),
            lambda T: booster.predict(xgb.DMatrix(T), pred_contribs=True),
        )

    return build


@pytest.mark.parametrize(
    ("build", "library"),
    [
        pytest.param(_lgb_booster, "lightgbm", id="lightgbm-Booster"),
        pytest.param(_lgb_regressor, "lightgbm", id="LGBMRegressor"),
        pytest.param(_lgb_file, "lightgbm", id="lightgbm-model-file"),
        pytest.param(_xgb_booster, "xgboost", id="xgboost-Booster"),
        pytest.param(_xgb_regressor, "xgboost", id="XGBRegressor"),
        pytest.param(_xgb_file(".json"), "xgboost", id="xgboost-json-file"),
        pytest.param(_xgb_file(".ubj"), "xgboost", id="xgboost-ubj-file"),
    ],
)
def test_a_regression_booster_is_distilled_as_it_is(
    build: Callable[..., Own], library: str, housing: Any, tmp_path: Path
) -> None:
    X, y, X_test = housing
    model, own_margin, own_contrib = build(X, y, tmp_path)
    # the default teacher parameter is "lightgbm": an XGBoost model picks its plugin by itself
    est = GBDT2NNRegressor(**STUDENT).fit(X, y, teacher=model)
    assert est.teacher_name_ == library
    np.testing.assert_allclose(est.teacher_margin(X_test), own_margin(X_test), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(est.explain(X_test, "teacher"), own_contrib(X_test)[:, :-1], rtol=1e-5, atol=1e-6)
    assert est.predict(X_test).shape == (100,)
    assert np.isfinite(est.predict(X_test)).all()


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
def test_a_fitted_sklearn_classifier_is_distilled_with_its_classes(library: str, adult: Any) -> None:
    X, y, X_test = adult
    labels = np.where(y == 1, "rich", "not rich")
    if library == "lightgbm":
        model: Any = lgb.LGBMClassifier(n_estimators=8, **_lgb_params()).fit(X, labels)
        own = model.predict(X_test, raw_score=True)
        contrib = model.predict(X_test, pred_contrib=True)[:, :-1]
    else:
        model = xgb.XGBClassifier(n_estimators=8, enable_categorical=True, **_xgb_params()).fit(X, y)
        own = model.predict(X_test, output_margin=True)
        contrib = model.get_booster().predict(xgb.DMatrix(X_test, enable_categorical=True), pred_contribs=True)
        contrib = contrib[:, :-1]
        labels = y
    est = GBDT2NNClassifier(**STUDENT).fit(X, labels, teacher=model)
    assert est.teacher_name_ == library
    assert list(est.classes_) == list(model.classes_)
    np.testing.assert_allclose(est.teacher_margin(X_test), own, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(est.explain(X_test, "teacher"), contrib, rtol=1e-5, atol=1e-6)
    assert set(est.predict(X_test)) <= set(model.classes_)


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
def test_a_multiclass_booster_is_distilled_per_class(library: str) -> None:
    from sklearn.datasets import load_wine

    data = load_wine(as_frame=True)
    X, y = data.data, data.target.to_numpy()
    if library == "lightgbm":
        params = _lgb_params(objective="multiclass", num_class=3, min_data_in_leaf=5)
        booster: Any = lgb.train(params, lgb.Dataset(X, y), num_boost_round=5)
        own = booster.predict(X, raw_score=True)
    else:
        booster = xgb.train(_xgb_params(objective="multi:softprob", num_class=3), xgb.DMatrix(X, y), num_boost_round=5)
        own = booster.predict(xgb.DMatrix(X), output_margin=True)
    est = GBDT2NNClassifier(**STUDENT).fit(X, y, teacher=booster)
    assert est.task_ == "multiclass"
    assert list(est.classes_) == [0, 1, 2]  # a bare booster's classes are its outputs 0..k-1
    np.testing.assert_allclose(est.teacher_margin(X), own, rtol=1e-6, atol=1e-6)
    assert est.explain(X[:7]).shape == est.explain(X[:7], "teacher").shape == (7, 3, 13)


def test_a_numpy_x_borrows_the_boosters_feature_names(housing: Any) -> None:
    X, y, X_test = housing
    booster = lgb.train(_lgb_params(objective="regression"), lgb.Dataset(X, y), num_boost_round=5)
    est = GBDT2NNRegressor(**STUDENT).fit(X.to_numpy(), y, teacher=booster)
    assert est.feature_names_ == tuple(X.columns)
    np.testing.assert_allclose(est.teacher_margin(X_test.to_numpy()), booster.predict(X_test, raw_score=True))


@pytest.mark.parametrize("library", ["lightgbm", "xgboost"])
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda X: X[["HouseAge", "MedInc", *X.columns[2:]]], "reordered (column 0 is 'HouseAge'"),
        (lambda X: X.drop(columns=["AveRooms"]), "missing ['AveRooms']"),
        (lambda X: X.assign(zip_code=1.0), "unexpected ['zip_code']"),
        (lambda X: X.rename(columns={"Latitude": "lat"}), "missing ['Latitude']; unexpected ['lat']"),
    ],
)
def test_columns_that_do_not_match_the_booster_are_named_in_the_error(
    library: str, change: Callable[[pd.DataFrame], pd.DataFrame], message: str, housing: Any
) -> None:
    X, y, _ = housing
    if library == "lightgbm":
        model: Any = lgb.LGBMRegressor(n_estimators=3, **_lgb_params()).fit(X, y)
    else:
        model = xgb.XGBRegressor(n_estimators=3, **_xgb_params()).fit(X, y)
    with pytest.raises(DataError) as info:
        GBDT2NNRegressor(**STUDENT).fit(change(X), y, teacher=model)
    assert message in str(info.value)
    assert "do not match the booster's 8 features" in str(info.value)


def test_a_booster_for_another_task_or_with_training_options_is_refused(housing: Any, adult: Any) -> None:
    X, y, _ = housing
    regressor = lgb.LGBMRegressor(n_estimators=3, **_lgb_params()).fit(X, y)
    with pytest.raises(ConfigError, match="solves regression"):
        GBDT2NNClassifier(**STUDENT).fit(X, (y > 2).astype(int), teacher=regressor)
    with pytest.raises(ConfigError, match="teacher_options"):
        GBDT2NNRegressor(**STUDENT, teacher_options={"n_estimators": 5}).fit(X, y, teacher=regressor)
    with pytest.raises(ModelFileError, match="no such file"):
        GBDT2NNRegressor(**STUDENT).fit(X, y, teacher="missing-model.txt")
    X_adult, y_adult, _ = adult
    classifier = lgb.LGBMClassifier(n_estimators=3, **_lgb_params()).fit(X_adult, y_adult)
    with pytest.raises(DataError, match="labels"):
        GBDT2NNClassifier(**STUDENT).fit(X_adult, np.where(y_adult == 1, "a", "b"), teacher=classifier)


def test_the_users_booster_is_not_changed(housing: Any) -> None:
    X, y, _ = housing
    model = lgb.LGBMRegressor(n_estimators=5, **_lgb_params()).fit(X, y)
    before = model.booster_.model_to_string()
    est = GBDT2NNRegressor(**STUDENT).fit(X, y, teacher=model)
    est.partial_fit(X, y)
    assert model.booster_.model_to_string() == before
    assert est.teacher_.native_model is not model.booster_
