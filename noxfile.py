"""Lint, type-check and test gbdt2nn: the core alone, each plugin alone, everything together, and end to end.

    nox -l                       # this table of contents
    nox                          # the default sessions: what `make test` and CI run
    nox -s "plugin(shap)"        # one plugin against the core, and nothing else
    nox -t plugins               # every plugin, each alone
    nox -s e2e -- -k xgboost     # arguments after -- go to pytest

The plugin matrix is read from ``plugins/*/pyproject.toml``: a new plugin folder brings its own session, and
joins ``all`` and ``typecheck``, without an edit here. The example in ``examples/`` has a session of its own.

Environments are cheap: the pinned third-party packages (``constraints.txt``: CPU torch, LightGBM, XGBoost,
shap, the test and lint tools) are installed once, into the ``base`` session's virtualenv, which holds no
gbdt2nn distribution. Every other session links that environment into its own with a ``.pth`` file and
installs only gbdt2nn distributions, as wheels and without dependencies: "a plugin alone" is exactly the core
plus that plugin, and the tests import what was installed, not the source tree.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nox

ROOT = Path(__file__).resolve().parent
CONSTRAINTS = ROOT / "constraints.txt"
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
CORE = PYPROJECT["project"]["name"]
#: Where lint looks; typecheck looks at the libraries only (the core and each distribution's src/).
LINT_PATHS = ("gbdt2nn_core", "plugins", "tests", "scripts", "examples", "benchmarks", "noxfile.py")
#: The end-to-end grid and the example's test need more than the core and the plugins.
E2E_TESTS = "tests/e2e"
EXAMPLE_TEST = "tests/test_example_plugin.py"
#: Core test modules that need no plugin: the registry, plugin discovery, `gbdt2nn plugins`, the docs, metrics and
#: data handling. core-alone runs these with only the core installed; every core test module (these included)
#: runs in `all`, with every plugin installed. Add a module here when it tests the core without a plugin.
CORE_ALONE_TESTS = (
    "tests/test_architecture.py",
    "tests/test_cli_plugins.py",
    "tests/test_data.py",
    "tests/test_docs.py",
    "tests/test_metrics.py",
    "tests/test_plugin_discovery.py",
    "tests/test_registry.py",
    "tests/test_writing_plugins_doc.py",
)

nox.needs_version = ">=2025.2.9"
nox.options.default_venv_backend = "virtualenv"
nox.options.error_on_external_run = True
nox.options.reuse_venv = "no"


#: Dependency groups installed into the base environment.
GROUPS = ("test", "lint")
#: The benchmark's own requirements and pins (hummingbird-ml pins onnx<=1.16.1): installed in the `bench` session only.
BENCH_REQUIREMENTS = ROOT / "benchmarks" / "requirements.txt"
BENCH_CONSTRAINTS = ROOT / "benchmarks" / "constraints.txt"


class Distribution:
    """A gbdt2nn distribution folder of this repository, as its ``pyproject.toml`` describes it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.pyproject: dict[str, Any] = nox.project.load_toml(folder / "pyproject.toml")
        project = self.pyproject["project"]
        self.dist: str = project["name"]
        #: ``gbdt2nn-integrated-gradients`` -> ``integrated-gradients``: the session's parameter.
        self.short: str = self.dist.removeprefix("gbdt2nn-")
        #: Entry-point names in the ``gbdt2nn`` group, i.e. the plugin names ``gbdt2nn plugins`` reports.
        self.entry_points: tuple[str, ...] = tuple(sorted(project.get("entry-points", {}).get("gbdt2nn", {})))
        self.dependencies: list[str] = list(project.get("dependencies", []))
        #: The dependency groups the sessions use (others, such as `bench`, serve other tools).
        self.groups: tuple[str, ...] = tuple(g for g in self.pyproject.get("dependency-groups", {}) if g in GROUPS)

    @property
    def tests(self) -> Path:
        return self.folder / "tests"

    def requirements(self) -> list[str]:
        """Everything it needs to run, be tested and type-checked: dependencies, extras, `test` and `lint` groups."""
        extras = self.pyproject["project"].get("optional-dependencies", {})
        grouped = nox.project.dependency_groups(self.pyproject, *self.groups) if self.groups else ()
        return [*self.dependencies, *(r for reqs in extras.values() for r in reqs), *grouped]


def _discover(pattern: str) -> dict[str, Distribution]:
    found = [Distribution(p.parent) for p in sorted(ROOT.glob(pattern))]
    return {d.short: d for d in found}


PLUGINS = _discover("plugins/*/pyproject.toml")
EXAMPLES = _discover("examples/*/pyproject.toml")
CORE_DIST = Distribution(ROOT)

