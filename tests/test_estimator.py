"""The scikit-learn estimators: conventions users rely on, predictions, explanations, reproducibility, save/load."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.special import expit
from sklearn import metrics as skm
from sklearn.base import clone
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

from gbdt2nn_core import (
    ConfigError,
    DataError,
    EstimatorNotFittedError,
    GBDT2NNClassifier,
    Gbdt2nnError,
    GBDT2NNRegressor,
    ModelFileError,
    UnknownComponentError,
    load_estimator,
)

pytestmark = pytest.mark.usefixtures("single_thread_torch")

TARGET = "income_gt_50k"
#: Tiny teacher and student: one thread, 10 trees, 4 groups, 3 epochs.
SMALL: dict[str, Any] = {
    "teacher_options": {"n_estimators": 10, "num_leaves": 15, "num_threads": 1},
    "student_options": {"n_groups": 4, "hidden": (16, 16), "batch_size": 128},
    "epochs": 3,
    "cache_dir": False,
}


@pytest.fixture(scope="module")
def adult_xy() -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series]:
    """1,500 training and 500 test rows of raw adult data (strings, integers); shared, do not modify."""
    from gbdt2nn_core.data import load_bundled

    frame = load_bundled("adult").frame.sample(2000, random_state=0).reset_index(drop=True)
    y = frame.pop(TARGET)
    return frame[:1500], y[:1500], frame[1500:], y[1500:]


@pytest.fixture(scope="module")
def fitted(adult_xy: Any, single_thread_torch: None) -> GBDT2NNClassifier:
    """A classifier fitted once on adult (shared: copy it before partial_fit or set_params)."""
    X, y, _, _ = adult_xy
    # 3 epochs on 1,500 rows: every row trains (no validation rows to stop on), as the AUC bound below assumes
    return GBDT2NNClassifier(**SMALL, validation_fraction=0.0).fit(X, y)


# ------------------------------------------------------------------------------------------------ conventions
def test_constructor_only_stores_parameters_and_clone_works() -> None:
    est = GBDT2NNClassifier(epochs=-5, alignment_weight=-1.0, teacher="nonsense")  # checked in fit, not here
    assert est.get_params()["epochs"] == -5
    est.set_params(epochs=7, alignment="cosine")
    assert est.epochs == 7
    assert est.alignment == "cosine"
    copy = clone(est)
    assert copy is not est
    assert copy.get_params() == est.get_params()
    assert "epochs=7" in repr(est)
    assert set(GBDT2NNRegressor().get_params()) == set(est.get_params())


def test_unfitted_estimator_raises_sklearn_and_gbdt2nn_not_fitted_errors(adult_xy: Any) -> None:
    X = adult_xy[2]
    for method in ("predict", "predict_proba", "decision_function", "explain"):
        with pytest.raises(SklearnNotFittedError) as info:
            getattr(GBDT2NNClassifier(), method)(X)
        assert isinstance(info.value, Gbdt2nnError)
        assert isinstance(info.value, EstimatorNotFittedError)
        assert str(info.value).startswith(f"GBDT2NNClassifier.{method} was called before fit; call")
        assert info.value.method == method
    with pytest.raises(SklearnNotFittedError):
        GBDT2NNRegressor().partial_fit(X, np.zeros(len(X)))
    from sklearn.utils.validation import check_is_fitted

    with pytest.raises(SklearnNotFittedError):
        check_is_fitted(GBDT2NNClassifier())


@pytest.mark.parametrize(
    ("params", "setting"),
    [
        ({"epochs": 0}, "epochs"),
        ({"alignment_weight": -1.0}, "alignment_weight"),
        ({"alignment_fraction": 0.0}, "alignment_fraction"),
        ({"threshold_bins": -3}, "threshold_bins"),
        ({"online_epochs": 0}, "online_epochs"),
        ({"online_lr": -1e-3}, "online_lr"),
        ({"online_lr": True}, "online_lr"),  # a flag where a number belongs is named, not read as 1
        ({"alignment_weight": True}, "alignment_weight"),
        ({"random_state": -1}, "random_state"),
        ({"student_options": {"epochs": 3}}, "student_options['epochs']"),
        ({"student_options": {"n_groupz": 3}}, "student_options"),
        ({"teacher_explanation": "magic"}, "teacher_explanation"),
    ],
)
def test_nonsense_parameters_fail_in_fit_with_the_setting_named(
    adult_xy: Any, params: dict[str, Any], setting: str
) -> None:
    X, y, _, _ = adult_xy
    with pytest.raises(ConfigError) as info:
        GBDT2NNClassifier(**{**SMALL, **params}).fit(X[:50], y[:50])
    assert info.value.setting == setting


def test_a_misspelt_plugin_name_fails_before_any_training(adult_xy: Any) -> None:
    X, y, _, _ = adult_xy
    with pytest.raises(UnknownComponentError, match="Did you mean 'integrated-gradients'"):
        GBDT2NNClassifier(**SMALL, attributor="integrated-gradient").fit(X, y)


# ------------------------------------------------------------------------------------------------ predictions
def test_fitted_attributes_follow_sklearn_conventions(fitted: GBDT2NNClassifier, adult_xy: Any) -> None:
    X = adult_xy[0]
    assert fitted.n_features_in_ == X.shape[1] == 14
    assert list(fitted.feature_names_in_) == list(X.columns)
    assert list(fitted.classes_) == [0, 1]
    assert fitted.task_ == "binary"
    assert fitted.teacher_name_ == "lightgbm"
    assert fitted.teacher_.n_outputs == 1
    assert fitted.student_.module.n_outputs == 1
    assert fitted.encoder_.n_columns == 14
    assert [r["phase"] for r in fitted.history_] == ["fit"] * 3
    assert all(np.isfinite(r["task_loss"]) for r in fitted.history_)
    assert fitted.history_[0]["alignment_loss"] is not None  # λ = 1 by default


def test_predictions_are_consistent_with_each_other_and_sklearn_metrics(
    fitted: GBDT2NNClassifier, adult_xy: Any
) -> None:
    _, _, X_test, y_test = adult_xy
    margin = fitted.decision_function(X_test)
    proba = fitted.predict_proba(X_test)
    assert margin.shape == (500,)
    assert proba.shape == (500, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_allclose(proba[:, 1], expit(margin), rtol=1e-6)
    np.testing.assert_array_equal(fitted.predict(X_test), fitted.classes_[(margin > 0).astype(int)])
    assert fitted.score(X_test, y_test) == pytest.approx(skm.accuracy_score(y_test, fitted.predict(X_test)))
    # the distilled student ranks far better than chance on held-out rows
    assert skm.roc_auc_score(y_test, margin) > 0.75


def test_numpy_input_and_reordered_frames_give_the_same_predictions(fitted: GBDT2NNClassifier, adult_xy: Any) -> None:
    X_test = adult_xy[2]
    expected = fitted.decision_function(X_test)
    np.testing.assert_array_equal(fitted.decision_function(X_test.to_numpy(dtype=object)), expected)
    np.testing.assert_array_equal(fitted.decision_function(X_test[X_test.columns[::-1]]), expected)
    with pytest.raises(DataError, match="lacks column"):
        fitted.decision_function(X_test.drop(columns=["age"]))


def test_rows_far_outside_the_training_range_warn_in_one_line(fitted: GBDT2NNClassifier, adult_xy: Any) -> None:
    """Hours in seconds: the student extrapolates where its teacher does not, and the API says so, like the CLI."""
    import warnings

    from gbdt2nn_core import Gbdt2nnWarning

    X_test = adult_xy[2]
    with warnings.catch_warnings():
        warnings.simplefilter("error", Gbdt2nnWarning)  # rows like the training rows: no warning
        fitted.predict_proba(X_test)
    seconds = X_test.assign(**{"hours-per-week": X_test["hours-per-week"] * 3600})
    with pytest.warns(Gbdt2nnWarning) as caught:
        fitted.predict_proba(seconds)
    messages = [str(w.message) for w in caught]
    assert any("far outside the training range" in m and "'hours-per-week'" in m for m in messages), messages
    assert all("\n" not in m for m in messages)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Gbdt2nnWarning)  # the teacher does not extrapolate: no warning for it
        fitted.teacher_margin(seconds)


def test_evaluate_reports_teacher_and_student_like_a_cli_run(fitted: GBDT2NNClassifier, adult_xy: Any) -> None:
    _, _, X_test, y_test = adult_xy
    report = fitted.evaluate(X_test, y_test)
    teacher_margin = fitted.teacher_.native_model.predict(X_test.pipe(fitted._teacher_frame), raw_score=True)
    assert report["teacher"]["test"]["auc"] == pytest.approx(skm.roc_auc_score(y_test, teacher_margin))
    assert report["student"]["test"]["auc"] == pytest.approx(
        skm.roc_auc_score(y_test, fitted.decision_function(X_test))
    )
    assert {"spearman", "cosine", "top5", "sign", "mse"} == set(report["student"]["agreement"])
    json.dumps(report)


def test_a_regressor_scores_with_r2(california_small: pd.DataFrame) -> None:
    y = california_small.pop("MedHouseVal")
    X = california_small
    params = {**SMALL, "epochs": 8, "student_options": {**SMALL["student_options"], "batch_size": 64}}
    est = GBDT2NNRegressor(**params).fit(X[:800], y[:800])
    prediction = est.predict(X[800:])
    assert prediction.shape == (200,)
    assert est.score(X[800:], y[800:]) == pytest.approx(skm.r2_score(y[800:], prediction))
    assert est.score(X[800:], y[800:]) > 0.3
    assert not hasattr(est, "classes_")
    with pytest.raises(AttributeError):
        est.predict_proba(X[800:])  # type: ignore[attr-defined]


def test_a_classifier_keeps_string_labels(adult_xy: Any) -> None:
    X, y, X_test, _ = adult_xy
    labels = np.where(y == 1, ">50K", "<=50K")
    est = GBDT2NNClassifier(**{**SMALL, "epochs": 1}).fit(X, labels)
    assert list(est.classes_) == ["<=50K", ">50K"]
    assert set(est.predict(X_test)) <= {"<=50K", ">50K"}
    with pytest.raises(DataError, match="not seen in training"):
        est.partial_fit(X[:10], ["<=50K"] * 9 + ["maybe"])


def test_a_single_class_target_is_refused(adult_xy: Any) -> None:
    X = adult_xy[0]
    with pytest.raises(DataError, match="single class"):
        GBDT2NNClassifier(**SMALL).fit(X[:50], np.ones(50))


# ------------------------------------------------------------------------------------------------ reproducibility
def test_fitting_twice_with_one_seed_gives_identical_predictions(adult_xy: Any) -> None:
    X, y, X_test, _ = adult_xy
    X, y = X[:600], y[:600]
    params = {**SMALL, "epochs": 2, "random_state": 7}
    python_state, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    first = GBDT2NNClassifier(**params).fit(X, y)
    # fit leaves the global random streams of the caller where they were
    assert random.getstate() == python_state
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])
    assert torch.equal(torch.get_rng_state(), torch_state)
    second = clone(first).fit(X, y)
    np.testing.assert_array_equal(first.decision_function(X_test), second.decision_function(X_test))
    np.testing.assert_array_equal(first.explain(X_test[:20]), second.explain(X_test[:20]))
    other = GBDT2NNClassifier(**{**params, "random_state": 8}).fit(X, y)
    assert not np.array_equal(first.decision_function(X_test), other.decision_function(X_test))


@pytest.mark.parametrize("trips", [True, False], ids=["retrains", "keeps"])
def test_alignment_check_keeps_the_student_a_fit_at_the_chosen_weight_gives(
    adult_xy: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, trips: bool
) -> None:
    import gbdt2nn_core.pipeline.distill as distill_module

    # the threshold moved so that the check trips (or never does), whatever these tiny students' losses are
    monkeypatch.setattr(distill_module, "ALIGNMENT_COST_NOTICE", -math.inf if trips else math.inf)
    X, y, X_test, _ = adult_xy
    X, y, update = X[:800], y[:800], slice(800, 900)
    params = {**SMALL, "epochs": 2}
    checked = GBDT2NNClassifier(**params, alignment_check=True).fit(X, y)
    weight = 0.1 if trips else 1.0
    alone = GBDT2NNClassifier(**params, alignment_weight=weight).fit(X, y)  # no plain student, no check
    assert checked.alignment_weight == 1.0  # a parameter stays as it was set; the kept λ is in config_
    assert checked.config_.alignment_weight == pytest.approx(weight)
    np.testing.assert_array_equal(checked.decision_function(X_test), alone.decision_function(X_test))

    out = checked.save(tmp_path / "model")
    record = json.loads((out / "config.json").read_text())["student_choices"]["alignment_check"]
    assert [tried["weight"] for tried in record["tried"]] == pytest.approx([1.0, 0.1] if trips else [1.0])
    assert all(tried["validation_cost"] is not None for tried in record["tried"])  # held-out rows compared them
    loaded = GBDT2NNClassifier.load(out)
    assert loaded.alignment_check is True
    assert loaded.config_.alignment_weight == pytest.approx(weight)
    again = loaded.save(tmp_path / "again")  # saving a loaded estimator keeps what the check did
    assert json.loads((again / "config.json").read_text())["student_choices"]["alignment_check"] == record

    # an online update aligns at the kept λ: the same update of the student fitted at that λ alone
    rows, labels = adult_xy[0][update], adult_xy[1][update]
    for estimator in (checked, alone):
        estimator.partial_fit(rows, labels, teacher_attributions=estimator.explain(rows, "teacher"))
    np.testing.assert_array_equal(checked.decision_function(X_test), alone.decision_function(X_test))


# ------------------------------------------------------------------------------------------------ explanations
def test_explain_returns_one_value_per_column_and_teacher_treeshap_is_the_boosters_own(
    fitted: GBDT2NNClassifier, adult_xy: Any
) -> None:
    X_test = adult_xy[2][:50]
    student = fitted.explain(X_test)
    assert student.shape == (50, 14)
    frame = fitted.explain(X_test, as_frame=True)
    assert list(frame.columns) == list(X_test.columns)
    assert list(frame.index) == list(X_test.index)
    np.testing.assert_array_equal(frame.to_numpy(), student)
    # structure attributions add up to f(x) - E[f] over the background sample
    background_mean = fitted.student_.predict_margin(fitted.background_).mean()
    np.testing.assert_allclose(student.sum(axis=1), fitted.decision_function(X_test) - background_mean, atol=1e-4)
    # "teacher" is LightGBM's own pred_contrib, without its expected-value column
    native = fitted.teacher_.native_model.predict(fitted._teacher_frame(X_test), pred_contrib=True)
    np.testing.assert_allclose(fitted.explain(X_test, "teacher"), native[:, :-1])
    other = fitted.explain(X_test, "gradient-x-input")
    assert other.shape == (50, 14)
    assert not np.allclose(other, student)


def test_interventional_teacher_treeshap_explains_against_the_background(
    california_small: pd.DataFrame, tmp_path: Path
) -> None:
    y = california_small.pop("MedHouseVal")
    X, X_test = california_small[:400], california_small[400:]
    params = {**SMALL, "epochs": 1, "teacher_explanation": "interventional", "background_rows": 30}
    # every training row aligned, so that the alignment target covers all of X (the default aligns a share)
    est = GBDT2NNRegressor(**params, alignment_rows=1.0, validation_fraction=0.0).fit(X, y[:400])
    assert len(est.teacher_background_) == 30
    values = est.explain(X_test[:10], "teacher")
    background_margin = est.teacher_margin(est.teacher_background_).mean()
    np.testing.assert_allclose(values.sum(axis=1), est.teacher_margin(X_test[:10]) - background_margin, atol=1e-6)
    loaded = GBDT2NNRegressor.load(est.save(tmp_path / "interventional"))
    np.testing.assert_allclose(loaded.explain(X_test[:10], "teacher"), values, atol=1e-12)


def test_training_and_explaining_use_the_same_interventional_background(
    california_small: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The alignment target and what ``explain``/``evaluate`` compare against come from one background sample."""
    from gbdt2nn_shap.attributor import ExpectedGradients

    calls: list[tuple[pd.DataFrame, pd.DataFrame, np.ndarray]] = []
    original = ExpectedGradients.explain_teacher

    def spy(self: Any, teacher: Any, X: Any, background: Any) -> Any:
        result = original(self, teacher, X, background)
        calls.append((X.copy(), background.copy(), np.asarray(result.values)))
        return result

    monkeypatch.setattr(ExpectedGradients, "explain_teacher", spy)
    y = california_small.pop("MedHouseVal")
    X = california_small[:400]
    params = {**SMALL, "epochs": 1, "teacher_explanation": "interventional", "background_rows": 30}
    # every training row aligned, so that the alignment target covers all of X (the default aligns a share);
    # cache off (SMALL): every explanation is computed here
    est = GBDT2NNRegressor(**params, alignment_rows=1.0, validation_fraction=0.0).fit(X, y[:400])
    assert len(calls) == 1  # the alignment target: the training rows
    trained_rows, trained_background, target = calls[0]
    assert len(trained_rows) == 400
    explained = est.explain(X, "teacher")
    est.evaluate(X[:50], y[:50])
    assert len(calls) == 3
    for _, background, _ in calls[1:]:
        pd.testing.assert_frame_equal(background, trained_background)
    # the very attributions the student was aligned to are what explain (and evaluate) compare against
    np.testing.assert_allclose(explained, target, atol=1e-9)
    np.testing.assert_allclose(calls[2][2], target[:50], atol=1e-9)


