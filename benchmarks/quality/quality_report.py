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

__all__ = ["GOALS", "TASK_METRICS", "aggregate", "goal_rows", "render"]

#: The test metrics shown per task (the first is the suite's accuracy measure, PRIMARY_METRIC).
TASK_METRICS = {"binary": ("auc", "logloss"), "multiclass": ("accuracy", "logloss"), "regression": ("rmse", "r2")}


#: Issue 12's goals for the aligned GBDT2NN student, each a mean over seeds: how far below its teacher's accuracy it
#: may land (binary AUC, multiclass accuracy), how far above its teacher's loss (regression RMSE, multiclass
#: log-loss, as ratios), and its Spearman agreement with TreeSHAP (at least this, and this much above the plain
#: student's).
GOALS = {"accuracy_below": 0.005, "loss_ratio": 1.02, "spearman": 0.85, "spearman_gain": 0.15}


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


def _teacher(models: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """A dataset's teacher summary, or ``None`` when the run has none."""
    return next((s for m, s in models.items() if m.startswith("teacher")), None)


def _teacher_plain_aligned(models: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], ...] | None:
    """A dataset's teacher and plain and aligned GBDT2NN summaries, or ``None`` when one is missing."""
    teacher = _teacher(models)
    plain, aligned = models.get("gbdt2nn · plain"), models.get("gbdt2nn · aligned")
    return None if teacher is None or plain is None or aligned is None else (teacher, plain, aligned)


def _pair(
    first: dict[str, Any] | None, second: dict[str, Any] | None, path: str, digits: int = 4, between: str = " → "
) -> str:
    """Two students' ``path``, ``first → second``; "—" for a student the run did not train (``--no-aligned``)."""
    if first is None and second is None:
        return "—"
    return (
        (fmt(first.get(path), digits) if first else "—") + between + (fmt(second.get(path), digits) if second else "—")
    )