#: Tools the sessions need besides the distributions' own requirements: the build backend (gbdt2nn
#: distributions are built without build isolation, from the base environment) and the test runner.
TOOLS = ("hatchling", "editables", "pytest")

#: Threads: two shared cores. OpenMP (LightGBM, XGBoost, torch) spinning on a busy machine is the usual reason a
#: test suite takes ten times longer than it should, so every library runs on one thread.
TEST_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "GBDT2NN_STRICT_PLUGINS": "1",
    "MPLBACKEND": "Agg",
    # Tests must import the installed distributions, not the checkout that `python -m` would put first on sys.path.
    "PYTHONSAFEPATH": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
}


def _is_gbdt2nn(requirement: str) -> bool:
    return requirement.strip().lower().replace("_", "-").startswith("gbdt2nn")


def base_requirements() -> list[str]:
    """Every third-party requirement of the core, the plugins and the examples, plus the tools; no gbdt2nn."""
    everything: Iterable[str] = (
        requirement
        for dist in (CORE_DIST, *PLUGINS.values(), *EXAMPLES.values())
        for requirement in dist.requirements()
    )
    return sorted({r for r in everything if not _is_gbdt2nn(r)} | set(TOOLS))


# ------------------------------------------------------------------------------------------------ base environment
BASE = "base"
BASE_INFO = "gbdt2nn-base.json"


@nox.session(name=BASE, reuse_venv=True, tags=["setup"])
def base(session: nox.Session) -> None:
    """Install the pinned third-party packages once; every test session links to this environment.

    Reused between runs while constraints.txt and the requirements in the pyproject files are unchanged, and
    rebuilt when they change (``nox -s base --reuse-venv=never`` starts from scratch). Fails when it holds a
    gbdt2nn distribution (a plugin "alone" would not be alone), a package constraints.txt does not pin, or a
    CUDA build of torch.
    """
    requirements = base_requirements()
    python = session.run("python", "-c", "import sys; print(sys.version)", silent=True, log=False)
    fingerprint = hashlib.sha256(
        json.dumps([requirements, CONSTRAINTS.read_text(encoding="utf-8"), python]).encode()
    ).hexdigest()
    info_file = Path(session.virtualenv.location) / BASE_INFO
    info = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
    if info.get("fingerprint") == fingerprint:
        session.log("base environment is up to date")
    else:
        info_file.unlink(missing_ok=True)
        # pip only adds: remove what constraints.txt no longer pins (what it still pins may stay, unused)
        stale = sorted(_installed(session) - SEEDED - set(_pins()))
        if stale:
            session.run("python", "-m", "pip", "uninstall", "--yes", "--quiet", *stale)
        # torch is named exactly: only `torch==<pin>` makes pip take the CPU wheel and not the multi-GB CUDA build.
        torch_pin = next(pin for name, pin in _pins().items() if name == "torch")
        session.install("-c", str(CONSTRAINTS), torch_pin, *requirements)

    installed = _installed(session) - SEEDED
    intruders = sorted(name for name in installed if _is_gbdt2nn(name))
    if intruders:
        session.error(f"the base environment holds {', '.join(intruders)}: nox -s {BASE} --reuse-venv=never")
    unpinned = sorted(installed - set(_pins()))
    if unpinned:
        session.error(f"constraints.txt does not pin {', '.join(unpinned)}: add a `name==version` line for each")
    cuda = session.run("python", "-c", "import torch; print(torch.version.cuda)", silent=True, log=False)
    if str(cuda).strip() != "None":
        session.error(f"torch was installed with CUDA {str(cuda).strip()}; only the CPU wheel is wanted")
    site_packages = _site_packages(session)
    session.log(f"{len(installed)} pinned packages in {site_packages}")
    info_file.write_text(json.dumps({"fingerprint": fingerprint, "site_packages": site_packages}), encoding="utf-8")


#: What virtualenv puts into every environment; not project dependencies.
SEEDED = frozenset({"pip", "setuptools", "wheel"})


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins() -> dict[str, str]:
    """constraints.txt as ``{normalised name: "name==version"}``."""
    lines = (line.split("#")[0].strip() for line in CONSTRAINTS.read_text(encoding="utf-8").splitlines())
    return {_normalise(re.split(r"[=<>!~ ;\[]", line, maxsplit=1)[0]): line for line in lines if line}


def _installed(session: nox.Session) -> set[str]:
    """Normalised names of the distributions installed in the session's own environment."""
    out = session.run(
        "python",
        "-c",
        "import importlib.metadata as m; print(*{d.metadata['Name'] for d in m.distributions()}, sep='\\n')",
        silent=True,
        log=False,
        env={"PYTHONSAFEPATH": "1"},
    )
    return {_normalise(name) for name in str(out).split()}


