"""Move gbdt2nn_core's modules into the packages of its layers, and rewrite every reference to them.

The mapping below is the whole plan: old dotted module -> new dotted module, one line per module (a package or
a folder of data files moves as a whole). Run from anywhere inside the repository::

    python scripts/relayout.py --dry-run   # print the moves, the new packages and the files it would rewrite
    python scripts/relayout.py             # move (git mv), rewrite, sort the imports it touched, then --check
    python scripts/relayout.py --check     # exit 1 if a reference to an old module is left anywhere

What it does, deterministically:

- ``git mv`` each module (a file, a package or a folder of data files such as ``gbdt2nn_core/datasets``) to its
  new place, and writes an ``__init__.py`` into every package it creates.
- A module that becomes a package of the same name (``gbdt2nn_core.data`` -> ``gbdt2nn_core.data.tabular``)
  moves into that package, whose ``__init__.py`` re-exports the module's ``__all__``: ``from gbdt2nn_core.data
  import load_bundled`` keeps working, and such references to its public names are left as they are. A name it
  does not re-export, and a string that is only a dotted path (``monkeypatch.setattr("gbdt2nn_core.data.x",
  ...)``: patching a re-export would change nothing) go to the module that holds the name.
- Rewrites every tracked text file (Python, Markdown, TOML, ...; ``CHANGELOG.md`` is history and is left alone):
  dotted names wherever they stand (imports, monkeypatch targets, entry points, ``:mod:`` roles, prose), file
  paths (``gbdt2nn_core/x.py``, ``gbdt2nn_core/datasets``), ``from gbdt2nn_core import x`` (which becomes
  ``from gbdt2nn_core.layer import x``) and relative imports (which become absolute, as the rest of the code
  base is).
- Applies :data:`FIXUPS` (hand edits the rewrite needs), runs ``ruff check --select I --fix`` and ``ruff
  format`` on the Python files it changed (the new paths sort differently), and lists the lines the longer
  paths pushed past ruff's line length, which only a person can wrap well.

A mapping entry whose module already lives at its target, or no longer exists, is skipped with a note, so the
tool can be run again after more modules were added: extend ``MAPPING`` and rerun.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterable
from pathlib import Path

import attrs

PACKAGE = "gbdt2nn_core"

#: old dotted module -> new dotted module. Foundations (errors, progress, config_file, model_files) stay at the
#: top. Each layer's package gets the docstring of LAYER_DOCS below. The interfaces sit in the host, not the kit:
#: the registry checks components against them, and the host may not import upward.
MAPPING: dict[str, str] = {
    # plugin host: the plugin contract (hook specs, component records, interfaces) and the registry
    "gbdt2nn_core.hookspecs": "gbdt2nn_core.host.hookspecs",
    "gbdt2nn_core.specs": "gbdt2nn_core.host.specs",
    "gbdt2nn_core.interfaces": "gbdt2nn_core.host.interfaces",
    "gbdt2nn_core.registry": "gbdt2nn_core.host.registry",
    "gbdt2nn_core.builtins": "gbdt2nn_core.host.builtins",
    # plugin-author kit: what a plugin builds on
    "gbdt2nn_core.booster_teacher": "gbdt2nn_core.kit.booster_teacher",
    "gbdt2nn_core.teacher_checks": "gbdt2nn_core.kit.teacher_checks",
    "gbdt2nn_core.attribution": "gbdt2nn_core.host.attribution",
    "gbdt2nn_core.losses": "gbdt2nn_core.kit.losses",
    "gbdt2nn_core.alignment": "gbdt2nn_core.kit.alignment",
    # data: tables in, encoded rows and cached explanations out
    "gbdt2nn_core.data": "gbdt2nn_core.data.tabular",
    "gbdt2nn_core.datasets": "gbdt2nn_core.data.datasets",
    "gbdt2nn_core.encoding": "gbdt2nn_core.data.encoding",
    "gbdt2nn_core.cache": "gbdt2nn_core.data.cache",
    # student: the GBDT2NN network and what only it can do; its checkpoints and BatchNorm recalibration are
    # used by the experiment too, so they become public modules (no reaching into another package's _privates)
    "gbdt2nn_core.structure": "gbdt2nn_core.student.structure",
    "gbdt2nn_core.student._checkpoint": "gbdt2nn_core.student.checkpoint",
    "gbdt2nn_core.student._batchnorm": "gbdt2nn_core.student.batchnorm",
    # pipeline: training, evaluation, saving, serving
    "gbdt2nn_core.distill": "gbdt2nn_core.pipeline.distill",
    "gbdt2nn_core.metrics": "gbdt2nn_core.pipeline.metrics",
    "gbdt2nn_core.persistence": "gbdt2nn_core.pipeline.persistence",
    "gbdt2nn_core.runfolder": "gbdt2nn_core.pipeline.runfolder",
    "gbdt2nn_core.online": "gbdt2nn_core.student.online",
    "gbdt2nn_core.export": "gbdt2nn_core.pipeline.export",
    "gbdt2nn_core.estimator": "gbdt2nn_core.pipeline.estimator",
}

#: The docstring of each package the tool creates (one without an entry gets a generic one).
LAYER_DOCS: dict[str, str] = {
    "gbdt2nn_core.host": "The plugin host: hook specs, component records, the interfaces components meet, registry.",
    "gbdt2nn_core.kit": "The plugin-author kit: the booster teacher base, input checks, attribution, loss helpers.",
    "gbdt2nn_core.pipeline": "The pipeline: distillation, metrics, run folders and saved models, export, estimators.",
}

#: Hand edits the rewrite needs, applied after it: file -> (text, replacement). Today: a line the longer path
#: would push past ruff's limit, changed alike in the generator and in the page it generates.
FIXUPS: dict[str, list[tuple[str, str]]] = {
    name: [
        (
            "Generated by scripts/gen_hook_docs.py from the docstrings in gbdt2nn_core/host/hookspecs.py",
            "Generated by scripts/gen_hook_docs.py from docstrings in gbdt2nn_core/host/hookspecs.py",
        )
    ]
    for name in ("scripts/gen_hook_docs.py", "docs/hooks.md")
}

#: Files that are rewritten: these suffixes, and these names.
TEXT_SUFFIXES = frozenset({".py", ".md", ".toml", ".txt", ".cfg", ".ini", ".rst", ".yml", ".yaml"})
TEXT_NAMES = frozenset({"Makefile"})
#: Not rewritten (paths from the repository root): history describes the code as it was; this tool's mapping
#: must keep naming the old modules.
UNTOUCHED = frozenset({"CHANGELOG.md", "scripts/relayout.py"})


@attrs.frozen(kw_only=True)
class Move:
    """One mapping entry that applies: ``old`` exists and moves to ``new``."""

    old: str
    new: str
    #: ``file`` (a module), ``package`` (a folder with ``__init__.py``) or ``folder`` (data files only).
    kind: str

    @property
    def becomes_own_package(self) -> bool:
        """A module that turns into a package of its own name, e.g. data.py -> data/tabular.py."""
        return self.kind == "file" and self.new.startswith(self.old + ".")


@attrs.frozen(kw_only=True)
class Plan:
    moves: tuple[Move, ...]
    notes: tuple[str, ...]
    #: New packages (dotted) whose ``__init__.py`` the tool writes, parents first.
    new_packages: tuple[str, ...]
    #: Every dotted module and folder below the package once the moves are done.
    modules_after: frozenset[str]
    #: For each module that becomes its own package: the public names its ``__init__.py`` will re-export.
    reexports: dict[str, frozenset[str]]

    @property
    def renames(self) -> dict[str, str]:
        return {move.old: move.new for move in self.moves}


# ------------------------------------------------------------------------------------------------ the tree
def repo_root() -> Path:
    out = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def path_of(root: Path, dotted: str) -> Path:
    return root.joinpath(*dotted.split("."))


def kind_of(root: Path, dotted: str) -> str | None:
    """``file``, ``package``, ``folder`` or None, for a dotted name below the repository root."""
    base = path_of(root, dotted)
    if (base / "__init__.py").is_file():
        return "package"
    if base.with_suffix(".py").is_file():
        return "file"
    if base.is_dir():
        return "folder"
    return None


def modules_under(root: Path) -> set[str]:
    """Every module, package and folder below the package, by dotted name."""
    found = {PACKAGE}
    for path in path_of(root, PACKAGE).rglob("*"):
        if "__pycache__" in path.parts:
            continue
        relative = path.relative_to(root)
        if path.is_dir():
            found.add(".".join(relative.parts))
        elif path.suffix == ".py" and path.name != "__init__.py":
            found.add(".".join(relative.with_suffix("").parts))
    return found


def make_plan(root: Path, mapping: dict[str, str]) -> Plan:
    moves, notes = [], []
    for old, new in mapping.items():
        old_kind, new_kind = kind_of(root, old), kind_of(root, new)
        done_own_package = old_kind == "package" and new.startswith(old + ".") and new_kind is not None
        if old == new or (old_kind is None and new_kind is not None) or done_own_package:
            notes.append(f"{old}: already at {new}")
        elif old_kind is None:
            notes.append(f"{old}: no such module, and nothing at {new} either; entry skipped")
        elif new_kind is not None:
            raise SystemExit(f"relayout: both {old} and {new} exist; remove one or drop the entry from MAPPING")
        elif old_kind == "package" and new.startswith(old + "."):
            raise SystemExit(f"relayout: {old} is a package and cannot move into itself ({new})")
        else:
            moves.append(Move(old=old, new=new, kind=old_kind))
    # A module that becomes its own package goes first: the modules that then move into that package need it.
    moves.sort(key=lambda move: not move.becomes_own_package)

    before = modules_under(root)
    after = set(before)
    for move in moves:
        subtree = {m for m in after if m == move.old or m.startswith(move.old + ".")}
        after -= subtree
        after |= {move.new + m.removeprefix(move.old) for m in subtree}
    new_packages = []
    for move in moves:
        parts = move.new.split(".")
        for end in range(2, len(parts)):
            package = ".".join(parts[:end])
            if package not in new_packages and kind_of(root, package) != "package":
                new_packages.append(package)
    after |= set(new_packages)
    # A module another branch added at the top is easy to miss: name what stays there, so a new one shows.
    top = sorted(m.rpartition(".")[2] for m in after if m.count(".") == 1 and kind_of(root, m) == "file")
    top = [name for name in top if f"{PACKAGE}.{name}" not in {move.old for move in moves}]
    notes.append(f"stays at the top of {PACKAGE} (add a MAPPING line to move one): {', '.join(top)}")
    reexports = {
        move.old: frozenset(public_names(path_of(root, move.old).with_suffix(".py").read_text(encoding="utf-8")))
        for move in moves
        if move.becomes_own_package
    }
    return Plan(
        moves=tuple(moves),
        notes=tuple(notes),
        new_packages=tuple(new_packages),
        modules_after=frozenset(after),
        reexports=reexports,
    )


# ------------------------------------------------------------------------------------------------ rewriting
@attrs.frozen(kw_only=True)
class Rewriter:
    """Rewrites references to the moved modules in one text; the same object serves ``--check``."""

    renames: dict[str, str]
    #: old dotted name -> ``file`` (referred to as ``x/y.py``) or ``folder`` (``x/y``), for file paths.
    kinds: dict[str, str]
    modules_after: frozenset[str]
    #: Modules that become their own package -> the names that package re-exports (see ``_replace_dotted``).
    reexported: dict[str, frozenset[str]] = attrs.field(factory=dict)

    def map_dotted(self, dotted: str) -> str:
        """The new name of a dotted reference (a module, or a name inside one); unchanged if nothing moved."""
        for old in sorted(self.renames, key=len, reverse=True):
            if dotted == old or dotted.startswith(old + "."):
                return self.renames[old] + dotted[len(old) :]
        return dotted

    def _dotted_pattern(self) -> re.Pattern[str]:
        names = "|".join(re.escape(old) for old in sorted(self.renames, key=len, reverse=True))
        return re.compile(rf"(?<![\w.])({names})(?!\w)")

    def _path_pattern(self) -> re.Pattern[str]:
        paths = "|".join(
            re.escape(old.replace(".", "/")) + (r"\.py" if kind == "file" else "")
            for old, kind in sorted(self.kinds.items(), key=lambda item: len(item[0]), reverse=True)
        )
        return re.compile(rf"(?<![\w/.])({paths})(?![\w.])")

    def _replace_dotted(self, match: re.Match[str]) -> str:
        old, text, end = match.group(1), match.string, match.end()
        following = re.match(r"\.(\w+)", text[end:])
        # ``old.name`` that is a module after the moves was written by an earlier run: leave it.
        if following and f"{old}.{following.group(1)}" in self.modules_after and old in self.modules_after:
            return old
        # A module that became its own package is still there under its old name, re-exporting its public
        # names: ``gbdt2nn_core.data`` and ``gbdt2nn_core.data.load_bundled`` stay the public path in prose,
        # messages and imports (a string that is only a dotted path is a patch target: see rewrite_python).
        if old in self.reexported and (following is None or following.group(1) in self.reexported[old]):
            return old
        return self.renames[old]

    def _replace_path(self, match: re.Match[str]) -> str:
        found = match.group(1)
        old = found.removesuffix(".py").replace("/", ".")
        new = self.renames[old].replace(".", "/")
        return new + ".py" if found.endswith(".py") else new

    def rewrite_plain(self, text: str) -> str:
        if not self.renames:
            return text
        text = self._dotted_pattern().sub(self._replace_dotted, text)
        return self._path_pattern().sub(self._replace_path, text)

    def rewrite_python(self, text: str, module: str | None) -> str:
        """Rewrite ``from x import module`` and relative imports by ast, then the rest as plain text."""
        try:
            tree = ast.parse(text)
        except SyntaxError:
            return self.rewrite_plain(text)
        lines = text.splitlines(keepends=True)
        starts = [0]
        for line in lines:
            starts.append(starts[-1] + len(line))

        def offset(lineno: int, col: int) -> int:
            return starts[lineno - 1] + len(lines[lineno - 1].encode()[:col].decode())

        edits: list[tuple[int, int, str]] = []
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom | ast.Constant) or node.end_lineno is None:
                continue
            start = offset(node.lineno, node.col_offset)
            end = offset(node.end_lineno, node.end_col_offset or 0)
            if isinstance(node, ast.ImportFrom):
                statements = self._import_from(node, module)
                if statements is not None:
                    line = lines[node.lineno - 1]
                    indent = line[: len(line) - len(line.lstrip(" \t"))]
                    edits.append((start, end, ("\n" + indent).join(statements)))
            elif isinstance(node.value, str):
                # "gbdt2nn_core.data.read_table" as a whole string names where to patch or what to import: the
                # module that holds it now, never a re-export (patching a re-export changes nothing).
                value = node.value
                segment = text[start:end]
                if re.fullmatch(r"[\w.]+", value) and self.map_dotted(value) != value and value in segment:
                    edits.append((start, end, segment.replace(value, self.map_dotted(value))))
        pieces: list[str] = []
        position = 0
        for start, end, replacement in sorted(edits):
            if start < position:
                continue  # the parts of an f-string share its span: the f-string is left to the plain pass
            pieces += [self.rewrite_plain(text[position:start]), replacement]
            position = end
        pieces.append(self.rewrite_plain(text[position:]))
        return "".join(pieces)

    def _import_from(self, node: ast.ImportFrom, module: str | None) -> list[str] | None:
        """The statements that replace ``node``, or None when the plain-text pass handles it."""
        if node.level:
            if module is None:
                return None  # a relative import outside gbdt2nn_core: not ours
            source = resolve_relative(module, node.level, node.module)
        else:
            source = node.module or ""
        modules_named = [a for a in node.names if f"{source}.{a.name}" in self.renames]
        if not node.level and source in self.reexported:
            # ``from gbdt2nn_core.data import load_bundled``: the package re-exports it, so the line stands;
            # a name it does not re-export is imported from the module that holds it.
            if all(alias.name in self.reexported[source] for alias in node.names):
                return None
        elif not node.level and not modules_named:
            return None
        if node.level and module is not None and not modules_named:
            moved = self.map_dotted(module) != module or self.map_dotted(source) != source
            if not moved:
                return None
        groups: dict[str, list[str]] = {}
        for alias in node.names:
            full = f"{source}.{alias.name}"
            if full in self.renames:
                parent, _, last = self.renames[full].rpartition(".")
                name = alias.asname or alias.name
                groups.setdefault(parent, []).append(last if last == name else f"{last} as {name}")
            else:
                name = alias.name if alias.asname is None else f"{alias.name} as {alias.asname}"
                groups.setdefault(self.map_dotted(source), []).append(name)
        return [f"from {parent} import {', '.join(names)}" for parent, names in groups.items()]

    def stale(self, text: str, *, python: bool) -> list[tuple[int, str]]:
        """References (line, text) to the old modules that are left in ``text``."""
        found = []
        for pattern in (self._dotted_pattern(), self._path_pattern()):
            for match in pattern.finditer(text):
                if pattern.pattern == self._dotted_pattern().pattern and self._replace_dotted(match) == match.group(1):
                    continue
                found.append((text.count("\n", 0, match.start()) + 1, match.group(0)))
        if python:
            try:
                tree = ast.parse(text)
            except SyntaxError:
                return found
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and not node.level:
                    for alias in node.names:
                        if f"{node.module}.{alias.name}" in self.renames:
                            found.append((node.lineno, f"from {node.module} import {alias.name}"))
        return sorted(set(found))


def resolve_relative(module: str, level: int, name: str | None) -> str:
    """The absolute module of ``from <level dots><name> import`` written in ``module`` (a module, not a package)."""
    base = module.split(".")[: -level or None]
    return ".".join([*base, *([name] if name else [])])


def module_of(root: Path, path: Path, moves: Iterable[Move] = ()) -> str | None:
    """The dotted module a file of the package was before ``moves``, to resolve its relative imports.

    None for a file outside the package. ``__init__`` stays in the name: a package's relative imports resolve
    against the package itself, one level below its ``__init__``.
    """
    relative = path.relative_to(root)
    if relative.parts[0] != PACKAGE or relative.suffix != ".py":
        return None
    module = ".".join(relative.with_suffix("").parts)
    for move in moves:
        if module == move.new or module.startswith(move.new + "."):
            return move.old + module[len(move.new) :]
    return module


def text_files(root: Path) -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    found = []
    for name in sorted(set(out.stdout.split("\0")) - {""}):
        path = root / name
        if name in UNTOUCHED or not path.is_file():
            continue
        if path.suffix in TEXT_SUFFIXES or path.name in TEXT_NAMES:
            found.append(path)
    return found


# ------------------------------------------------------------------------------------------------ moving
def git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def public_names(source: str) -> list[str]:
    """A module's ``__all__`` (a literal list or tuple), else the public names it defines at the top."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                return [str(name) for name in ast.literal_eval(node.value)]
    names = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return sorted(n for n in names if not n.startswith("_"))


