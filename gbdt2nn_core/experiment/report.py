"""The experiment report: ``report.md`` (figures as files next to it) and a self-contained ``report.html``.

Both are rendered from the same blocks (headings, paragraphs, tables, figures), so they always say the same
thing; the HTML page embeds its figures as base64 PNG and links nothing outside itself. Every number comes
from ``results.json`` (itself collected from the runs' ``metrics.json``).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

from gbdt2nn_core.experiment.results import AGREEMENT_KEYS
from gbdt2nn_core.model_files import write_atomic

__all__ = ["fmt", "markdown_table", "render_html", "render_markdown", "report_blocks", "write_report"]

_AGREEMENT_TITLES = {"spearman": "Spearman", "cosine": "cosine", "top5": "top-5", "sign": "sign"}
_FIDELITY_TITLES = {"margin_r2": "margin R²", "label_agreement": "label agree"}
_TASK_TITLES = {"auc": "AUC", "logloss": "log-loss", "accuracy": "accuracy", "rmse": "RMSE", "r2": "R²"}
_SMALLER_IS_BETTER = {"logloss", "rmse", "margin_rmse", "mse"}


# ------------------------------------------------------------------------------------------------------- blocks
@attrs.frozen
class Heading:
    text: str
    level: int = 2


@attrs.frozen
class Paragraph:
    text: str  # may hold **bold** and `code`


@attrs.frozen
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    #: cells to emphasise, as (row, column)
    bold: frozenset[tuple[int, int]] = frozenset()


@attrs.frozen
class FigureBlock:
    name: str
    title: str
    caption: str


@attrs.frozen
class Code:
    text: str


Block = Heading | Paragraph | Table | FigureBlock | Code


# ------------------------------------------------------------------------------------------------------- numbers
def fmt(stats: dict[str, Any] | None, digits: int = 4) -> str:
    """``mean ± std`` of a :func:`~gbdt2nn_core.experiment.results.stat` record, ``—`` when there is none."""
    if not stats or stats.get("mean") is None:
        return "—"
    text = f"{stats['mean']:.{digits}f}"
    if stats.get("n", 0) > 1:
        text += f" ± {stats['std']:.{digits}f}"
    return text


def _signed(stats: dict[str, Any] | None, digits: int = 4) -> str:
    if not stats or stats.get("mean") is None:
        return "—"
    text = f"{stats['mean']:+.{digits}f}"
    if stats.get("n", 0) > 1:
        text += f" ± {stats['std']:.{digits}f}"
    return text


def _columns(results: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The task-metric and fidelity keys the table shows."""
    teacher_test = results["teacher"].get("test", {})
    first = next((e for e in results["summary"].values() if e.get("test")), None)
    task_keys = list(teacher_test) or (list(first["test"]) if first else [])
    fidelity_keys = [k for k in ("margin_r2", "label_agreement") if first and k in first.get("fidelity", {})]
    return task_keys, fidelity_keys


