"""The xgboost teacher keeps the Teacher contract, is found by the registry, and its entry point stays light."""

from __future__ import annotations

from gbdt2nn_core.testing.suite import TeacherPluginTests

FAST = {"n_estimators": 20, "max_leaves": 16, "nthread": 1}


class TestXGBoostPlugin(TeacherPluginTests):
    name = "xgboost"
    package = "gbdt2nn_xgboost"
    library = "xgboost"
    teacher_class = "XGBoostTeacher"
    fast_params = FAST
    save_names = ("m.json", "m.ubj")