def first_docstring_line(source: str) -> str:
    docstring = ast.get_docstring(ast.parse(source)) or ""
    return docstring.splitlines()[0] if docstring else ""


def reexport_init(move: Move, source: str) -> str:
    """The ``__init__.py`` of a module turned into a package: its docstring's first line, and its public names."""
    names = public_names(source)
    summary = first_docstring_line(source) or f"The {move.old.rpartition('.')[2]} package."
    why = f"Re-exports :mod:`{move.new}`, so ``from {move.old} import ...`` works as it did before the move."
    doc = textwrap.fill(summary, 116) + "\n\n" + textwrap.fill(why, 116)
    imports = "".join(f"    {name},\n" for name in names)
    listed = "".join(f'    "{name}",\n' for name in names)
    return (
        f'"""{doc}\n"""\n\n'
        f"from __future__ import annotations\n\nfrom {move.new} import (\n{imports})\n\n__all__ = [\n{listed}]\n"
    )


def apply_moves(root: Path, plan: Plan) -> dict[Path, str]:
    """``git mv`` every module; returns the ``__init__.py`` files to write once references are rewritten."""
    inits = {}
    for move in plan.moves:
        old_path = path_of(root, move.old)
        new_path = path_of(root, move.new)
        if move.kind == "file":
            old_path, new_path = old_path.with_suffix(".py"), new_path.with_suffix(".py")
        if move.becomes_own_package:
            source = old_path.read_text(encoding="utf-8")
            parking = old_path.with_name(f".relayout-{old_path.name}")
            git(root, "mv", str(old_path), str(parking))
            new_path.parent.mkdir(parents=True, exist_ok=True)
            git(root, "mv", str(parking), str(new_path))
            inits[path_of(root, move.old) / "__init__.py"] = reexport_init(move, source)
            continue
        new_path.parent.mkdir(parents=True, exist_ok=True)
        git(root, "mv", str(old_path), str(new_path))
    for package in plan.new_packages:
        init = path_of(root, package) / "__init__.py"
        if init not in inits and not init.exists():
            doc = LAYER_DOCS.get(package, f"The {package.rpartition('.')[2]} layer of gbdt2nn_core.")
            inits[init] = f'"""{textwrap.fill(doc, 114)}"""\n'
    return inits


