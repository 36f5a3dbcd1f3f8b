"""The report's figures, drawn with matplotlib's object API (no pyplot, no global state) and saved as PNG.

Every function takes the collected results and an :class:`ExperimentData` (the arrays the runs saved) and
returns a :class:`matplotlib.figure.Figure`; :func:`draw_all` writes them to ``figures/*.png``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gbdt2nn_core.experiment.names import IMITATION, INDEPENDENT, PLAIN

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["FIGURES", "ExperimentData", "draw_all"]

#: file name -> (title, caption) of every figure, in report order
FIGURES: dict[str, tuple[str, str]] = {
    "agreement.png": (
        "Agreement with TreeSHAP per method",
        "Mean over seeds (dot) ± one standard deviation (bar) of the per-row agreement between each method's "
        "attributions and the teacher's TreeSHAP on the test rows. Plain rows are the same student explained by "
        "different attributors; each joint row is a student trained to imitate TreeSHAP through that attributor.",
    ),
    "scatter.png": (
        "Student vs teacher attributions for the top features",
        "Each point is a test row (first seed, up to 800 rows): the teacher's TreeSHAP value of the feature (x) "
        "against the student's attribution (y). Grey: the plain student; colour: the best joint student for "
        "that attributor (highest mean Spearman), or the independent explanation network. On the diagonal, the "
        "student explains that feature exactly like the teacher.",
    ),
    "curves.png": (
        "Training curves",
        "Per epoch, mean over seeds (band: ± one standard deviation). From the top: the task loss on the training "
        "batches (BatchNorm on batch statistics); the task metric on a fixed subsample of test rows (eval mode, "
        "BatchNorm on the running statistics as they stand at that epoch; after the last epoch the student "
        "re-estimates them on the training rows); the alignment loss (log scale "
        "when it spans decades; dotted, in the mse column: the independent network's training MSE); and Spearman "
        "agreement with TreeSHAP on the same test rows (dashed: the plain student explained by the same "
        "attributor; dotted: the independent explanation network).",
    ),
    "example.png": (
        "One row explained by the teacher and the students",
        "A single test row (first seed; the row at the 90th percentile of the teacher's margin), explained by the "
        "teacher's TreeSHAP and by each student. Features are ordered by the teacher's absolute attribution.",
    ),
    "importance.png": (
        "Feature importance: teacher vs students",
        "Mean absolute attribution of each feature over the test rows (averaged over seeds), in margin units. "
        "A student that explains like the teacher has bars of the same length in the same order.",
    ),
}

_GREY = "#8c8c8c"
_TEACHER = "#222222"
_INDEPENDENT = "#7b3294"
_PALETTE = ("#1f77b4", "#e6550d", "#31a354", "#d62728", "#17becf", "#bcbd22", "#8c564b", "#e377c2")


def attributor_colours(attributors: Sequence[str]) -> dict[str, str]:
    """One colour per attributor, stable in the experiment's order."""
    colours = {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(attributors)}
    colours[IMITATION] = _INDEPENDENT
    return colours


class ExperimentData:
    """The arrays an experiment saved, loaded lazily: teacher explanations, student attributions, histories."""

    def __init__(self, out: Path, results: dict[str, Any]) -> None:
        self.out = Path(out)
        self.results = results
        self.seeds = [int(s) for s in results["seeds"]]

    def _run(self, seed: int, name: str) -> Path:
        return self.out / "runs" / str(seed) / name

    def teacher(self, seed: int) -> dict[str, np.ndarray] | None:
        path = self._run(seed, "teacher") / "explanations.npz"
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as stored:
            return {key: stored[key] for key in stored.files}

    def attributions(self, seed: int, run: str) -> dict[str, np.ndarray] | None:
        path = self._run(seed, run) / "attributions.npz"
        if not path.is_file() or not (self._run(seed, run) / "metrics.json").is_file():
            return None
        with np.load(path, allow_pickle=False) as stored:
            return {key: stored[key] for key in stored.files}

    def history(self, seed: int, run: str) -> dict[str, Any] | None:
        path = self._run(seed, run) / "history.json"
        if not path.is_file() or not (self._run(seed, run) / "metrics.json").is_file():
            return None
        history: dict[str, Any] = json.loads(path.read_text())
        return history

    @property
    def features(self) -> list[str]:
        return list(self.results["teacher"].get("features", []))


