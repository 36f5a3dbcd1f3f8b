"""The suite's Markdown: a summary across datasets, then one table per dataset (mean ± std over seeds).

Input: the records :func:`quality_measure.measure` returns (one per model, dataset and seed). Means and standard
deviations come from the experiment's :func:`~gbdt2nn_core.experiment.results.stat`, and are printed with its
report's :func:`~gbdt2nn_core.experiment.report.fmt`, so that the suite and ``gbdt2nn experiment`` read alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gbdt2nn_core.experiment.report import fmt
from gbdt2nn_core.experiment.results import PRIMARY_METRIC, stat

__all__ = ["TASK_METRICS", "aggregate", "render"]

#: The test metrics shown per task (the first is the suite's accuracy measure, PRIMARY_METRIC).
TASK_METRICS = {"binary": ("auc", "logloss"), "multiclass": ("accuracy", "logloss"), "regression": ("rmse", "r2")}


def _value(record: dict[str, Any], path: str) -> float | None:
    node: Any = record
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return float(node)


def aggregate(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """dataset -> model -> {"task", "rows_train", "rows_test", "features", "seeds", metric path -> stat}."""
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for record in records:
        grouped.setdefault(record["dataset"], {}).setdefault(record["model"], []).append(record)
    result: dict[str, dict[str, dict[str, Any]]] = {}
    for dataset, models in grouped.items():
        result[dataset] = {}
        for model, runs in models.items():
            task = runs[0]["task"]
            paths = [f"test.{name}" for name in TASK_METRICS[task]]
            paths += ["fidelity.margin_r2", "fidelity.label_agreement", "agreement.spearman"]
            paths += ["seconds", "treeshap_seconds", "epochs"]
            summary: dict[str, Any] = {
                "task": task,
                "rows_train": runs[0]["rows_train"],
                "rows_test": runs[0]["rows_test"],
                "features": runs[0]["features"],
                "seeds": sorted(run["seed"] for run in runs),
            }
            for path in paths:
                values = [_value(run, path) for run in runs]
                if any(v is not None for v in values):
                    summary[path] = stat([v for v in values if v is not None])
            result[dataset][model] = summary
    return result


def _dataset_table(models: dict[str, dict[str, Any]]) -> list[str]:
    task = next(iter(models.values()))["task"]
    metrics = TASK_METRICS[task]
    header = ["model", *metrics, "margin R²", "label agree", "spearman", "train s", "epochs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, summary in models.items():
        cells = [model, *(fmt(summary.get(f"test.{m}")) for m in metrics)]
        cells += [fmt(summary.get(path)) for path in ("fidelity.margin_r2", "fidelity.label_agreement")]
        cells += [fmt(summary.get("agreement.spearman")), fmt(summary.get("seconds"), 1)]
        cells.append(fmt(summary.get("epochs"), 0))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _summary_table(aggregated: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    header = ["dataset", "task", "train / test rows", "metric", "teacher", "plain", "aligned", "aligned − teacher"]
    header += ["spearman plain → aligned", "teacher s", "TreeSHAP s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dataset, models in aggregated.items():
        teacher = next((s for m, s in models.items() if m.startswith("teacher")), None)
        plain, aligned = models.get("gbdt2nn · plain"), models.get("gbdt2nn · aligned")
        if teacher is None or plain is None or aligned is None:
            continue
        metric = PRIMARY_METRIC[teacher["task"]][0]
        key = f"test.{metric}"
        gap = "—"
        if teacher.get(key, {}).get("mean") is not None and aligned.get(key, {}).get("mean") is not None:
            gap = f"{aligned[key]['mean'] - teacher[key]['mean']:+.4f}"
        spearman = f"{fmt(plain.get('agreement.spearman'), 3)} → {fmt(aligned.get('agreement.spearman'), 3)}"
        rows = f"{teacher['rows_train']:,} / {teacher['rows_test']:,}"
        cells = [dataset, teacher["task"], rows, metric, fmt(teacher.get(key)), fmt(plain.get(key))]
        cells += [fmt(aligned.get(key)), gap, spearman, fmt(teacher.get("seconds"), 1)]
        cells.append(fmt(teacher.get("treeshap_seconds"), 1))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render(records: Sequence[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The whole report: how it was run, the summary, then each dataset's table."""
    aggregated = aggregate(records)
    seeds = meta.get("seeds", [])
    lines = [
        "# Quality suite",
        "",
        f"Command: `{meta.get('command', '?')}` — {meta.get('date', '?')}, {len(seeds)} seed(s) {seeds}; "
        f"epochs: {meta.get('epochs') or 'the students’ default'}; rows: "
        f"{'at most ' + format(meta['sample_rows'], ',') if meta.get('sample_rows') else 'all'}; "
        f"{meta.get('threads', '?')} thread(s) (TreeSHAP: {meta.get('treeshap_threads', '?')}).",
        "",
        *([] if meta.get("finished", True) else ["**Unfinished**: the run stopped or is still running.", ""]),
        "Test rows, mean ± std over seeds. Students are distilled with the pipeline's default settings; "
        "`aligned` uses the default λ, attributor and loss (`mlp` is explained by gradient-x-input). "
        "`spearman`: per-row rank agreement of the student's attributions with the teacher's TreeSHAP "
        "(multiclass: each row's explanation of the class the teacher predicts). "
        "`train s`: the student's training; the teacher's TreeSHAP of training and test rows is shown apart.",
        "",
        "## Summary (GBDT2NN student)",
        "",
        *_summary_table(aggregated),
    ]
    for dataset, models in aggregated.items():
        lines += ["", f"## {dataset}", "", *_dataset_table(models)]
    return "\n".join(lines) + "\n"