def write_inits(root: Path, inits: dict[Path, str]) -> list[Path]:
    for init, text in inits.items():
        init.parent.mkdir(parents=True, exist_ok=True)
        init.write_text(text, encoding="utf-8")
    if inits:
        git(root, "add", *(str(p) for p in inits))
    return list(inits)


def apply_fixups(root: Path) -> list[Path]:
    """Apply :data:`FIXUPS`; one whose text is not found is reported (the code moved on: drop or update it)."""
    changed = []
    for name, replacements in FIXUPS.items():
        path = root / name
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        for before, after in replacements:
            if before not in text and after not in text:
                print(f"fixup not applied (text not found in {name}): {before!r}")
            text = text.replace(before, after)
        if path.is_file() and text != path.read_text(encoding="utf-8"):
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    return changed


def line_limit(root: Path) -> int:
    match = re.search(r"(?m)^line-length\s*=\s*(\d+)", (root / "pyproject.toml").read_text(encoding="utf-8"))
    return int(match.group(1)) if match else 88


def long_lines(root: Path, files: Iterable[Path], *, known: frozenset[str] = frozenset()) -> dict[str, str]:
    """Python lines over ruff's limit that are not in ``known``, by where they are.

    ruff format cannot wrap a comment, a docstring or a string that a longer module path made too long.
    """
    limit = line_limit(root)
    return {
        f"{path.relative_to(root)}:{number}: {len(line)} characters": line
        for path in sorted(set(files))
        if path.suffix == ".py" and path.is_file()
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if len(line) > limit and line not in known
    }


