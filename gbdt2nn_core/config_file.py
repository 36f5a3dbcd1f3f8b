"""Run settings from a TOML file, so an experiment is a file you can keep next to its results.

Every section and key is optional; command-line flags override the file. Example (``gbdt2nn distill
--config run.toml``)::

    [data]
    path = "data/churn.parquet"      # or: dataset = "adult"
    target = "churned"
    task = "binary"                  # default: inferred from the target

    [teacher]
    name = "xgboost"
    model = "models/churn.ubj"       # optional: distil this booster instead of training one
    options = { n_estimators = 200 }

    [student]
    name = "gbdt2nn"
    options = { epochs = 30, n_groups = 10 }

    [attributor]
    name = "integrated-gradients"
    options = { steps = 16 }

    [alignment]
    loss = "rank"
    weight = 1.0                     # λ; 0 = plain distillation
    fraction = 1.0                   # share of batches that carry the alignment term
    rows = 0.1                       # share of training rows that carry it (only theirs get TreeSHAP)
    min_rows = 3000                  # but at least this many (every row of a smaller set; 0 = no floor)
    check = false                    # retrain at a tenth of λ where alignment costs accuracy on the held-out rows
    options = { temperature = 1.0 }

    [run]
    seed = 0
    threads = 2                      # torch, teacher and TreeSHAP threads (default: every core)
    test_size = 0.2
    validation_fraction = 0.1        # training rows the student holds out to stop early (0 = none)
    synthetic_rows = "auto"          # teacher-labelled rows per training row: auto = 4 for regression (0 = none)
    threshold_bins = 64
    merge_categories = true          # categories the teacher never tells apart share a one-hot slot
    teacher_explanation = "path-dependent"   # or "interventional"
    spill_bytes = 67108864           # a per-row matrix larger than this is kept in a float32 file on disk
    out = "runs/churn"
    compare = true                   # also train a plain (λ = 0) student
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gbdt2nn_core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["ALLOWED_KEYS", "read_config_file", "read_toml"]

#: section -> keys it may hold
ALLOWED_KEYS: dict[str, frozenset[str]] = {
    "data": frozenset({"path", "dataset", "target", "task"}),
    "teacher": frozenset({"name", "model", "options"}),
    "student": frozenset({"name", "options"}),
    "attributor": frozenset({"name", "options"}),
    "alignment": frozenset({"loss", "weight", "fraction", "batches", "rows", "min_rows", "check", "options"}),
    "run": frozenset(
        {
            "seed",
            "threads",
            "test_size",
            "validation_fraction",
            "synthetic_rows",
            "threshold_bins",
            "merge_categories",
            "teacher_explanation",
            "background_rows",
            "out",
            "compare",
            "cache_dir",
            "cache",
            "device",
            "spill_bytes",
        }
    ),
}


def read_config_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Parse and check a ``gbdt2nn distill`` run file (sections and keys of :data:`ALLOWED_KEYS`)."""
    return read_toml(path, ALLOWED_KEYS)


def read_toml(path: str | Path, allowed: Mapping[str, frozenset[str]]) -> dict[str, dict[str, Any]]:
    """Parse a settings file whose sections and keys are ``allowed`` (``*``: any key, each a table of options).

    Unknown sections or keys are one-line errors that list the allowed ones. Returns every allowed section
    (empty when the file leaves it out).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(setting="--config", value=str(path), fix="pass the path of an existing TOML file")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(setting="--config", value=str(path), fix=f"fix the TOML syntax ({exc})") from exc
    for section, content in document.items():
        if section not in allowed:
            raise ConfigError(
                setting=f"{path.name} section",
                value=f"[{section}]",
                fix=f"use the sections {', '.join(f'[{name}]' for name in allowed)}",
            )
        if not isinstance(content, dict):
            raise ConfigError(setting=f"{section} in {path.name}", value=content, fix=f"make [{section}] a table")
        if "*" in allowed[section]:
            continue
        unknown = set(content) - allowed[section]
        if unknown:
            raise ConfigError(
                setting=f"{path.name} [{section}] key",
                value=sorted(unknown)[0],
                fix=f"[{section}] takes {', '.join(sorted(allowed[section]))}",
            )
        options = content.get("options", {})
        if not isinstance(options, dict):
            raise ConfigError(
                setting=f"[{section}] options in {path.name}", value=options, fix="write options as a table"
            )
    return {section: dict(document.get(section, {})) for section in allowed}
