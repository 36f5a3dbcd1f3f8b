"""Interventional TreeSHAP of a teacher: the same numbers as shap.TreeExplainer, additive, one-line errors."""

from __future__ import annotations

from pathlib import Path

import lightgbm
import numpy as np
import pandas as pd
import pytest
import shap
import xgboost

import gbdt2nn_core.data
from gbdt2nn_core.errors import DataError
from gbdt2nn_shap import ExpectedGradients, interventional_tree_shap

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

_DATASETS = Path(gbdt2nn_core.data.__file__).parent / "datasets"  # the bundled copies, read raw
_CALIFORNIA = _DATASETS / "california_housing.csv.gz"
_ADULT = _DATASETS / "adult.csv.gz"


class BoosterOnly:
    """The least a teacher needs here: the native booster (the real teachers also have ``predict_margin``)."""

    def __init__(self, booster: object) -> None:
        self._booster = booster

    @property
    def native_model(self) -> object:
        return self._booster


class WithMargins(BoosterOnly):
    def predict_margin(self, X: pd.DataFrame) -> np.ndarray:
        return self.native_model.predict(X, raw_score=True)


@pytest.fixture(scope="module")
def california() -> tuple[pd.DataFrame, np.ndarray]:
    frame = pd.read_csv(_CALIFORNIA, nrows=1500)
    return frame.drop(columns="MedHouseVal"), frame["MedHouseVal"].to_numpy()


def train_lightgbm(X: pd.DataFrame, y: np.ndarray, **params: object) -> lightgbm.Booster:
    params = {"num_leaves": 15, "learning_rate": 0.2, "verbose": -1, "seed": 0, **params}
    return lightgbm.train(params, lightgbm.Dataset(X, y), num_boost_round=20)


@pytest.mark.parametrize("teacher_type", [BoosterOnly, WithMargins])
def test_regression_matches_shap_tree_explainer(california, teacher_type):
    X, y = california
    booster = train_lightgbm(X, y)
    rows, background = X.iloc[:80], X.iloc[1000:1100]
    result = ExpectedGradients().explain_teacher(teacher_type(booster), rows, background)
    explainer = shap.TreeExplainer(booster, data=background, feature_perturbation="interventional", model_output="raw")
    np.testing.assert_allclose(result.values, explainer.shap_values(rows), atol=1e-10)
    np.testing.assert_allclose(result.expected_value, [explainer.expected_value], atol=1e-8)
    assert result.method == "interventional"
    assert result.values.shape == (80, 8)
    assert result.expected_value.shape == (1,)
    margin = booster.predict(rows, raw_score=True)
    np.testing.assert_allclose(result.values.sum(1) + result.expected_value, margin, atol=1e-8)


def test_path_dependent_and_interventional_differ_but_both_add_up(california):
    X, y = california
    booster = train_lightgbm(X, y)
    rows, background = X.iloc[:80], X.iloc[1000:1100]
    margin = booster.predict(rows, raw_score=True)
    interventional = interventional_tree_shap(BoosterOnly(booster), rows, background)
    native = booster.predict(rows, pred_contrib=True)  # path-dependent, last column = expected value
    path_values, path_expected = native[:, :-1], native[:, -1]
    np.testing.assert_allclose(path_values.sum(1) + path_expected, margin, atol=1e-8)
    np.testing.assert_allclose(interventional.values.sum(1) + interventional.expected_value, margin, atol=1e-8)
    assert np.abs(path_values - interventional.values).max() > 1e-2


def test_lightgbm_multiclass_has_one_output_per_class(california):
    X, y = california
    classes = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    booster = train_lightgbm(X, classes, objective="multiclass", num_class=3)
    rows, background = X.iloc[:40], X.iloc[1000:1060]
    result = interventional_tree_shap(BoosterOnly(booster), rows, background)
    assert result.values.shape == (40, 3, 8)
    assert result.expected_value.shape == (3,)
    margin = booster.predict(rows, raw_score=True)
    np.testing.assert_allclose(result.values.sum(-1) + result.expected_value, margin, atol=1e-6)
    # shap 0.51 adds every class into a single output; its values must equal the sum of ours over classes.
    merged = shap.TreeExplainer(booster, data=background, feature_perturbation="interventional", model_output="raw")
    np.testing.assert_allclose(result.values.sum(1), merged.shap_values(rows, check_additivity=False), atol=1e-6)


def test_xgboost_multiclass_expected_value_is_the_mean_margin(california):
    X, y = california
    classes = np.digitize(y, np.quantile(y, [1 / 3, 2 / 3]))
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "seed": 0}
    booster = xgboost.train(params, xgboost.DMatrix(X, classes), num_boost_round=10)
    rows, background = X.iloc[:40], X.iloc[1000:1060]
    result = interventional_tree_shap(BoosterOnly(booster), rows, background)
    assert result.values.shape == (40, 3, 8)
    margin = booster.predict(xgboost.DMatrix(rows), output_margin=True)
    np.testing.assert_allclose(result.values.sum(-1) + result.expected_value, margin, atol=1e-4)


@pytest.fixture(scope="module")
def adult() -> tuple[pd.DataFrame, np.ndarray]:
    frame = pd.read_csv(_ADULT, nrows=3000)
    y = frame.pop("income_gt_50k").to_numpy()
    for column in frame.columns:
        if pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = frame[column].astype(np.float64)
        else:
            frame[column] = pd.Categorical(frame[column].astype(object))
    return frame, y


def test_lightgbm_categorical_split_shap_reads_right_is_accepted(california):
    X, y = california
    region = pd.Categorical(np.where(X["Longitude"] < -121, "west", "east"), categories=["east", "west"])
    X = X.assign(Region=region)[["Region", "MedInc"]]
    booster = train_lightgbm(X, y + 2.0 * (X["Region"] == "west"), min_data_per_group=5)
    dump = str(booster.dump_model())
    assert "==" in dump  # a categorical split...
    assert "||" not in dump  # ...on one category, which shap reads right
    result = interventional_tree_shap(BoosterOnly(booster), X.iloc[:30], X.iloc[500:560])
    np.testing.assert_allclose(
        result.values.sum(1) + result.expected_value, booster.predict(X.iloc[:30], raw_score=True), atol=1e-8
    )


def test_lightgbm_categorical_splits_shap_misreads_ask_for_the_path_dependent_explainer(adult):
    X, y = adult
    booster = train_lightgbm(X, y, objective="binary")
    with pytest.raises(DataError, match=r"categorical splits.*path-dependent") as caught:
        interventional_tree_shap(BoosterOnly(booster), X.iloc[:100], X.iloc[2000:2050])
    assert "\n" not in str(caught.value)


def test_xgboost_categorical_splits_ask_for_the_path_dependent_explainer(adult):
    X, y = adult
    params = {"objective": "binary:logistic", "max_depth": 3, "tree_method": "hist", "seed": 0}
    booster = xgboost.train(params, xgboost.DMatrix(X, y, enable_categorical=True), num_boost_round=10)
    with pytest.raises(DataError, match=r"shap cannot compute.*path-dependent") as caught:
        interventional_tree_shap(BoosterOnly(booster), X.iloc[:50], X.iloc[2000:2050])
    assert "\n" not in str(caught.value)


def test_rejects_a_teacher_without_a_booster():
    with pytest.raises(DataError, match="no native_model"):
        interventional_tree_shap(object(), np.zeros((2, 2)), np.zeros((2, 2)))