def rewrite_all(root: Path, rewriter: Rewriter, moves: Iterable[Move], *, write: bool) -> list[Path]:
    """Rewrite every text file (or, unless ``write``, only say which would change); ``moves`` are done."""
    changed = []
    moves = list(moves)
    for path in text_files(root):
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".py":
            new = rewriter.rewrite_python(text, module_of(root, path, moves))
        else:
            new = rewriter.rewrite_plain(text)
        if new != text:
            changed.append(path)
            if write:
                path.write_text(new, encoding="utf-8")
    return changed


def tidy(root: Path, files: Iterable[Path]) -> None:
    """Sort the imports the new paths unsorted, and format; skipped with a note when ruff is not installed."""
    paths = sorted({str(p.relative_to(root)) for p in files if p.suffix == ".py" and p.is_file()})
    if not paths:
        return
    try:
        subprocess.run([sys.executable, "-m", "ruff", "--version"], cwd=root, check=True, capture_output=True)
    except subprocess.CalledProcessError:
        print("ruff is not installed: run `ruff check --select I --fix` and `ruff format` on the changed files")
        return
    subprocess.run([sys.executable, "-m", "ruff", "check", "--quiet", "--select", "I", "--fix", *paths], cwd=root)
    subprocess.run([sys.executable, "-m", "ruff", "format", "--quiet", *paths], cwd=root, check=True)


