"""TreeSHAP on the run's device (issue 13): GPUTreeShap through the booster's ``device`` parameter, the booster left
as it was. Needs no GPU: XGBoost computes on the CPU (with a warning) when it has none, and the test checks the
values against native ``pred_contribs`` and that the CUDA device was asked for."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import xgboost as xgb

from gbdt2nn_xgboost.plugin import make_teacher
from gbdt2nn_xgboost.teacher import XGBoostTeacher

FAST = {"n_estimators": 20, "max_leaves": 16, "nthread": 1}


def _device(booster: xgb.Booster) -> str:
    return str(json.loads(booster.save_config())["learner"]["generic_param"]["device"])


@pytest.mark.parametrize("task", ["binary", "multiclass"])
def test_treeshap_on_a_cuda_device_asks_xgboost_for_it_and_restores_the_booster(
    task, datasets, monkeypatch: pytest.MonkeyPatch
) -> None:
    X, y = datasets[task]
    teacher = make_teacher(**FAST).fit(X, y, task=task)
    booster = teacher.native_model
    fingerprint = teacher.fingerprint()
    asked: list[object] = []
    set_param = xgb.Booster.set_param

    def spied(self: xgb.Booster, params: object, value: object = None) -> None:
        asked.append(params)
        set_param(self, params, value)

    monkeypatch.setattr(xgb.Booster, "set_param", spied)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # XGBoost without a GPU warns that it computes on the CPU
        on_device = teacher.shap_values_on(X, "cuda:0")
    assert {"device": "cuda:0"} in asked
    native = booster.predict(xgb.DMatrix(X, enable_categorical=True, nthread=1), pred_contribs=True)
    native = native.reshape(len(X), teacher.n_outputs, X.shape[1] + 1)
    np.testing.assert_allclose(on_device.values.reshape(native[..., :-1].shape), native[..., :-1], atol=1e-5)
    np.testing.assert_allclose(on_device.expected_value, native[0, :, -1], atol=1e-6)
    assert _device(teacher.native_model) == "cpu"
    assert teacher.fingerprint() == fingerprint


def test_treeshap_on_the_cpu_does_not_touch_the_device(adult, monkeypatch: pytest.MonkeyPatch) -> None:
    X, y = adult
    teacher = make_teacher(**FAST).fit(X, y, task="binary")
    assert XGBoostTeacher.treeshap_on_cuda()
    monkeypatch.setattr(XGBoostTeacher, "predict_contribs_cuda", lambda *a: pytest.fail("asked for the GPU"))
    np.testing.assert_array_equal(teacher.shap_values_on(X, "cpu").values, teacher.shap_values(X).values)
