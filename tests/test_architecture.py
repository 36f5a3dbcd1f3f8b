"""The layout shows the architecture: layers import only downward, no import cycles, no reaching into privates.

Every module of ``gbdt2nn_core`` is parsed with :mod:`ast` (nothing is imported), and each ``import`` and
``from ... import`` becomes an edge of the module graph, wherever it sits: an import inside a function (a lazy
import) runs sooner or later and counts like any other. An import under ``if TYPE_CHECKING:`` never runs, so it
is left out of the cycle check (it cannot deadlock an import) but counts for layers and private names: a type
from a higher layer is still a dependency on that layer. A module imported by name at run time (a string that is
its whole dotted name, as in the package's table of lazily loaded names, or an f-string naming a family of
modules, as the CLI loads its commands) is an edge too.

An edge goes to the module the statement names: ``from gbdt2nn_core.student import _layers`` is an edge to
``gbdt2nn_core.student._layers`` (a submodule), ``from gbdt2nn_core.student import GBDT2NNStudent`` one to the
package ``gbdt2nn_core.student``. The parent packages Python initialises along the way are not edges: a
package's ``__init__`` importing its own submodules to re-export them is fine, unless a submodule names the
package back, which is then reported as the cycle it is.

Run ``python tests/test_architecture.py`` to print every violation at once.
"""

from __future__ import annotations

import ast
import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import attrs

import gbdt2nn_core

PACKAGE = "gbdt2nn_core"
ROOT = Path(gbdt2nn_core.__file__).resolve().parent

#: The layers, lowest first: a module may import its own layer and those below it, never one above. A module's
#: layer is named by its first dotted part below ``gbdt2nn_core`` (``gbdt2nn_core.host.registry`` -> ``host``),
#: so the table lists subpackages (or single modules). Adding a layer or moving a subpackage is an edit here.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    # Leaf modules every layer may use: errors, settings validators, progress reporting, reading a config file,
    # writing files safely.
    ("foundation", frozenset({"errors", "validators", "progress", "config_file", "model_files", "version"})),
    # The plugin contract and its host: hook specs, component records, interfaces, registry, built-ins.
    ("plugin host", frozenset({"host"})),
    # What a plugin author builds on: the teacher base class, input checks, attribution and loss helpers.
    ("plugin-author kit", frozenset({"kit"})),
    ("data", frozenset({"data"})),
    ("student", frozenset({"student"})),
    ("pipeline", frozenset({"pipeline"})),
    ("experiment", frozenset({"experiment"})),
    # The package itself re-exports the public API from the layers below.
    ("public API", frozenset({""})),
    # The conformance tests plugins run: they may use anything, and nothing in the library may use them.
    ("plugin tests", frozenset({"testing"})),
    ("cli", frozenset({"cli"})),
)
#: Upward imports accepted on purpose: (importer, imported module) -> why. Each entry is a decision someone can
#: read; keep it empty where the import can move instead.
ALLOWED_UPWARD: dict[tuple[str, str], str] = {
    # The core eats its own food: its built-in plugin (the GBDT2NN student, the structure attributor) is registered
    # through the same hooks as a third-party one, by the registry when it is built, lazily, so that a registry
    # built without entry points (tests, embedders) still has the core's own components.
    ("gbdt2nn_core.host.builtins", "gbdt2nn_core.student"): "the registry registers the core's own plugin",
    ("gbdt2nn_core.host.builtins", "gbdt2nn_core.student.structure"): "the registry registers the core's own plugin",
}
LAYER_OF: dict[str, int] = {part: rank for rank, (_, parts) in enumerate(LAYERS) for part in parts}
LAYER_NAMES = [name for name, _ in LAYERS]


@attrs.frozen(kw_only=True)
class Import:
    """One import statement's edge: ``importer`` names ``target`` (a module of the package), at ``line``."""

    importer: str
    target: str
    #: The names it takes from ``target`` (``from target import a, b``); empty for ``import target``.
    names: tuple[str, ...]
    line: int
    #: Under ``if TYPE_CHECKING:``: read by type checkers only, never run.
    type_only: bool

    def where(self) -> str:
        return f"{self.importer}:{self.line}"


def _module_files() -> dict[str, Path]:
    """Every module of the package by dotted name; a package by its own name (its ``__init__.py``)."""
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST, *, type_only: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under ``tree`` (functions and classes included), flagged when type-checking only."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, type_only
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                yield from _import_nodes(ast.Module(body=[child], type_ignores=[]), type_only=True)
            for child in node.orelse:
                yield from _import_nodes(ast.Module(body=[child], type_ignores=[]), type_only=type_only)
        else:
            yield from _import_nodes(node, type_only=type_only)