# ------------------------------------------------------------------------------------------------ check
def stale_references(root: Path, mapping: dict[str, str]) -> list[str]:
    """Every reference left to a mapped module that no longer exists under its old name.

    A module that became a package of its own name (data -> data.tabular) still exists under the old name: a
    reference through it is stale only when it names something the package neither holds nor re-exports.
    """
    modules = modules_under(root)
    gone = {old: new for old, new in mapping.items() if kind_of(root, old) is None}
    kinds = {old: "file" if kind_of(root, new) == "file" else "folder" for old in gone for new in [gone[old]]}
    rewriter = Rewriter(renames=gone, kinds=kinds, modules_after=frozenset(modules))
    own_packages = {
        old: set(public_names(init.read_text(encoding="utf-8")))
        | {m.rpartition(".")[2] for m in modules if m.rpartition(".")[0] == old}
        for old, new in mapping.items()
        if new.startswith(old + ".") and kind_of(root, old) == "package"
        for init in [path_of(root, old) / "__init__.py"]
    }
    found = []
    for path in text_files(root):
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(root)
        if gone:
            found += [f"{where}:{line}: {what}" for line, what in rewriter.stale(text, python=path.suffix == ".py")]
        for old, held in own_packages.items():
            for match in re.finditer(rf"(?<![\w.]){re.escape(old)}\.(\w+)", text):
                if match.group(1) not in held:
                    found.append(f"{where}:{text.count(chr(10), 0, match.start()) + 1}: {match.group(0)}")
            if path.suffix == ".py":
                found += [
                    f"{where}:{node.lineno}: from {old} import {alias.name}"
                    for node in ast.walk(_parse_or_empty(text))
                    if isinstance(node, ast.ImportFrom) and node.module == old and not node.level
                    for alias in node.names
                    if alias.name not in held
                ]
    return sorted(set(found))