def results_table(results: dict[str, Any]) -> Table:
    """Teacher and every method: task metrics, fidelity, agreement, student training time (mean ± std)."""
    task_keys, fidelity_keys = _columns(results)
    header = (
        "method",
        *(_TASK_TITLES.get(k, k) for k in task_keys),
        *(_FIDELITY_TITLES.get(k, k) for k in fidelity_keys),
        *(_AGREEMENT_TITLES[k] for k in AGREEMENT_KEYS),
        "train s",
    )
    rows: list[tuple[str, ...]] = []
    teacher = results["teacher"]
    if teacher.get("test"):
        cells = [f"teacher ({teacher['name']})", *(fmt(teacher["test"].get(k)) for k in task_keys)]
        cells += ["—"] * (len(fidelity_keys) + len(AGREEMENT_KEYS))
        cells.append(fmt(teacher.get("timings", {}).get("teacher_s"), 1))
        rows.append(tuple(cells))
    scored: list[tuple[int, str, str, float]] = []  # row, group, key, mean (to find the best per column)
    for method in results["methods"]:
        entry = results["summary"].get(method["id"], {})
        if not entry.get("seeds"):
            continue
        label = method["label"]
        if len(entry["seeds"]) < len(results["seeds"]):
            label += f" ({len(entry['seeds'])} of {len(results['seeds'])} seeds)"
        cells = [label]
        cells += [fmt(entry["test"].get(k)) for k in task_keys]
        cells += [fmt(entry["fidelity"].get(k)) for k in fidelity_keys]
        cells += [fmt(entry["agreement"].get(k)) for k in AGREEMENT_KEYS]
        cells.append(fmt(entry["timings"].get("train_s"), 1))
        row = len(rows)
        for key in AGREEMENT_KEYS:
            mean = entry["agreement"].get(key, {}).get("mean")
            if mean is not None:
                scored.append((row, "agreement", key, float(mean)))
        if method["kind"] != "independent" and not (method["kind"] == "plain" and method != _first_plain(results)):
            for key in task_keys:
                mean = entry["test"].get(key, {}).get("mean")
                if mean is not None:
                    scored.append((row, "test", key, float(mean)))
        rows.append(tuple(cells))
    bold: set[tuple[int, int]] = set()
    for group, keys, offset in (
        ("test", task_keys, 1),
        ("agreement", list(AGREEMENT_KEYS), 1 + len(task_keys) + len(fidelity_keys)),
    ):
        for i, key in enumerate(keys):
            candidates = [(row, mean) for row, g, k, mean in scored if g == group and k == key]
            if not candidates:
                continue
            pick = min if key in _SMALLER_IS_BETTER else max
            best = pick(candidates, key=lambda c: c[1])[1]
            bold.update((row, offset + i) for row, mean in candidates if mean == best)
    return Table(header=header, rows=tuple(rows), bold=frozenset(bold))


def _first_plain(results: dict[str, Any]) -> dict[str, Any] | None:
    return next((m for m in results["methods"] if m["kind"] == "plain"), None)


def paired_table(results: dict[str, Any]) -> Table | None:
    """Joint minus plain (same seed, same attributor): the task metric and every agreement metric."""
    if not results["paired"]:
        return None
    primary = results["primary_metric"]["name"]
    header = (
        "joint method",
        "vs",
        f"Δ {_TASK_TITLES.get(primary, primary)}",
        *(f"Δ {_AGREEMENT_TITLES[k]}" for k in AGREEMENT_KEYS),
        "seeds",
    )
    rows = []
    for method in results["methods"]:
        record = results["paired"].get(method["id"])
        if record is None:
            continue
        difference = record["difference"]
        rows.append(
            (
                method["label"],
                " · ".join(record["against"].split("/")),
                _signed(difference.get(primary)),
                *(_signed(difference.get(k)) for k in AGREEMENT_KEYS),
                str(len(record["seeds"])),
            )
        )
    return Table(header=header, rows=tuple(rows))


def timing_table(results: dict[str, Any]) -> Table:
    """Wall time of each phase, mean ± std over seeds."""
    rows: list[tuple[str, ...]] = []
    timings = results["teacher"].get("timings", {})
    rows.append(("teacher training (per seed)", fmt(timings.get("teacher_s"), 2), "—"))
    rows.append(("teacher TreeSHAP, train + test rows (per seed, once)", fmt(timings.get("treeshap_s"), 2), "—"))
    epochs = results["config"].get("student_options", {}).get("epochs")
    for configuration in _configurations(results):
        entry = results["summary"].get(configuration["id"], {})
        if not entry.get("seeds"):
            continue
        train = entry["timings"].get("train_s")
        per_epoch = "—"
        if train and train.get("mean") is not None and epochs:
            per_epoch = f"{train['mean'] / int(epochs):.2f}"
        rows.append((f"training: {configuration['label']}", fmt(train, 1), per_epoch))
    return Table(header=("phase", "seconds (mean ± std)", "s / epoch"), rows=tuple(rows))


