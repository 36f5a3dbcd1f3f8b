"""The teacher's numbers against LightGBM's own (scikit-learn API, trees_to_dataframe) and shap's TreeSHAP."""

from __future__ import annotations

import warnings

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from gbdt2nn_lightgbm.plugin import make_teacher

FAST = {"n_estimators": 20, "num_leaves": 16, "num_threads": 1}
SKLEARN = {"n_estimators": 20, "num_leaves": 16, "n_jobs": 1, "verbose": -1}


def sklearn_model(task: str, X: pd.DataFrame, y: np.ndarray) -> lgb.LGBMModel:
    model = lgb.LGBMRegressor(**SKLEARN) if task == "regression" else lgb.LGBMClassifier(**SKLEARN)
    return model.fit(X, y)


def reconstruct(teacher, X: pd.DataFrame) -> np.ndarray:
    ensemble = teacher.structure()
    leaves = teacher.leaf_indices(X)
    total = np.tile(ensemble.base_margin, (len(X), 1))
    for index, tree in enumerate(ensemble.trees):
        total[:, tree.output] += tree.leaf_values[leaves[:, index]]
    return total if ensemble.n_outputs > 1 else total[:, 0]


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_wrapped_sklearn_model_matches_its_own_predictions(task, datasets) -> None:
    X, y = datasets[task]
    model = sklearn_model(task, X, y)
    teacher = make_teacher(model=model).fit(X, y, task=task)
    raw = model.predict(X, raw_score=True)
    np.testing.assert_array_equal(teacher.predict_margin(X), raw)
    np.testing.assert_allclose(reconstruct(teacher, X), raw, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(teacher.leaf_indices(X), model.predict(X, pred_leaf=True))
    contrib = model.predict(X, pred_contrib=True).reshape(len(X), teacher.n_outputs, X.shape[1] + 1)
    shap = teacher.shap_values(X)
    np.testing.assert_allclose(shap.values.reshape(contrib[..., :-1].shape), contrib[..., :-1], rtol=0, atol=1e-12)
    np.testing.assert_allclose(shap.expected_value, contrib[0, :, -1], rtol=0, atol=1e-12)
    assert shap.method == "path-dependent"
    assert teacher.task == task
    assert teacher.feature_names == tuple(X.columns)


def test_structure_agrees_with_trees_to_dataframe(adult) -> None:
    X, y = adult
    teacher = make_teacher(**FAST).fit(X, y, task="binary")
    ensemble = teacher.structure()
    frame = teacher.native_model.trees_to_dataframe()
    assert ensemble.n_trees == frame["tree_index"].nunique()
    for index, tree in enumerate(ensemble.trees):
        nodes = frame[frame["tree_index"] == index]
        leaves = nodes[nodes["split_feature"].isna()]
        names = leaves["node_index"].astype(str).str.split("-L").str[1].astype(int)  # "3-L7": leaf 7 of tree 3
        by_leaf = dict(zip(names, leaves["value"], strict=True))
        np.testing.assert_allclose(tree.leaf_values, [by_leaf[i] for i in range(tree.n_leaves)], rtol=1e-12)
        splits = nodes[nodes["split_feature"].notna()]
        used = sorted(X.columns.get_indexer(splits["split_feature"]))
        assert sorted(tree.split_features.tolist()) == used
        np.testing.assert_allclose(sorted(tree.split_gains), sorted(splits["split_gain"]), rtol=1e-5)
        numeric = splits[splits["decision_type"] == "<="]
        np.testing.assert_allclose(
            np.sort(tree.split_thresholds[np.isfinite(tree.split_thresholds)]),
            np.sort(numeric["threshold"].astype(float)),
        )
        assert int(np.isnan(tree.split_thresholds).sum()) == int((splits["decision_type"] == "==").sum())
    assert all(tree.output == 0 for tree in ensemble.trees)
    assert ensemble.split_rule == "<="

    np.testing.assert_array_equal(ensemble.base_margin, [0.0])


def test_multiclass_trees_are_iteration_major(wine) -> None:
    X, y = wine
    teacher = make_teacher(**FAST).fit(X, y, task="multiclass")
    assert [tree.output for tree in teacher.structure().trees[:6]] == [0, 1, 2, 0, 1, 2]
    assert teacher.leaf_indices(X).shape == (len(X), 3 * FAST["n_estimators"])


def test_shap_matches_the_shap_package(california) -> None:
    shap = pytest.importorskip("shap")
    X, y = california
    teacher = make_teacher(**FAST).fit(X, y, task="regression")
    explainer = shap.TreeExplainer(teacher.native_model, feature_perturbation="tree_path_dependent")
    ours = teacher.shap_values(X)
    np.testing.assert_allclose(ours.values, explainer.shap_values(X), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours.expected_value, np.ravel(explainer.expected_value), rtol=1e-6)


def test_early_stopped_model_is_cut_at_its_best_iteration(adult) -> None:
    X, y = adult
    model = lgb.LGBMClassifier(**{**SKLEARN, "n_estimators": 200, "learning_rate": 0.3})
    with warnings.catch_warnings():  # LightGBM 4.7 renames eval_set; the old name works from 4.0 on
        warnings.simplefilter("ignore")
        model.fit(X[:300], y[:300], eval_set=[(X[300:], y[300:])], callbacks=[lgb.early_stopping(3, verbose=False)])
    assert 0 < model.best_iteration_ < 200
    teacher = make_teacher(model=model).fit(X, y, task="binary")
    assert teacher.structure().n_trees == model.best_iteration_
    np.testing.assert_array_equal(teacher.predict_margin(X), model.predict(X, raw_score=True))


@pytest.mark.parametrize("as_path", [str, lambda p: p])
def test_wraps_a_model_file(as_path, adult, tmp_path) -> None:
    X, y = adult
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1}, lgb.Dataset(X, y), 10)
    path = tmp_path / "model.txt"
    booster.save_model(path)
    teacher = make_teacher(model=as_path(path))
    assert teacher.task == "binary"  # read from the objective before fit
    teacher.fit(X, y, task="binary")
    np.testing.assert_array_equal(teacher.predict_margin(X), booster.predict(X, raw_score=True))
    np.testing.assert_allclose(reconstruct(teacher, X), booster.predict(X, raw_score=True), rtol=1e-9, atol=1e-9)


