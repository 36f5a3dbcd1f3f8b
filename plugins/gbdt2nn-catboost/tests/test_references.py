"""The catboost teacher against independent references: exact Shapley values, CatBoost's own predictions on
the raw data, CatBoost's own description of its splits, a model saved by CatBoost itself, and the pipeline."""

from __future__ import annotations

import itertools
import json
import math

import catboost as cb
import numpy as np
import pandas as pd
import pytest
from gbdt2nn_catboost.plugin import make_teacher

from gbdt2nn_core.data import TabularSchema, load_bundled, split_features_target
from gbdt2nn_core.errors import ConfigError

FAST = {"n_estimators": 8, "depth": 3, "threads": 1}


@pytest.fixture(scope="module")
def adult_raw() -> tuple[pd.DataFrame, np.ndarray]:
    """300 adult rows as a user has them: string columns (with missing values) and integers."""
    bundled = load_bundled("adult")
    features, target = split_features_target(bundled.frame.head(300), bundled.target)
    return features, target.to_numpy()


def teacher_frame(raw: pd.DataFrame) -> pd.DataFrame:
    """What the pipeline gives a teacher: float64 numerics and fixed categoricals."""
    return TabularSchema.infer(raw).to_frame(raw)


def user_model(raw: pd.DataFrame, y: np.ndarray, **params: object) -> cb.CatBoostClassifier:
    """A CatBoostClassifier trained the way a user would, on the raw frame with string cat_features."""
    strings = [c for c in raw.columns if not pd.api.types.is_numeric_dtype(raw[c])]
    frame = raw.copy()
    frame[strings] = frame[strings].fillna("<missing>").astype(str)
    model = cb.CatBoostClassifier(iterations=10, depth=3, thread_count=1, verbose=False, allow_writing_files=False)
    model.set_params(**params)
    return model.fit(frame, y, cat_features=strings)


# ---------------------------------------------------------------------------------------------- TreeSHAP
def _exact_shapley(model: cb.CatBoost, X: pd.DataFrame, columns: list[int]) -> np.ndarray:
    """Shapley values of path-dependent TreeSHAP's game, by enumerating every coalition of ``columns``.

    ``v(S)`` is the expected margin when the columns in ``S`` are known: at a split on a known column the row
    goes its own way (read from its leaf index, bit ``j`` = split ``j``), at any other split both ways,
    weighted by the training weight (the leaf weights) below each side. The tree is walked from its last
    split (the root) down to split 0, as the teacher's structure shows it; with split 0 at the root the game
    differs, and CatBoost's values do not match it.
    """
    document = json.loads(_json(model))
    floats = [f["flat_feature_index"] for f in document["features_info"].get("float_features", [])]
    cats = [f["flat_feature_index"] for f in document["features_info"].get("categorical_features", [])]
    scale, bias = document["scale_and_bias"]
    leaves = model.calc_leaf_indexes(X)
    trees = []
    for tree in document["oblivious_trees"]:
        split_columns = [
            floats[s["float_feature_index"]] if s["split_type"] == "FloatFeature" else cats[s["cat_feature_index"]]
            for s in tree["splits"]
        ]
        trees.append((split_columns, np.array(tree["leaf_values"]) * scale, np.array(tree["leaf_weights"], float)))

    def expectation(row: int, known: set[int]) -> float:
        total = float(np.ravel(bias)[0])
        for number, (split_columns, values, weights) in enumerate(trees):
            tree = _Oblivious(split_columns, values, weights, int(leaves[row, number]), known)
            total += tree.expect(len(split_columns) - 1, 0)
        return total

    d = len(columns)
    phi = np.zeros((len(X), X.shape[1]))
    for row in range(len(X)):
        for position, column in enumerate(columns):
            others = columns[:position] + columns[position + 1 :]
            for size in range(d):
                weight = math.factorial(size) * math.factorial(d - size - 1) / math.factorial(d)
                for subset in itertools.combinations(others, size):
                    known = set(subset)
                    phi[row, column] += weight * (expectation(row, known | {column}) - expectation(row, known))
    return phi