def _parse_or_empty(text: str) -> ast.Module:
    try:
        return ast.parse(text)
    except SyntaxError:
        return ast.Module(body=[], type_ignores=[])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    mode.add_argument("--check", action="store_true", help="exit 1 if a reference to an old module remains")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    root = repo_root()

    if args.check:
        stale = stale_references(root, MAPPING)
        print(*stale, sep="\n")
        print(f"{len(stale)} stale reference(s)" if stale else "no stale references")
        return 1 if stale else 0

    plan = make_plan(root, MAPPING)
    for note in plan.notes:
        print(f"note: {note}")
    for move in plan.moves:
        print(f"move {move.kind:7} {move.old} -> {move.new}")
    for package in plan.new_packages:
        print(f"new package {package}")
    kinds = {move.old: "file" if move.kind == "file" else "folder" for move in plan.moves}
    rewriter = Rewriter(renames=plan.renames, kinds=kinds, modules_after=plan.modules_after, reexported=plan.reexports)
    if args.dry_run:
        for path in rewrite_all(root, rewriter, (), write=False):
            print(f"rewrite {path.relative_to(root)}")
        return 0

    already_long = frozenset(long_lines(root, text_files(root)).values())
    inits = apply_moves(root, plan)
    changed = rewrite_all(root, rewriter, plan.moves, write=True)
    written = write_inits(root, inits)
    changed += apply_fixups(root)
    touched = [*changed, *written, *(path_of(root, m.new).with_suffix(".py") for m in plan.moves)]
    tidy(root, touched)
    print(f"moved {len(plan.moves)} module(s), wrote {len(written)} __init__.py, rewrote {len(set(changed))} file(s)")
    for line in long_lines(root, touched, known=already_long):
        print(f"too long for ruff after the rewrite, wrap by hand: {line}")
    stale = stale_references(root, MAPPING)
    print(*stale, sep="\n")
    print(f"{len(stale)} stale reference(s); {time.perf_counter() - started:.1f} s")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
