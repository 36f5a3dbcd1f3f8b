"""Threaded, chunked TreeSHAP of the booster teachers against one native single-threaded call.

The reference is the library itself, called directly on all rows at once on one thread (LightGBM
``predict(pred_contrib=True, num_threads=1)``, XGBoost ``predict(pred_contribs=True)`` with ``nthread=1``).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gbdt2nn_core.data import Dataset, TabularSchema, TargetEncoder, split_features_target
from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.host.registry import Registry
from gbdt2nn_core.kit.booster_teacher import BoosterTeacher, ShapProgress, available_cores

THREAD_OPTION = {"lightgbm": {"num_threads": 1}, "xgboost": {"nthread": 1}}


def _teacher(adult_dataset: Dataset, backend: str, task: str) -> tuple[Any, pd.DataFrame]:
    frame = adult_dataset.frame.sample(700, random_state=4).reset_index(drop=True)
    features, target = split_features_target(frame, adult_dataset.target)
    features["age"] = features["age"].astype(float).where(np.arange(len(features)) % 7 != 0)  # missing numbers
    if task == "multiclass":
        target = pd.Series(np.digitize(features["hours-per-week"], [35, 45]), name="hours")
        features = features.drop(columns="hours-per-week")
    X = TabularSchema.infer(features).to_frame(features)
    y = TargetEncoder.fit(target, task).transform(target)  # type: ignore[arg-type]
    teacher = Registry().teacher(backend, n_estimators=15, **THREAD_OPTION[backend])
    teacher.fit(X, y, task=task, seed=0)  # type: ignore[arg-type]
    return teacher, X


def _native_single_call(teacher: Any, X: pd.DataFrame) -> np.ndarray:
    """``(n, k, d + 1)`` contributions from one call of the library on one thread."""
    booster = teacher.native_model
    if type(teacher).__name__ == "LightGBMTeacher":
        raw = booster.predict(X, pred_contrib=True, num_threads=1)
    else:
        import xgboost as xgb

        booster.set_param({"nthread": 1})
        raw = booster.predict(xgb.DMatrix(X, enable_categorical=True, nthread=1), pred_contribs=True)
    return np.asarray(raw, dtype=np.float64).reshape(len(X), teacher.n_outputs, -1)


@pytest.mark.parametrize("backend", ["lightgbm", "xgboost"])
@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_chunked_threaded_values_equal_one_single_threaded_native_call(
    adult_dataset: Dataset, backend: str, task: str
) -> None:
    teacher, X = _teacher(adult_dataset, backend, task)
    assert isinstance(teacher, BoosterTeacher)
    reports: list[ShapProgress] = []
    shap = teacher.shap_values(X, threads=2, chunk_rows=256, progress=reports.append)
    reference = _native_single_call(teacher, X)
    values = shap.values if teacher.n_outputs > 1 else shap.values[:, None, :]
    assert values.shape == reference[:, :, :-1].shape
    np.testing.assert_allclose(values, reference[:, :, :-1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(shap.expected_value, reference[0, :, -1], rtol=0, atol=1e-6)
    # additivity against the teacher's own margins: the chunks were put back in row order (XGBoost's margins
    # are float32, hence 1e-5 here)
    margin = teacher.predict_margin(X).reshape(len(X), -1)
    np.testing.assert_allclose(values.sum(-1) + shap.expected_value, margin, rtol=0, atol=1e-5)
    assert [r.rows_done for r in reports] == [256, 512, 700]
    assert all(r.rows_total == 700 and r.threads == 2 and r.rows_per_second > 0 for r in reports)


def test_lightgbm_receives_the_thread_count(adult_dataset: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    import lightgbm as lgb

    teacher, X = _teacher(adult_dataset, "lightgbm", "binary")
    seen: list[object] = []
    original = lgb.Booster.predict

    def spy(self: lgb.Booster, data: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("num_threads"))
        return original(self, data, *args, **kwargs)

    monkeypatch.setattr(lgb.Booster, "predict", spy)
    teacher.shap_values(X, chunk_rows=400)
    assert seen == [available_cores(), available_cores()]  # default: every usable core, set explicitly per chunk


def test_xgboost_thread_setting_is_restored_after_the_call(adult_dataset: Dataset) -> None:
    teacher, X = _teacher(adult_dataset, "xgboost", "binary")
    fingerprint = teacher.fingerprint()

    def nthread() -> str:
        return str(json.loads(teacher.native_model.save_config())["learner"]["generic_param"]["nthread"])

    before = nthread()
    teacher.shap_values(X, threads=2)
    assert nthread() == before
    assert teacher.fingerprint() == fingerprint


@pytest.mark.parametrize(("setting", "value"), [("threads", 0), ("chunk_rows", -5), ("threads", 1.5)])
def test_bad_thread_or_chunk_settings_are_config_errors(adult_dataset: Dataset, setting: str, value: object) -> None:
    teacher, X = _teacher(adult_dataset, "lightgbm", "binary")
    with pytest.raises(ConfigError, match=setting) as raised:
        teacher.shap_values(X, **{setting: value})
    assert raised.value.setting == setting