def test_a_teacher_component_and_sklearn_model_selection_work(adult_xy: Any) -> None:
    from sklearn.model_selection import cross_val_score

    from gbdt2nn_core import get_registry

    X, y, _, _ = adult_xy
    teacher = get_registry().teacher("xgboost", n_estimators=5, max_leaves=7, nthread=1)
    est = GBDT2NNClassifier(**{**SMALL, "epochs": 1}).fit(X[:300], y[:300], teacher=teacher)
    assert est.teacher_ is teacher
    assert est.teacher_name_ == "xgboost"  # from the booster the component holds, not the `teacher` parameter
    scores = cross_val_score(GBDT2NNClassifier(**{**SMALL, "epochs": 1}), X[:400], y[:400], cv=2)
    assert scores.shape == (2,)
    assert np.isfinite(scores).all()


# ------------------------------------------------------------------------------------------------ save / load
def test_save_and_load_give_the_same_model(fitted: GBDT2NNClassifier, adult_xy: Any, tmp_path: Path) -> None:
    X_test = adult_xy[2]
    out = fitted.save(tmp_path / "model")
    assert sorted(p.name for p in out.iterdir()) == [  # the run folder, as `gbdt2nn distill` writes it
        "background.safetensors",
        "config.json",
        "history.json",
        "student.json",
        "student.safetensors",
        "teacher.txt",
    ]
    loaded = GBDT2NNClassifier.load(out)
    assert isinstance(loaded, GBDT2NNClassifier)
    assert loaded.get_params() == {
        **fitted.get_params(),
        "student_options": {"n_groups": 4, "hidden": [16, 16], "batch_size": 128},
        "device": "cpu",  # a loaded network is on the CPU, whatever it trained on (load(path, device=...) moves it)
    }
    np.testing.assert_array_equal(loaded.predict_proba(X_test), fitted.predict_proba(X_test))
    np.testing.assert_array_equal(loaded.explain(X_test[:30]), fitted.explain(X_test[:30]))
    np.testing.assert_array_equal(loaded.explain(X_test[:30], "teacher"), fitted.explain(X_test[:30], "teacher"))
    assert list(loaded.classes_) == list(fitted.classes_)
    assert list(loaded.feature_names_in_) == list(fitted.feature_names_in_)
    assert loaded.history_ == json.loads(json.dumps(fitted.history_))
    assert isinstance(load_estimator(out), GBDT2NNClassifier)
    # nothing in the folder is a pickle
    metadata = json.loads((out / "student.json").read_text())
    assert metadata["estimator"]["class"] == "GBDT2NNClassifier"


