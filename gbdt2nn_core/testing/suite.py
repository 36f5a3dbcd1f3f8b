"""A ready-made test class for teacher plugins: subclass it, set five attributes, and pytest runs the suite.

In your plugin's ``tests/test_conformance.py`` (the ``adult``, ``california`` and ``datasets`` fixtures come from
:mod:`gbdt2nn_core.testing.fixtures`, imported in your ``conftest.py``)::

    from gbdt2nn_core.testing.suite import TeacherPluginTests


    class TestMyBoost(TeacherPluginTests):
        name = "myboost"  # the registered teacher name
        package = "gbdt2nn_myboost"  # the plugin's import package (with a plugin and a teacher module)
        library = "myboost"  # the tree library, which the entry point must not import
        teacher_class = "MyBoostTeacher"  # exported lazily by the package
        fast_params = {"n_estimators": 20, "max_leaves": 16}

It checks the :func:`~gbdt2nn_core.testing.check_teacher` contract on a real dataset of each task, that the
registry builds and wraps the teacher, that the spec recognises the library's models and model files and
names the suffix of the files the teacher saves, and that importing the entry point stays cheap.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest

from gbdt2nn_core.interfaces import TASKS, Task
from gbdt2nn_core.registry import DISABLE_ENV, Registry
from gbdt2nn_core.specs import TeacherSpec
from gbdt2nn_core.testing._teacher import check_teacher

__all__ = ["TeacherPluginTests"]

Data = tuple[pd.DataFrame, np.ndarray]


class TeacherPluginTests:
    """The tests every teacher plugin should pass; see the module docstring for how to use it."""

    #: The name the plugin registers the teacher under.
    name: ClassVar[str]
    #: The plugin's import package; its ``plugin`` module holds ``gbdt2nn_register_teachers``.
    package: ClassVar[str]
    #: The import name of the tree library (the entry point must not import it).
    library: ClassVar[str]
    #: The teacher class the package exports lazily.
    teacher_class: ClassVar[str]
    #: Training options for a small, fast teacher.
    fast_params: ClassVar[Mapping[str, Any]]
    #: File names the conformance kit saves to (default: ``"m"`` with the spec's suffix).
    save_names: ClassVar[tuple[str, ...]] = ()

    def spec(self) -> TeacherSpec:
        specs = importlib.import_module(f"{self.package}.plugin").gbdt2nn_register_teachers()
        assert [spec.name for spec in specs] == [self.name], f"the hook registers {specs}, not one {self.name!r}"
        assert isinstance(specs[0], TeacherSpec)
        return specs[0]

    def registry(self, monkeypatch: pytest.MonkeyPatch) -> Registry:
        """A registry with only this plugin and the core: the other plugins are tested in their own sessions."""
        others = sorted({ep.name for ep in entry_points(group="gbdt2nn")} - {self.name})
        monkeypatch.setenv(DISABLE_ENV, ",".join(others))
        return Registry()

    def test_hook_registers_one_teacher(self) -> None:
        self.spec()

    @pytest.mark.parametrize("task", TASKS)
    def test_conformance_kit(self, task: Task, datasets: Mapping[str, Data], tmp_path: Path) -> None:
        X, y = datasets[task]
        spec = self.spec()
        for save_name in self.save_names or (f"m{spec.file_suffix}",):
            folder = tmp_path / save_name
            folder.mkdir()
            check_teacher(spec, X, y, task=task, tmp_path=folder, params=self.fast_params, save_name=save_name)

    def test_registry_builds_and_wraps_the_teacher(self, monkeypatch: pytest.MonkeyPatch, california: Data) -> None:
        registry = self.registry(monkeypatch)
        assert self.name in registry.names("teacher")
        teacher = registry.teacher(self.name, **self.fast_params)
        assert type(teacher).__name__ == self.teacher_class
        X, y = california
        teacher.fit(X, y, task="regression")
        wrapped = registry.teacher(self.name, model=teacher.native_model).fit(X, y, task="regression")
        assert (wrapped.predict_margin(X) == teacher.predict_margin(X)).all()

    def test_the_spec_recognises_the_librarys_models_and_files(
        self, monkeypatch: pytest.MonkeyPatch, california: Data, tmp_path: Path
    ) -> None:
        registry = self.registry(monkeypatch)
        X, y = california
        teacher = registry.teacher(self.name, **self.fast_params).fit(X, y, task="regression")
        assert registry.teacher_for_model(teacher.native_model) == self.name
        assert registry.teacher_for_model(X) is None
        path = tmp_path / f"teacher{registry.teacher_suffix(self.name)}"
        teacher.save(path)
        assert registry.teacher_for_file(path) == self.name
        (tmp_path / "data.csv").write_text(X.to_csv(index=False))
        assert registry.teacher_for_file(tmp_path / "data.csv") is None

    def test_entry_point_does_not_import_the_library(self) -> None:
        code = (
            f"import sys, {self.package}, {self.package}.plugin as p; p.gbdt2nn_register_teachers(); "
            f"assert {self.library!r} not in sys.modules, '{self.library} imported'; print({self.package}.__version__)"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), check=False
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip()

    def test_package_exports_the_class_lazily(self) -> None:
        package = importlib.import_module(self.package)
        teacher_module = importlib.import_module(f"{self.package}.teacher")
        assert getattr(package, self.teacher_class) is getattr(teacher_module, self.teacher_class)
        with pytest.raises(AttributeError):
            _ = package.NoSuchThing