def test_wrapping_copies_the_booster(california) -> None:
    X, y = california
    params = {"objective": "regression", "verbose": -1, "num_threads": 1}
    booster = lgb.train(params, lgb.Dataset(X, y), 5, keep_training_booster=True)
    teacher = make_teacher(model=booster).fit(X, y, task="regression")
    before, fingerprint = teacher.predict_margin(X), teacher.fingerprint()
    booster.update()  # the user keeps training their own booster
    assert booster.num_trees() == 6
    np.testing.assert_array_equal(teacher.predict_margin(X), before)
    assert teacher.fingerprint() == fingerprint


def test_numpy_trained_booster_takes_any_column_names(california) -> None:
    X, y = california
    booster = lgb.train({"objective": "regression", "verbose": -1, "num_threads": 1}, lgb.Dataset(X.to_numpy(), y), 5)
    assert booster.feature_name()[0] == "Column_0"
    teacher = make_teacher(model=booster).fit(X, y, task="regression")
    assert teacher.feature_names == tuple(X.columns)
    np.testing.assert_array_equal(teacher.predict_margin(X), booster.predict(X.to_numpy(), raw_score=True))


def test_column_names_with_spaces_survive_a_round_trip(california, tmp_path) -> None:
    X, y = california
    X = X.rename(columns={"MedInc": "median income"})
    teacher = make_teacher(**FAST).fit(X, y, task="regression")
    assert teacher.native_model.feature_name()[0] == "median_income"  # LightGBM's spelling
    teacher.save(tmp_path / "m.txt")
    reloaded = make_teacher(model=tmp_path / "m.txt").fit(X, y, task="regression")
    assert reloaded.feature_names[0] == "median income"
    np.testing.assert_array_equal(reloaded.predict_margin(X), teacher.predict_margin(X))


def test_seed_controls_randomised_training(california) -> None:
    X, y = california
    params = {**FAST, "bagging_fraction": 0.5, "bagging_freq": 1}
    first = make_teacher(**params).fit(X, y, task="regression", seed=1)
    again = make_teacher(**params).fit(X, y, task="regression", seed=1)
    other = make_teacher(**params).fit(X, y, task="regression", seed=2)
    assert first.fingerprint() == again.fingerprint()
    assert first.fingerprint() != other.fingerprint()


def test_training_defaults_and_pass_through(adult) -> None:
    X, y = adult
    teacher = make_teacher(num_threads=1, min_data_in_leaf=5).fit(X, y, task="binary", seed=3)
    params = teacher.native_model.params
    assert teacher.structure().n_trees == 100
    assert params["num_leaves"] == 64
    assert params["learning_rate"] == pytest.approx(0.1)
    assert params["min_data_in_leaf"] == 5
    assert params["seed"] == 3
    assert params["deterministic"] is True
    alias = make_teacher(num_threads=1, max_leaves=8, eta=0.2, num_boost_round=7).fit(X, y, task="binary")
    assert alias.native_model.params["num_leaves"] == 8
    assert alias.native_model.params["learning_rate"] == pytest.approx(0.2)
    assert alias.structure().n_trees == 7
    assert alias.structure().max_leaves <= 8


def test_missing_values_are_allowed(adult) -> None:
    X, y = adult
    X = X.copy()
    X.loc[::7, "age"] = np.nan
    X.loc[::5, "workclass"] = np.nan
    teacher = make_teacher(**FAST).fit(X, y, task="binary")
    np.testing.assert_allclose(reconstruct(teacher, X), teacher.predict_margin(X), rtol=1e-9, atol=1e-9)
    assert np.isfinite(teacher.shap_values(X).values).all()


def test_custom_objective_takes_the_task_on_trust(california) -> None:
    X, y = california

    def squared_error(preds: np.ndarray, data: lgb.Dataset) -> tuple[np.ndarray, np.ndarray]:
        return preds - data.get_label(), np.ones_like(preds)

    booster = lgb.train({"objective": squared_error, "verbose": -1, "num_threads": 1}, lgb.Dataset(X, y), 5)
    labels = (y > np.median(y)).astype(float)
    teacher = make_teacher(model=booster).fit(X, labels, task="binary")
    assert teacher.task == "binary"
    np.testing.assert_array_equal(teacher.predict_margin(X), booster.predict(X, raw_score=True))


def test_treeshap_on_a_cuda_device_runs_on_the_cpu(adult) -> None:
    """LightGBM has no GPU TreeSHAP: a run on a CUDA device gets the CPU's values (issue 13, docs/scaling-out.md)."""
    from gbdt2nn_lightgbm.teacher import LightGBMTeacher

    X, y = adult
    teacher = LightGBMTeacher(n_estimators=10, num_threads=1).fit(X, y, task="binary")
    assert not LightGBMTeacher.treeshap_on_cuda()
    np.testing.assert_array_equal(teacher.shap_values_on(X, "cuda:0").values, teacher.shap_values(X).values)
