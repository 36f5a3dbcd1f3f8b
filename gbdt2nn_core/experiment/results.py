"""Collect an experiment folder's per-run ``metrics.json`` files into one ``results.json``: mean ± std over seeds.

Methods (rows of the report):

- ``teacher``: the booster's task metric;
- ``plain · <attributor>``: the plain student, explained by each attributor of the experiment (one student, so the
  task metric and fidelity are the same on each of these rows; the agreement differs);
- ``joint · <attributor> · <loss>``: a jointly trained student, explained by the attributor it was trained with;
- ``independent imitation``: the plain student's predictions with a separate explanation network's attributions.

``paired`` holds, for every joint method, the mean ± std over seeds of its difference to the plain student
explained by the same attributor (same seed, same teacher, same split): the fair test of "joint is better".
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from gbdt2nn_core.errors import DataError
from gbdt2nn_core.experiment.names import IMITATION, INDEPENDENT, PLAIN
from gbdt2nn_core.model_files import write_atomic

__all__ = ["AGREEMENT_KEYS", "FORMAT", "PRIMARY_METRIC", "collect_results", "load_results", "method_label", "stat"]

FORMAT = 1
AGREEMENT_KEYS = ("spearman", "cosine", "top5", "sign")
#: The task metric that decides "better predictions", and whether larger is better.
PRIMARY_METRIC = {"binary": ("auc", True), "multiclass": ("accuracy", True), "regression": ("rmse", False)}


def stat(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (0 for a single seed), count and the values themselves."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return {"mean": None, "std": None, "n": 0, "values": list(values)}
    array = np.asarray(finite)
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "n": len(array), "values": [float(v) for v in values]}


def method_label(method_id: str) -> str:
    """A readable name for a method id (``joint/structure/mse`` → ``joint · structure · mse``)."""
    if method_id == INDEPENDENT:
        return "independent imitation"
    return " · ".join(method_id.split("/"))


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _agreement(student: dict[str, Any], attributor: str) -> dict[str, float]:
    """A run's agreement as measured by ``attributor`` (the :class:`~gbdt2nn_core.metrics.Metrics` JSON)."""
    by_attributor: dict[str, dict[str, float]] = student.get("agreement_by_attributor") or {}
    scores: dict[str, float] = by_attributor.get(attributor, student["agreement"])
    return scores


