"""The lightgbm teacher keeps the Teacher contract, is found by the registry, and its entry point stays light."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from gbdt2nn_core import Registry, TeacherSpec
from gbdt2nn_core.testing import check_teacher
from gbdt2nn_lightgbm.plugin import gbdt2nn_register_teachers
from gbdt2nn_lightgbm.teacher import LightGBMTeacher

FAST = {"n_estimators": 20, "num_leaves": 16, "num_threads": 1}


def test_hook_registers_one_teacher() -> None:
    specs = gbdt2nn_register_teachers()
    assert [spec.name for spec in specs] == ["lightgbm"]
    assert isinstance(specs[0], TeacherSpec)


@pytest.mark.parametrize("task", ["regression", "binary", "multiclass"])
def test_conformance_kit(task, datasets, tmp_path) -> None:
    X, y = datasets[task]
    check_teacher(gbdt2nn_register_teachers()[0], X, y, task=task, tmp_path=tmp_path, params=FAST, save_name="m.txt")


def test_registry_builds_the_teacher(monkeypatch, california) -> None:
    # Only this plugin and the core: the other plugins are tested in their own sessions.
    others = sorted({ep.name for ep in entry_points(group="gbdt2nn")} - {"lightgbm"})
    monkeypatch.setenv("GBDT2NN_DISABLE_PLUGINS", ",".join(others))
    registry = Registry()
    assert "lightgbm" in registry.names("teacher")
    teacher = registry.teacher("lightgbm", **FAST)
    assert type(teacher) is LightGBMTeacher
    X, y = california
    teacher.fit(X, y, task="regression")
    wrapped = registry.teacher("lightgbm", model=teacher.native_model).fit(X, y, task="regression")
    assert (wrapped.predict_margin(X) == teacher.predict_margin(X)).all()


def test_entry_point_does_not_import_lightgbm() -> None:
    code = (
        "import sys, gbdt2nn_lightgbm, gbdt2nn_lightgbm.plugin as p; p.gbdt2nn_register_teachers(); "
        "assert 'lightgbm' not in sys.modules, 'lightgbm imported'; print(gbdt2nn_lightgbm.__version__)"
    )
    source = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()


def test_package_exports_the_class_lazily() -> None:
    import gbdt2nn_lightgbm

    assert gbdt2nn_lightgbm.LightGBMTeacher is LightGBMTeacher
    with pytest.raises(AttributeError):
        _ = gbdt2nn_lightgbm.NoSuchThing