# ---------------------------------------------------------------------------------------------------------------
# selection helpers
# ---------------------------------------------------------------------------------------------------------------


def _mean(results: dict[str, Any], method_id: str, group: str, key: str) -> float | None:
    entry = results["summary"].get(method_id, {})
    value = entry.get(group, {}).get(key, {}).get("mean")
    return float(value) if value is not None else None


def best_joint(results: dict[str, Any], attributor: str) -> dict[str, Any] | None:
    """The joint method with ``attributor`` that has the highest mean Spearman agreement (None if none ran)."""
    candidates: list[dict[str, Any]] = [
        m
        for m in results["methods"]
        if m["kind"] == "joint"
        and m["attributor"] == attributor
        and _mean(results, m["id"], "agreement", "spearman") is not None
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda m: _mean(results, m["id"], "agreement", "spearman") or -np.inf)


def _featured(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """``(label, run, attributions key, colour)`` of the students shown in the example and importance plots."""
    colours = attributor_colours(results["attributors"])
    chosen: list[tuple[str, str, str, str]] = []
    attributors = list(results["attributors"])
    if attributors and results["summary"].get(f"{PLAIN}/{attributors[0]}", {}).get("seeds"):
        chosen.append((f"plain · {attributors[0]}", PLAIN, attributors[0], _GREY))
    for attributor in attributors:
        method = best_joint(results, attributor)
        if method is not None:
            chosen.append((method["label"], method["run"], attributor, colours[attributor]))
    if results["summary"].get(INDEPENDENT, {}).get("seeds"):
        chosen.append(("independent imitation", INDEPENDENT, IMITATION, _INDEPENDENT))
    return chosen


def _rows(values: np.ndarray) -> np.ndarray:
    return values.reshape(-1, values.shape[-1])


def _new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained", dpi=110)


def _no_data(title: str) -> Figure:
    figure = _new_figure(6, 1.6)
    axes = figure.add_subplot()
    axes.axis("off")
    axes.text(0.5, 0.5, f"{title}: no finished runs yet", ha="center", va="center", fontsize=11, color=_GREY)
    return figure


# ---------------------------------------------------------------------------------------------------------------
# figures
# ---------------------------------------------------------------------------------------------------------------


def agreement_figure(results: dict[str, Any]) -> Figure:
    """Dot-and-whisker plot of each agreement metric per method, mean ± std over seeds."""
    from matplotlib.ticker import MaxNLocator

    methods = [m for m in results["methods"] if results["summary"].get(m["id"], {}).get("seeds")]
    if not methods:
        return _no_data("agreement")
    colours = attributor_colours(results["attributors"])
    metrics = [("spearman", "Spearman"), ("cosine", "cosine"), ("top5", "top-5 overlap"), ("sign", "sign agreement")]
    height = 1.3 + 0.3 * len(methods)
    figure = _new_figure(13, height)
    axes_row = figure.subplots(1, len(metrics), sharey=True)
    positions = np.arange(len(methods))[::-1]
    for axes, (key, title) in zip(axes_row, metrics, strict=True):
        for position, method in zip(positions, methods, strict=True):
            stats = results["summary"][method["id"]]["agreement"].get(key, {})
            if stats.get("mean") is None:
                continue
            colour = colours.get(method["attributor"], _GREY)
            plain = method["kind"] == "plain"
            axes.errorbar(
                stats["mean"],
                position,
                xerr=stats["std"],
                fmt="o",
                color=colour,
                markerfacecolor="white" if plain else colour,
                markersize=6,
                capsize=3,
                elinewidth=1.4,
            )
        axes.set_title(title, fontsize=11)
        axes.xaxis.set_major_locator(MaxNLocator(5))
        axes.grid(axis="x", alpha=0.3)
        axes.tick_params(axis="x", labelsize=9)
        for boundary in _group_boundaries(methods):
            axes.axhline(positions[boundary] + 0.5, color="#dddddd", linewidth=0.8)
    first = axes_row[0]
    first.set_yticks(positions)
    first.set_yticklabels([m["label"] for m in methods], fontsize=9)
    first.set_ylim(-0.6, len(methods) - 0.4)
    figure.suptitle(
        f"Agreement with the teacher's TreeSHAP (test rows; mean ± std over {len(results['seeds'])} seeds; "
        "open circles: plain student)",
        fontsize=11,
    )
    return figure


def _group_boundaries(methods: list[dict[str, Any]]) -> list[int]:
    """Indices where the method family changes (plain → independent → joint per attributor)."""
    keys = [(m["kind"], m["attributor"] if m["kind"] == "joint" else "") for m in methods]
    return [i for i in range(1, len(keys)) if keys[i] != keys[i - 1]]


def scatter_figure(results: dict[str, Any], data: ExperimentData, *, top: int = 4, rows: int = 800) -> Figure:
    """Student vs teacher attribution per top feature; one row per attributor (+ independent imitation)."""
    seed = data.seeds[0]
    teacher = data.teacher(seed)
    plain = data.attributions(seed, PLAIN)
    if teacher is None or plain is None:
        return _no_data("attribution scatter")
    features = data.features
    shap = _rows(teacher["shap_test"])
    order = np.argsort(-np.abs(shap).mean(axis=0), kind="stable")[:top]
    sample = np.random.default_rng(0).permutation(len(shap))[:rows]
    colours = attributor_colours(results["attributors"])
    panels: list[tuple[str, str, np.ndarray | None, str, np.ndarray | None]] = []
    for attributor in results["attributors"]:
        method = best_joint(results, attributor)
        joint = data.attributions(seed, method["run"]) if method else None
        panels.append(
            (
                attributor,
                method["label"] if method else "(no joint run)",
                _rows(plain[attributor]) if attributor in plain else None,
                colours[attributor],
                _rows(joint[attributor]) if joint is not None else None,
            )
        )
    independent = data.attributions(seed, INDEPENDENT)
    if independent is not None:
        first = results["attributors"][0]
        panels.append(
            (
                "independent",
                "independent imitation",
                _rows(plain[first]) if first in plain else None,
                _INDEPENDENT,
                _rows(independent[IMITATION]),
            )
        )
    figure = _new_figure(3.1 * len(order) + 0.6, 2.75 * len(panels) + 0.6)
    grid = figure.subplots(len(panels), len(order), squeeze=False)
    for r, (name, joint_label, plain_values, colour, joint_values) in enumerate(panels):
        for c, feature in enumerate(order):
            axes: Axes = grid[r, c]
            x = shap[sample, feature]
            shown = [x]
            if plain_values is not None:
                y = plain_values[sample, feature]
                axes.scatter(x, y, s=6, color=_GREY, alpha=0.45, linewidths=0, label="plain student", rasterized=True)
                shown.append(y)
            if joint_values is not None:
                y = joint_values[sample, feature]
                axes.scatter(x, y, s=6, color=colour, alpha=0.55, linewidths=0, label=joint_label, rasterized=True)
                shown.append(y)
            low = float(min(np.min(v) for v in shown))
            high = float(max(np.max(v) for v in shown))
            pad = 0.05 * (high - low or 1.0)
            axes.plot([low - pad, high + pad], [low - pad, high + pad], color=_TEACHER, linewidth=0.8, linestyle="--")
            axes.set_xlim(low - pad, high + pad)
            axes.set_ylim(low - pad, high + pad)
            axes.tick_params(labelsize=8)
            axes.grid(alpha=0.25)
            if r == 0:
                axes.set_title(features[feature] if feature < len(features) else f"column {feature}", fontsize=10)
            if r == len(panels) - 1:
                axes.set_xlabel("teacher TreeSHAP", fontsize=9)
            if c == 0:
                axes.set_ylabel(f"{name}\nstudent attribution", fontsize=9)
                axes.legend(loc="upper left", fontsize=7.5, markerscale=2.5, frameon=True, framealpha=0.85)
    figure.suptitle(
        f"Student vs teacher attributions, top {len(order)} features by mean |TreeSHAP| (seed {seed})", fontsize=11
    )
    return figure


def _curve(histories: list[dict[str, Any]], getter: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Epochs, mean and std over seeds of one per-epoch quantity (None when no run has it)."""
    series = []
    for history in histories:
        values = [getter(record) for record in history["epochs"]]
        if values and all(v is not None and np.isfinite(v) for v in values):
            series.append(np.asarray(values, dtype=np.float64))
    if not series:
        return None
    length = min(len(s) for s in series)
    stacked = np.stack([s[:length] for s in series])
    return np.arange(1, length + 1), stacked.mean(axis=0), stacked.std(axis=0)


def _draw(axes: Axes, curve: Any, *, colour: str, label: str, style: str = "-") -> None:
    if curve is None:
        return
    epochs, mean, std = curve
    axes.plot(epochs, mean, style, color=colour, label=label, linewidth=1.6, marker="o" if len(epochs) < 4 else None)
    axes.fill_between(epochs, mean - std, mean + std, color=colour, alpha=0.15, linewidth=0)


def curves_figure(results: dict[str, Any], data: ExperimentData) -> Figure:
    """Task loss, validation task metric, alignment loss and validation Spearman per epoch; a column per loss."""
    from matplotlib.ticker import MaxNLocator

    def histories(run: str) -> list[dict[str, Any]]:
        found = [data.history(seed, run) for seed in data.seeds]
        return [h for h in found if h is not None]

    plain = histories(PLAIN)
    if not plain:
        return _no_data("training curves")
    independent = histories(INDEPENDENT)
    losses = list(results["losses"])
    attributors = list(results["attributors"])
    colours = attributor_colours(attributors)
    metric = results["primary_metric"]["name"]
    validation = f"val_{metric}"
    figure = _new_figure(4.2 * len(losses) + 0.4, 12.0)
    grid = figure.subplots(4, len(losses), squeeze=False, sharex=True)
    for c, loss in enumerate(losses):
        task_axes, metric_axes, align_axes, agree_axes = (grid[r, c] for r in range(4))
        _draw(task_axes, _curve(plain, lambda r: r["task_loss"]), colour=_GREY, label="plain student", style="--")
        _draw(
            metric_axes,
            _curve(plain, lambda r: r["extra"].get(validation)),
            colour=_GREY,
            label="plain student",
            style="--",
        )
        for attributor in attributors:
            runs = histories(f"joint-{attributor}-{loss}")
            colour = colours[attributor]
            label = f"joint · {attributor}"
            _draw(task_axes, _curve(runs, lambda r: r["task_loss"]), colour=colour, label=label)
            _draw(metric_axes, _curve(runs, lambda r: r["extra"].get(validation)), colour=colour, label=label)
            _draw(align_axes, _curve(runs, lambda r: r["alignment_loss"]), colour=colour, label=label)
            key = f"spearman/{attributor}"
            _draw(agree_axes, _curve(runs, lambda r, k=key: r["extra"].get(k)), colour=colour, label=label)
            _draw(
                agree_axes,
                _curve(plain, lambda r, k=key: r["extra"].get(k)),
                colour=colour,
                label=f"plain · {attributor}",
                style="--",
            )
        if loss == "mse" and independent:
            _draw(
                align_axes,
                _curve(independent, lambda r: r["alignment_loss"]),
                colour=_INDEPENDENT,
                label="independent imitation",
                style=":",
            )
        if independent:
            key = f"spearman/{IMITATION}"
            _draw(
                agree_axes,
                _curve(independent, lambda r, k=key: r["extra"].get(k)),
                colour=_INDEPENDENT,
                label="independent imitation",
                style=":",
            )
        task_axes.set_title(f"joint with loss: {loss}", fontsize=11)
        if align_axes.lines:
            values = np.concatenate([line.get_ydata() for line in align_axes.lines])
            positive = values[values > 0]
            if positive.size and positive.max() / positive.min() > 20:  # log only when it spans decades
                align_axes.set_yscale("log")
        else:
            align_axes.text(
                0.5,
                0.5,
                "no joint run finished yet",
                ha="center",
                va="center",
                color=_GREY,
                fontsize=9,
                transform=align_axes.transAxes,
            )
        agree_axes.set_xlabel("epoch", fontsize=9)
        for axes in (task_axes, metric_axes, align_axes, agree_axes):
            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            axes.grid(alpha=0.25)
            axes.tick_params(labelsize=8)
    title = {"auc": "AUC", "rmse": "RMSE", "accuracy": "accuracy"}.get(metric, metric)
    grid[0, 0].set_ylabel("task loss (train batches)", fontsize=9)
    grid[1, 0].set_ylabel(f"{title} (validation rows,\neval mode)", fontsize=9)
    grid[2, 0].set_ylabel("alignment loss (train)", fontsize=9)
    grid[3, 0].set_ylabel("Spearman vs TreeSHAP\n(validation rows)", fontsize=9)
    handles, labels = [], []
    for axes in grid.ravel():
        for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    figure.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), fontsize=9, frameon=False)
    figure.suptitle(f"Training curves (mean ± std over {len(plain)} seeds)", fontsize=11)
    return figure


def example_figure(results: dict[str, Any], data: ExperimentData, *, top: int = 12) -> Figure:
    """One test row's explanation: teacher TreeSHAP and each featured student, horizontal bars per feature."""
    seed = data.seeds[0]
    teacher = data.teacher(seed)
    if teacher is None:
        return _no_data("example row")
    margin = np.asarray(teacher["teacher_margin"])
    score = margin if margin.ndim == 1 else margin.max(axis=1)
    row = int(np.argsort(score, kind="stable")[int(0.9 * (len(score) - 1))])
    output = None if margin.ndim == 1 else int(margin[row].argmax())

    def pick(values: np.ndarray) -> np.ndarray:
        chosen: np.ndarray = values[row] if output is None else values[row][output]
        return chosen

    panels = [("teacher TreeSHAP", pick(teacher["shap_test"]), _TEACHER)]
    for label, run, key, colour in _featured(results):
        stored = data.attributions(seed, run)
        if stored is not None and key in stored:
            panels.append((label, pick(stored[key]), colour))
    features = data.features
    teacher_values = np.abs(panels[0][1])
    used = np.flatnonzero(np.abs(_rows(teacher["shap_test"])).max(axis=0) > 0)  # columns the teacher splits on
    order = used[np.argsort(-teacher_values[used], kind="stable")][:top]
    names = [features[i] if i < len(features) else f"column {i}" for i in order]
    figure = _new_figure(2.5 * len(panels) + 1.6, 0.36 * len(order) + 1.5)
    grid = figure.subplots(1, len(panels), sharey=True, sharex=True, squeeze=False)[0]
    positions = np.arange(len(order))[::-1]
    limit = max(float(np.abs(values[order]).max()) for _, values, _ in panels) * 1.12 or 1.0
    for axes, (label, values, colour) in zip(grid, panels, strict=True):
        shown = values[order]
        axes.barh(positions, shown, color=[colour if v >= 0 else _lighter(colour) for v in shown], height=0.7)
        axes.axvline(0, color=_TEACHER, linewidth=0.8)
        axes.set_title(_wrap(label, 22), fontsize=9.5)
        axes.set_xlim(-limit, limit)
        axes.grid(axis="x", alpha=0.25)
        axes.tick_params(labelsize=8)
        axes.set_xlabel("attribution (margin)", fontsize=8.5)
    grid[0].set_yticks(positions)
    grid[0].set_yticklabels(names, fontsize=9)
    kind = "margin" if output is None else f"margin of class {output}"
    value = float(margin[row] if output is None else margin[row, output])
    figure.suptitle(f"One test row explained (seed {seed}, row {row}; teacher {kind} {value:+.3f})", fontsize=11)
    return figure


def _lighter(colour: str) -> str:
    from matplotlib.colors import to_rgb

    red, green, blue = to_rgb(colour)
    return "#{:02x}{:02x}{:02x}".format(*(int(255 * (0.45 * v + 0.55)) for v in (red, green, blue)))


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def importance_figure(results: dict[str, Any], data: ExperimentData, *, top: int = 14) -> Figure:
    """Mean |attribution| per feature (averaged over seeds): the teacher and each featured student."""
    teachers = [t for t in (data.teacher(seed) for seed in data.seeds) if t is not None]
    if not teachers:
        return _no_data("feature importance")
    series = [
        ("teacher TreeSHAP", np.mean([np.abs(_rows(t["shap_test"])).mean(axis=0) for t in teachers], axis=0), _TEACHER)
    ]
    for label, run, key, colour in _featured(results):
        found = [data.attributions(seed, run) for seed in data.seeds]
        values = [np.abs(_rows(f[key])).mean(axis=0) for f in found if f is not None and key in f]
        if values:
            series.append((label, np.mean(values, axis=0), colour))
    features = data.features
    used = np.flatnonzero(series[0][1] > 0)  # columns no tree splits on have zero TreeSHAP: nothing to compare
    order = used[np.argsort(-series[0][1][used], kind="stable")][:top]
    unused = len(series[0][1]) - len(used)
    count = len(series)
    height = 0.8 / count
    figure = _new_figure(9, max(3.5, 0.1 * count * len(order) + 1.6))
    axes = figure.add_subplot()
    base = np.arange(len(order))[::-1].astype(float)
    for i, (label, values, colour) in enumerate(series):
        axes.barh(base + 0.4 - (i + 0.5) * height, values[order], height=height * 0.92, color=colour, label=label)
    axes.set_yticks(base)
    axes.set_yticklabels([features[i] if i < len(features) else f"column {i}" for i in order], fontsize=9)
    axes.set_xlabel("mean |attribution| over test rows (margin units)", fontsize=9)
    axes.grid(axis="x", alpha=0.25)
    axes.legend(loc="lower right", fontsize=8.5, frameon=True, framealpha=0.9)
    axes.set_ylim(-0.6, len(order) - 0.4)
    note = f"\n({unused} columns the teacher never splits on are left out)" if unused else ""
    axes.set_title(f"Feature importance, teacher vs students (mean over {len(teachers)} seeds){note}", fontsize=10.5)
    return figure


def draw_all(out: Path, results: dict[str, Any]) -> dict[str, Path]:
    """Draw every figure into ``out/figures``; returns file name -> path."""
    from gbdt2nn_core.model_files import write_atomic

    data = ExperimentData(out, results)
    folder = Path(out) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    makers: dict[str, Callable[[], Figure]] = {
        "agreement.png": lambda: agreement_figure(results),
        "scatter.png": lambda: scatter_figure(results, data),
        "curves.png": lambda: curves_figure(results, data),
        "example.png": lambda: example_figure(results, data),
        "importance.png": lambda: importance_figure(results, data),
    }
    written = {}
    for name, make in makers.items():
        figure: Figure = make()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110)
        write_atomic(folder / name, buffer.getvalue())
        written[name] = folder / name
    return written
