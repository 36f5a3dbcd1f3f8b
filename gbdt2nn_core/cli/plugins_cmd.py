"""``gbdt2nn plugins [--json]``: what is installed, where each component comes from, and what failed to load.

The command is a report, so a broken plugin is listed (with its error and the fix) and the exit code stays 0.
Only in strict mode (``GBDT2NN_STRICT_PLUGINS=1``) does the first broken plugin become the command's error.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from typing import Any

from rich import box
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from gbdt2nn_core.host.registry import DISABLE_ENV, KINDS, PluginWarning, Registry, get_registry

__all__ = ["add_parser", "plugin_report", "render_report", "run"]

_STATUS_STYLE = {"loaded": "green", "failed": "bold red", "disabled": "yellow"}


def add_parser(subparsers: Any) -> None:
    """Register ``gbdt2nn plugins`` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "plugins",
        help="list installed plugins, their components, and the ones that failed to load",
        description=(
            "List every teacher, student, attributor and alignment loss that is installed, the plugin and "
            "distribution it comes from, and every plugin that failed to load with the way to fix it."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    parser.set_defaults(func=run)


def plugin_report(registry: Registry) -> dict[str, list[dict[str, str | None]]]:
    """The report as plain data: ``{"components": [...], "plugins": [...]}`` (the ``--json`` output)."""
    return {
        "components": [
            {
                "kind": c.kind,
                "name": c.name,
                "plugin": c.plugin,
                "distribution": c.distribution,
                "version": c.version,
                "summary": c.summary,
            }
            for c in registry.components()
        ],
        "plugins": [
            {
                "name": p.name,
                "distribution": p.distribution,
                "version": p.version,
                "module": p.module,
                "status": p.status,
                "error": p.error,
                "fix": p.fix,
            }
            for p in registry.plugins()
        ],
    }


def run(args: argparse.Namespace) -> int:
    """Print the report; 0 even when plugins failed (strict mode raises before, and the CLI reports that)."""
    # Each failure is in the report with its fix, so the registry's warnings would only say it twice on stderr.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PluginWarning)
        registry = get_registry()
    report = plugin_report(registry)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(render_report(report, Console()))
    return 0


def render_report(report: dict[str, list[dict[str, str | None]]], console: Console) -> str:
    """The human-readable report as ``console`` would print it (its width and colours), without trailing blanks.

    rich pads every line to the table's width; stripping the padding keeps piped output clean for grep and diff.
    """
    with console.capture() as capture:
        _print_tables(report, console)
    return "".join(line.rstrip() + "\n" for line in capture.get().splitlines())


#: Below this many columns the component tables show names and summaries only.
_NARROW = 100


def _longest(rows: list[dict[str, str | None]], key: str, header: str = "") -> int:
    """The width of the longest ``key`` cell (or of the header), so that rich never cuts one."""
    return max(len(header), *(len(str(row[key] or "")) for row in rows))


def _plural(kind: str) -> str:
    return kind + ("es" if kind.endswith("s") else "s")


def _text(value: object, style: str = "") -> Text:
    # Names, summaries and errors come from third-party plugins: as plain strings rich would read "[...]" as markup.
    return Text("" if value is None else str(value), style=style)


def _print_tables(report: dict[str, list[dict[str, str | None]]], console: Console) -> None:
    """One table per kind of component, a table of plugins, then each failure with its fix.

    Names are never cut or wrapped (each name column is as wide as its longest name); summaries wrap in what
    is left. A component's distribution is in the table of plugins, so the component tables have room for the
    summary. Below 100 columns the component tables drop the plugin column and the plugin table the
    distribution (``gbdt2nn plugins --json`` has everything). Errors and fixes are printed below the table
    rather than in a column: they are long, and squeezed into a column they become unreadable at 80 columns.
    """
    narrow = console.width < _NARROW
    for kind in KINDS:
        rows = [c for c in report["components"] if c["kind"] == kind]
        title = _plural(kind).capitalize()
        if not rows:
            console.print(Text.assemble((title, "bold"), ": none installed"), end="\n\n")
            continue
        table = Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD)
        table.add_column("name", style="bold cyan", no_wrap=True, min_width=_longest(rows, "name"))
        if not narrow:
            table.add_column("plugin", no_wrap=True, min_width=_longest(rows, "plugin"))
        table.add_column("summary", overflow="fold")
        for c in rows:
            cells = [_text(c["name"]), _text(c["plugin"]), _text(c["summary"])]
            table.add_row(*(cells[::2] if narrow else cells))
        console.print(table)

    table = Table(title="Plugins", title_justify="left", title_style="bold", box=box.SIMPLE_HEAD)
    table.add_column("plugin", style="bold", no_wrap=True, min_width=_longest(report["plugins"], "name"))
    if not narrow:
        table.add_column("distribution", overflow="fold")
    table.add_column("version", no_wrap=True, min_width=_longest(report["plugins"], "version", "version"))
    table.add_column("status", no_wrap=True, min_width=_longest(report["plugins"], "status", "status"))
    counts = dict.fromkeys(_STATUS_STYLE, 0)
    for p in report["plugins"]:
        status = str(p["status"])
        counts[status] = counts.get(status, 0) + 1
        cells = [
            _text(p["name"]),
            _text(p["distribution"]),
            _text(p["version"]),
            _text(status, _STATUS_STYLE.get(status, "")),
        ]
        table.add_row(*(cells[:1] + cells[2:] if narrow else cells))
    console.print(table)

    failed = [p for p in report["plugins"] if p["status"] == "failed"]
    if failed:
        console.print(_text("Failed to load (skipped)", "bold red"))
        for p in failed:
            console.print(Padding(_text(f"{p['name']} ({p['distribution']} {p['version']})", "bold"), (0, 0, 0, 2)))
            console.print(Padding(_text(p["error"]), (0, 0, 0, 4)))
            console.print(Padding(_text(f"fix: {p['fix']}"), (0, 0, 0, 4)))
        console.print()
    disabled = [str(p["name"]) for p in report["plugins"] if p["status"] == "disabled"]
    if disabled:
        console.print(_text(f"Disabled by {DISABLE_ENV}: {', '.join(disabled)}."))
    tally = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    console.print(_text(f"{len(report['plugins'])} plugins: {tally}."))
