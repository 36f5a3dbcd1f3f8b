"""A plugin installed in a temporary environment is discovered through its entry point.

The fake distributions in ``tests/fixtures/`` are built and installed for real (``pip install --target``), then
a fresh interpreter with that folder on ``PYTHONPATH`` runs ``gbdt2nn plugins --json``: nothing is registered
in code, so this is the path a user's ``pip install gbdt2nn-something`` takes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from gbdt2nn_core.host.registry import DISABLE_ENV, STRICT_ENV, PluginWarning, Registry

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each fixture distribution installed into its own folder (so a test sees only the plugin it asks for)."""
    targets = {}
    for name in ("gbdt2nn-fake-loss", "gbdt2nn-fake-broken"):
        target = tmp_path_factory.mktemp(name)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                "--no-cache-dir",
                "--disable-pip-version-check",
                "--quiet",
                "--target",
                str(target),
                str(FIXTURES / name),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        targets[name] = target
    return targets


def installed_plugin_names() -> list[str]:
    """The entry points of the real plugins in this environment (switched off where only ours should load)."""
    return sorted({ep.name for ep in metadata.entry_points(group="gbdt2nn")} - {"fake-loss", "fake-broken"})


def gbdt2nn_plugins_json(
    path: Path, *, strict: bool, only_ours: bool = False
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    """Run ``python -m gbdt2nn_core.cli plugins --json`` in a fresh interpreter that sees ``path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GBDT2NN_")}
    env["PYTHONPATH"] = os.pathsep.join([str(path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env[STRICT_ENV] = "1" if strict else "0"
    if only_ours:
        env[DISABLE_ENV] = ",".join(installed_plugin_names())
    result = subprocess.run(
        [sys.executable, "-m", "gbdt2nn_core.cli", "plugins", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result, (json.loads(result.stdout) if result.returncode == 0 else None)


def test_installed_plugin_is_discovered_through_its_entry_point(installed: dict[str, Path]) -> None:
    # Not strict and nothing disabled: whatever else is installed (broken or not), ours must show up.
    result, report = gbdt2nn_plugins_json(installed["gbdt2nn-fake-loss"], strict=False)
    assert result.returncode == 0, result.stderr
    assert report is not None
    assert {
        "kind": "alignment loss",
        "name": "fake-l1",
        "plugin": "fake-loss",
        "distribution": "gbdt2nn-fake-loss",
        "version": "1.2.3",
        "summary": "fake plugin: mean absolute difference",
    } in report["components"]
    assert {
        "name": "fake-loss",
        "distribution": "gbdt2nn-fake-loss",
        "version": "1.2.3",
        "module": "gbdt2nn_fake_loss.plugin",
        "status": "loaded",
        "error": None,
        "fix": None,
    } in report["plugins"]


def test_installed_plugin_loads_in_strict_mode(installed: dict[str, Path]) -> None:
    result, report = gbdt2nn_plugins_json(installed["gbdt2nn-fake-loss"], strict=True, only_ours=True)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert report is not None
    assert ("fake-l1", "gbdt2nn-fake-loss") in {(c["name"], c["distribution"]) for c in report["components"]}


def test_broken_plugin_is_reported_with_the_fix_and_exit_code_0(installed: dict[str, Path]) -> None:
    result, report = gbdt2nn_plugins_json(installed["gbdt2nn-fake-broken"], strict=False)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "fake-broken" not in result.stderr  # the report says it; a warning on stderr would say it twice
    assert report is not None
    (record,) = [p for p in report["plugins"] if p["name"] == "fake-broken"]
    assert record["status"] == "failed"
    assert (record["distribution"], record["version"]) == ("gbdt2nn-fake-broken", "0.0.1")
    assert record["error"] == "import failed: ModuleNotFoundError: No module named 'gbdt2nn_fake_missing_backend'"
    assert "pip install -U gbdt2nn-fake-broken" in record["fix"]
    assert not [c for c in report["components"] if c["plugin"] == "fake-broken"]


def test_broken_plugin_in_strict_mode_is_a_one_line_error(installed: dict[str, Path]) -> None:
    result, _ = gbdt2nn_plugins_json(installed["gbdt2nn-fake-broken"], strict=True, only_ours=True)
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(
        "gbdt2nn: error: plugin 'fake-broken' from gbdt2nn-fake-broken 0.0.1 failed to load: "
        "import failed: ModuleNotFoundError: No module named 'gbdt2nn_fake_missing_backend'; "
    )


def test_installed_plugins_are_found_in_process(installed: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The same distributions through ``Registry()`` in this interpreter, as library users would meet them."""
    for path in installed.values():
        monkeypatch.syspath_prepend(str(path))
    monkeypatch.setenv(DISABLE_ENV, ",".join(installed_plugin_names()))
    modules_before = set(sys.modules)
    try:
        with pytest.warns(PluginWarning, match=r"'fake-broken' \(gbdt2nn-fake-broken 0.0.1\)"):
            registry = Registry(strict=False)
        assert callable(registry.alignment_loss("fake-l1"))
        (component,) = [c for c in registry.components() if c.name == "fake-l1"]
        assert (component.plugin, component.distribution, component.version) == (
            "fake-loss",
            "gbdt2nn-fake-loss",
            "1.2.3",
        )
        statuses = {p.name: p.status for p in registry.plugins() if p.name.startswith("fake-")}
        assert statuses == {"fake-broken": "failed", "fake-loss": "loaded"}
    finally:
        for name in set(sys.modules) - modules_before:
            if name.startswith("gbdt2nn_fake_"):
                del sys.modules[name]
