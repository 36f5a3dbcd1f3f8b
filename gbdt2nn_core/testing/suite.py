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
names the suffix of the files the teacher saves, that importing the entry point stays cheap, and the one-line
errors every teacher owes its users: bad labels, bad frames, and a teacher used before ``fit``.
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

from gbdt2nn_core.errors import ConfigError, DataError, Gbdt2nnError, NotFittedError
from gbdt2nn_core.host.interfaces import TASKS, Task, Teacher
from gbdt2nn_core.host.registry import DISABLE_ENV, Registry
from gbdt2nn_core.host.specs import TeacherSpec
from gbdt2nn_core.testing._teacher import check_teacher

__all__ = ["TeacherPluginTests"]

Data = tuple[pd.DataFrame, np.ndarray]

_BAD_LABELS: list[tuple[Task, Any, str]] = [
    ("regression", lambda y: np.where(np.arange(len(y)) == 3, np.nan, y), "NaN"),
    ("regression", lambda y: np.where(np.arange(len(y)) == 3, np.inf, y), "infinite"),
    ("regression", lambda y: y[:-1], "labels for"),
    ("regression", lambda y: y.reshape(-1, 2), "shape"),
    ("binary", lambda y: np.zeros_like(y), "only class 0"),
    ("binary", lambda y: np.ones_like(y), "only class 1"),
    ("binary", lambda y: y * 2, "0 or 1"),
    ("binary", lambda y: y - 0.5, "non-negative integers"),
    ("binary", lambda y: np.where(y > 0, "yes", "no"), "dtype"),
    ("multiclass", lambda y: y + 0.5, "non-negative integers"),
    ("multiclass", lambda y: y / 2, "non-negative integers"),
    ("multiclass", lambda y: y - 1, "non-negative integers"),
]
_BAD_FRAMES: list[tuple[Any, str]] = [
    (lambda X: X.to_numpy(), "not a pandas DataFrame"),
    (lambda X: X.iloc[:0], "empty"),
    (lambda X: X.iloc[:, :0], "empty"),
    (lambda X: X.assign(MedInc=X["MedInc"].astype(str)), "neither numeric nor categorical"),
    (lambda X: X.assign(MedInc=X["MedInc"].astype(object)), "neither numeric nor categorical"),
    (lambda X: X.set_axis([0, *X.columns[1:]], axis=1), "not strings"),
    (lambda X: X.set_axis(["A", "A", *X.columns[2:]], axis=1), "duplicate"),
]
_NEED_MODEL = ("predict_margin", "leaf_indices", "shap_values", "structure", "fingerprint", "save")


def _one_line(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text, f"the error spans several lines: {text!r}"
    return text


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

    def fast_teacher(self) -> Teacher:
        teacher = self.spec().factory(**self.fast_params)
        assert isinstance(teacher, Teacher)
        return teacher

    @pytest.mark.parametrize(("task", "labels", "words"), _BAD_LABELS)
    def test_bad_labels_raise_data_error(
        self, task: Task, labels: Any, words: str, datasets: Mapping[str, Data]
    ) -> None:
        X, y = datasets[task]
        with pytest.raises(DataError) as caught:
            self.fast_teacher().fit(X, labels(np.asarray(y, dtype=np.float64)), task=task)
        assert words in _one_line(caught.value)
        assert caught.value.fix

    @pytest.mark.parametrize(("frame", "words"), _BAD_FRAMES)
    def test_bad_frames_raise_data_error(self, frame: Any, words: str, california: Data) -> None:
        X, y = california
        with pytest.raises(DataError) as caught:
            self.fast_teacher().fit(frame(X), y, task="regression")
        assert words in _one_line(caught.value)

    @pytest.mark.parametrize("task", ["ranking", "classification"])
    def test_an_unknown_task_raises_config_error(self, task: str, california: Data) -> None:
        X, y = california
        with pytest.raises(ConfigError) as caught:
            self.fast_teacher().fit(X, y, task=task)  # type: ignore[arg-type]
        assert caught.value.setting == "task"
        _one_line(caught.value)

    @pytest.mark.parametrize("method", _NEED_MODEL)
    def test_using_an_unfitted_teacher_says_to_fit(self, method: str, california: Data, tmp_path: Path) -> None:
        X, _ = california
        teacher = self.spec().factory()
        arguments = {"save": (tmp_path / f"m{self.spec().file_suffix}",), "structure": (), "fingerprint": ()}
        with pytest.raises(NotFittedError, match=r"fit\(X, y, task=\.\.\.\) first") as caught:
            getattr(teacher, method)(*arguments.get(method, (X,)))
        assert (caught.value.component, caught.value.method) == (self.teacher_class, method)
        assert isinstance(caught.value, ConfigError)  # callers that catch configuration errors still catch it
        assert isinstance(caught.value, Gbdt2nnError)
        with pytest.raises(NotFittedError, match="first"):
            _ = teacher.task
        assert not list(tmp_path.iterdir())  # save wrote nothing

    def test_package_exports_the_class_lazily(self) -> None:
        package = importlib.import_module(self.package)
        teacher_module = importlib.import_module(f"{self.package}.teacher")
        assert getattr(package, self.teacher_class) is getattr(teacher_module, self.teacher_class)
        with pytest.raises(AttributeError):
            _ = package.NoSuchThing
