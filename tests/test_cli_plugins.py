"""``gbdt2nn plugins``: the JSON and table reports, strict mode, and the installed console script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import types
from collections.abc import Callable, Iterator
from importlib import metadata
from pathlib import Path

import pytest

import gbdt2nn_core
from gbdt2nn_core import AlignmentLossSpec, hookimpl
from gbdt2nn_core.cli import main, plugins_cmd
from gbdt2nn_core.host.registry import DISABLE_ENV, STRICT_ENV, Registry, get_registry

INSTALLED = sorted({ep.name for ep in metadata.entry_points(group="gbdt2nn")})


@pytest.fixture(autouse=True)
def only_builtins(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Installed plugins disabled, not strict, a plain 100-column terminal, and a fresh process-wide registry."""
    monkeypatch.setenv(DISABLE_ENV, ",".join(INSTALLED))
    monkeypatch.setenv(STRICT_ENV, "0")
    monkeypatch.setenv("COLUMNS", "100")
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "GBDT2NN_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    get_registry.cache_clear()
    yield
    get_registry.cache_clear()


@pytest.fixture
def with_plugins(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Make the command see a registry with these in-code plugins (built when the command asks for it)."""

    def use(*plugins: object, strict: bool = False) -> None:
        monkeypatch.setattr(plugins_cmd, "get_registry", lambda: Registry(strict=strict, plugins=plugins))

    return use


def _broken() -> types.ModuleType:
    module = types.ModuleType("broken")

    @hookimpl
    def gbdt2nn_register_alignment_losses() -> list[AlignmentLossSpec]:
        raise RuntimeError("boom")

    module.gbdt2nn_register_alignment_losses = gbdt2nn_register_alignment_losses  # type: ignore[attr-defined]
    return module


def _healthy() -> types.ModuleType:
    module = types.ModuleType("healthy")

    @hookimpl
    def gbdt2nn_register_alignment_losses() -> list[AlignmentLossSpec]:
        return [AlignmentLossSpec(name="l1", factory=lambda: abs, summary="mean absolute difference " * 5)]

    module.gbdt2nn_register_alignment_losses = gbdt2nn_register_alignment_losses  # type: ignore[attr-defined]
    return module


def test_json_lists_components_and_plugins(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    report = json.loads(out)
    assert set(report) == {"components", "plugins"}
    assert {
        "kind": "student",
        "name": "gbdt2nn",
        "plugin": "gbdt2nn-core",
        "distribution": "gbdt2nn-core",
        "version": gbdt2nn_core.__version__,
        "summary": report["components"][0]["summary"],
    } in report["components"]
    core, *others = report["plugins"]
    assert core == {
        "name": "gbdt2nn-core",
        "distribution": "gbdt2nn-core",
        "version": gbdt2nn_core.__version__,
        "module": "gbdt2nn_core.host.builtins",
        "status": "loaded",
        "error": None,
        "fix": None,
    }
    assert sorted(p["name"] for p in others) == INSTALLED
    assert {p["status"] for p in others} <= {"disabled"}


def test_json_reports_a_failed_plugin_on_stdout_only(
    capsys: pytest.CaptureFixture[str], with_plugins: Callable[..., None]
) -> None:
    with_plugins(_healthy(), _broken())
    assert main(["plugins", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""  # the failure is in the report; a warning as well would be noise around the JSON
    report = json.loads(out)
    (broken,) = [p for p in report["plugins"] if p["name"] == "broken"]
    assert broken["status"] == "failed"
    assert broken["error"] == "gbdt2nn_register_alignment_losses raised RuntimeError: boom"
    assert "report it to the authors" in broken["fix"]
    assert ("alignment loss", "l1", "healthy") in {(c["kind"], c["name"], c["plugin"]) for c in report["components"]}


@pytest.mark.parametrize("args", [["plugins"], ["plugins", "--json"]])
def test_strict_mode_turns_a_failed_plugin_into_a_one_line_error(
    capsys: pytest.CaptureFixture[str], with_plugins: Callable[..., None], args: list[str]
) -> None:
    with_plugins(_healthy(), _broken(), strict=True)
    assert main(args) != 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "gbdt2nn: error: plugin 'broken' from (registered in code) - failed to load: "
        "gbdt2nn_register_alignment_losses raised RuntimeError: boom; "
        "report it to the authors of (registered in code), or uninstall it\n"
    )


def test_table_groups_components_by_kind_and_explains_failures(
    capsys: pytest.CaptureFixture[str], with_plugins: Callable[..., None]
) -> None:
    with_plugins(_healthy(), _broken())
    assert main(["plugins"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert "Teachers: none installed" in lines
    assert "Students" in lines
    assert "Alignment losses" in lines
    assert lines.index("Students") < lines.index("Alignment losses")
    # a component's plugin is in its table, the plugin's distribution in the table of plugins
    assert any(line.split()[:2] == ["gbdt2nn", "gbdt2nn-core"] for line in lines)
    assert any(line.split()[:3] == ["gbdt2nn-core", "gbdt2nn-core", "0.1.0"] for line in lines)
    assert any(line.split()[:3] == ["broken", "(registered", "in"] and line.split()[-1] == "failed" for line in lines)
    assert "Failed to load (skipped)" in lines
    assert "    gbdt2nn_register_alignment_losses raised RuntimeError: boom" in lines
    assert any(line.startswith("    fix: report it to the authors") for line in lines)
    assert lines[-1].startswith(f"{len(INSTALLED) + 3} plugins: 2 loaded, 1 failed")


def test_table_fits_100_columns_and_has_no_escape_codes_when_piped(
    capsys: pytest.CaptureFixture[str], with_plugins: Callable[..., None]
) -> None:
    with_plugins(_healthy(), _broken())
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out
    assert max(len(line) for line in out.splitlines()) <= 100
    assert all(line == line.rstrip() for line in out.splitlines())


@pytest.mark.parametrize("columns", [50, 80, 100])
def test_names_are_never_cut_in_a_narrow_terminal(
    columns: int, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10 (13): below 100 columns (piped: 80) 'integrated-gradients' was cut to 'integrated-gradie…'."""
    monkeypatch.delenv(DISABLE_ENV)
    get_registry.cache_clear()
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "…" not in out
    registry = get_registry()
    names = {c["name"] for c in plugins_cmd.plugin_report(registry)["components"]}
    first_words = {line.split()[0] for line in out.splitlines() if line.strip()}
    assert names <= first_words, names - first_words
    assert {p.name for p in registry.plugins()} <= first_words


def test_plugin_text_is_printed_literally_not_as_markup(
    capsys: pytest.CaptureFixture[str], with_plugins: Callable[..., None]
) -> None:
    module = types.ModuleType("brackets")

    @hookimpl
    def gbdt2nn_register_alignment_losses() -> list[AlignmentLossSpec]:
        return [AlignmentLossSpec(name="bracketed", factory=lambda: abs, summary="weights [w] in [/0, 1]")]

    module.gbdt2nn_register_alignment_losses = gbdt2nn_register_alignment_losses  # type: ignore[attr-defined]
    with_plugins(module)
    assert main(["plugins"]) == 0
    assert "weights [w] in [/0, 1]" in capsys.readouterr().out


def test_disabled_plugins_are_named_in_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    if not INSTALLED:
        pytest.skip("no plugin is installed in this environment")
    assert main(["plugins"]) == 0
    words = " ".join(capsys.readouterr().out.split())  # the list may wrap
    assert f"Disabled by {DISABLE_ENV}: {', '.join(INSTALLED)}." in words


def test_console_script_is_installed() -> None:
    script = shutil.which("gbdt2nn", path=str(Path(sys.executable).parent)) or shutil.which("gbdt2nn")
    assert script, "the gbdt2nn console script is not installed; pip install -e ."
    env = {**os.environ, DISABLE_ENV: ",".join(INSTALLED), STRICT_ENV: "0"}
    result = subprocess.run([script, "plugins"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "gbdt2nn-core" in result.stdout
    assert "\x1b[" not in result.stdout  # not a terminal: no colours


def test_unknown_subcommand_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code != 0
    assert "invalid choice: 'frobnicate'" in capsys.readouterr().err


def test_plugins_help_mentions_json(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["plugins", "--help"])
    assert info.value.code == 0
    assert "--json" in capsys.readouterr().out
