"""The registry: lookup by name, its error messages, and isolation of broken plugins.

Plugins here are registered in code (``Registry(entry_points=False, plugins=[...])``) so that these tests check
the mechanics whatever plugins happen to be installed; entry points are covered in ``test_plugin_discovery.py``
(and here with hand-written ``.dist-info`` folders, which need no pip).
"""

from __future__ import annotations

import importlib
import os
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from gbdt2nn_core import (
    AlignmentLoss,
    AlignmentLossSpec,
    Attributor,
    AttributorSpec,
    ConfigError,
    DuplicatePluginError,
    PluginLoadError,
    Student,
    StudentSpec,
    Teacher,
    TeacherSpec,
    UnknownComponentError,
    hookimpl,
)
from gbdt2nn_core.registry import DISABLE_ENV, STRICT_ENV, PluginRecord, PluginWarning, Registry, strict_from_env

IN_CODE = "(registered in code)"


# ---------------------------------------------------------------------------------------------- fake components
class FakeTeacher(Teacher):
    """A teacher that only remembers how it was built; the registry never calls its methods."""

    def __init__(self, model: object = None, **params: Any) -> None:
        self.model = model
        self.params = params

    task = property(lambda self: "regression")  # type: ignore[assignment]
    n_outputs = property(lambda self: 1)  # type: ignore[assignment]
    feature_names = property(lambda self: ())  # type: ignore[assignment]

    def fit(self, X: Any, y: Any, *, task: Any, seed: int = 0) -> FakeTeacher:
        return self

    def predict_margin(self, X: Any) -> Any:
        raise NotImplementedError

    def leaf_indices(self, X: Any) -> Any:
        raise NotImplementedError

    def structure(self) -> Any:
        raise NotImplementedError

    def shap_values(self, X: Any) -> Any:
        raise NotImplementedError

    def fingerprint(self) -> str:
        return "fake"

    def save(self, path: Path) -> None:
        raise NotImplementedError


class FakeStudent(Student):
    def __init__(self, **options: Any) -> None:
        self.given = options

    def fit(self, inputs: Any) -> FakeStudent:
        return self

    @property
    def module(self) -> Any:
        return lambda z: z

    @property
    def n_outputs(self) -> int:
        return 1

    @property
    def history(self) -> dict[str, Any]:
        return {"epochs": []}

    def options(self) -> dict[str, Any]:
        return dict(self.given)

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return {}, {}

    def load_state(self, description: dict[str, Any], tensors: dict[str, Any]) -> FakeStudent:
        return self


class FakeAttributor(Attributor):
    def __init__(self, **options: Any) -> None:
        self.options = options

    def attribute(self, model: Any, z: Any, *, create_graph: bool = False) -> Any:
        return z


def l1(student_attr: Any, teacher_attr: Any) -> Any:
    return abs(student_attr - teacher_attr)


# ---------------------------------------------------------------------------------------------- plugin builders
def plugin(name: str, **functions: Callable[..., Any]) -> types.ModuleType:
    """A plugin module called ``name`` holding ``functions`` under the given attribute names, like a real one."""
    module = types.ModuleType(name)
    for attribute, function in functions.items():
        setattr(module, attribute, function)
    return module


def teachers_hook(*names: str) -> Callable[[], list[TeacherSpec]]:
    @hookimpl
    def gbdt2nn_register_teachers() -> list[TeacherSpec]:
        return [TeacherSpec(name=n, factory=FakeTeacher, summary=f"fake teacher {n}") for n in names]

    return gbdt2nn_register_teachers


def losses_hook(*names: str) -> Callable[[], list[AlignmentLossSpec]]:
    @hookimpl
    def gbdt2nn_register_alignment_losses() -> list[AlignmentLossSpec]:
        return [AlignmentLossSpec(name=n, factory=lambda: l1, summary=f"fake loss {n}") for n in names]

    return gbdt2nn_register_alignment_losses