class _Oblivious:
    """One symmetric tree and one row, for the expected value of the tree given the ``known`` columns."""

    def __init__(
        self, split_columns: list[int], values: np.ndarray, weights: np.ndarray, reached: int, known: set[int]
    ):
        self.columns, self.values, self.weights, self.reached, self.known = (
            split_columns,
            values,
            weights,
            reached,
            known,
        )
        self.leaves = np.arange(len(values))

    def cover(self, level: int, prefix: int) -> float:
        """Training weight below the node that tests split ``level`` (its higher bits are ``prefix``'s)."""
        return float(self.weights[(self.leaves >> (level + 1)) == (prefix >> (level + 1))].sum())

    def expect(self, level: int, prefix: int) -> float:
        if level < 0:
            return float(self.values[prefix])
        if self.columns[level] in self.known:
            return self.expect(level - 1, prefix | (self.reached & (1 << level)))
        right = prefix | (1 << level)
        w_left, w_right = self.cover(level - 1, prefix), self.cover(level - 1, right)
        if w_left + w_right == 0:
            return 0.0
        return (w_left * self.expect(level - 1, prefix) + w_right * self.expect(level - 1, right)) / (w_left + w_right)


def _json(model: cb.CatBoost) -> str:
    from gbdt2nn_catboost._structure import model_json

    return json.dumps(model_json(model))


def test_shap_values_equal_exact_shapley_enumeration(adult_raw) -> None:
    raw, y = adult_raw
    # Five columns, one of them categorical with one-hot splits, so 2**5 coalitions per row are enumerated.
    raw = raw[["age", "educational-num", "hours-per-week", "capital-gain", "gender"]]
    model = user_model(raw, y, iterations=6, depth=3, one_hot_max_size=4)
    X = teacher_frame(raw)
    teacher = make_teacher(model=model).fit(X, y, task="binary")
    shap = teacher.shap_values(X.head(12))
    frame = X.head(12).assign(gender=X["gender"].head(12).astype(str))
    exact = _exact_shapley(teacher.native_model, frame, list(range(X.shape[1])))
    np.testing.assert_allclose(shap.values, exact, rtol=0, atol=1e-6)
    assert shap.method == "path-dependent"


def test_shap_values_sum_to_the_margin_on_adult(adult_raw) -> None:
    raw, y = adult_raw
    X = teacher_frame(raw)
    teacher = make_teacher(**FAST).fit(X, y, task="binary")
    shap = teacher.shap_values(X)
    assert shap.values.shape == X.shape
    np.testing.assert_allclose(shap.values.sum(1) + shap.expected_value[0], teacher.predict_margin(X), atol=1e-9)
    # Categorical columns carry explanation too: CatBoost splits on them natively.
    categorical = [i for i, dtype in enumerate(X.dtypes) if isinstance(dtype, pd.CategoricalDtype)]
    assert np.abs(shap.values[:, categorical]).sum() > 0


# ---------------------------------------------------------------------------------------------- margins
def test_margins_equal_catboosts_own_raw_predictions_on_the_users_data(adult_raw) -> None:
    raw, y = adult_raw
    model = user_model(raw, y)
    strings = [c for c in raw.columns if not pd.api.types.is_numeric_dtype(raw[c])]
    users_frame = raw.copy()
    users_frame[strings] = users_frame[strings].fillna("<missing>").astype(str)
    expected = model.predict(users_frame, prediction_type="RawFormulaVal")
    X = teacher_frame(raw)
    teacher = make_teacher(model=model).fit(X, y, task="binary")
    np.testing.assert_array_equal(teacher.predict_margin(X), expected)
    assert teacher.structure().n_trees == model.tree_count_