def _known(dotted: str) -> str | None:
    """The longest prefix of ``dotted`` that is a module of the package (``a.b.name`` -> ``a.b``), if any."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return None


def _absolute(importer: str, node: ast.ImportFrom) -> str:
    """The absolute module a ``from`` statement names, relative ones resolved against ``importer``."""
    if node.level == 0:
        return node.module or ""
    base = importer.split(".")
    if not _is_package(importer):
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _named_modules(tree: ast.AST) -> Iterator[tuple[str, int]]:
    """Modules imported by name at run time: a string that is a module's whole name (``_LAZY`` tables,
    ``import_module("gbdt2nn_core.x")``), and f-strings such as ``f"gbdt2nn_core.cli.{name}_cmd"``, which
    name every module they can match (each ``{...}`` matches one identifier)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in MODULES:
            yield node.value, node.lineno
        elif isinstance(node, ast.JoinedStr) and node.values:
            first = node.values[0]
            if not (isinstance(first, ast.Constant) and str(first.value).startswith(PACKAGE + ".")):
                continue
            pattern = "".join(
                re.escape(str(part.value)) if isinstance(part, ast.Constant) else r"\w+" for part in node.values
            )
            for module in MODULES:
                if re.fullmatch(pattern, module):
                    yield module, node.lineno


def _edges_of(importer: str, tree: ast.AST) -> Iterator[Import]:
    for named, line in _named_modules(tree):
        yield Import(importer=importer, target=named, names=(), line=line, type_only=False)
    for node, type_only in _import_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known(alias.name)
                if target:
                    yield Import(importer=importer, target=target, names=(), line=node.lineno, type_only=type_only)
            continue
        source = _absolute(importer, node)
        if source != PACKAGE and not source.startswith(PACKAGE + "."):
            continue
        names_from_source = []
        for alias in node.names:
            if f"{source}.{alias.name}" in MODULES:  # `from package import submodule`
                yield Import(
                    importer=importer,
                    target=f"{source}.{alias.name}",
                    names=(),
                    line=node.lineno,
                    type_only=type_only,
                )
            else:
                names_from_source.append(alias.name)
        target = _known(source)
        if names_from_source and target:
            yield Import(
                importer=importer,
                target=target,
                names=tuple(names_from_source),
                line=node.lineno,
                type_only=type_only,
            )


def _parse(module: str) -> ast.Module:
    return ast.parse(MODULES[module].read_text(encoding="utf-8"), filename=str(MODULES[module]))


TREES = {module: _parse(module) for module in MODULES}
IMPORTS: list[Import] = [edge for module, tree in TREES.items() for edge in _edges_of(module, tree)]


# ------------------------------------------------------------------------------------------------ import cycles
def _strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the groups of modules that reach each other, groups of one left out."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return sorted(groups)