def good_plugin() -> types.ModuleType:
    """A healthy plugin registering one component of each kind (the student next to the built-in one)."""

    @hookimpl
    def gbdt2nn_register_students() -> list[StudentSpec]:
        return [StudentSpec(name="tiny", factory=FakeStudent, summary="fake student")]

    @hookimpl
    def gbdt2nn_register_attributors() -> list[AttributorSpec]:
        return [AttributorSpec(name="saliency", factory=FakeAttributor, summary="fake attributor")]

    return plugin(
        "good",
        gbdt2nn_register_teachers=teachers_hook("lightgbm", "xgboost"),
        gbdt2nn_register_students=gbdt2nn_register_students,
        gbdt2nn_register_attributors=gbdt2nn_register_attributors,
        gbdt2nn_register_alignment_losses=losses_hook("fake-l1"),
    )


def registry_with(*plugins: object, strict: bool = False) -> Registry:
    return Registry(strict=strict, entry_points=False, plugins=plugins)


def record_of(registry: Registry, name: str) -> PluginRecord:
    (record,) = [r for r in registry.plugins() if r.name == name]
    return record


# ---------------------------------------------------------------------------------------------- lookup
def test_builtin_student_is_registered_through_the_same_hook() -> None:
    registry = registry_with()
    assert "gbdt2nn" in registry.names("student")
    (builtin,) = [c for c in registry.components("student") if c.name == "gbdt2nn"]
    assert builtin.plugin == "gbdt2nn-core"
    assert builtin.distribution == "gbdt2nn-core"
    assert record_of(registry, "gbdt2nn-core").module == "gbdt2nn_core.builtins"
    assert record_of(registry, "gbdt2nn-core").status == "loaded"


def test_lookup_builds_concrete_types_with_the_given_options() -> None:
    registry = registry_with(good_plugin())

    teacher = registry.teacher("lightgbm", n_estimators=3)
    assert isinstance(teacher, FakeTeacher)
    assert teacher.params == {"n_estimators": 3}
    student = registry.student("tiny", hidden=(4,))
    assert isinstance(student, FakeStudent)
    assert student.options() == {"hidden": (4,)}
    attributor = registry.attributor("saliency", steps=8)
    assert isinstance(attributor, FakeAttributor)
    assert attributor.options == {"steps": 8}
    loss = registry.alignment_loss("fake-l1")
    assert isinstance(loss, AlignmentLoss)
    assert loss(3.0, 1.0) == 2.0


def test_components_are_listed_by_kind_and_name_with_their_origin() -> None:
    registry = registry_with(good_plugin())
    assert registry.names("teacher") == ("lightgbm", "xgboost")
    listed = [(c.kind, c.name, c.plugin, c.distribution) for c in registry.components() if c.plugin == "good"]
    assert listed == [
        ("teacher", "lightgbm", "good", IN_CODE),
        ("teacher", "xgboost", "good", IN_CODE),
        ("student", "tiny", "good", IN_CODE),
        ("attributor", "saliency", "good", IN_CODE),
        ("alignment loss", "fake-l1", "good", IN_CODE),
    ]
    # sorted by name, the core's own built-in attributor alongside the plugin's
    assert [c.name for c in registry.components("attributor")] == ["saliency", "structure"]


def test_unknown_name_says_what_is_installed_and_suggests_the_closest() -> None:
    registry = registry_with(good_plugin())
    with pytest.raises(UnknownComponentError) as info:
        registry.teacher("lightgmb")
    assert (info.value.kind, info.value.name, info.value.available) == ("teacher", "lightgmb", ("lightgbm", "xgboost"))
    assert info.value.suggestion == "lightgbm"
    assert (
        str(info.value)
        == "No teacher named 'lightgmb'. Did you mean 'lightgbm'? Installed teachers: lightgbm, xgboost."
    )


def test_unknown_name_without_a_close_match_points_to_the_plugins_command() -> None:
    registry = registry_with(good_plugin())
    with pytest.raises(UnknownComponentError) as info:
        registry.alignment_loss("cosine")
    assert info.value.suggestion is None
    assert "Installed alignment losses: fake-l1." in str(info.value)
    assert "gbdt2nn plugins" in str(info.value)