def test_multiclass_margins_and_shap_match_catboost() -> None:
    from sklearn.datasets import load_wine

    data = load_wine(as_frame=True)
    X, y = data.data.astype("float64"), data.target.to_numpy()
    model = cb.CatBoostClassifier(iterations=6, depth=3, thread_count=1, verbose=False, allow_writing_files=False)
    model.fit(X, y)
    teacher = make_teacher(model=model).fit(X, y, task="multiclass")
    np.testing.assert_array_equal(teacher.predict_margin(X), model.predict(X, prediction_type="RawFormulaVal"))
    native = model.get_feature_importance(cb.Pool(X), type="ShapValues")  # (n, k, d + 1)
    shap = teacher.shap_values(X)
    np.testing.assert_array_equal(shap.values, native[:, :, :-1])
    np.testing.assert_array_equal(shap.expected_value, native[0, :, -1])
    # Each 3-class CatBoost tree is three trees of the student's view, one per class, with the same leaves.
    assert teacher.structure().n_trees == 3 * model.tree_count_
    assert [tree.output for tree in teacher.structure().trees[:6]] == [0, 1, 2, 0, 1, 2]


# ---------------------------------------------------------------------------------------------- structure
def test_split_columns_match_catboosts_own_split_names(adult_raw) -> None:
    raw, y = adult_raw
    model = user_model(raw, y, iterations=15, depth=4)
    X = teacher_frame(raw)
    teacher = make_teacher(model=model).fit(X, y, task="binary")
    strings = [c for c in raw.columns if not pd.api.types.is_numeric_dtype(raw[c])]
    users_frame = raw.copy()
    users_frame[strings] = users_frame[strings].fillna("<missing>").astype(str)
    pool = cb.Pool(users_frame, y, cat_features=strings)
    names = list(X.columns)
    kinds = set()
    for number, tree in enumerate(teacher.structure().trees):
        described = model._get_tree_splits(number, pool)  # e.g. "age, bin=26.5" or "{education} pr1..., border=5"
        depth = len(described)
        root_to_leaf = [names[tree.split_features[2**level - 1]] for level in range(depth)]
        for level, text in enumerate(reversed(described)):  # the root tests CatBoost's last split
            column = text.split(",")[0].strip("{}").split("}")[0]
            assert root_to_leaf[level] == column, (number, level, text)
            kinds.add("ctr" if text.startswith("{") else "value" if "value=" in text else "float")
    assert kinds >= {"ctr", "float"}, kinds  # the model really has CTR splits on categorical columns


def test_every_split_has_a_gain_and_floats_a_threshold(adult_raw) -> None:
    raw, y = adult_raw
    X = teacher_frame(raw)
    ensemble = make_teacher(**FAST).fit(X, y, task="binary").structure()
    categorical = np.array([isinstance(dtype, pd.CategoricalDtype) for dtype in X.dtypes])
    for tree in ensemble.trees:
        assert (tree.split_gains >= 0).all()
        numeric = ~categorical[tree.split_features]
        assert np.isfinite(tree.split_thresholds[numeric]).all()
        assert np.isnan(tree.split_thresholds[~numeric]).all()
    assert sum(tree.split_gains.sum() for tree in ensemble.trees) > 0


# ---------------------------------------------------------------------------------------------- files, options
def test_a_model_file_saved_by_catboost_predicts_identically(adult_raw, tmp_path) -> None:
    raw, y = adult_raw
    model = user_model(raw, y)
    path = tmp_path / "users.cbm"
    model.save_model(str(path))
    X = teacher_frame(raw)
    from_file = make_teacher(model=path).fit(X, y, task="binary")
    from_object = make_teacher(model=model).fit(X, y, task="binary")
    np.testing.assert_array_equal(from_file.predict_margin(X), from_object.predict_margin(X))
    np.testing.assert_array_equal(from_file.leaf_indices(X), from_object.leaf_indices(X))
    assert from_file.fingerprint() == from_object.fingerprint()
    resaved = tmp_path / "teacher.cbm"
    from_file.save(resaved)
    again = make_teacher(model=resaved).fit(X, y, task="binary")
    np.testing.assert_array_equal(again.shap_values(X).values, from_file.shap_values(X).values)