def _site_packages(session: nox.Session) -> str:
    path = session.run("python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", silent=True, log=False)
    return str(path).strip()


def _link_base(session: nox.Session) -> None:
    """Make the base environment's packages importable in this session (after the session's own)."""
    info_file = Path(session.virtualenv.location).parent / BASE / BASE_INFO
    if not info_file.is_file():
        session.error(f"no base environment at {info_file.parent}: run nox -s {BASE} first")
    base_site = json.loads(info_file.read_text(encoding="utf-8"))["site_packages"]
    # A plain path line: mypy and importlib.metadata both follow it (an `import site` line, mypy would ignore).
    Path(_site_packages(session), "_gbdt2nn_base.pth").write_text(base_site + "\n", encoding="utf-8")


def _install(session: nox.Session, *dists: Distribution) -> None:
    """Link the base environment, then build and install these gbdt2nn distributions (no dependencies)."""
    _link_base(session)
    wheels = Path(session.create_tmp()) / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    session.run(
        "python",
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--wheel-dir",
        str(wheels),
        *(str(d.folder) for d in dists),
        env=TEST_ENV,
    )
    session.install("--quiet", "--no-deps", "--no-index", *sorted(str(w) for w in wheels.glob("*.whl")))


def _pytest(session: nox.Session, *args: str, env: dict[str, str] | None = None) -> None:
    """Run pytest in the session; exit code 5 (no test collected) fails the session like any other."""
    cache = Path(session.create_tmp()) / "treeshap-cache"
    session.run(
        "python",
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        *args,
        *session.posargs,
        env={**TEST_ENV, "GBDT2NN_CACHE_DIR": str(cache), **(env or {})},
    )


def _plugin_report(session: nox.Session, *, disable: Iterable[str] = ()) -> dict[str, Any]:
    """``gbdt2nn plugins --json`` in the session, strict, optionally with some plugins disabled."""
    env = {**TEST_ENV, "GBDT2NN_DISABLE_PLUGINS": ",".join(disable)}
    out = session.run("gbdt2nn", "plugins", "--json", env=env, silent=True, stderr=None)
    report: dict[str, Any] = json.loads(str(out))
    return report


def _check_report(session: nox.Session, allowed: dict[str, Distribution]) -> None:
    """The installed plugins are exactly the core's built-ins and those of ``allowed``, and each one loaded.

    ``allowed`` maps plugin distributions to check by name; their entry points are the only plugins expected.
    """
    builtins = _plugin_report(session, disable=[ep for d in allowed.values() for ep in d.entry_points])
    report = _plugin_report(session)
    expected_plugins = {(CORE, CORE)} | {(ep, d.dist) for d in allowed.values() for ep in d.entry_points}
    found_plugins = {(p["name"], p["distribution"]) for p in report["plugins"]}
    if found_plugins != expected_plugins:
        session.error(f"gbdt2nn plugins lists {sorted(found_plugins)}, expected exactly {sorted(expected_plugins)}")
    failed = [p for p in report["plugins"] if p["status"] != "loaded"]
    if failed:
        session.error(f"plugins that did not load: {failed}")
    core_components = [c for c in builtins["components"] if c["distribution"] == CORE]
    if not core_components or core_components != [c for c in report["components"] if c["distribution"] == CORE]:
        session.error("the core's built-in components change when plugins are installed")
    for dist in allowed.values():
        mine = [c for c in report["components"] if c["distribution"] == dist.dist]
        if not mine:
            session.error(f"{dist.dist} is installed but registers no component")
    strangers = [
        c for c in report["components"] if c["distribution"] not in {CORE, *(d.dist for d in allowed.values())}
    ]
    if strangers:
        session.error(f"components from distributions that were not installed: {strangers}")
    listed = ", ".join(f"{c['kind']} {c['name']} ({c['plugin']})" for c in report["components"])
    session.log(f"gbdt2nn plugins: {listed}")