def collect_results(out: Path | str, *, write: bool = True) -> dict[str, Any]:
    """Aggregate the finished runs of the experiment in ``out``; writes ``out/results.json`` unless ``write=False``."""
    out = Path(out)
    manifest_path = out / "manifest.json"
    if not manifest_path.is_file():
        raise DataError(problem=f"{str(out)!r} holds no experiment (no manifest.json)", fix="pass the folder of --out")
    manifest = _read(manifest_path)
    seeds: list[int] = list(manifest["seeds"])
    components = manifest["components"]
    configurations = components["configurations"]
    attributors: list[str] = components["attributors"]

    teacher_records = {}
    for seed in seeds:
        path = out / "runs" / str(seed) / "teacher" / "teacher.json"
        if path.is_file():
            teacher_records[seed] = _read(path)
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    missing: list[str] = []
    for configuration in configurations:
        for seed in seeds:
            path = out / "runs" / str(seed) / configuration["name"] / "metrics.json"
            if path.is_file():
                runs.setdefault(configuration["name"], {})[seed] = _read(path)
            else:
                missing.append(f"{seed}/{configuration['name']}")
    task = next((r["task"] for by_seed in runs.values() for r in by_seed.values()), None)
    if task is None and teacher_records:
        task = "binary" if "auc" in next(iter(teacher_records.values()))["test"] else "regression"

    # method id -> (configuration name, the attributor key of its agreement in metrics.json)
    methods: list[dict[str, Any]] = []
    for configuration in configurations:
        name = configuration["name"]
        if configuration["kind"] == "plain":
            for attributor in attributors:
                methods.append(
                    {
                        "id": f"{PLAIN}/{attributor}",
                        "run": name,
                        "kind": "plain",
                        "attributor": attributor,
                        "loss": None,
                    }
                )
        elif configuration["kind"] == "independent":
            methods.append(
                {"id": INDEPENDENT, "run": name, "kind": "independent", "attributor": IMITATION, "loss": None}
            )
        else:
            methods.append(
                {
                    "id": f"joint/{configuration['attributor']}/{configuration['loss']}",
                    "run": name,
                    "kind": "joint",
                    "attributor": configuration["attributor"],
                    "loss": configuration["loss"],
                    "weight": configuration["weight"],
                }
            )
    for method in methods:
        method["label"] = method_label(method["id"])

    summary: dict[str, Any] = {}
    for method in methods:
        by_seed = runs.get(method["run"], {})
        done = [seed for seed in seeds if seed in by_seed]
        entry: dict[str, Any] = {"seeds": done}
        if done:
            students = {s: by_seed[s]["student"] for s in done}
            first = students[done[0]]
            entry["test"] = {k: stat([students[s]["test"][k] for s in done]) for k in first["test"]}
            entry["fidelity"] = {k: stat([students[s]["fidelity"][k] for s in done]) for k in first["fidelity"]}
            key = method["attributor"]
            entry["agreement"] = {
                k: stat([_agreement(students[s], key)[k] for s in done]) for k in _agreement(first, key)
            }
            entry["timings"] = {k: stat([by_seed[s]["timings"][k] for s in done]) for k in by_seed[done[0]]["timings"]}
        summary[method["id"]] = entry

    primary, larger_is_better = PRIMARY_METRIC.get(task or "binary", ("auc", True))
    paired: dict[str, Any] = {}
    for method in methods:
        if method["kind"] != "joint":
            continue
        joint_runs, plain_runs = runs.get(method["run"], {}), runs.get(PLAIN, {})
        both = [s for s in seeds if s in joint_runs and s in plain_runs]
        if not both:
            continue
        attributor = method["attributor"]
        joint = {s: joint_runs[s]["student"] for s in both}
        plain = {s: plain_runs[s]["student"] for s in both}
        differences: dict[str, Any] = {
            primary: stat([joint[s]["test"][primary] - plain[s]["test"][primary] for s in both])
        }
        for key in AGREEMENT_KEYS:
            differences[key] = stat(
                [_agreement(joint[s], attributor)[key] - _agreement(plain[s], attributor)[key] for s in both]
            )
        paired[method["id"]] = {"against": f"{PLAIN}/{attributor}", "seeds": both, "difference": differences}

    teacher: dict[str, Any] = {"name": manifest["config"]["teacher"], "seeds": sorted(teacher_records)}
    if teacher_records:
        records = [teacher_records[s] for s in sorted(teacher_records)]
        teacher["test"] = {k: stat([r["test"][k] for r in records]) for k in records[0]["test"]}
        teacher["timings"] = {
            k: stat([r["timings"][k] for r in records])
            for k in ("teacher_s", "treeshap_s")
            if k in records[0]["timings"]
        }
        teacher["rows"] = records[0]["rows"]
        teacher["features"] = records[0]["features"]

    results = {
        "format": FORMAT,
        "experiment": str(out),
        "data": manifest["data"],
        "task": task,
        "primary_metric": {"name": primary, "larger_is_better": larger_is_better},
        "seeds": seeds,
        "attributors": attributors,
        "losses": components["losses"],
        "config": manifest["config"],
        "teacher": teacher,
        "methods": methods,
        "summary": summary,
        "paired": paired,
        "complete": not missing and len(teacher_records) == len(seeds),
        "missing": missing,
    }
    if write:
        write_atomic(out / "results.json", (json.dumps(results, indent=2) + "\n").encode("utf-8"))
    return results


def load_results(out: Path | str) -> dict[str, Any]:
    """The ``results.json`` of an experiment folder."""
    path = Path(out) / "results.json"
    if not path.is_file():
        raise DataError(problem=f"{str(path)!r} does not exist", fix="run 'gbdt2nn experiment' into that folder first")
    return _read(path)