def test_duplicate_name_is_an_error_only_when_that_name_is_asked_for() -> None:
    first = plugin("first", gbdt2nn_register_alignment_losses=losses_hook("l1", "l2"))
    second = plugin("second", gbdt2nn_register_alignment_losses=losses_hook("l1"))
    registry = registry_with(first, second, strict=True)

    assert registry.alignment_loss("l2") is l1
    assert registry.names("alignment loss") == ("l1", "l2")
    with pytest.raises(DuplicatePluginError) as info:
        registry.alignment_loss("l1")
    assert (info.value.kind, info.value.name) == ("alignment loss", "l1")
    assert info.value.plugins == (f"first ({IN_CODE} -)", f"second ({IN_CODE} -)")
    assert "uninstall all but one" in str(info.value)
    assert {r.status for r in registry.plugins()} == {"loaded"}


# ---------------------------------------------------------------------------------------------- broken plugins
def _raises() -> Callable[[], Any]:
    @hookimpl
    def gbdt2nn_register_teachers() -> list[TeacherSpec]:
        raise RuntimeError("boom")

    return gbdt2nn_register_teachers


def _returns_one_record() -> Callable[[], Any]:
    @hookimpl
    def gbdt2nn_register_alignment_losses() -> AlignmentLossSpec:
        return AlignmentLossSpec(name="single", factory=lambda: l1, summary="not in a list")

    return gbdt2nn_register_alignment_losses


def _returns_wrong_record_type() -> Callable[[], Any]:
    @hookimpl
    def gbdt2nn_register_teachers() -> list[StudentSpec]:
        return [StudentSpec(name="oops", factory=FakeStudent, summary="a student where a teacher belongs")]

    return gbdt2nn_register_teachers


def _takes_a_parameter() -> Callable[..., Any]:
    @hookimpl
    def gbdt2nn_register_teachers(config: object) -> list[TeacherSpec]:
        return []

    return gbdt2nn_register_teachers


def _unmarked() -> Callable[[], list[TeacherSpec]]:
    """A fresh function each time: marking it with ``@hookimpl`` must not mark the others."""

    def register() -> list[TeacherSpec]:
        return [TeacherSpec(name="never-seen", factory=FakeTeacher, summary="registered by nobody")]

    return register


def _marked() -> Callable[[], list[TeacherSpec]]:
    return hookimpl(_unmarked())


def _fails_in_second_hook() -> dict[str, Callable[..., Any]]:
    # Teachers are collected before losses: the teacher "half-done" must not survive the loss hook's failure.
    @hookimpl
    def gbdt2nn_register_alignment_losses() -> list[AlignmentLossSpec]:
        raise ValueError("second hook broke")

    return {
        "gbdt2nn_register_teachers": teachers_hook("half-done"),
        "gbdt2nn_register_alignment_losses": gbdt2nn_register_alignment_losses,
    }


#: (functions of the broken plugin, words its error must contain, words its fix must contain)
BROKEN: dict[str, tuple[Callable[[], dict[str, Callable[..., Any]]], str, str]] = {
    "hook-raises": (
        lambda: {"gbdt2nn_register_teachers": _raises()},
        "gbdt2nn_register_teachers raised RuntimeError: boom",
        "report it to the authors",
    ),
    "returns-non-list": (
        lambda: {"gbdt2nn_register_alignment_losses": _returns_one_record()},
        "returned AlignmentLossSpec, expected a list of AlignmentLossSpec",
        "return a list of AlignmentLossSpec",
    ),
    "wrong-record-type": (
        lambda: {"gbdt2nn_register_teachers": _returns_wrong_record_type()},
        "returned a StudentSpec among its teacher records, expected TeacherSpec",
        "return a list of TeacherSpec",
    ),
    "marked-misspelled-hook": (
        lambda: {"gbdt2nn_register_teacher": _marked()},
        "unknown hook 'gbdt2nn_register_teacher'",
        "rename it to 'gbdt2nn_register_teachers'",
    ),
    "marked-hook-without-prefix": (  # only pluggy's check_pending notices this one
        lambda: {"register_teachers": _marked()},
        "unknown hook 'register_teachers'",
        "@hookimpl",
    ),
    "unmarked-misspelled-hook": (
        lambda: {"gbdt2nn_register_teacher": _unmarked()},
        "unknown hook 'gbdt2nn_register_teacher'",
        "rename it to 'gbdt2nn_register_teachers'",
    ),
    "unmarked-hook": (
        lambda: {"gbdt2nn_register_teachers": _unmarked()},
        "gbdt2nn_register_teachers is not marked as a hook",
        "decorate it with @gbdt2nn_core.hookimpl",
    ),
    "hook-with-parameter": (
        lambda: {"gbdt2nn_register_teachers": _takes_a_parameter()},
        "'config'",
        "without parameters",
    ),
    "fails-in-second-hook": (_fails_in_second_hook, "second hook broke", "report it to the authors"),
}


