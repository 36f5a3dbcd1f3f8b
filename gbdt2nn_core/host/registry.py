"""The typed plugin registry: the only code in gbdt2nn that touches ``pm.hook``.

It loads the core's built-ins and every entry point of the group ``gbdt2nn`` one at a time, each in its own
``try``, so that a broken plugin is reported and skipped instead of taking the host down. Everything else asks
the registry for components by name — ``registry.teacher("lightgbm")`` — and gets concrete types back.

Set ``GBDT2NN_STRICT_PLUGINS=1`` (the test suite and CI do) to turn every plugin problem into an exception.
"""

from __future__ import annotations

import difflib
import functools
import os
import types
import warnings
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs
import pluggy

from gbdt2nn_core.errors import ConfigError, DuplicatePluginError, PluginLoadError, UnknownComponentError
from gbdt2nn_core.host import hookspecs
from gbdt2nn_core.host.interfaces import Attributor, Student, Teacher
from gbdt2nn_core.host.specs import (
    DEFAULT_FILE_SUFFIX,
    SNIFF_BYTES,
    AlignmentLossSpec,
    AttributorSpec,
    ComponentSpec,
    StudentSpec,
    TeacherSpec,
)

__all__ = [
    "KINDS",
    "ComponentRecord",
    "PluginRecord",
    "PluginWarning",
    "Registry",
    "get_registry",
    "strict_from_env",
]

STRICT_ENV = "GBDT2NN_STRICT_PLUGINS"
DISABLE_ENV = "GBDT2NN_DISABLE_PLUGINS"

Kind = Literal["teacher", "student", "attributor", "alignment loss"]

#: Each kind of component, the hook that registers it and the record type the hook must return.
KINDS: dict[Kind, tuple[str, type[ComponentSpec]]] = {
    "teacher": ("gbdt2nn_register_teachers", TeacherSpec),
    "student": ("gbdt2nn_register_students", StudentSpec),
    "attributor": ("gbdt2nn_register_attributors", AttributorSpec),
    "alignment loss": ("gbdt2nn_register_alignment_losses", AlignmentLossSpec),
}
_HOOK_NAMES = frozenset(hook for hook, _ in KINDS.values())

T = TypeVar("T")


class PluginWarning(UserWarning):
    """Issued (outside strict mode) when a plugin is skipped because it is broken."""