# ------------------------------------------------------------------------------------------------ sessions
@nox.session(tags=["lint"])
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the core, the plugins, the tests, the scripts and the examples."""
    session.install("-c", str(CONSTRAINTS), "ruff")
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)


@nox.session(requires=[BASE], tags=["lint"])
def typecheck(session: nox.Session) -> None:
    """mypy --strict (pyproject's [tool.mypy]) on the core, on each plugin's and example's src/ and on the benchmark
    scripts (benchmarks/*.py; benchmarks/quality/ has a run.py of its own, which mypy would take for the same module).

    mypy and the packages it reads types from come from the base environment (mypy is in the `lint` group).
    """
    _link_base(session)
    sources = [
        str(path.relative_to(ROOT))
        for dist in (*PLUGINS.values(), *EXAMPLES.values())
        for path in sorted((dist.folder / "src").iterdir())
        if path.is_dir() and (path / "__init__.py").is_file()
    ]
    benchmarks = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "benchmarks").glob("*.py"))]
    # A cache of its own: one shared with another environment would describe other installed packages.
    cache = Path(session.create_tmp()) / "mypy-cache"
    session.run(
        "python",
        "-m",
        "mypy",
        "--cache-dir",
        str(cache),
        "gbdt2nn_core",
        *sources,
        *benchmarks,
        *session.posargs,
        env=TEST_ENV,
    )


@nox.session(name="core-alone", requires=[BASE], tags=["core"])
def core_alone(session: nox.Session) -> None:
    """The core without any plugin: `gbdt2nn plugins` lists only the built-ins, and the plugin-free tests pass."""
    missing = [path for path in CORE_ALONE_TESTS if not (ROOT / path).is_file()]
    if missing:
        session.error(f"CORE_ALONE_TESTS in noxfile.py names missing files: {', '.join(missing)}")
    _install(session, CORE_DIST)
    _check_report(session, {})
    _pytest(session, *CORE_ALONE_TESTS)


@nox.session(requires=[BASE], tags=["plugins"])
@nox.parametrize("name", list(PLUGINS), ids=list(PLUGINS))
def plugin(session: nox.Session, name: str) -> None:
    """One plugin against the core and nothing else: its own tests, and `gbdt2nn plugins` lists just it."""
    dist = PLUGINS[name]
    _install(session, CORE_DIST, dist)
    _check_report(session, {dist.dist: dist})
    _pytest(session, str(dist.tests.relative_to(ROOT)))


@nox.session(name="all", requires=[BASE], tags=["core", "plugins"])
def all_(session: nox.Session) -> None:
    """The core and every plugin installed together: the core's tests and every plugin's tests."""
    _install(session, CORE_DIST, *PLUGINS.values())
    _check_report(session, {d.dist: d for d in PLUGINS.values()})
    plugin_tests = [str(d.tests.relative_to(ROOT)) for d in PLUGINS.values()]
    _pytest(session, "tests", *plugin_tests, f"--ignore={E2E_TESTS}", f"--ignore={EXAMPLE_TEST}")


@nox.session(requires=[BASE], tags=["e2e"])
def e2e(session: nox.Session) -> None:
    """Every installed teacher x attributor x alignment loss, distilled end to end on 3,000 adult rows.

    Writes the grid's table to $E2E_REPORT (default: .nox/e2e/tmp/e2e-grid.md) and prints it.
    """
    _install(session, CORE_DIST, *PLUGINS.values())
    report = os.environ.get("E2E_REPORT") or str(Path(session.create_tmp()).resolve() / "e2e-grid.md")
    _pytest(session, E2E_TESTS, env={"E2E_REPORT": report, "GBDT2NN_E2E": "1"})


@nox.session(requires=[BASE], tags=["example"])
def example(session: nox.Session) -> None:
    """The third-party plugin(s) in examples/: their own tests, then a distillation that uses them by name."""
    # The example brings an attributor and a loss; a distillation also needs a teacher.
    teacher = PLUGINS["lightgbm"]
    _install(session, CORE_DIST, teacher, *EXAMPLES.values())
    _check_report(session, {d.dist: d for d in (teacher, *EXAMPLES.values())})
    _pytest(session, *(str(d.tests.relative_to(ROOT)) for d in EXAMPLES.values()), EXAMPLE_TEST)


@nox.session(requires=[BASE], tags=["bench"])
def bench(session: nox.Session) -> None:
    """The benchmark harness with its own pins (benchmarks/constraints.txt): its smoke test, or run.py's arguments.

    hummingbird-ml (the compiled-teacher comparison) and the old onnx it pins go into this session only, in front of
    the base environment. ``nox -s bench`` runs tests/test_benchmarks_smoke.py; ``nox -s bench -- --suites infer
    --repeats 5 --out BENCHMARKS.md`` runs benchmarks/run.py with those arguments.
    """
    _install(session, CORE_DIST, *PLUGINS.values())
    session.install("--no-deps", "-c", str(BENCH_CONSTRAINTS), "-r", str(BENCH_REQUIREMENTS))
    if session.posargs:
        session.run("python", "benchmarks/run.py", *session.posargs, env=TEST_ENV)
    else:
        _pytest(session, "tests/test_benchmarks_smoke.py")


nox.options.sessions = [
    "lint",
    "typecheck",
    "core-alone",
    *(f"plugin({name})" for name in PLUGINS),
    "all",
    "e2e",
    "example",
]