@pytest.mark.parametrize(("option", "suggestion"), [("dept", "depth"), ("learning_rat", "learning_rate")])
def test_an_unknown_option_is_an_error_with_a_suggestion(option, suggestion) -> None:
    with pytest.raises(ConfigError) as caught:
        make_teacher(**{option: 3})
    assert f"did you mean {suggestion!r}" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_options_reach_catboost(adult_raw) -> None:
    raw, y = adult_raw
    X = teacher_frame(raw)
    teacher = make_teacher(n_estimators=5, depth=2, threads=1).fit(X, y, task="binary")
    assert teacher.native_model.tree_count_ == 5
    assert all(tree.n_leaves == 4 for tree in teacher.structure().trees)
    with pytest.raises(ConfigError, match="loss_function"):
        make_teacher(loss_function="RMSE", **FAST).fit(X, y, task="binary")


# ---------------------------------------------------------------------------------------------- pipeline
def test_adult_with_string_columns_distils_end_to_end(tmp_path) -> None:
    from gbdt2nn_core.pipeline.distill import DistillConfig, distill

    bundled = load_bundled("adult")
    frame = bundled.frame.head(400)
    assert any(pd.api.types.is_string_dtype(frame[c]) for c in frame.columns)
    config = DistillConfig(
        teacher="catboost",
        teacher_options={"n_estimators": 10, "depth": 3, "threads": 1},
        student_options={"epochs": 2, "n_groups": 2, "hidden": (8, 8), "batch_size": 128},
        cache_dir=str(tmp_path / "cache"),
        alignment_weight=0.0,  # plain: this plugin's session installs no alignment-loss plugin
    )
    run = distill(frame, bundled.target, config)
    assert type(run.teacher).__name__ == "CatBoostTeacher"
    assert run.metrics["teacher"]["name"] == "catboost"
    # The student learnt from this teacher: its labels agree with the teacher's far above chance.
    assert run.metrics["teacher"]["test"]["auc"] > 0.8
    assert run.metrics["student"]["fidelity"]["label_agreement"] > 0.7
    assert np.isfinite(run.metrics["student"]["agreement"]["spearman"])
    # Its TreeSHAP targets came from CatBoost on the teacher-ready frame, categorical columns included.
    shap = run.teacher.shap_values(run.data.test_frame)
    np.testing.assert_allclose(
        shap.values.sum(1) + shap.expected_value[0], run.teacher.predict_margin(run.data.test_frame), atol=1e-9
    )


def test_an_estimator_with_a_catboost_teacher_is_saved_and_served_by_the_cli(adult_raw, tmp_path) -> None:
    from gbdt2nn_core import GBDT2NNClassifier
    from gbdt2nn_core.cli import main

    raw, y = adult_raw
    estimator = GBDT2NNClassifier(epochs=1, alignment_weight=0.0, student_options={"n_groups": 2, "hidden": (8, 8)})
    estimator.fit(raw, y, teacher=user_model(raw, y))
    assert type(estimator.teacher_).__name__ == "CatBoostTeacher"  # picked from the model's type
    estimator.save(str(tmp_path / "model"))
    assert (tmp_path / "model" / "teacher.cbm").read_bytes().startswith(b"CBM1")
    raw.head(50).to_csv(tmp_path / "rows.csv", index=False)
    argv = ["predict", "--model", str(tmp_path / "model"), "--data", str(tmp_path / "rows.csv")]
    assert main([*argv, "--out", str(tmp_path / "predictions.csv")]) == 0
    served = pd.read_csv(tmp_path / "predictions.csv")["probability_1"].to_numpy()
    np.testing.assert_allclose(served, estimator.predict_proba(raw.head(50))[:, 1], atol=1e-5)
