"""The catboost teacher keeps the Teacher contract, is found by the registry, and its entry point stays light."""

from __future__ import annotations

from gbdt2nn_core.testing.suite import TeacherPluginTests

FAST = {"n_estimators": 20, "depth": 4, "threads": 1}


class TestCatBoostPlugin(TeacherPluginTests):
    name = "catboost"
    package = "gbdt2nn_catboost"
    library = "catboost"
    teacher_class = "CatBoostTeacher"
    fast_params = FAST