@pytest.fixture(params=sorted(BROKEN))
def broken(request: pytest.FixtureRequest) -> tuple[types.ModuleType, str, str]:
    functions, error, fix = BROKEN[request.param]
    return plugin("broken", **functions()), error, fix


def test_broken_plugin_is_reported_and_skipped_while_others_work(broken: tuple[types.ModuleType, str, str]) -> None:
    module, error, fix = broken
    with pytest.warns(PluginWarning) as warned:
        registry = registry_with(good_plugin(), module, strict=False)

    record = record_of(registry, "broken")
    assert record.status == "failed"
    assert record.error is not None
    assert error in record.error
    assert record.fix is not None
    assert fix in record.fix
    assert "\n" not in record.error
    (warning,) = [w for w in warned if issubclass(w.category, PluginWarning)]
    assert f"skipped plugin 'broken' ({IN_CODE} -): {record.error}; {record.fix}" in str(warning.message)
    # The healthy plugin is untouched, and nothing of the broken one leaked into the registry.
    assert record_of(registry, "good").status == "loaded"
    assert isinstance(registry.teacher("lightgbm"), FakeTeacher)
    assert {c.plugin for c in registry.components()} == {"gbdt2nn-core", "good"}


def test_broken_plugin_raises_in_strict_mode(broken: tuple[types.ModuleType, str, str]) -> None:
    module, error, fix = broken
    with pytest.raises(PluginLoadError) as info:
        registry_with(good_plugin(), module, strict=True)
    assert (info.value.plugin, info.value.distribution, info.value.version) == ("broken", IN_CODE, "-")
    assert error in info.value.error
    assert fix in info.value.fix
    assert str(info.value).startswith(f"plugin 'broken' from {IN_CODE} - failed to load: ")
    assert "\n" not in str(info.value)


def test_strict_defaults_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    broken_module = plugin("broken", gbdt2nn_register_teachers=_raises())
    monkeypatch.setenv(STRICT_ENV, "1")
    with pytest.raises(PluginLoadError):
        Registry(entry_points=False, plugins=[broken_module])
    monkeypatch.setenv(STRICT_ENV, "0")
    with pytest.warns(PluginWarning):
        assert not Registry(entry_points=False, plugins=[broken_module]).strict


@pytest.mark.parametrize(("value", "strict"), [("1", True), ("true", True), ("Yes", True), ("on", True), ("0", False)])
def test_strict_switch_values(monkeypatch: pytest.MonkeyPatch, value: str, strict: bool) -> None:
    monkeypatch.setenv(STRICT_ENV, value)
    assert strict_from_env() is strict


def test_two_plugins_with_one_plugin_name_keep_the_first() -> None:
    first = plugin("same", gbdt2nn_register_alignment_losses=losses_hook("a"))
    second = plugin("same", gbdt2nn_register_alignment_losses=losses_hook("b"))
    with pytest.warns(PluginWarning, match="already taken"):
        registry = registry_with(first, second)
    assert [r.status for r in registry.plugins() if r.name == "same"] == ["loaded", "failed"]
    assert registry.names("alignment loss") == ("a",)
    assert registry.alignment_loss("a") is l1


def test_one_plugin_registered_twice_is_reported_without_unregistering_it() -> None:
    module = plugin("twice", gbdt2nn_register_alignment_losses=losses_hook("a"))
    with pytest.warns(PluginWarning, match="already registered as plugin 'twice'"):
        registry = registry_with(("twice", module), ("again", module))
    assert record_of(registry, "twice").status == "loaded"
    assert record_of(registry, "again").status == "failed"
    assert registry.alignment_loss("a") is l1


