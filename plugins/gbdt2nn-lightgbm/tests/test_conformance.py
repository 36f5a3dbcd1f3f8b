"""The lightgbm teacher keeps the Teacher contract, is found by the registry, and its entry point stays light."""

from __future__ import annotations

from gbdt2nn_core.testing.suite import TeacherPluginTests

FAST = {"n_estimators": 20, "num_leaves": 16, "num_threads": 1}


class TestLightGBMPlugin(TeacherPluginTests):
    name = "lightgbm"
    package = "gbdt2nn_lightgbm"
    library = "lightgbm"
    teacher_class = "LightGBMTeacher"
    fast_params = FAST
