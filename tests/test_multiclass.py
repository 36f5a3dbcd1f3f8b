"""Multiclass end to end on a real dataset (scikit-learn's bundled wine data, three cultivars).

A k-class booster has one tree per class per round; the student deals each class's trees into groups of its
own, so every group network adds to exactly one class margin, and every explanation is per class,
``(n, k, d)``, against per-class TreeSHAP.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.datasets import load_digits, load_wine
from sklearn.model_selection import train_test_split

from gbdt2nn_core import GBDT2NNClassifier
from gbdt2nn_core.pipeline.metrics import agreement, agreement_per_output

pytestmark = pytest.mark.usefixtures("single_thread_torch")

# Wine has 124 training rows: 20 epochs cost less than 3 epochs of the 2,000-row adult tests.
WINE: dict[str, Any] = {
    "teacher_options": {"n_estimators": 10, "num_leaves": 7, "min_child_samples": 5, "num_threads": 1},
    "student_options": {"n_groups": 6, "hidden": (16, 16), "batch_size": 32},
    "epochs": 20,
    "cache_dir": False,
}


@pytest.fixture(scope="module")
def wine() -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
    """Wine split 70/30 (stratified); labels are the cultivar names ``class_0`` ... ``class_2``."""
    data = load_wine(as_frame=True)
    labels = np.asarray(data.target_names)[data.target]
    X_train, X_test, y_train, y_test = train_test_split(
        data.data, labels, test_size=0.3, random_state=0, stratify=labels
    )
    return X_train, y_train, X_test, y_test


@pytest.fixture(scope="module")
def fitted(wine: Any, single_thread_torch: None) -> GBDT2NNClassifier:
    X_train, y_train, _, _ = wine
    return GBDT2NNClassifier(**WINE).fit(X_train, y_train)


def test_a_three_class_target_gives_a_three_output_student(fitted: GBDT2NNClassifier, wine: Any) -> None:
    _, _, X_test, y_test = wine
    assert fitted.task_ == "multiclass"
    assert list(fitted.classes_) == ["class_0", "class_1", "class_2"]
    assert fitted.teacher_.n_outputs == 3
    margin = fitted.decision_function(X_test)
    proba = fitted.predict_proba(X_test)
    assert margin.shape == proba.shape == (len(X_test), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(fitted.predict(X_test), fitted.classes_[margin.argmax(axis=1)])
    assert fitted.score(X_test, y_test) == pytest.approx(skm.accuracy_score(y_test, fitted.predict(X_test)))
    assert fitted.score(X_test, y_test) > 0.85


def test_each_group_belongs_to_one_class_and_holds_only_that_class_trees(fitted: GBDT2NNClassifier) -> None:
    ensemble = fitted.teacher_.structure()
    module = fitted.student_.module
    group_class = module.output_map.argmax(dim=1).numpy()
    assert sorted(set(group_class.tolist())) == [0, 1, 2]  # every class has groups of its own
    assert module.output_map.sum(dim=1).tolist() == [1.0] * module.n_groups
    for trees, output in zip(fitted.student_.groups_, group_class, strict=True):
        assert {ensemble.trees[t].output for t in trees} == {int(output)}
    all_trees = np.sort(np.concatenate(fitted.student_.groups_))
    np.testing.assert_array_equal(all_trees, np.arange(ensemble.n_trees))


def test_teacher_treeshap_is_per_class_and_matches_lightgbm(fitted: GBDT2NNClassifier, wine: Any) -> None:
    X_test = wine[2]
    values = fitted.explain(X_test, "teacher")
    assert values.shape == (len(X_test), 3, 13)
    # independent reference: LightGBM's own pred_contrib, laid out class by class with a bias column each
    native = fitted.teacher_.native_model.predict(X_test, pred_contrib=True).reshape(len(X_test), 3, 14)
    np.testing.assert_allclose(values, native[:, :, :13])
    np.testing.assert_allclose(values.sum(-1) + native[:, :, 13], fitted.teacher_margin(X_test), atol=1e-9)


def test_structure_attributions_are_exact_per_class_and_zero_for_columns_a_class_never_uses(
    fitted: GBDT2NNClassifier, wine: Any
) -> None:
    X_test = wine[2]
    student = fitted.explain(X_test)
    assert student.shape == (len(X_test), 3, 13)
    expected = fitted.student_.predict_margin(fitted.background_).mean(axis=0)
    np.testing.assert_allclose(student.sum(-1), fitted.decision_function(X_test) - expected, atol=1e-4)
    ensemble = fitted.teacher_.structure()
    for c in range(3):
        used = {int(f) for tree in ensemble.trees if tree.output == c for f in tree.split_features}
        unused = sorted(set(range(13)) - used)
        assert unused, "wine's small trees leave some columns out of every class"
        assert np.all(student[:, c, unused] == 0.0)
        assert np.all(fitted.explain(X_test, "teacher")[:, c, unused] == 0.0)  # as TreeSHAP


def test_explain_as_frame_has_class_and_feature_columns(fitted: GBDT2NNClassifier, wine: Any) -> None:
    X_test = wine[2][:5]
    frame = fitted.explain(X_test, as_frame=True)
    assert frame.shape == (5, 3 * 13)
    assert frame.columns.names == ["class", "feature"]
    np.testing.assert_array_equal(frame["class_1"].to_numpy(), fitted.explain(X_test)[:, 1, :])
    assert list(frame["class_2"].columns) == list(X_test.columns)


def test_agreement_is_reported_overall_and_per_class(fitted: GBDT2NNClassifier, wine: Any) -> None:
    _, _, X_test, y_test = wine
    report = fitted.evaluate(X_test, y_test)
    per_class = report["student"]["agreement_per_class"]
    assert list(per_class) == ["class_0", "class_1", "class_2"]
    every_class = report["student"]["agreement_every_class"]
    # every class explains the same rows, so the per-(row, class) averages are the means of the per-class ones
    for key in ("mse", "top5", "sign"):
        assert every_class[key] == pytest.approx(np.mean([per_class[c][key] for c in per_class]))
    student, teacher = fitted.explain(X_test), fitted.explain(X_test, "teacher")
    assert per_class["class_1"] == agreement(student[:, 1], teacher[:, 1])
    # the headline compares each row's explanation of the class the teacher predicts (its own predict_proba)
    predicted = fitted.teacher_margin(X_test).argmax(axis=1)
    rows = np.arange(len(X_test))
    assert report["student"]["agreement"] == pytest.approx(
        agreement(student[rows, predicted], teacher[rows, predicted])
    )
    assert fitted.explanation_agreement(X_test)["overall"] == pytest.approx(report["student"]["agreement"])
    assert report["teacher"]["test"]["accuracy"] > 0.9
    assert set(report["student"]["test"]) == {"logloss", "accuracy"}
    assert report["student"]["fidelity"]["label_agreement"] > 0.85
    json.dumps(report)
    with pytest.raises(ValueError, match="labels for 3 outputs"):
        agreement_per_output(student, teacher, ["a", "b"])


def test_a_multiclass_model_saves_loads_and_updates(fitted: GBDT2NNClassifier, wine: Any, tmp_path: Path) -> None:
    import copy

    X_train, y_train, X_test, _ = wine
    loaded = GBDT2NNClassifier.load(fitted.save(tmp_path / "wine"))
    assert list(loaded.classes_) == list(fitted.classes_)
    np.testing.assert_array_equal(loaded.predict_proba(X_test), fitted.predict_proba(X_test))
    np.testing.assert_array_equal(loaded.explain(X_test), fitted.explain(X_test))
    updated = copy.deepcopy(fitted).partial_fit(
        X_train, y_train, teacher_attributions=fitted.explain(X_train, "teacher")
    )
    assert updated.history_[-1]["phase"] == "partial_fit"
    assert updated.history_[-1]["alignment_loss"] is not None
    assert updated.predict_proba(X_test).shape == (len(X_test), 3)


def test_the_distill_pipeline_reports_per_class_agreement_on_digits(small_config: Any) -> None:
    from gbdt2nn_core.pipeline.distill import distill

    digits = load_digits(as_frame=True)
    frame = digits.frame.sample(600, random_state=0).rename(columns={"target": "digit"})
    run = distill(frame, "digit", small_config(student_options={"n_groups": 10}))
    metrics = run.metrics
    assert metrics["task"] == "multiclass"
    assert list(metrics["student"]["agreement_per_class"]) == [str(c) for c in range(10)]
    assert run.student.module.n_outputs == 10
    assert run.student.module.n_groups == 10  # one group per class
    json.dumps(metrics)