# ---------------------------------------------------------------------------------------------- building
def test_factory_needing_a_missing_package_names_the_distribution() -> None:
    def make(model: object = None, **params: Any) -> Teacher:
        import gbdt2nn_no_such_backend  # type: ignore[import-not-found]  # noqa: F401

        raise AssertionError("unreachable")

    @hookimpl
    def gbdt2nn_register_teachers() -> list[TeacherSpec]:
        return [TeacherSpec(name="catboost", factory=make, summary="needs a package that is not installed")]

    registry = registry_with(("catboost-plugin", plugin("cb", gbdt2nn_register_teachers=gbdt2nn_register_teachers)))
    with pytest.raises(PluginLoadError) as info:
        registry.teacher("catboost")
    assert (info.value.plugin, info.value.distribution) == ("catboost-plugin", IN_CODE)
    assert "gbdt2nn_no_such_backend" in info.value.error
    assert f"pip install -U {IN_CODE}" in info.value.fix
    assert isinstance(info.value.__cause__, ImportError)


@pytest.mark.parametrize(
    ("kind", "spec_type", "build"),
    [
        ("teacher", TeacherSpec, Registry.teacher),
        ("student", StudentSpec, Registry.student),
        ("attributor", AttributorSpec, Registry.attributor),
        ("alignment loss", AlignmentLossSpec, Registry.alignment_loss),
    ],
)
def test_factory_returning_the_wrong_type_is_a_plugin_error(
    kind: str, spec_type: type[Any], build: Callable[..., Any]
) -> None:
    hook_name = {
        "teacher": "gbdt2nn_register_teachers",
        "student": "gbdt2nn_register_students",
        "attributor": "gbdt2nn_register_attributors",
        "alignment loss": "gbdt2nn_register_alignment_losses",
    }[kind]

    @hookimpl
    def hook() -> list[Any]:
        return [spec_type(name="odd", factory=lambda **_: 42, summary="builds an int")]

    registry = registry_with(plugin("odd-plugin", **{hook_name: hook}))
    with pytest.raises(PluginLoadError, match=f"the factory of {kind} 'odd' returned") as info:
        build(registry, "odd")
    assert info.value.plugin == "odd-plugin"
    assert "report it to the authors" in info.value.fix