def test_save_refuses_to_overwrite_and_load_refuses_the_wrong_task(fitted: GBDT2NNClassifier, tmp_path: Path) -> None:
    out = fitted.save(tmp_path / "model", include_teacher=False)
    assert not (out / "teacher.txt").exists()
    with pytest.raises(DataError, match="already exists"):
        fitted.save(out)
    fitted.save(out, overwrite=True, include_teacher=False)
    with pytest.raises(ModelFileError, match=r"load it with GBDT2NNClassifier\.load"):
        GBDT2NNRegressor.load(out)
    loaded = GBDT2NNClassifier.load(out)
    assert loaded.teacher_ is None
    with pytest.raises(ConfigError, match="without its teacher"):
        loaded.explain(np.zeros((1, 14)), "teacher")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]  # no staging folders left behind


def test_a_cli_run_folder_loads_as_an_estimator(adult_run: Any, tmp_path: Path) -> None:
    from gbdt2nn_core.pipeline.runfolder import write_run

    out = write_run(tmp_path / "run", adult_run)
    loaded = load_estimator(out)
    assert isinstance(loaded, GBDT2NNClassifier)
    frame = adult_run.data.test_frame
    np.testing.assert_allclose(
        loaded.decision_function(frame), adult_run.student.predict_margin(adult_run.data.z_test), rtol=1e-6
    )
    np.testing.assert_allclose(loaded.explain(frame[:5], "teacher"), adult_run.teacher.shap_values(frame[:5]).values)


def test_importing_the_package_does_not_load_torch_or_sklearn() -> None:
    code = (
        "import sys, gbdt2nn_core; "
        "assert 'torch' not in sys.modules and 'sklearn' not in sys.modules, 'heavy import'; "
        "assert 'GBDT2NNClassifier' in gbdt2nn_core.__all__; "
        "gbdt2nn_core.GBDT2NNClassifier; assert 'torch' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_python_api_guide_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``python`` block of docs/python-api.md, in order, in one namespace (as a reader would type them)."""
    import re

    guide = (Path(__file__).resolve().parent.parent / "docs" / "python-api.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", guide, flags=re.MULTILINE | re.DOTALL)
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GBDT2NN_CACHE_DIR", str(tmp_path / "cache"))
    namespace: dict[str, Any] = {}
    for number, block in enumerate(blocks, start=1):
        exec(compile(block, f"docs/python-api.md block {number}", "exec"), namespace)
    assert namespace["treeshap"].shape == (5, 14)
    assert namespace["cultivar"].explain(namespace["W_test"]).shape == (54, 3, 13)
    assert (tmp_path / "adult-student" / "student.json").is_file()