def _shortest_cycle(start: str, graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """The shortest chain ``start -> ... -> start`` inside ``group`` (breadth first)."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & group):
                if child == start:
                    back = [node]
                    while back[-1] != start:
                        back.append(previous[back[-1]])
                    return [*reversed(back), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"{start} is in a cycle group but no cycle returns to it")  # pragma: no cover


def import_cycles() -> list[str]:
    """Each group of modules that import each other, as a readable chain with the line of each import."""
    graph: dict[str, set[str]] = {module: set() for module in MODULES}
    lines: dict[tuple[str, str], int] = {}
    for edge in IMPORTS:
        if not edge.type_only and edge.target != edge.importer:
            graph[edge.importer].add(edge.target)
            lines.setdefault((edge.importer, edge.target), edge.line)
    reports = []
    for group in _strongly_connected(graph):
        chain = _shortest_cycle(group[0], graph, set(group))
        steps = " -> ".join(f"{a} (line {lines[a, b]})" for a, b in itertools.pairwise(chain))
        others = sorted(set(group) - set(chain))
        extra = f"; the same knot also holds {', '.join(others)}" if others else ""
        reports.append(f"{steps} -> {chain[-1]}{extra}")
    return reports


# ------------------------------------------------------------------------------------------------ private names
def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _private_module_owner(module: str) -> str | None:
    """The package a private module belongs to (``a.b._c.d`` -> ``a.b``); None when no part is private."""
    parts = module.split(".")
    for position, part in enumerate(parts):
        if _is_private(part):
            return ".".join(parts[:position])
    return None


def _module_aliases(tree: ast.AST, importer: str) -> dict[str, str]:
    """Local names bound to whole modules of the package (``from x import mod``, ``import x.y as z``)."""
    aliases = {}
    for node, _ in _import_nodes(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in MODULES:
                    aliases[alias.asname] = alias.name
        else:
            source = _absolute(importer, node)
            for alias in node.names:
                if f"{source}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{source}.{alias.name}"
    return aliases


def private_imports() -> list[str]:
    """Imports of another module's ``_private`` names, or of a private module from outside its package."""
    found = []
    for edge in IMPORTS:
        owner = _private_module_owner(edge.target)
        if owner is not None and not _inside(edge.importer, owner):
            found.append(f"{edge.where()} imports {edge.target}, private to {owner}")
        for name in edge.names:
            if _is_private(name) and edge.importer != edge.target:
                found.append(f"{edge.where()} imports {edge.target}.{name}")
    for importer, tree in TREES.items():
        aliases = _module_aliases(tree, importer)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and _is_private(node.attr)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and aliases[node.value.id] != importer
                and f"{aliases[node.value.id]}.{node.attr}" not in MODULES
            ):
                found.append(f"{importer}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    return sorted(set(found), key=lambda text: (text.split(":")[0], int(text.split(":")[1].split()[0])))


# ------------------------------------------------------------------------------------------------ layers
def layer_of(module: str) -> int | None:
    """The rank in :data:`LAYERS` of a module, by its first part below the package; None if in no layer."""
    first = module.removeprefix(PACKAGE).removeprefix(".").split(".")[0]
    return LAYER_OF.get(first)


def layer_violations() -> list[str]:
    """Modules in no layer, and imports that reach up to a higher layer."""
    found = [
        f"{module} sits in no layer: move it into a layer's subpackage, or add it to LAYERS"
        for module in MODULES
        if layer_of(module) is None
    ]
    for edge in IMPORTS:
        low, high = layer_of(edge.importer), layer_of(edge.target)
        allowed = (edge.importer, edge.target) in ALLOWED_UPWARD
        if low is not None and high is not None and high > low and not allowed:
            kind = " (type-checking only)" if edge.type_only else ""
            found.append(
                f"{edge.where()} ({LAYER_NAMES[low]}) imports {edge.target} ({LAYER_NAMES[high]}), a higher layer{kind}"
            )
    return found


# ------------------------------------------------------------------------------------------------ the tests
def test_the_graph_sees_the_package() -> None:
    """The walker finds modules and edges we can check by eye, so an empty report means something."""
    assert f"{PACKAGE}.errors" in MODULES
    assert f"{PACKAGE}.cli" in MODULES
    assert _is_package(f"{PACKAGE}.cli")
    assert any(edge.target == f"{PACKAGE}.errors" for edge in IMPORTS)
    # The root package loads the estimator lazily, inside a function: such an import must still be an edge.
    lazy = ast.parse("def f():\n    import gbdt2nn_core.errors\n")
    assert [e.target for e in _edges_of(PACKAGE, lazy)] == [f"{PACKAGE}.errors"]
    relative = ast.parse("from ._layers import X\nfrom .. import errors\n")
    # the same lines mean the same modules in a package's __init__ and in one of its modules
    for importer in (f"{PACKAGE}.student", f"{PACKAGE}.student.module"):
        targets = [e.target for e in _edges_of(importer, relative)]
        assert targets == [f"{PACKAGE}.student._layers", f"{PACKAGE}.errors"], importer
    by_name = ast.parse('_LAZY = {"X": "gbdt2nn_core.errors"}\nimport_module(f"gbdt2nn_core.cli.{name}_cmd")\n')
    named = {e.target for e in _edges_of(PACKAGE, by_name)}
    assert f"{PACKAGE}.errors" in named
    assert f"{PACKAGE}.cli.distill_cmd" in named
    assert f"{PACKAGE}.cli._files" not in named
    guarded = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from gbdt2nn_core import errors\n")
    assert [e.type_only for e in _edges_of(PACKAGE, guarded)] == [True]


def test_the_cycle_finder_reports_a_known_cycle() -> None:
    """Tarjan and the chain on a hand-made graph: a -> b -> c -> a, and d alone."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _strongly_connected(graph) == [["a", "b", "c"]]
    assert _shortest_cycle("a", graph, {"a", "b", "c"}) == ["a", "b", "c", "a"]


def test_no_import_cycles() -> None:
    cycles = import_cycles()
    assert not cycles, "import cycles (lazy imports count):\n" + "\n".join(cycles)


def test_no_imports_of_private_names() -> None:
    found = private_imports()
    assert not found, "imports of another module's private names:\n" + "\n".join(found)


def test_every_allowed_upward_import_exists() -> None:
    """An allowance outlives its import silently unless checked: each names an upward edge that is there."""
    upward = {
        (edge.importer, edge.target)
        for edge in IMPORTS
        if (layer_of(edge.importer) or 0) < (layer_of(edge.target) or 0)
    }
    stale = sorted(set(ALLOWED_UPWARD) - upward)
    assert not stale, f"ALLOWED_UPWARD names imports that are gone or not upward: {stale}"


def test_layers_import_only_downward() -> None:
    found = layer_violations()
    assert not found, "layer violations (order: " + " < ".join(LAYER_NAMES) + "):\n" + "\n".join(found)


if __name__ == "__main__":  # pragma: no cover - the report for a person
    for title, report in (
        ("import cycles", import_cycles()),
        ("private names", private_imports()),
        ("layers", layer_violations()),
    ):
        print(f"## {title}: {len(report)}")
        print(*report, sep="\n")