# ---------------------------------------------------------------------------------------------- records
@pytest.mark.parametrize(
    ("fields", "error", "match"),
    [
        ({"name": "Bad Name"}, ValueError, r"name='Bad Name' is not a valid component name"),
        ({"name": "LightGBM"}, ValueError, r"name='LightGBM'"),
        ({"name": ""}, ValueError, r"name=''"),
        ({"name": "-lead"}, ValueError, r"name='-lead'"),
        ({"summary": ""}, ValueError, r"summary must be one non-empty line"),
        ({"summary": "   "}, ValueError, r"summary must be one non-empty line"),
        ({"summary": "two\nlines"}, ValueError, r"summary must be one non-empty line"),
        ({"summary": None}, ValueError, r"summary must be one non-empty line"),
        ({"factory": "not callable"}, TypeError, r"factory must be callable .* got str"),
    ],
)
@pytest.mark.parametrize("spec_type", [TeacherSpec, StudentSpec, AttributorSpec, AlignmentLossSpec])
def test_invalid_records_are_rejected_at_construction(
    spec_type: type[Any], fields: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        spec_type(**{"name": "ok", "factory": FakeStudent, "summary": "fine", **fields})


def test_records_normalise_their_summary_and_know_their_kind() -> None:
    spec = AttributorSpec(name="integrated-gradients", factory=FakeAttributor, summary="  path integral  ")
    assert spec.summary == "path integral"
    assert spec.kind == "attributor"
    assert AlignmentLossSpec(name="l1", factory=l1, summary="x").kind == "alignment loss"


# ---------------------------------------------------------------------------------------------- entry points
@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Write distributions straight into a folder on ``sys.path`` (a ``.dist-info`` is all importlib needs).

    Installed plugins are disabled so that only the distributions written here are loaded.
    """
    installed = {ep.name for ep in metadata.entry_points(group="gbdt2nn")}
    monkeypatch.setenv(DISABLE_ENV, ",".join(sorted(installed)))
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)

    def add(distribution: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
        info = tmp_path / f"{distribution.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
        lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
        (info / "entry_points.txt").write_text(f"[gbdt2nn]\n{lines}")
        for module, source in modules.items():
            (tmp_path / f"{module}.py").write_text(source)

    yield add
    # Only the modules written here: dropping anything else imported meanwhile would duplicate its classes.
    for name in set(sys.modules) - before:
        if name.startswith("gbdt2nn_site_"):
            del sys.modules[name]


_LOSS_MODULE = """
from gbdt2nn_core import AlignmentLossSpec, hookimpl

@hookimpl
def gbdt2nn_register_alignment_losses():
    return [AlignmentLossSpec(name="{name}", factory=lambda: abs, summary="absolute value")]
"""


def test_entry_point_plugin_is_loaded_with_its_distribution(site: Callable[..., None]) -> None:
    module = _LOSS_MODULE.format(name="site-abs")
    site("gbdt2nn-site-loss", "2.0.1", {"site-loss": "gbdt2nn_site_loss"}, {"gbdt2nn_site_loss": module})
    registry = Registry(strict=True)
    (component,) = registry.components("alignment loss")
    origin = (component.name, component.plugin, component.distribution, component.version)
    assert origin == ("site-abs", "site-loss", "gbdt2nn-site-loss", "2.0.1")
    assert registry.alignment_loss("site-abs") is abs
    assert record_of(registry, "site-loss").module == "gbdt2nn_site_loss"


def test_import_error_of_an_entry_point_names_distribution_and_version(site: Callable[..., None]) -> None:
    site("gbdt2nn-site-broken", "0.3.0", {"site-broken": "gbdt2nn_site_broken"}, {"gbdt2nn_site_broken": "1 / 0\n"})
    with pytest.raises(PluginLoadError) as info:
        Registry(strict=True)
    assert (info.value.plugin, info.value.distribution, info.value.version) == (
        "site-broken",
        "gbdt2nn-site-broken",
        "0.3.0",
    )
    assert info.value.error == "import failed: ZeroDivisionError: division by zero"
    assert "pip install -U gbdt2nn-site-broken" in info.value.fix

    with pytest.warns(PluginWarning, match="gbdt2nn-site-broken 0.3.0"):
        registry = Registry(strict=False)
    assert record_of(registry, "site-broken").status == "failed"
    assert record_of(registry, "site-broken").module == "gbdt2nn_site_broken"


@pytest.mark.parametrize("disable_by", ["site-broken", "gbdt2nn-site-broken"])
def test_disabled_plugin_is_listed_but_never_imported(
    site: Callable[..., None], monkeypatch: pytest.MonkeyPatch, disable_by: str
) -> None:
    site("gbdt2nn-site-broken", "0.3.0", {"site-broken": "gbdt2nn_site_broken"}, {"gbdt2nn_site_broken": "1 / 0\n"})
    monkeypatch.setenv(DISABLE_ENV, f"{disable_by} , " + os.environ[DISABLE_ENV])
    with warnings.catch_warnings():
        warnings.simplefilter("error", PluginWarning)  # a disabled plugin is no problem, strict or not
        registry = Registry(strict=True)
    record = record_of(registry, "site-broken")
    assert record.status == "disabled"
    assert (record.distribution, record.version) == ("gbdt2nn-site-broken", "0.3.0")
    assert record.fix is not None
    assert DISABLE_ENV in record.fix
    assert "gbdt2nn_site_broken" not in sys.modules


def test_two_distributions_claiming_one_entry_point_name(site: Callable[..., None]) -> None:
    site("gbdt2nn-site-a", "1.0", {"site": "gbdt2nn_site_a"}, {"gbdt2nn_site_a": _LOSS_MODULE.format(name="a")})
    site("gbdt2nn-site-b", "1.0", {"site": "gbdt2nn_site_b"}, {"gbdt2nn_site_b": _LOSS_MODULE.format(name="b")})
    with pytest.warns(PluginWarning, match="already taken by gbdt2nn-site-"):
        registry = Registry(strict=False)
    records = [r for r in registry.plugins() if r.name == "site"]
    assert sorted(r.status for r in records) == ["failed", "loaded"]
    assert len(registry.names("alignment loss")) == 1


# ---------------------------------------------------------------------------------------------- teacher backends
class ToyModel:
    """An in-memory model of a third-party library the core has never heard of."""


TOY_MAGIC = b"TOYBOOST v1\n"


def toy_plugin(name: str = "toyboost", *, recognises: Callable[[object], bool] | None = None) -> types.ModuleType:
    """A third-party teacher plugin with its own file suffix, model recogniser and file sniffer."""

    @hookimpl
    def gbdt2nn_register_teachers() -> list[TeacherSpec]:
        return [
            TeacherSpec(
                name=name,
                factory=FakeTeacher,
                summary="a third-party backend",
                file_suffix=".toy",
                recognises=recognises or (lambda model: isinstance(model, ToyModel)),
                sniff=lambda head: head.startswith(TOY_MAGIC),
            )
        ]

    return plugin(name, gbdt2nn_register_teachers=gbdt2nn_register_teachers)


def test_a_third_party_teacher_is_recognised_from_its_model_and_its_file(tmp_path: Path) -> None:
    registry = registry_with(toy_plugin(), strict=True)
    model_file = tmp_path / "model.bin"
    model_file.write_bytes(TOY_MAGIC + b"trees...")
    other_file = tmp_path / "other.bin"
    other_file.write_bytes(b"tree\nversion=v4\n")

    assert registry.teacher_suffix("toyboost") == ".toy"
    assert registry.teacher_for_model(ToyModel()) == "toyboost"
    assert registry.teacher_for_model(object()) is None
    assert registry.teacher_for_model(None) is None
    assert registry.teacher_for_file(model_file) == "toyboost"
    assert registry.teacher_for_file(str(model_file)) == "toyboost"
    assert registry.teacher_for_file(other_file) is None
    assert registry.teacher_for_file(tmp_path / "missing.bin") is None  # the teacher's loader reports it


def test_a_teacher_that_declares_nothing_gets_the_default_suffix_and_is_never_guessed(tmp_path: Path) -> None:
    spec = TeacherSpec(name="plain", factory=FakeTeacher, summary="declares no suffix, recogniser or sniffer")
    assert (spec.file_suffix, spec.recognises, spec.sniff) == (".model", None, None)

    @hookimpl
    def gbdt2nn_register_teachers() -> list[TeacherSpec]:
        return [spec]

    registry = registry_with(plugin("plain", gbdt2nn_register_teachers=gbdt2nn_register_teachers), strict=True)
    (tmp_path / "model").write_bytes(b"anything")
    assert registry.teacher_suffix("plain") == ".model"
    assert registry.teacher_suffix("not-registered") == ".model"
    assert registry.teacher_for_model(ToyModel()) is None
    assert registry.teacher_for_file(tmp_path / "model") is None


def test_two_teachers_recognising_one_model_need_a_choice(tmp_path: Path) -> None:
    registry = registry_with(toy_plugin("toy-a"), toy_plugin("toy-b"), strict=True)
    assert registry.teacher_for_model(ToyModel(), prefer="toy-b") == "toy-b"
    with pytest.raises(ConfigError, match=r"a ToyModel is recognised by the teachers toy-a, toy-b; name the one"):
        registry.teacher_for_model(ToyModel(), prefer="lightgbm")
    model_file = tmp_path / "m.toy"
    model_file.write_bytes(TOY_MAGIC)
    assert registry.teacher_for_file(model_file, prefer="toy-a") == "toy-a"
    with pytest.raises(ConfigError, match="is recognised by the teachers toy-a, toy-b"):
        registry.teacher_for_file(model_file)


def test_a_recogniser_that_raises_is_the_plugins_bug() -> None:
    def broken(model: object) -> bool:
        raise RuntimeError("boom")

    strict = registry_with(toy_plugin(recognises=broken), strict=True)
    with pytest.raises(PluginLoadError, match=r"TeacherSpec.recognises of teacher 'toyboost' raised RuntimeError"):
        strict.teacher_for_model(ToyModel())
    lenient = registry_with(toy_plugin(recognises=broken))
    with pytest.warns(PluginWarning, match="boom"):
        assert lenient.teacher_for_model(ToyModel()) is None


@pytest.mark.parametrize("suffix", ["txt", ".", "../x", ".a/b", ""])
def test_a_file_suffix_must_be_a_suffix(suffix: str) -> None:
    with pytest.raises(ValueError, match="file_suffix must be a file suffix"):
        TeacherSpec(name="t", factory=FakeTeacher, summary="s", file_suffix=suffix)


# A third-party backend, "ToyBoost", whose model objects and files the core has never heard of. (It reuses the
# LightGBM teacher's machinery under its own model type and file format, to stay small.)
_TOY_MODULE = '''
import lightgbm as lgb

from gbdt2nn_core import ModelFileError, TeacherSpec, hookimpl
from gbdt2nn_core.model_files import read_model_file
from gbdt2nn_lightgbm.teacher import LightGBMTeacher

MAGIC = b"TOYBOOST 1\\n"


class ToyModel:
    """ToyBoost's own model object."""

    def __init__(self, booster):
        self.booster = booster


class ToyTeacher(LightGBMTeacher):
    library = "ToyBoost"

    def copy_model(self, model):
        return super().copy_model(model.booster) if isinstance(model, ToyModel) else None

    def load_model_file(self, path):
        data = read_model_file(path)
        if not data.startswith(MAGIC):
            raise ModelFileError(path=str(path), problem="not a ToyBoost model", fix="save it again")
        return lgb.Booster(model_str=data[len(MAGIC):].decode())

    def model_bytes(self, booster, *, suffix=""):
        return MAGIC + super().model_bytes(booster, suffix=suffix)


@hookimpl
def gbdt2nn_register_teachers():
    return [
        TeacherSpec(
            name="toyboost",
            factory=ToyTeacher,
            summary="ToyBoost models",
            file_suffix=".toy",
            recognises=lambda model: isinstance(model, ToyModel),
            sniff=lambda head: head.startswith(MAGIC),
        )
    ]
'''


def test_an_installed_third_party_teacher_is_used_saved_and_reloaded_by_the_estimator(
    site: Callable[..., None], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    pytest.importorskip("gbdt2nn_lightgbm")  # the core-alone session has no LightGBM
    import lightgbm as lgb
    import numpy as np

    from gbdt2nn_core import GBDT2NNRegressor, get_registry
    from gbdt2nn_core.data import load_bundled

    site(
        "gbdt2nn-site-toyboost", "0.1.0", {"toyboost": "gbdt2nn_site_toyboost"}, {"gbdt2nn_site_toyboost": _TOY_MODULE}
    )
    monkeypatch.delenv(DISABLE_ENV)  # the installed plugins too: the estimator's default loss is one of them
    get_registry.cache_clear()
    try:
        toy = importlib.import_module("gbdt2nn_site_toyboost")
        frame = load_bundled("california").frame.head(400)
        y = frame.pop("MedHouseVal").to_numpy()
        X, X_test = frame[:300], frame[300:]
        booster = lgb.train({"num_leaves": 7, "num_threads": 1, "verbose": -1}, lgb.Dataset(X, y[:300]), 5)
        own = booster.predict(X_test, raw_score=True)
        student: dict[str, Any] = {"student_options": {"n_groups": 2, "hidden": (8, 8)}, "epochs": 1}

        # in memory: the default teacher is "lightgbm", which could not wrap a ToyModel
        estimator = GBDT2NNRegressor(**student, cache_dir=False).fit(X, y[:300], teacher=toy.ToyModel(booster))
        np.testing.assert_allclose(estimator.teacher_margin(X_test), own, rtol=1e-6, atol=1e-6)
        estimator.save(tmp_path / "model")
        saved = tmp_path / "model" / "teacher.toy"  # the suffix the spec declares
        assert saved.read_bytes().startswith(toy.MAGIC)
        reloaded = GBDT2NNRegressor.load(tmp_path / "model")
        np.testing.assert_allclose(reloaded.teacher_margin(X_test), own, rtol=1e-6, atol=1e-6)

        # as a file: "lightgbm" would refuse it (it does not start with a tree); the sniffer picks toyboost
        from_file = GBDT2NNRegressor(**student, cache_dir=False).fit(X, y[:300], teacher=str(saved))
        np.testing.assert_allclose(from_file.teacher_margin(X_test), own, rtol=1e-6, atol=1e-6)
    finally:
        get_registry.cache_clear()