def _summary_table(aggregated: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    header = ["dataset", "task", "train / test rows", "metric", "teacher", "plain", "aligned", "aligned − teacher"]
    header += ["spearman plain → aligned", "mlp plain / aligned", "mlp spearman", "teacher s", "TreeSHAP s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dataset, models in aggregated.items():
        teacher = _teacher(models)
        if teacher is None:
            continue
        # a student the run did not train (--no-aligned, --no-mlp, --no-gbdt2nn) is a "—", not a missing row
        plain, aligned = models.get("gbdt2nn · plain"), models.get("gbdt2nn · aligned")
        metric = PRIMARY_METRIC[teacher["task"]][0]
        key = f"test.{metric}"
        teacher_mean, aligned_mean = _mean(teacher, key), _mean(aligned, key)
        gap = "—" if teacher_mean is None or aligned_mean is None else f"{aligned_mean - teacher_mean:+.4f}"
        rows = f"{teacher['rows_train']:,} / {teacher['rows_test']:,}"
        cells = [dataset, teacher["task"], rows, metric, fmt(teacher.get(key))]
        cells += [fmt(plain.get(key)) if plain else "—", fmt(aligned.get(key)) if aligned else "—", gap]
        cells.append(_pair(plain, aligned, "agreement.spearman", 3))
        mlp_plain, mlp_aligned = models.get("mlp · plain"), models.get("mlp · aligned")
        cells += [
            _pair(mlp_plain, mlp_aligned, key, between=" / "),
            _pair(mlp_plain, mlp_aligned, "agreement.spearman", 3),
        ]
        cells.append(fmt(teacher.get("seconds"), 1))
        cells.append(fmt(teacher.get("treeshap_seconds"), 1))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _mean(summary: dict[str, Any] | None, path: str) -> float | None:
    return None if summary is None else (summary.get(path) or {}).get("mean")


def _paired(records: Sequence[dict[str, Any]], dataset: str, metric: str) -> list[float]:
    """Per seed, aligned minus plain GBDT2NN on ``metric`` (seeds that have both)."""
    by_seed: dict[int, dict[str, float]] = {}
    for record in records:
        value = _value(record, f"test.{metric}")
        if record["dataset"] == dataset and value is not None:
            by_seed.setdefault(record["seed"], {})[record["model"]] = value
    pair = {"gbdt2nn · aligned", "gbdt2nn · plain"}
    return [m["gbdt2nn · aligned"] - m["gbdt2nn · plain"] for m in by_seed.values() if pair <= m.keys()]


def goal_rows(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 12's goals, per dataset, for the aligned GBDT2NN student: each goal's measured value and whether it is
    met (means over seeds). "Not less accurate than plain" fails when the mean paired difference (aligned − plain,
    per seed) is worse by more than the difference's seed-to-seed standard deviation (seed noise); one seed cannot
    tell, so it compares the means."""
    rows: list[dict[str, Any]] = []
    for dataset, models in aggregate(records).items():
        trio = _teacher_plain_aligned(models)
        if trio is None:
            continue
        teacher, plain, aligned = trio
        task = teacher["task"]
        metric, larger_is_better = PRIMARY_METRIC[task]
        key = f"test.{metric}"
        t_value, a_value = _mean(teacher, key), _mean(aligned, key)
        if t_value is None or a_value is None:
            continue
        row: dict[str, Any] = {"dataset": dataset, "task": task, "metric": metric, "seeds": aligned["seeds"]}
        if larger_is_better:
            row["accuracy"] = (f"{a_value - t_value:+.4f}", a_value - t_value >= -GOALS["accuracy_below"])
        else:
            row["accuracy"] = (f"{a_value / t_value:.3f} ×", a_value / t_value <= GOALS["loss_ratio"])
        if task == "multiclass":
            t_loss, a_loss = _mean(teacher, "test.logloss"), _mean(aligned, "test.logloss")
            if t_loss and a_loss is not None:
                row["logloss"] = (f"{a_loss / t_loss:.3f} ×", a_loss / t_loss <= GOALS["loss_ratio"])
        differences = stat([d if larger_is_better else -d for d in _paired(records, dataset, metric)])
        if differences["n"]:
            noise = differences["std"] if differences["n"] > 1 else 0.0
            places = 4 if abs(t_value) < 100 else 1  # AUC, accuracy, RMSE in units of about one; prices in dollars
            text = f"{differences['mean']:+.{places}f} ± {noise:.{places}f}"
            row["versus_plain"] = (text, differences["mean"] >= -noise)
        p_spearman = _mean(plain, "agreement.spearman")
        a_spearman = _mean(aligned, "agreement.spearman")
        if p_spearman is not None and a_spearman is not None:
            row["spearman"] = (f"{a_spearman:.3f}", a_spearman >= GOALS["spearman"])
            gain = a_spearman - p_spearman
            row["spearman_gain"] = (f"{gain:+.3f}", gain >= GOALS["spearman_gain"])
        rows.append(row)
    return rows


def _goal_table(records: Sequence[dict[str, Any]]) -> list[str]:
    header = ["dataset", "seeds", "accuracy vs teacher", "log-loss vs teacher", "aligned vs plain (+: better)"]
    header += [f"Spearman ≥ {GOALS['spearman']}", f"Spearman gain ≥ {GOALS['spearman_gain']}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def cell(goal: tuple[str, bool] | None) -> str:
        return "—" if goal is None else f"{goal[0]} {'yes' if goal[1] else '**no**'}"

    for row in goal_rows(records):
        cells = [row["dataset"], str(len(row["seeds"])), f"{row['metric']} {cell(row['accuracy'])}"]
        cells += [cell(row.get(k)) for k in ("logloss", "versus_plain", "spearman", "spearman_gain")]
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
        "## Summary (GBDT2NN student; the mlp student where it ran)",
        "",
        *_summary_table(aggregated),
        "",
        "## Issue 12's goals (aligned GBDT2NN student, means over seeds)",
        "",
        f"Binary AUC and multiclass accuracy at most {GOALS['accuracy_below']} below the teacher's; regression RMSE "
        f"and multiclass log-loss at most {GOALS['loss_ratio']} × the teacher's; not less accurate than the plain "
        "student beyond seed noise (the per-seed difference, in the metric's better direction, mean ± std); "
        f"Spearman agreement with TreeSHAP ≥ {GOALS['spearman']} and ≥ the plain student's + {GOALS['spearman_gain']}.",
        "",
        *_goal_table(records),
    ]
    for dataset, models in aggregated.items():
        lines += ["", f"## {dataset}", "", *_dataset_table(models)]
    return "\n".join(lines) + "\n"
