"""The xgboost teacher keeps the Teacher contract, is found by the registry, and its entry point stays light."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from gbdt2nn_core import Registry, TeacherSpec
from gbdt2nn_core.testing import check_teacher
from gbdt2nn_xgboost.plugin import gbdt2nn_register_teachers
from gbdt2nn_xgboost.teacher import XGBoostTeacher

FAST = {"n_estimators": 20, "max_leaves": 16, "nthread": 1}


def test_hook_registers_one_teacher() -> None:
    specs = gbdt2nn_register_teachers()
    assert [spec.name for spec in specs] == ["xgboost"]
    assert isinstance(specs[0], TeacherSpec)


@pytest.mark.parametrize("save_name", ["m.json", "m.ubj"])
@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_conformance_kit(task, save_name, datasets, tmp_path) -> None:
    X, y = datasets[task]
    spec = gbdt2nn_register_teachers()[0]
    check_teacher(spec, X, y, task=task, tmp_path=tmp_path, params=FAST, save_name=save_name)


def test_registry_builds_the_teacher(monkeypatch, california) -> None:
    # Only this plugin and the core: the other plugins are tested in their own sessions.
    others = sorted({ep.name for ep in entry_points(group="gbdt2nn")} - {"xgboost"})
    monkeypatch.setenv("GBDT2NN_DISABLE_PLUGINS", ",".join(others))
    registry = Registry()
    assert "xgboost" in registry.names("teacher")
    teacher = registry.teacher("xgboost", **FAST)
    assert type(teacher) is XGBoostTeacher
    X, y = california
    teacher.fit(X, y, task="regression")
    wrapped = registry.teacher("xgboost", model=teacher.native_model).fit(X, y, task="regression")
    assert (wrapped.predict_margin(X) == teacher.predict_margin(X)).all()


def test_entry_point_does_not_import_xgboost() -> None:
    code = (
        "import sys, gbdt2nn_xgboost, gbdt2nn_xgboost.plugin as p; p.gbdt2nn_register_teachers(); "
        "assert 'xgboost' not in sys.modules, 'xgboost imported'; print(gbdt2nn_xgboost.__version__)"
    )
    source = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_package_exports_the_class_lazily() -> None:
    import gbdt2nn_xgboost

    assert gbdt2nn_xgboost.XGBoostTeacher is XGBoostTeacher
    with pytest.raises(AttributeError):
        _ = gbdt2nn_xgboost.NoSuchThing