def _configurations(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One method per trained configuration (plain once, under its run name)."""
    seen: set[str] = set()
    chosen = []
    for method in results["methods"]:
        if method["run"] in seen:
            continue
        seen.add(method["run"])
        label = "plain student (λ = 0)" if method["kind"] == "plain" else method["label"]
        chosen.append({**method, "label": label})
    return chosen


def markdown_table(results: dict[str, Any]) -> str:
    """The main results table as Markdown (what the CLI prints and RESULTS.md quotes)."""
    return _markdown_table(results_table(results))


# ------------------------------------------------------------------------------------------------------- blocks
def report_blocks(results: dict[str, Any], manifest: dict[str, Any] | None = None) -> list[Block]:
    """The report, as renderer-independent blocks."""
    from gbdt2nn_core.experiment.plots import FIGURES

    config = results["config"]
    data = results["data"]
    seeds = results["seeds"]
    primary = results["primary_metric"]
    title = data["source"].removeprefix("bundled:")
    blocks: list[Block] = [Heading(f"gbdt2nn experiment: {title}", 1)]
    state = (
        "All runs finished."
        if results["complete"]
        else f"**Incomplete**: {len(results['missing'])} runs have not finished yet "
        f"({', '.join(results['missing'][:6])}{'…' if len(results['missing']) > 6 else ''}); "
        "the rows below show the seeds that did."
    )
    rows = results["teacher"].get("rows", {})
    blocks.append(
        Paragraph(
            f"Data `{data['source']}` ({data['rows']:,} rows; target `{data['target']}`; task {results['task']}; "
            f"{_count(rows.get('train'))} training / {_count(rows.get('test'))} test rows per seed), "
            f"seeds {', '.join(map(str, seeds))}. Teacher `{config['teacher']}` "
            f"{_options(config['teacher_options'])}; student `{config['student']}` "
            f"{_options(config['student_options'])}; λ = {config['alignment_weight']:g}"
            f"{' (' + _options(config['alignment_weights']) + ')' if config['alignment_weights'] else ''}; "
            f"teacher explanations: {config['teacher_explanation']} TreeSHAP. {state}"
        )
    )
    if manifest and manifest.get("batchnorm") == "recalibrated":
        blocks.append(
            Paragraph(
                f"**Re-evaluated** copy of `{manifest.get('derived_from')}`: every student's BatchNorm statistics "
                "were re-estimated with one pass over its seed's training rows after training "
                "(`python -m gbdt2nn_core.experiment.recalibrate`), then its metrics recomputed. Training curves "
                "and times are those of the original runs."
            )
        )
    blocks.append(Heading(f"Results (mean ± std over {len(seeds)} seeds, test rows)"))
    blocks.append(results_table(results))
    blocks.append(
        Paragraph(
            "Task metrics and fidelity (margin R² to the teacher"
            + (", share of rows with the teacher's label" if results["task"] != "regression" else "")
            + ") describe the predictions; Spearman, cosine, top-5 overlap and sign agreement compare each row's "
            "attributions with the teacher's TreeSHAP, then average over rows. The plain student is one network, "
            "explained by each attributor in turn; independent imitation predicts with the plain student and "
            "explains with its own network. Bold: the best value in a column (task metrics: among distinct "
            "students). `train s`: student training time per seed (without the per-epoch monitoring)."
        )
    )
    paired = paired_table(results)
    if paired is not None:
        blocks.append(Heading("Joint minus plain, paired by seed"))
        blocks.append(paired)
        better = "higher" if primary["larger_is_better"] else "lower"
        blocks.append(
            Paragraph(
                f"Each joint student against the plain student of the same seed (same split, teacher and "
                f"TreeSHAP), explained by the same attributor: a positive Δ agreement means better explanations; "
                f"for {_TASK_TITLES.get(primary['name'], primary['name'])}, {better} is better. "
                "A difference smaller than its spread over seeds is noise."
            )
        )
    blocks.append(Heading("Wall time per phase"))
    blocks.append(timing_table(results))
    blocks.append(Heading("Figures"))
    for name, (figure_title, caption) in FIGURES.items():
        blocks.append(FigureBlock(name=name, title=figure_title, caption=caption))
    blocks.append(Heading("Reproduce"))
    command = " ".join(manifest.get("command", [])) if manifest else ""
    if command:
        blocks.append(Code(command))
    if manifest:
        packages = manifest.get("packages", {})
        plugins = ", ".join(
            f"{p['distribution']} {p['version']}"
            for p in packages.get("plugins", {}).values()
            if p["status"] == "loaded"
        )
        libraries = ", ".join(f"{k} {v}" for k, v in packages.get("libraries", {}).items())
        blocks.append(
            Paragraph(
                f"gbdt2nn-core {packages.get('gbdt2nn-core')}; plugins: {plugins}; Python {manifest.get('python')}, "
                f"torch {manifest.get('torch', {}).get('version')} ({manifest.get('torch', {}).get('threads')} "
                f"threads); {libraries}. Data SHA-256 `{data['sha256'][:16]}…`; config digest "
                f"`{manifest.get('config_digest', '')[:16]}…`. The full configuration is in `manifest.json`, every "
                "run's numbers in `runs/<seed>/<configuration>/metrics.json`."
            )
        )
    blocks.append(Code(json.dumps(config, indent=2)))
    return blocks


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else "?"


def _options(options: dict[str, Any]) -> str:
    if not options:
        return "(defaults)"
    return "(" + ", ".join(f"{k}={v}" for k, v in options.items()) + ")"


# ------------------------------------------------------------------------------------------------------- Markdown
def _markdown_table(table: Table) -> str:
    def cell(text: str, r: int, c: int) -> str:
        text = text.replace("|", "\\|")
        return f"**{text}**" if (r, c) in table.bold else text

    lines = ["| " + " | ".join(table.header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(table.header) - 1)) + "|"]
    for r, row in enumerate(table.rows):
        lines.append("| " + " | ".join(cell(text, r, c) for c, text in enumerate(row)) + " |")
    return "\n".join(lines)


def render_markdown(blocks: Sequence[Block], figures: str = "figures") -> str:
    """Markdown with figures referenced as files in ``figures/``."""
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append("#" * block.level + " " + block.text)
        elif isinstance(block, Paragraph):
            parts.append(block.text)
        elif isinstance(block, Table):
            parts.append(_markdown_table(block))
        elif isinstance(block, FigureBlock):
            parts.append(f"### {block.title}\n\n![{block.title}]({figures}/{block.name})\n\n{block.caption}")
        else:
            parts.append(f"```\n{block.text}\n```")
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------------------- HTML
_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; max-width: 1280px;
       margin: 2em auto; padding: 0 1.5em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
table { border-collapse: collapse; font-size: .86em; margin: 1em 0; }
th, td { padding: .3em .6em; border-bottom: 1px solid #e5e5e5; white-space: nowrap; }
th { background: #f4f4f4; text-align: right; } th:first-child, td:first-child { text-align: left; }
td { text-align: right; font-variant-numeric: tabular-nums; }
tr:hover td { background: #fafafa; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; max-width: 60em; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; }
code { background: #f3f3f3; padding: 0 .2em; }
"""


def _inline(text: str) -> str:
    """Escape, then turn ``**bold**`` and `` `code` `` into tags."""
    import re

    escaped = html.escape(text)
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", escaped)


def render_html(blocks: Sequence[Block], images: dict[str, bytes]) -> str:
    """A self-contained page: inline CSS, figures as base64 PNG, no external links or scripts."""
    title = next((b.text for b in blocks if isinstance(b, Heading)), "gbdt2nn experiment")
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            body.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
            rows = []
            for r, row in enumerate(block.rows):
                cells = []
                for c, text in enumerate(row):
                    content = html.escape(text)
                    if (r, c) in block.bold:
                        content = f"<strong>{content}</strong>"
                    cells.append(f"<td>{content}</td>")
                rows.append("<tr>" + "".join(cells) + "</tr>")
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
        elif isinstance(block, FigureBlock):
            data = images.get(block.name)
            image = (
                f'<img alt="{html.escape(block.title)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'
                if data
                else "<p><em>figure not available</em></p>"
            )
            body.append(
                f"<figure><h3>{html.escape(block.title)}</h3>{image}"
                f"<figcaption>{_inline(block.caption)}</figcaption></figure>"
            )
        else:
            body.append(f"<pre>{html.escape(block.text)}</pre>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def write_report(out: Path | str, results: dict[str, Any]) -> dict[str, Path]:
    """Draw the figures and write ``report.md`` and ``report.html`` into ``out``; returns their paths."""
    from gbdt2nn_core.experiment.plots import draw_all

    out = Path(out)
    figures = draw_all(out, results)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    blocks = report_blocks(results, manifest)
    write_atomic(out / "report.md", render_markdown(blocks).encode("utf-8"))
    images = {name: path.read_bytes() for name, path in figures.items()}
    write_atomic(out / "report.html", render_html(blocks, images).encode("utf-8"))
    return {"markdown": out / "report.md", "html": out / "report.html", **figures}
