"""The grid's report: each test adds its row, and the table is printed (and written to $E2E_REPORT) at the end."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

_ROWS = pytest.StashKey[list[dict[str, Any]]]()

COLUMNS = (
    ("teacher", "teacher"),
    ("attributor", "attributor"),
    ("loss", "loss"),
    ("λ", "weight"),
    ("spearman plain → aligned", "spearman"),
    ("cosine plain → aligned", "cosine"),
    ("AUC plain → aligned", "auc"),
    ("seconds", "seconds"),
)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_ROWS] = []


@pytest.fixture(scope="session")
def grid_report(pytestconfig: pytest.Config) -> list[dict[str, Any]]:
    """Rows of the grid's table: dicts with the keys of :data:`COLUMNS` (values already formatted)."""
    return pytestconfig.stash[_ROWS]


def render(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table, sorted by teacher, attributor and loss."""
    lines = [
        "| " + " | ".join(title for title, _ in COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    for row in sorted(rows, key=lambda r: (r["teacher"], r["attributor"], r["loss"])):
        lines.append("| " + " | ".join(str(row.get(key, "")) for _, key in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(_ROWS, [])
    if not rows:
        return
    table = render(rows)
    terminalreporter.write_sep("=", "teacher x attributor x alignment loss")
    terminalreporter.write(table)
    target = os.environ.get("E2E_REPORT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(table, encoding="utf-8")
        terminalreporter.write_line(f"grid table written to {target}")