def strict_from_env() -> bool:
    """Whether ``GBDT2NN_STRICT_PLUGINS`` asks for plugin problems to be raised."""
    return os.environ.get(STRICT_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


@attrs.frozen(kw_only=True)
class PluginRecord:
    """What the registry knows about one plugin (an entry point, or the core's built-ins)."""

    name: str
    distribution: str
    version: str
    module: str
    status: Literal["loaded", "failed", "disabled"]
    error: str | None = None
    fix: str | None = None


@attrs.frozen(kw_only=True)
class ComponentRecord:
    """One registered component and the plugin it came from."""

    kind: Kind
    name: str
    summary: str
    plugin: str
    distribution: str
    version: str
    spec: ComponentSpec = attrs.field(repr=False, eq=False)


class Registry:
    """Discovers plugins and builds components by name.

    Parameters
    ----------
    strict:
        Raise :class:`~gbdt2nn_core.PluginLoadError` on the first broken plugin instead of warning and skipping
        it. ``None`` (the default) reads ``GBDT2NN_STRICT_PLUGINS``.
    entry_points:
        Load installed plugins from the ``gbdt2nn`` entry-point group (switch off in tests that want only
        explicitly given plugins).
    plugins:
        Extra plugin objects (modules, classes or instances with ``@hookimpl`` functions) to register, e.g. in
        tests. Each may be a ``(name, plugin)`` pair.
    """

    def __init__(
        self,
        *,
        strict: bool | None = None,
        entry_points: bool = True,
        plugins: Iterable[object | tuple[str, object]] = (),
    ) -> None:
        self.strict = strict_from_env() if strict is None else strict
        self._pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self._pm.add_hookspecs(hookspecs)
        # A list, not a dict by name: two distributions may claim one entry-point name, and the report must
        # show both (the one that loaded and the one that was refused).
        self._plugins: list[PluginRecord] = []
        self._components: dict[Kind, dict[str, list[ComponentRecord]]] = {kind: {} for kind in KINDS}

        from gbdt2nn_core.host import builtins
        from gbdt2nn_core.version import __version__

        self._add(builtins, name="gbdt2nn-core", distribution="gbdt2nn-core", version=__version__)
        if entry_points:
            disabled = {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}
            for entry_point in sorted(metadata.entry_points(group=hookspecs.PROJECT_NAME), key=lambda e: e.name):
                self._load_entry_point(entry_point, disabled)
        for item in plugins:
            name, plugin = item if isinstance(item, tuple) else (_plugin_name(item), item)
            self._add(plugin, name=name, distribution="(registered in code)", version="-")

    # ------------------------------------------------------------------ loading
    def _load_entry_point(self, entry_point: metadata.EntryPoint, disabled: set[str]) -> None:
        dist = entry_point.dist
        distribution = dist.name if dist is not None else "(unknown distribution)"
        version = dist.version if dist is not None else "?"
        # Users know a plugin by its entry-point name ('lightgbm') or by what they pip-installed.
        if entry_point.name in disabled or distribution in disabled:
            self._plugins.append(
                PluginRecord(
                    name=entry_point.name,
                    distribution=distribution,
                    version=version,
                    module=entry_point.value,
                    status="disabled",
                    fix=f"remove it from {DISABLE_ENV} to enable it",
                )
            )
            return
        try:
            plugin = entry_point.load()
        except Exception as exc:  # any failure of third-party code must be isolated from the host
            self._fail(
                name=entry_point.name,
                distribution=distribution,
                version=version,
                module=entry_point.value,
                error=f"import failed: {type(exc).__name__}: {exc}",
                fix=f"reinstall or upgrade {distribution} (pip install -U {distribution}), or uninstall it",
            )
            return
        self._add(plugin, name=entry_point.name, distribution=distribution, version=version, module=entry_point.value)

    def _add(self, plugin: object, *, name: str, distribution: str, version: str, module: str | None = None) -> None:
        module = module or _plugin_name(plugin)
        where: dict[str, str] = {"name": name, "distribution": distribution, "version": version, "module": module}
        # Checked before pluggy sees the plugin: pluggy refuses it with a bare ValueError, and cleaning up after
        # that error would unregister the *earlier* plugin.
        clash = self._clash(plugin, name)
        if clash:
            self._fail(**where, error=clash, fix="uninstall one of the two distributions, or rename the entry point")
            return
        problem = _hook_name_problem(self._pm, plugin)
        if problem:
            self._fail(**where, error=problem[0], fix=problem[1])
            return
        try:
            self._pm.register(plugin, name=name)
            self._pm.check_pending()
        except Exception as exc:  # pluggy validation errors, and anything odd the plugin does while inspected
            if self._pm.is_registered(plugin):
                self._pm.unregister(plugin)
            self._fail(
                **where,
                error=f"{type(exc).__name__}: {exc}",
                fix="mark only gbdt2nn_register_* functions with @hookimpl, without parameters (see docs/hooks.md)",
            )
            return
        collected: list[ComponentRecord] = []
        for kind, (hook_name, spec_type) in KINDS.items():
            for impl in getattr(self._pm.hook, hook_name).get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                try:
                    specs = impl.function()
                except Exception as exc:  # a hook that raises is the plugin's bug and must not stop the others
                    self._pm.unregister(plugin)
                    self._fail(
                        **where,
                        error=f"{hook_name} raised {type(exc).__name__}: {exc}",
                        fix=f"report it to the authors of {distribution}, or uninstall it",
                    )
                    return
                try:
                    records = self._validate(specs, kind, spec_type)
                except TypeError as exc:
                    self._pm.unregister(plugin)
                    self._fail(
                        **where,
                        error=f"{hook_name} {exc}",
                        fix=f"make {hook_name} return a list of {spec_type.__name__}",
                    )
                    return
                collected.extend(
                    ComponentRecord(
                        kind=kind,
                        name=spec.name,
                        summary=spec.summary,
                        plugin=name,
                        distribution=distribution,
                        version=version,
                        spec=spec,
                    )
                    for spec in records
                )
        # Only now, so that a plugin failing in its second hook leaves none of its components behind.
        for record in collected:
            self._components[record.kind].setdefault(record.name, []).append(record)
        self._plugins.append(PluginRecord(status="loaded", **where))

    def _clash(self, plugin: object, name: str) -> str | None:
        """Why an earlier plugin stops ``plugin`` from being registered under ``name``, if one does."""
        if self._pm.has_plugin(name):
            earlier = next((r for r in self._plugins if r.name == name and r.status == "loaded"), None)
            by = f" by {earlier.distribution} {earlier.version}" if earlier else ""
            return f"the plugin name {name!r} is already taken{by}"
        if self._pm.is_registered(plugin):
            return f"{_plugin_name(plugin)} is already registered as plugin {self._pm.get_name(plugin)!r}"
        return None

    @staticmethod
    def _validate(specs: object, kind: str, spec_type: type[ComponentSpec]) -> list[ComponentSpec]:
        """The records a hook returned; ``TypeError`` (text to follow the hook's name) if they are not records."""
        if specs is None:
            return []
        if not isinstance(specs, (list, tuple)):
            raise TypeError(f"returned {type(specs).__name__}, expected a list of {spec_type.__name__}")
        for spec in specs:
            if not isinstance(spec, spec_type):
                raise TypeError(
                    f"returned {_article(type(spec).__name__)} among its {kind} records, expected {spec_type.__name__}"
                )
        return list(specs)

    def _fail(self, *, name: str, distribution: str, version: str, module: str, error: str, fix: str) -> None:
        # Errors end up on one line of the CLI's output; pluggy's validation messages span several.
        error = "; ".join(line.strip() for line in error.splitlines() if line.strip())
        record = PluginRecord(
            name=name, distribution=distribution, version=version, module=module, status="failed", error=error, fix=fix
        )
        self._plugins.append(record)
        if self.strict:
            raise PluginLoadError(plugin=name, distribution=distribution, version=version, error=error, fix=fix)
        warnings.warn(
            f"gbdt2nn: skipped plugin {name!r} ({distribution} {version}): {error}; {fix}",
            PluginWarning,
            stacklevel=3,
        )

    # ------------------------------------------------------------------ queries
    def plugins(self) -> list[PluginRecord]:
        """Every plugin seen, loaded or not, in load order."""
        return list(self._plugins)

    def components(self, kind: Kind | None = None) -> list[ComponentRecord]:
        """Registered components (of one kind, or all), sorted by kind and name."""
        kinds = [kind] if kind else list(KINDS)
        return [record for k in kinds for name in sorted(self._components[k]) for record in self._components[k][name]]

    def names(self, kind: Kind) -> tuple[str, ...]:
        """The names available for a kind of component."""
        return tuple(sorted(self._components[kind]))

    def spec(self, kind: Kind, name: str) -> ComponentSpec:
        """The record registered for ``name``; raises with suggestions when there is none, or more than one."""
        records = self._components[kind].get(name)
        if not records:
            raise UnknownComponentError(kind=kind, name=name, available=self.names(kind))
        if len(records) > 1:
            raise DuplicatePluginError(
                kind=kind, name=name, plugins=tuple(f"{r.plugin} ({r.distribution} {r.version})" for r in records)
            )
        return records[0].spec

    # ------------------------------------------------------------------ teacher backends, by their models
    def teacher_suffix(self, name: str) -> str:
        """The suffix of the model file teacher ``name`` saves (``".txt"``, ``".json"``...).

        A teacher this registry does not have (a component built elsewhere) gets the spec's default, ``".model"``;
        so does one that declares no suffix.
        """
        records = self._components["teacher"].get(name)
        spec = records[0].spec if records else None
        return spec.file_suffix if isinstance(spec, TeacherSpec) else DEFAULT_FILE_SUFFIX

    def teacher_for_model(self, model: object, *, prefer: str | None = None) -> str | None:
        """The teacher whose spec ``recognises`` the in-memory ``model``; ``None`` when none does.

        When several do, ``prefer`` wins if it is one of them; otherwise a ``ConfigError`` asks to name one.
        """
        if model is None:
            return None
        matches = self._teachers_where("recognises", model)
        return _pick(matches, f"a {type(model).__name__}", prefer)

    def teacher_for_file(self, path: str | os.PathLike[str], *, prefer: str | None = None) -> str | None:
        """The teacher whose spec ``sniff`` accepts the first bytes of the file at ``path``; ``None`` when none
        does or the file cannot be read (the teacher's own loader then says what is wrong with it).

        When several do, ``prefer`` wins if it is one of them; otherwise a ``ConfigError`` asks to name one.
        """
        try:
            with Path(path).open("rb") as handle:
                head = handle.read(SNIFF_BYTES)
        except OSError:
            return None
        return _pick(self._teachers_where("sniff", head), f"the model file {str(path)!r}", prefer)

    def _teachers_where(self, test: Literal["recognises", "sniff"], subject: object) -> list[str]:
        """The teachers whose spec's ``test`` accepts ``subject``; a test that raises is the plugin's bug."""
        matches = []
        for name in self.names("teacher"):
            record = self._components["teacher"][name][0]
            check = getattr(record.spec, test)
            if check is None:
                continue
            try:
                accepted = bool(check(subject))
            except Exception as exc:  # third-party code: isolate it as when loading plugins
                error = f"TeacherSpec.{test} of teacher {name!r} raised {type(exc).__name__}: {exc}"
                fix = f"report it to the authors of {record.distribution}"
                if self.strict:
                    raise PluginLoadError(
                        plugin=record.plugin,
                        distribution=record.distribution,
                        version=record.version,
                        error=error,
                        fix=fix,
                    ) from exc
                warnings.warn(f"gbdt2nn: {error}; {fix}", PluginWarning, stacklevel=3)
                continue
            if accepted:
                matches.append(name)
        return matches

    def _build(self, kind: Kind, name: str, expected: type[T] | None, options: dict[str, Any]) -> Any:
        spec = self.spec(kind, name)
        record = self._components[kind][name][0]
        try:
            component = spec.factory(**options)
        except ImportError as exc:
            raise PluginLoadError(
                plugin=record.plugin,
                distribution=record.distribution,
                version=record.version,
                error=f"building {kind} {name!r} needs a missing package: {exc}",
                fix=f"reinstall {record.distribution} with its dependencies (pip install -U {record.distribution})",
            ) from exc
        if expected is not None and not isinstance(component, expected):
            raise PluginLoadError(
                plugin=record.plugin,
                distribution=record.distribution,
                version=record.version,
                error=f"the factory of {kind} {name!r} returned {type(component).__name__}, not a {expected.__name__}",
                fix=f"report it to the authors of {record.distribution}",
            )
        return component

    def teacher(self, name: str, **options: Any) -> Teacher:
        """Build the teacher ``name``; ``options`` (e.g. ``model=booster``, ``n_estimators=100``) go to its factory."""
        return self._build("teacher", name, Teacher, options)  # type: ignore[no-any-return]

    def student(self, name: str, **options: Any) -> Student:
        """Build the student architecture ``name``."""
        return self._build("student", name, Student, options)  # type: ignore[no-any-return]

    def attributor(self, name: str, **options: Any) -> Attributor:
        """Build the attributor ``name`` (e.g. ``"integrated-gradients"``, ``steps=32``)."""
        return self._build("attributor", name, Attributor, options)  # type: ignore[no-any-return]

    def alignment_loss(self, name: str, **options: Any) -> Callable[..., Any]:
        """Build the alignment loss ``name``: a callable ``(student_attr, teacher_attr) -> scalar tensor``."""
        loss = self._build("alignment loss", name, None, options)
        if not callable(loss):
            record = self._components["alignment loss"][name][0]
            raise PluginLoadError(
                plugin=record.plugin,
                distribution=record.distribution,
                version=record.version,
                error=f"the factory of alignment loss {name!r} returned {_article(type(loss).__name__)}, "
                "which is not callable",
                fix=f"report it to the authors of {record.distribution}",
            )
        return loss  # type: ignore[no-any-return]


def _pick(matches: list[str], what: str, prefer: str | None) -> str | None:
    """The one teacher in ``matches``, ``prefer`` among several, ``None`` for none; else a ``ConfigError``."""
    if len(matches) > 1 and prefer not in matches:
        raise ConfigError(
            setting="teacher",
            value=prefer,
            fix=f"{what} is recognised by the teachers {', '.join(matches)}; name the one to use",
        )
    if len(matches) > 1:
        return prefer
    return matches[0] if matches else None


def _article(noun: str) -> str:
    """``"a Foo"`` or ``"an AlignmentLossSpec"``."""
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def _plugin_name(plugin: object) -> str:
    return str(getattr(plugin, "__name__", None) or type(plugin).__name__)


def _hook_name_problem(pm: pluggy.PluginManager, plugin: object) -> tuple[str, str] | None:
    """``(error, fix)`` for a function that looks like a hook but that pluggy would silently ignore.

    pluggy only sees functions marked with ``@hookimpl``: a misspelled unmarked function
    (``gbdt2nn_register_teacher``) or a correctly named but unmarked one would register nothing, and the user
    would never learn why. (A marked function named without the prefix is caught by ``check_pending``.)
    """
    names = dir(plugin) if isinstance(plugin, (types.ModuleType, type)) or hasattr(plugin, "__dict__") else []
    for name in sorted(names):
        if not name.startswith(hookspecs.PROJECT_NAME + "_") or not callable(getattr(plugin, name, None)):
            continue
        if name not in _HOOK_NAMES:
            close = difflib.get_close_matches(name, sorted(_HOOK_NAMES), n=1, cutoff=0.6)
            fix = f"rename it to {close[0]!r}" if close else "rename it to one of " + ", ".join(sorted(_HOOK_NAMES))
            return f"unknown hook {name!r}", fix + " (see docs/hooks.md)"
        if pm.parse_hookimpl_opts(plugin, name) is None:
            return f"{name} is not marked as a hook", "decorate it with @gbdt2nn_core.hookimpl"
    return None


@functools.cache
def get_registry() -> Registry:
    """The process-wide registry, built on first use (call ``get_registry.cache_clear()`` to rebuild it)."""
    return Registry()
