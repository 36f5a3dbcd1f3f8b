"""The teacher's numbers against XGBoost's own (scikit-learn API, pred_leaf, trees_to_dataframe, config) and shap."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from gbdt2nn_core.errors import DataError
from gbdt2nn_xgboost.plugin import make_teacher

FAST = {"n_estimators": 20, "max_leaves": 16, "nthread": 1}
SKLEARN = {"n_estimators": 20, "max_leaves": 16, "n_jobs": 1, "enable_categorical": True, "tree_method": "hist"}


def matrix(X: pd.DataFrame, y: np.ndarray | None = None) -> xgb.DMatrix:
    return xgb.DMatrix(X, label=y, enable_categorical=True, nthread=1)


def reconstruct(teacher, X: pd.DataFrame) -> np.ndarray:
    ensemble = teacher.structure()
    leaves = teacher.leaf_indices(X)
    total = np.tile(ensemble.base_margin, (len(X), 1))
    for index, tree in enumerate(ensemble.trees):
        total[:, tree.output] += tree.leaf_values[leaves[:, index]]
    return total if ensemble.n_outputs > 1 else total[:, 0]


def assert_float32_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """XGBoost sums leaves in float32: allow that rounding, relative to the size of the margins."""
    scale = 1.0 + np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_wrapped_sklearn_model_matches_its_own_predictions(task, datasets) -> None:
    X, y = datasets[task]
    model = (xgb.XGBRegressor if task == "regression" else xgb.XGBClassifier)(**SKLEARN).fit(X, y)
    teacher = make_teacher(model=model).fit(X, y, task=task)
    raw = model.predict(X, output_margin=True)
    np.testing.assert_array_equal(teacher.predict_margin(X), raw)
    assert_float32_close(reconstruct(teacher, X), raw)
    contrib = model.get_booster().predict(matrix(X), pred_contribs=True)
    contrib = contrib.reshape(len(X), teacher.n_outputs, X.shape[1] + 1)
    shap = teacher.shap_values(X)
    np.testing.assert_array_equal(shap.values.reshape(contrib[..., :-1].shape), contrib[..., :-1])
    np.testing.assert_array_equal(shap.expected_value, contrib[0, :, -1])
    assert_float32_close(
        shap.values.reshape(contrib[..., :-1].shape).sum(-1) + shap.expected_value, raw.reshape(len(X), -1)
    )
    assert shap.method == "path-dependent"
    assert teacher.feature_names == tuple(X.columns)


def test_leaf_ordinals_follow_xgboosts_node_ids(adult) -> None:
    X, y = adult
    teacher = make_teacher(**FAST).fit(X, y, task="binary")
    nodes = teacher.native_model.predict(matrix(X), pred_leaf=True).astype(int)
    frame = teacher.native_model.trees_to_dataframe()
    ensemble, ordinals = teacher.structure(), teacher.leaf_indices(X)
    for index, tree in enumerate(ensemble.trees):
        leaves = frame[(frame["Tree"] == index) & (frame["Feature"] == "Leaf")].sort_values("Node")
        leaf_nodes = leaves["Node"].to_numpy()
        np.testing.assert_array_equal(leaf_nodes[ordinals[:, index]], nodes[:, index])
        np.testing.assert_allclose(tree.leaf_values, leaves["Gain"], rtol=1e-6)  # a leaf's "Gain" is its value
        splits = frame[(frame["Tree"] == index) & (frame["Feature"] != "Leaf")].sort_values("Node")
        np.testing.assert_array_equal(tree.split_features, X.columns.get_indexer(splits["Feature"]))
        np.testing.assert_allclose(tree.split_gains, splits["Gain"], rtol=1e-6)
        # numeric splits carry XGBoost's own threshold ("Split"); categorical ones are NaN
        numeric = splits["Category"].isna() if "Category" in splits else np.ones(len(splits), bool)
        np.testing.assert_allclose(
            tree.split_thresholds[np.asarray(numeric)], splits["Split"][numeric].astype(float), rtol=1e-6
        )
        assert np.isnan(tree.split_thresholds[~np.asarray(numeric)]).all()
    assert ensemble.split_rule == "<"


CASES = {
    "binary:logistic": ("binary", {}),
    "binary:logitraw": ("binary", {}),
    "binary:hinge": ("binary", {}),
    "reg:logistic": ("binary", {}),
    "reg:squarederror": ("regression", {}),
    "reg:absoluteerror": ("regression", {}),
    "reg:quantileerror": ("regression", {"quantile_alpha": 0.3}),
    "count:poisson": ("regression", {}),
    "reg:gamma": ("regression", {}),
    "reg:tweedie": ("regression", {}),
    "multi:softprob": ("multiclass", {}),
    "multi:softmax": ("multiclass", {}),
}


@pytest.mark.parametrize("objective", sorted(CASES))
def test_structure_reproduces_margins_for_every_objective(objective, datasets) -> None:
    task, extra = CASES[objective]
    X, y = datasets[task]
    teacher = make_teacher(objective=objective, **FAST, **extra).fit(X, y, task=task)
    raw = teacher.native_model.predict(matrix(X), output_margin=True)
    assert_float32_close(reconstruct(teacher, X), raw)


@pytest.mark.parametrize(
    "params",
    [
        {"booster": "dart", "rate_drop": 0.3},  # trees are scaled by their weight_drop
        {"num_parallel_tree": 3, "subsample": 0.7, "colsample_bynode": 0.7},  # several trees per class and round
        {"tree_method": "exact", "max_depth": 6, "gamma": 0.5, "grow_policy": "depthwise"},  # pruned nodes
    ],
    ids=["dart", "forest", "pruned"],
)
def test_structure_reproduces_margins_for_other_ensembles(params, wine) -> None:
    X, y = wine
    teacher = make_teacher(**{**FAST, **params}).fit(X, y, task="multiclass")
    raw = teacher.native_model.predict(matrix(X), output_margin=True)
    assert_float32_close(reconstruct(teacher, X), raw)


def test_pruned_nodes_are_not_leaves(california) -> None:
    X, y = california
    teacher = make_teacher(nthread=1, n_estimators=5, tree_method="exact", max_depth=8, gamma=2.0).fit(
        X, y, task="regression"
    )
    trees = json.loads(teacher.native_model.save_raw("json"))["learner"]["gradient_booster"]["model"]["trees"]
    assert sum(int(tree["tree_param"]["num_deleted"]) for tree in trees) > 0
    frame = teacher.native_model.trees_to_dataframe()
    for index, tree in enumerate(teacher.structure().trees):
        assert tree.n_leaves == int(((frame["Tree"] == index) & (frame["Feature"] == "Leaf")).sum())
    assert_float32_close(reconstruct(teacher, X), teacher.predict_margin(X))


def _link(objective: str, base_score: float) -> float:
    if objective in ("binary:logistic", "reg:logistic"):
        return float(np.log(base_score / (1 - base_score)))
    if objective in ("count:poisson", "reg:gamma", "reg:tweedie"):
        return float(np.log(base_score))
    return base_score


@pytest.mark.parametrize("objective", ["binary:logistic", "reg:squarederror", "count:poisson", "multi:softprob"])
def test_base_margin_is_base_score_through_the_link(objective, datasets) -> None:
    task, _ = CASES[objective]
    X, y = datasets[task]
    teacher = make_teacher(objective=objective, **FAST).fit(X, y, task=task)
    config = json.loads(teacher.native_model.save_config())["learner"]["learner_model_param"]
    # XGBoost 3 writes "[v]" or "[v0,v1,...]" (one intercept per class, already margins); older versions "v".
    scores = [float(v) for v in config["base_score"].strip("[]").split(",")]
    expected = [_link(objective, s) for s in scores] if len(scores) > 1 else [_link(objective, scores[0])]
    np.testing.assert_allclose(teacher.structure().base_margin, np.resize(expected, teacher.n_outputs), rtol=1e-5)


def test_shap_matches_the_shap_package(california) -> None:
    shap = pytest.importorskip("shap")
    X, y = california
    teacher = make_teacher(**FAST).fit(X, y, task="regression")
    explainer = shap.TreeExplainer(teacher.native_model, feature_perturbation="tree_path_dependent")
    ours = teacher.shap_values(X)
    np.testing.assert_allclose(ours.values, explainer.shap_values(X), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours.expected_value, np.ravel(explainer.expected_value), rtol=1e-5)


def test_early_stopped_model_is_cut_at_its_best_iteration(adult) -> None:
    X, y = adult
    model = xgb.XGBClassifier(**{**SKLEARN, "n_estimators": 200, "learning_rate": 0.3, "early_stopping_rounds": 3})
    model.fit(X[:300], y[:300], eval_set=[(X[300:], y[300:])], verbose=False)
    assert model.best_iteration + 1 < model.get_booster().num_boosted_rounds()
    teacher = make_teacher(model=model).fit(X, y, task="binary")
    assert teacher.structure().n_trees == model.best_iteration + 1
    np.testing.assert_array_equal(teacher.predict_margin(X), model.predict(X, output_margin=True))


@pytest.mark.parametrize("suffix", [".json", ".ubj", ".bin"])
def test_wraps_a_model_file(suffix, adult, tmp_path) -> None:
    X, y = adult
    booster = xgb.train({"objective": "binary:logistic", "nthread": 1}, matrix(X, y), 10)
    path = tmp_path / f"model{suffix}"
    path.write_bytes(booster.save_raw("json" if suffix == ".json" else "ubj"))
    for model in (path, str(path)):
        teacher = make_teacher(model=model)
        assert teacher.task == "binary"  # read from the objective before fit
        teacher.fit(X, y, task="binary")
        np.testing.assert_array_equal(teacher.predict_margin(X), booster.predict(matrix(X), output_margin=True))


def test_save_picks_the_format_from_the_suffix(california, tmp_path) -> None:
    X, y = california
    teacher = make_teacher(**FAST).fit(X, y, task="regression")
    teacher.save(tmp_path / "m.json")
    teacher.save(tmp_path / "m.ubj")
    assert json.loads((tmp_path / "m.json").read_text())["learner"]["objective"]["name"] == "reg:squarederror"
    with pytest.raises(UnicodeDecodeError):  # binary UBJSON, not text
        (tmp_path / "m.ubj").read_bytes().decode("utf-8")
    for name in ("m.json", "m.ubj"):
        reloaded = make_teacher(model=tmp_path / name).fit(X, y, task="regression")
        np.testing.assert_array_equal(reloaded.predict_margin(X), teacher.predict_margin(X))
        assert reloaded.fingerprint() == teacher.fingerprint()


def test_wrapping_copies_the_booster(california) -> None:
    X, y = california
    booster = xgb.train({"nthread": 1}, matrix(X, y), 5)
    teacher = make_teacher(model=booster).fit(X, y, task="regression")
    before, fingerprint = teacher.predict_margin(X), teacher.fingerprint()
    booster.update(matrix(X, y), iteration=5)  # the user keeps training their own booster
    assert booster.num_boosted_rounds() == 6
    np.testing.assert_array_equal(teacher.predict_margin(X), before)
    assert teacher.fingerprint() == fingerprint


def test_booster_without_names_takes_the_columns_of_fit(california) -> None:
    X, y = california
    booster = xgb.train({"nthread": 1}, xgb.DMatrix(X.to_numpy(), label=y), 5)
    assert booster.feature_names is None
    teacher = make_teacher(model=booster)
    with pytest.raises(Exception, match="first"):
        _ = teacher.feature_names
    teacher.fit(X, y, task="regression")
    assert teacher.feature_names == tuple(X.columns)
    np.testing.assert_array_equal(teacher.predict_margin(X), booster.predict(xgb.DMatrix(X.to_numpy())))
    with pytest.raises(DataError, match="'MedInc' is categorical in X but numeric"):
        make_teacher(model=booster).fit(X.assign(MedInc=X["MedInc"].astype("category")), y, task="regression")


def test_seed_controls_randomised_training(california) -> None:
    X, y = california
    params = {**FAST, "subsample": 0.5}
    first = make_teacher(**params).fit(X, y, task="regression", seed=1)
    again = make_teacher(**params).fit(X, y, task="regression", seed=1)
    other = make_teacher(**params).fit(X, y, task="regression", seed=2)
    assert first.fingerprint() == again.fingerprint()
    assert first.fingerprint() != other.fingerprint()


def test_training_defaults_and_pass_through(adult, monkeypatch) -> None:
    # The training parameters are not part of a saved model, so watch what reaches xgboost.train.
    X, y = adult
    calls: list[tuple[dict, int]] = []
    train = xgb.train

    def spy(params: dict, dtrain: xgb.DMatrix, num_boost_round: int, **kwargs: object) -> xgb.Booster:
        calls.append((dict(params), num_boost_round))
        return train(params, dtrain, num_boost_round, **kwargs)

    monkeypatch.setattr(xgb, "train", spy)
    teacher = make_teacher(nthread=1, min_child_weight=2).fit(X, y, task="binary", seed=3)
    params, rounds = calls[-1]
    assert rounds == 100
    assert teacher.native_model.num_boosted_rounds() == 100
    assert params == {
        "max_leaves": 64,
        "max_depth": 0,
        "grow_policy": "lossguide",
        "tree_method": "hist",
        "objective": "binary:logistic",
        "learning_rate": 0.1,
        "nthread": 1,
        "min_child_weight": 2,
        "seed": 3,
    }
    assert teacher.structure().max_leaves <= 64
    make_teacher(nthread=1, eta=0.2, num_boost_round=7).fit(X, y, task="multiclass")
    params, rounds = calls[-1]
    assert rounds == 7
    assert params["learning_rate"] == 0.2
    assert "eta" not in params
    assert params["objective"] == "multi:softprob"
    assert params["num_class"] == 2


def test_missing_values_and_unseen_categories_are_allowed(adult) -> None:
    X, y = adult
    teacher = make_teacher(**FAST).fit(X, y, task="binary")
    X = X.copy()
    X.loc[::7, "age"] = np.nan
    X.loc[::5, "workclass"] = np.nan
    X["occupation"] = X["occupation"].cat.add_categories(["Astronaut"])
    X.loc[::3, "occupation"] = "Astronaut"
    assert_float32_close(reconstruct(teacher, X), teacher.predict_margin(X))
    assert np.isfinite(teacher.shap_values(X).values).all()
