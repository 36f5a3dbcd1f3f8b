"""The Markdown report (BENCHMARKS.md): headline ratios first, then one section per suite, then a reading."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from bench_suites import (
    EXPLAIN_FIRST,
    EXPLAIN_NATIVE,
    EXPLAIN_SHAP,
    FORWARD,
    FORWARD_API,
    FORWARD_API_BEFORE,
    FORWARD_BEFORE,
    FRAME_LOOKUP,
    FRAME_PREDICT,
    LOOKUP_SUFFIX,
    PLAIN_LOOKUP_STEP,
    PLAIN_STEP,
    SHAP_TODAY,
    TEACHER_NATIVE,
)
from deepgbm_reference import TRAINING_PHASE as DEEPGBM_TRAINING_PHASE

COMMAND = "python benchmarks/run.py --out BENCHMARKS.md"


# ------------------------------------------------------------------------------------------------------ formatting
def seconds(value: float) -> str:
    if value >= 100:
        return f"{value:.0f} s"
    if value >= 1:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} µs"


def rate(value: float) -> str:
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.3g} {suffix}"
    return f"{value:.3g}"


def ratio(stats: dict[str, float]) -> str:
    return f"**{stats['median']:.3g}×** ({stats['min']:.3g}–{stats['max']:.3g})"


def spread(stats: dict[str, float]) -> str:
    return f"{seconds(stats['min'])}–{seconds(stats['max'])}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _median(runs: list[dict[str, Any]], key: Callable[[dict[str, Any]], float]) -> float:
    return statistics.median(key(run) for run in runs)


def _phase_seconds(run: dict[str, Any], name: str) -> float:
    total: float = sum(p["seconds"] for p in run["phases"] if p["phase"] == name)
    return total


def _treeshap_seconds(run: dict[str, Any]) -> float:
    """The teacher TreeSHAP steps of a run (test rows; aligned runs also the training rows)."""
    total: float = sum(p["seconds"] for p in run["phases"] if p["phase"].startswith("teacher TreeSHAP"))
    return total


def _phase_peak(run: dict[str, Any], name: str) -> float:
    return max((p["peak_mib"] for p in run["phases"] if p["phase"] == name), default=float("nan"))


def _epochs(runs: list[dict[str, Any]]) -> dict[str, float]:
    values = [s for run in runs for s in run["epoch_s"]]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def aligned_loss(runs: dict[str, list[dict[str, Any]]]) -> str:
    """The alignment loss the aligned end-to-end runs trained with, as recorded (``mse`` in records from before the
    benchmark recorded it: ``alignment="auto"`` took ``mse`` for a binary task until session 32)."""
    losses = sorted({run.get("alignment_loss", "mse") for run in runs["aligned"]})
    return " / ".join(f"`{loss}`" for loss in losses)


def deepgbm_side(e2e: dict[str, Any]) -> dict[str, Any]:
    """DeepGBM's figures to compare with: measured in this run's rounds (``--deepgbm``), else quoted from
    docs/DESIGN.md. ``ratio(ours, key)`` gives ours ÷ DeepGBM's as report text: the median of per-round ratios
    with their spread when measured (a round's runs see the same load), a single quotient when quoted."""
    measured = e2e["runs"].get("deepgbm", [])
    ref = e2e["reference"]
    if not measured:
        figures = {key: ref[key] for key in ("epoch_s", "end_to_end_s", "peak_mib", "student_auc", "teacher_auc")}
        per_round: dict[str, list[float]] = {}
    else:
        per_round = {
            "epoch_s": [statistics.median(run["epoch_s"]) for run in measured],
            "end_to_end_s": [run["total_s"] for run in measured],
            "training_s": [_phase_seconds(run, DEEPGBM_TRAINING_PHASE) for run in measured],
            "peak_mib": [run["process_peak_mib"] for run in measured],
            "student_auc": [run["metrics"]["student_test_auc"] for run in measured],
            "teacher_auc": [run["metrics"]["teacher_test_auc"] for run in measured],
        }
        figures = {key: statistics.median(values) for key, values in per_round.items()}

    def versus(ours: list[float], key: str, overall: float | None = None) -> str:
        """``ours``: one figure per round; ``overall``: ours over every round, for a quoted comparison (the
        median of every epoch of every round, as reports before the measured comparison had it)."""
        if per_round:
            return ratio(_paired(ours, per_round[key]))
        return f"**{(statistics.median(ours) if overall is None else overall) / figures[key]:.3g}×**"

    return {
        "measured": bool(measured),
        "label": "measured in this run" if measured else "quoted",
        "rounds": len(measured),
        "figures": figures,
        "ratio": versus,
    }


# ------------------------------------------------------------------------------------------------------ report
def render(results: dict[str, Any]) -> str:
    """The whole report."""
    meta = results["meta"]
    m = meta["machine"]
    versions = ", ".join(f"{name} {version}" for name, version in m["versions"].items())
    load_start, load_end = "/".join(map(str, m["load_average"])), "/".join(map(str, meta["load_average_end"]))
    out = [
        "# Benchmarks",
        "",
        f"Reproduce with one command from the repository root: **`{COMMAND}`** (add `--json FILE` for every raw "
        "timing, `--quick` for a smoke run of every code path). Needs the core, the plugins and "
        "benchmarks/requirements.txt (hummingbird-ml) under benchmarks/constraints.txt; see benchmarks/README.md.",
        "",
    ]
    if meta["quick"]:
        out += ["> **This file came from a `--quick` smoke run on toy sizes: its figures mean nothing.**", ""]
    out += [
        f"- **Generated** {meta['date']} in {seconds(meta['wall_s'])} by `{meta['command']}` at commit {m['git']}.",
        f"- **Machine**: {m['cpu']}, {m['logical_cores']} logical cores ({m['usable_cores']} usable), "
        f"{m['memory_gib']} GiB RAM, {m['platform']}.",
        f"- **Threads**: torch intra-op {m['torch_threads']}, OMP_NUM_THREADS={m['omp_threads']}, MKL/OpenBLAS the "
        f"same: every library pinned to `--threads {meta['threads']}`.",
        f"- **Versions**: {versions}.",
        f"- **Load**: {_load_words(m['load_average'], meta['load_average_end'])} (load average 1/5/15 min "
        f"{load_start} at the start, {load_end} at the end, on {m['logical_cores']} cores; the benchmark itself keeps "
        "one core busy). Absolute times are noisy; the ratios are measured pairwise and are the numbers to read.",
        f"- **Method**: one process measures both sides of every ratio. A suite's cases run interleaved (A, B, C, A, "
        f"B, C, ... the order rotated each round) after one untimed warm-up round, with the garbage collector off "
        f"inside a timed call; a figure is the median of {meta['repeats']} rounds with the spread (min–max); a ratio "
        "is the median of the per-round ratios, with their min–max.",
        "",
    ]
    out += goals(results)
    out += headline(results)
    if "explain" in results:
        out += section_explain(results["explain"], results["context"])
    if "train" in results:
        out += section_train(results["train"], results["context"])
    if "infer" in results:
        out += section_infer(results["infer"])
    if "treeshap" in results:
        out += section_treeshap(results["treeshap"])
    if "e2e" in results:
        out += section_e2e(results["e2e"])
    if "gpu_serving" in results:
        out += section_gpu(results["gpu_serving"])
    out += reading(results)
    return "\n".join(out) + "\n"


def _load_words(start: Sequence[float], end: Sequence[float]) -> str:
    """Whether other processes shared the machine: a 1-minute load above 1.5 means more than the benchmark ran."""
    if max(start[0], end[0]) > 1.5:
        return "the machine was **shared with other busy processes** while this ran"
    return "no other busy process shared the machine while this ran"


def headline(results: dict[str, Any]) -> list[str]:
    rows: list[list[str]] = []
    if "explain" in results:
        ex = results["explain"]
        rows += [
            ["TreeSHAP: ours, first run ÷ LightGBM `pred_contrib`", "speed (>1: ours faster)",
             ratio(ex["speed_vs_native"][EXPLAIN_FIRST])],
            ["TreeSHAP: `shap.TreeExplainer` ÷ LightGBM `pred_contrib`", "speed",
             ratio(ex["speed_vs_native"][EXPLAIN_SHAP])],
            ["TreeSHAP: ours, cached second run ÷ ours, recomputed", "speed", ratio(ex["cached_speedup"])],
        ]  # fmt: skip
    if "train" in results:
        rows += train_headline(results["train"])
    if "infer" in results:
        inf = results["infer"]
        rows.append(["inference: student forward ÷ teacher LightGBM predict", "speed (>1: student faster)",
                     ratio(inf["ours_speed_vs"][TEACHER_NATIVE])])  # fmt: skip
        rows += [
            [f"inference: student forward ÷ {name.split(': ', 1)[1]}", "speed", ratio(stats)]
            for name, stats in inf["ours_speed_vs"].items()
            if "hummingbird" in name
        ]
        vs_teacher = inf.get("speed_vs_teacher", {})
        rows += [
            [f"inference, {label} ÷ teacher LightGBM predict", "speed", ratio(vs_teacher[name])]
            for label, name in (
                ("from the DataFrame (encoding included), before", FORWARD_API_BEFORE),
                ("from the DataFrame (encoding included), `predict_margin`", FORWARD_API),
                ("from the DataFrame, lookup inputs + `forward_lookup`", FRAME_LOOKUP),
                ("from the DataFrame via the lookup, `frame_margins` (every predict path)", FRAME_PREDICT),
                ("one-batch forward alone, before", FORWARD_BEFORE),
            )
            if name in vs_teacher
        ]
        rows += [
            [f"inference, {label} ÷ {case.split(': ', 1)[1]}", "speed", ratio(by_student[name])]
            for case, by_student in inf.get("speed_vs_hummingbird", {}).items()
            for label, name in (("from the DataFrame via the lookup (`frame_margins`)", FRAME_PREDICT),)
        ]
        rows += [
            [f"student forward FLOP/s ÷ {what}", "fraction", ratio(stats)]
            for what, stats in inf["flops_fraction"].items()
        ]
    if "treeshap" in results:
        ts = results["treeshap"]
        rows += [
            [f"TreeSHAP of the training rows: {name.removeprefix('ours: ')} ÷ one native call on 1 thread",
             "speed", ratio(stats)]
            for name, stats in ts["speed_vs_today"].items()
            if name != SHAP_TODAY
        ]  # fmt: skip
    if "e2e" in results:
        plain = results["e2e"]["runs"]["plain"]
        deepgbm = deepgbm_side(results["e2e"])
        dg, label = deepgbm["figures"], deepgbm["label"]
        rows += [
            [f"plain epoch ÷ DeepGBM's ({label}, {seconds(dg['epoch_s'])})", "time (<1: ours faster)",
             deepgbm["ratio"]([statistics.median(r["epoch_s"]) for r in plain], "epoch_s", _epochs(plain)["median"])],
            [f"plain distillation end to end ÷ DeepGBM's ({label}, {seconds(dg['end_to_end_s'])})", "time",
             deepgbm["ratio"]([r["total_s"] for r in plain], "end_to_end_s")],
            [f"plain distillation peak RSS ÷ DeepGBM's ({label}, ≈{dg['peak_mib']:.0f} MiB)", "memory",
             deepgbm["ratio"]([r["process_peak_mib"] for r in plain], "peak_mib")],
        ]  # fmt: skip
    if "gpu_serving" in results:
        rows += gpu_headline(results["gpu_serving"])
    return ["## Headline ratios", "", *table(["ratio", "compares", "median (min–max)"], rows), ""]


#: Issue 11's table: (figure, its figure before the issue, the goal). "Now" comes from this run's suites.
ISSUE_11 = {
    "e2e": ("aligned distillation end to end ÷ plain, same run, empty cache (default attributor)", "4.2×", "≤ 1.5×"),
    "epoch": ("aligned epoch ÷ plain epoch, default schedule (structure, the batch's aligned rows)", "—", "≤ 2×"),
    "structure (core default)": (
        "joint training step ÷ plain: structure, every row of a 512-row batch",
        "4.27×",
        "≤ 2×",
    ),
    "gradient-x-input": ("joint training step ÷ plain: gradient-x-input, every row", "3.08×", "≤ 2×"),
    "integrated gradients": ("joint step ÷ plain: integrated gradients (16 steps), every row", "35.9×", "≤ 8×"),
    "integrated gradients (default points)": (
        "joint step ÷ plain: integrated gradients at the plugin's default 4 training points, every row",
        "—",
        "≤ 8×",
    ),
    "expected gradients (shap)": ("joint step ÷ plain: expected gradients (16 samples), every row", "36.3×", "≤ 8×"),
    "expected gradients (default draws)": (
        "joint step ÷ plain: expected gradients at the plugin's default training draws (2 × 4), every row",
        "—",
        "≤ 8×",
    ),
    "treeshap": ("teacher TreeSHAP for an aligned run: speed ÷ all training rows on one thread", "1× (44 s)", "≥ 3×"),
    "lightgbm": ("student CPU inference ÷ LightGBM predict, 10k rows, 1 thread, from the DataFrame", "0.24×", "≥ 0.4×"),
    "tree_trav": ("student CPU inference (from the DataFrame) ÷ hummingbird-ml `tree_trav`", "0.33×", "≥ 1.5×"),
    "default": ("student CPU inference (from the DataFrame) ÷ hummingbird-ml default", "0.34×", "≥ 1.5×"),
    "deepgbm_epoch": ("plain epoch ÷ DeepGBM's quoted 1.16 s", "1.69×", "≤ 1×"),
    "deepgbm_rss": ("plain distillation peak RSS ÷ DeepGBM's ≈730 MiB", "1.48×", "≤ 1×"),
}


def _paired(a: list[float], b: list[float]) -> dict[str, float]:
    """Median and spread of the per-round ratios ``a / b`` (rounds paired in order)."""
    values = [x / y for x, y in zip(a, b, strict=False) if y > 0]
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def goals(results: dict[str, Any]) -> list[str]:
    """Issue 11's table, every row from this run: the figure before the issue, the goal, and now."""
    now: dict[str, str] = {}
    if "e2e" in results:
        runs = results["e2e"]["runs"]
        plain, aligned = runs["plain"], runs["aligned"]
        now["e2e"] = ratio(_paired([r["total_s"] for r in aligned], [r["total_s"] for r in plain]))
        agreement = _median(aligned, lambda r: r["metrics"]["agreement"]["spearman"])
        plain_agreement = _median(plain, lambda r: r["metrics"]["agreement"]["spearman"])
        now["e2e"] += f"; Spearman {plain_agreement:.3f} → {agreement:.3f}"
        now["epoch"] = ratio(_paired([statistics.median(r["epoch_s"]) for r in aligned],
                                     [statistics.median(r["epoch_s"]) for r in plain]))  # fmt: skip
        deepgbm = deepgbm_side(results["e2e"])
        now["deepgbm_epoch"] = deepgbm["ratio"](
            [statistics.median(r["epoch_s"]) for r in plain], "epoch_s", _epochs(plain)["median"]
        )
        now["deepgbm_rss"] = deepgbm["ratio"]([r["process_peak_mib"] for r in plain], "peak_mib")
        if deepgbm["measured"]:
            dg = deepgbm["figures"]
            now["deepgbm_epoch"] += f" against DeepGBM's {seconds(dg['epoch_s'])}, measured in this run"
            now["deepgbm_rss"] += f" against DeepGBM's {dg['peak_mib']:.0f} MiB, measured in this run"
        if "treeshap" in results:
            today = results["treeshap"]["timings"][SHAP_TODAY]["median"]
            spent = _median(aligned, lambda r: _treeshap_seconds(r) - _treeshap_seconds_of(r, "test rows"))
            now["treeshap"] = f"**{today / spent:.3g}×** ({seconds(spent)} vs {seconds(today)})"
    if "train" in results:
        tr = results["train"]
        by_lookup = tr.get("ratio_to_lookup_plain", {})
        for label in (
            "structure (core default)",
            "gradient-x-input",
            "integrated gradients",
            "integrated gradients (default points)",
            "expected gradients (shap)",
            "expected gradients (default draws)",
        ):
            trained = f"joint: {label}{LOOKUP_SUFFIX}"
            if trained in by_lookup:
                now[label] = ratio(by_lookup[trained]) + " (÷ plain with the lookup)"
    if "infer" in results:
        inf = results["infer"]
        if FRAME_PREDICT in inf.get("speed_vs_teacher", {}):
            now["lightgbm"] = ratio(inf["speed_vs_teacher"][FRAME_PREDICT])
        for case, by_student in inf.get("speed_vs_hummingbird", {}).items():
            strategy = case.rsplit(", ", 1)[-1]
            if strategy in ("tree_trav", "default") and FRAME_PREDICT in by_student:
                now[strategy] = ratio(by_student[FRAME_PREDICT])
    rows = [[figure, before, goal, now.get(key, "not measured in this run")]
            for key, (figure, before, goal) in ISSUE_11.items()]  # fmt: skip
    return [
        "## Issue 11: the goals, measured in this run",
        "",
        "Before: the figures of issue 11 (BENCHMARKS.md before the issue). Now: this run, with the default settings "
        "(the aligned run's schedule: `alignment_rows=0.1`, the aligned rows in batches of their own on about a tenth "
        "of the steps). The per-step rows align every row of the batch (the worst case); the default schedule's cost "
        "is the epoch row.",
        "",
        *table(["figure", "before", "goal", "now (median, min–max)"], rows),
        "",
    ]


def _treeshap_seconds_of(run: dict[str, Any], which: str) -> float:
    total: float = sum(
        p["seconds"] for p in run["phases"] if p["phase"].startswith("teacher TreeSHAP") and which in p["phase"]
    )
    return total


def section_explain(ex: dict[str, Any], context: dict[str, Any]) -> list[str]:
    rows = [
        [name, seconds(t["median"]), spread(t), rate(t["rows_per_s"]), ratio(ex["speed_vs_native"][name])]
        for name, t in ex["timings"].items()
    ]
    verdict = "**yes**" if ex["agree_1e-6"] else "**NO**"
    return [
        f"## 1. Teacher explanations: path-dependent TreeSHAP of {ex['rows']:,} adult test rows",
        "",
        f"Teacher: LightGBM, {context['trees']} trees × {context['max_leaves']} leaves, trained on "
        f"{context['rows_train']:,} rows; {ex['columns']} columns, {context['categorical_columns']} of them "
        "categorical. *First run*: the lightgbm plugin's `shap_values` through `ExplanationCache` with an empty "
        "cache directory (check the input, compute, hash the model and the rows, write the `.npz` atomically). "
        "*Cached second run*: the same call with the entry on disk (hash and read). "
        f"`shap.TreeExplainer(booster)` was built once, outside the timing ({seconds(ex['explainer_build_s'])}).",
        "",
        *table(["method", "median", "spread", "rows/s", "speed ÷ LightGBM"], rows),
        "",
        f"Same values to 1e-6: {verdict}. Largest absolute differences:",
        "",
        *table(["pair", "max abs diff"], [[name, f"{value:.1e}"] for name, value in ex["max_abs_diff"].items()]),
        "",
    ]


def train_headline(tr: dict[str, Any]) -> list[list[str]]:
    """One row per training step: joint steps ÷ the plain step with the same first layer (lookup or dense)."""
    rows = []
    by_lookup = tr.get("ratio_to_lookup_plain", {})
    for name, stats in tr["ratio_to_plain"].items():
        if name == PLAIN_STEP:
            continue
        if name == PLAIN_LOOKUP_STEP:
            rows.append(["training step, plain with the lookup first layer ÷ plain", "time (<1: faster)", ratio(stats)])
        elif name in by_lookup:
            label = f"training step, joint with {name.removeprefix('joint: ')} ÷ plain with the lookup first layer"
            rows.append([label, "time (>1: slower)", ratio(by_lookup[name])])
        else:
            label = f"training step, joint with {name.removeprefix('joint: ')} ÷ plain"
            rows.append([label, "time (>1: slower)", ratio(stats)])
    return rows


def section_train(tr: dict[str, Any], context: dict[str, Any]) -> list[str]:
    by_lookup = tr.get("ratio_to_lookup_plain", {})
    rows = [
        [
            name,
            seconds(t["median"]),
            spread(t),
            rate(t["rows_per_s"]),
            ratio(tr["ratio_to_plain"][name]),
            ratio(by_lookup[name]) if name in by_lookup else "—",
        ]
        for name, t in tr["timings"].items()
    ]
    return [
        f"## 2. Student training step: batch {tr['batch']} on adult",
        "",
        f"Student: GBDT2NN with {context['groups']} groups, hidden {context['hidden']}, group input width "
        f"{context['group_width']} (encoded columns). A step is the body of the real epoch loop "
        "(`GBDT2NNStudent._train_epoch`): forward, distillation loss, backward, AdamW update; joint steps add the "
        "alignment term (MSE to the teacher's TreeSHAP, λ = 1, every batch), back-propagated through the "
        f"attribution (double back-propagation). Integrated gradients use {tr['ig_steps']} steps, expected gradients "
        f"{tr['eg_samples']} draws a step (two independent estimates of half as many); "
        "the rows marked *default points* and *default draws* use the plugins' own "
        "defaults in a training step (4 Gauss–Legendre points; two independent estimates of 4 draws, the unbiased "
        "cross term of the MSE). "
        f"Each timed call runs {tr['steps_per_call']} steps; figures are per step. "
        "*Dense path (before)*: the attribution of every encoded value by autograd through the whole network, "
        "summed per column (the path before issue 11). Unmarked: the attributor's first-layer column path (the "
        "default where it exists; saliency has none), whose double backward skips the first layer. *Lookup first "
        "layer*: the module's lookup on (`use_lookup`), in the training forward and in the column path; its ratio is "
        "to the plain step with the lookup on.",
        "",
        *table(["step", "median", "spread", "rows/s", "time ÷ plain", "÷ plain with lookup"], rows),
        "",
    ]


def section_infer(inf: dict[str, Any]) -> list[str]:
    rows = [
        [name, seconds(t["median"]), spread(t), rate(t["rows_per_s"]), ratio(inf["ours_speed_vs"][name])]
        for name, t in inf["timings"].items()
        if not name.startswith("machine")
    ]
    notes = []
    for strategy, entry in inf["hummingbird"].items():
        if "error" in entry:
            notes.append(f"- hummingbird-ml `{strategy}`: not measured ({entry['error']}).")
        else:
            notes.append(
                f"- hummingbird-ml `{strategy}` vs LightGBM on the twin: max abs diff "
                f"{entry['max_abs_diff_vs_lightgbm']:.1e}."
            )
    flops = [
        [name, seconds(inf["timings"][name]["median"]), f"{stats['median'] / 1e9:.3g} GFLOP/s",
         f"{stats['min'] / 1e9:.3g}–{stats['max'] / 1e9:.3g}"]
        for name, stats in inf["flops_per_s"].items()
    ]  # fmt: skip
    g = inf["gemm_size"]
    return [
        f"## 3. Inference: one batch of {inf['rows']:,} rows",
        "",
        "Student: the `GBDT2NNModule` in eval mode under `torch.no_grad()` on encoded rows; the next row adds "
        "encoding the DataFrame (`InputEncoder.transform` + `predict_margin`). Teacher: `Booster.predict(frame, "
        "raw_score=True)` on the DataFrame. hummingbird-ml cannot compile LightGBM's categorical splits (it fails on "
        "`'0||5'` thresholds), so it is compared on a *twin teacher* of the same size trained on the category codes "
        "as numbers, next to LightGBM's own predict on that twin. hummingbird is told `n_threads` (otherwise it "
        "sets torch to every physical core).",
        "",
        *table(["model", "median", "spread", "rows/s", "student forward speed ÷ it"], rows),
        "",
        *_lookup_notes(inf),
        *notes,
        "",
        f"**FLOP/s.** The group MLP's einsums do {inf['macs_per_row']:,} multiply-accumulates per row "
        f"(Σ_layers k·in·out), so a batch is 2·n·{inf['macs_per_row']:,} FLOPs. The machine's matmul rate was "
        f"measured in the same rounds on the same threads: `torch.bmm` at exactly the MLP's shapes (same FLOPs), and "
        f"a {g}×{g} by {g}×{g} float32 matmul.",
        "",
        *table(["computation", "median time", "FLOP/s (median)", "spread"], flops),
        "",
        f"Student forward ÷ bmm at its shapes: {ratio(inf['flops_fraction']['bmm at the same shapes'])}; "
        f"÷ large GEMM: {ratio(inf['flops_fraction']['a large square matmul'])}. The forward also lays out the first "
        "layer's weights over the encoded columns, adds biases and runs BatchNorm and ReLU, which the bare matmuls do "
        "not.",
        "",
    ]


def _lookup_notes(inf: dict[str, Any]) -> list[str]:
    """The inference path's speed against the teacher, and its agreement with the forward as trained."""
    if "speed_vs_teacher" not in inf:
        return []
    rows = [[name, ratio(stats)] for name, stats in inf["speed_vs_teacher"].items()]
    diffs = ", ".join(
        f"{name.removeprefix('ours: ')} {value:.1e}" for name, value in inf["max_abs_diff_vs_before"].items()
    )
    versus = inf.get("speed_vs_hummingbird", {})
    students = list(next(iter(versus.values()), {}))
    hummingbird = [[name, *(ratio(by_student[name]) for by_student in versus.values())] for name in students]
    hummingbird_table = (
        [
            "Against hummingbird-ml's torch-compiled twin teacher (which reads its rows as category codes; the "
            "student's side includes encoding the DataFrame where the row says so):",
            "",
            *table(["student", *(f"speed ÷ {case.split(', ', 1)[-1]}" for case in versus)], hummingbird),
            "",
        ]
        if versus
        else []
    )
    return [
        '"Before" is the forward as trained (dense first layer, then batch norm, ReLU, ... the head); "ours" is '
        "the inference path (eval mode, no gradients: batch norm and the head folded into the linear maps, batched "
        "matmuls with the bias fused in), and with the lookup first layer (`use_lookup`), read from `z` or straight "
        "from the DataFrame (`InputEncoder.outside_blocks` + `active_slots`, then `forward_lookup`).",
        "",
        *table(["student", "speed ÷ teacher LightGBM predict (>1: student faster)"], rows),
        "",
        f"Largest margin difference from the forward as trained: {diffs}.",
        "",
        *hummingbird_table,
    ]


def section_treeshap(ts: dict[str, Any]) -> list[str]:
    rows = [
        [name, seconds(t["median"]), spread(t), rate(t["rows_per_s"]), ratio(ts["speed_vs_today"][name]),
         f"{ts['max_abs_diff'][name]:.1e}" if name in ts["max_abs_diff"] else "—"]
        for name, t in ts["timings"].items()
    ]  # fmt: skip
    progress = "; ".join(
        f"{name.removeprefix('ours: ')}: {', '.join(f'{r:,}' for r in reports)}"
        for name, reports in ts["progress_rows_per_s"].items()
    )
    return [
        f"## 3b. Teacher TreeSHAP of the training rows ({ts['rows']:,} rows × {ts['columns']} columns)",
        "",
        "Path-dependent TreeSHAP of every training row, as an aligned run needs it: one native call on one thread "
        "(what `shap_values` did before it took `threads`) vs `BoosterTeacher.shap_values(threads=t)` in chunks of "
        f"{ts['chunk_rows']:,} rows, with LightGBM's `num_threads` set explicitly; {ts['usable_cores']} usable "
        "cores. No warm-up round (a round is long; the cases are interleaved as everywhere else). The last column is "
        "the largest difference from the single native call (values and expected value).",
        "",
        *table(["computation", "median", "spread", "rows/s", "speed ÷ one native call", "max abs diff"], rows),
        "",
        f"Values agree to 1e-6: **{'yes' if ts['agree_1e-6'] else 'NO'}**. Rows/s the progress callback reported "
        f"after each chunk (last timed round): {progress}.",
        "",
    ]


def _seeds(runs: dict[str, list[dict[str, Any]]]) -> str:
    """The seeds of the end-to-end rounds, in words (results before ``--e2e-seeds`` ran seed 0 only)."""
    seeds = sorted({int(run.get("seed", 0)) for mode in runs.values() for run in mode})
    return f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ", ".join(map(str, seeds)) + " (one per round)"


def section_e2e(e2e: dict[str, Any]) -> list[str]:
    runs, sizes = e2e["runs"], e2e["sizes"]
    first = runs["plain"][0]
    names: list[str] = []
    for run in runs["aligned"] + runs["plain"]:  # the aligned run has every phase, in order
        names += [p["phase"] for p in run["phases"] if p["phase"] not in names]
    rows = []
    for name in names:
        row = [name]
        for mode in ("plain", "aligned"):
            if not any(p["phase"] == name for r in runs[mode] for p in r["phases"]):
                row += ["—", "—"]  # e.g. the training rows' TreeSHAP, which plain runs skip
                continue
            row += [
                seconds(_median(runs[mode], partial(_phase_seconds, name=name))),
                f"{_median(runs[mode], partial(_phase_peak, name=name)):.0f} MiB",
            ]
        rows.append(row)
    total = ["**end to end**"]
    for mode in ("plain", "aligned"):
        total += [
            f"**{seconds(_median(runs[mode], lambda r: r['total_s']))}**",
            f"**{_median(runs[mode], lambda r: r['process_peak_mib']):.0f} MiB** (process)",
        ]
    rows.append(total)

    plain_epoch, aligned_epoch = _epochs(runs["plain"]), _epochs(runs["aligned"])

    def auc(mode: str, who: str) -> float:
        value: float = statistics.median(r["metrics"][who].get("auc", float("nan")) for r in runs[mode])
        return value

    comparison = _deepgbm_comparison(e2e, plain_epoch, aligned_epoch, auc)
    where = "in this process (a smoke run)" if e2e["in_process"] else "in a fresh Python process"
    return [
        f"## 4. End to end: `distill` on adult ({first['rows']:,} rows), plain and aligned",
        "",
        "Adult is the largest of the bundled datasets (48,842 rows; california housing has 20,640). "
        f"Each run is one `gbdt2nn_core.pipeline.distill.distill` call {where}, as `gbdt2nn distill` runs it: teacher "
        f"{sizes['trees']} trees × {sizes['leaves']} leaves, {sizes['groups']} groups, batch {sizes['batch']}, "
        f"{sizes['epochs']} epochs, stratified 80/20 split, {_seeds(runs)}, explanation cache off. *Plain*: λ = 0 "
        "(TreeSHAP of the test rows only, for the agreement metrics); *aligned*: λ = 1, structure attributor, "
        f'the {aligned_loss(runs)} loss (`alignment="auto"`; TreeSHAP of '
        "the training rows too: they are its target). "
        f"{len(runs['plain'])} run(s) of each, alternating; medians. Phases are the pipeline's own progress steps; "
        "time between them is listed as *outside steps* (splitting and encoding the data before and after the "
        "teacher, the teacher's margins and leaf indices, building the student). **Peak memory** is the resident "
        f"set size (RSS: Python and native allocations alike) measured as {first['peak_method']}; the process "
        "peak is the largest phase peak.",
        "",
        *table(["phase", "plain: wall", "plain: peak RSS", "aligned: wall", "aligned: peak RSS"], rows),
        "",
        *_deepgbm_intro(e2e),
        "",
        *table(["figure", "gbdt2nn (this run)", f"DeepGBM ({deepgbm_side(e2e)['label']})", "ratio"], comparison),
        "",
        *_per_round(runs),
    ]


def _deepgbm_intro(e2e: dict[str, Any]) -> list[str]:
    deepgbm = deepgbm_side(e2e)
    if not deepgbm["measured"]:
        return [
            "Against DeepGBM's reference implementation on the same setup — its figures are **quoted** from "
            "docs/DESIGN.md §2.7 (measured by another session on this kind of machine), **not re-measured here** "
            "(`--deepgbm CHECKOUT` measures them):"
        ]
    return [
        "Against DeepGBM's reference implementation on the same setup, **measured in this run**: its own code "
        f"(`benchmarks/deepgbm_reference.py --checkout`, {deepgbm['rounds']} run(s), one per round, each in a fresh "
        "process after our two, on the same threads and the same torch and LightGBM), from its encoder to its "
        "student's last epoch. Ratios are medians of per-round ratios (min–max). DeepGBM's student reads "
        f"{e2e['runs']['deepgbm'][0]['features']} standardised numeric features (its `NumEncoder`: numeric columns, "
        "running target encodings, categorical codes in bits); ours reads the teacher's split intervals and "
        "categories one-hot, a wider first layer.",
    ]


def _deepgbm_comparison(
    e2e: dict[str, Any], plain_epoch: dict[str, float], aligned_epoch: dict[str, float], auc: Callable[..., float]
) -> list[list[str]]:
    """Rows of the end-to-end section's table against DeepGBM (measured or quoted)."""
    runs = e2e["runs"]
    plain = runs["plain"]
    deepgbm = deepgbm_side(e2e)
    dg, versus = deepgbm["figures"], deepgbm["ratio"]
    no_shap = [r["total_s"] - _treeshap_seconds(r) for r in plain]
    rows = [
        ["time per epoch, plain", f"{seconds(plain_epoch['median'])} ({spread(plain_epoch)})",
         _deepgbm_epoch_text(deepgbm, runs), versus([statistics.median(r["epoch_s"]) for r in plain], "epoch_s",
                                          plain_epoch["median"])],
        [f"time per epoch, aligned (structure + {aligned_loss(runs)})",
         f"{seconds(aligned_epoch['median'])} ({spread(aligned_epoch)})",
         "—", "—"],
        ["end to end, plain (imports included)", seconds(_median(plain, lambda r: r["total_s"])),
         seconds(dg["end_to_end_s"]), versus([r["total_s"] for r in plain], "end_to_end_s")],
        ["end to end, plain, less TreeSHAP (DeepGBM computes none)", seconds(statistics.median(no_shap)),
         seconds(dg["end_to_end_s"]), versus(no_shap, "end_to_end_s")],
    ]  # fmt: skip
    if deepgbm["measured"]:
        training = [_training_seconds(r) for r in plain]
        rows.append(
            ["teacher and student training alone (DeepGBM: `train_GBDT2NN`; its encoder and our TreeSHAP left out)",
             seconds(statistics.median(training)), seconds(dg["training_s"]), versus(training, "training_s")]
        )  # fmt: skip
    rows += [
        ["peak memory (RSS), plain", f"{_median(plain, lambda r: r['process_peak_mib']):.0f} MiB",
         f"≈{dg['peak_mib']:.0f} MiB", versus([r["process_peak_mib"] for r in plain], "peak_mib")],
        ["student test AUC, plain / aligned",
         f"{auc('plain', 'student_test'):.4f} / {auc('aligned', 'student_test'):.4f}",
         f"{dg['student_auc']:.4f}" + ("" if deepgbm["measured"] else " (mean of 3 seeds)"), "—"],
        ["teacher test AUC", f"{auc('plain', 'teacher_test'):.4f}", f"{dg['teacher_auc']:.4f}", "—"],
    ]  # fmt: skip
    return rows


def _training_seconds(run: dict[str, Any]) -> float:
    """From the teacher's training to the student's BatchNorm statistics, the steps between included: what
    DeepGBM's ``train_GBDT2NN`` does (teacher, leaf indices, leaf embedding, student), less its final evaluation."""
    names = [p["phase"] for p in run["phases"]]
    first = next(i for i, name in enumerate(names) if name.startswith("teacher ("))
    last = names.index("BatchNorm statistics")
    total: float = sum(p["seconds"] for p in run["phases"][first : last + 1])
    return total


def _deepgbm_epoch_text(deepgbm: dict[str, Any], runs: dict[str, list[dict[str, Any]]]) -> str:
    """DeepGBM's epoch for the table: quoted, or measured with the spread of every epoch of its runs."""
    if not deepgbm["measured"]:
        return f"{deepgbm['figures']['epoch_s']} s"
    return f"{seconds(deepgbm['figures']['epoch_s'])} ({spread(_epochs(runs['deepgbm']))})"


def _per_round(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Every round's wall time, epochs and test figures per kind of run (early stopping's epoch count moves the
    end-to-end ratio more than a step's cost does); ``aligned_mixed``: the aligned run with the batch layout before
    ``alignment_batches="grouped"``, when the run measured it."""
    labels = {"plain": "plain", "aligned": "aligned (grouped batches)", "aligned_mixed": "aligned (mixed batches)"}
    rows = []
    for mode, label in labels.items():
        for run in runs.get(mode, []):
            epochs = run["epoch_s"]
            rows.append(
                [
                    label,
                    str(run.get("seed", 0)),
                    seconds(run["total_s"]),
                    str(len(epochs)),
                    seconds(statistics.median(epochs)),
                    f"{run['metrics']['student_test'].get('auc', float('nan')):.4f}",
                    f"{run['metrics']['agreement']['spearman']:.3f}",
                ]
            )
    for run in runs.get("deepgbm", []):  # DeepGBM's own code (--deepgbm): no explanations to agree with
        epochs = run["epoch_s"]
        rows.append(
            ["DeepGBM (its code)", str(run.get("seed", 0)), seconds(run["total_s"]), str(len(epochs)),
             seconds(statistics.median(epochs)), f"{run['metrics']['student_test_auc']:.4f}", "—"]
        )  # fmt: skip
    lines = ["Every round:", ""]
    lines += table(["run", "seed", "end to end", "epochs", "median epoch", "test AUC", "Spearman"], rows)
    if runs.get("aligned_mixed"):
        mixed = _paired([r["total_s"] for r in runs["aligned_mixed"]], [r["total_s"] for r in runs["plain"]])
        lines += ["", f"Aligned with mixed batches ÷ plain, end to end: {ratio(mixed)} (paired by round)."]
    return [*lines, ""]


GPU_STUDENT = "student: GPU, float32"


def _gpu_case(record: dict[str, Any], rows: str, prefix: str) -> dict[str, Any] | None:
    return next((v for k, v in record["batches"][rows].items() if k.startswith(prefix)), None)


def gpu_headline(record: dict[str, Any]) -> list[list[str]]:
    """Headline rows for serving on a GPU, at the largest batch measured."""
    rows = max(record["batches"], key=int)
    out = []
    for prefix, label in (
        ("teacher: LightGBM predict", f"LightGBM predict on {record['cpu']['threads']} CPU threads"),
        ("twin teacher: hummingbird-ml on GPU, tree_trav", "hummingbird-ml `tree_trav` on the same GPU"),
        ("twin teacher: hummingbird-ml on GPU, gemm", "hummingbird-ml `gemm` on the same GPU"),
    ):
        case = _gpu_case(record, rows, prefix)
        if case is not None:
            out.append(
                [f"GPU serving ({int(rows):,} rows): student ÷ {label}", "speed", ratio(case["student_gpu_speed_vs"])]
            )
    return out


def section_gpu(record: dict[str, Any]) -> list[str]:
    """Section 5, from the record benchmarks/gpu_serving.py wrote on a CUDA machine."""
    prepared, versions = record["prepared"], record["versions"]
    lines = [
        f"## 5. Serving on a GPU: the exported student on {record['device']}",
        "",
        f"Measured **{record['generated']}** by `python benchmarks/gpu_serving.py measure` on a lent machine "
        f"({record['device']}, {record['cpu']['threads']} CPU threads; torch {versions['torch']}, CUDA "
        f"{versions['cuda']}, Python {versions['python']}) — not in the run above, which has no GPU; "
        "`python benchmarks/gpu_serving.py prepare` here made its inputs. The student is scripted to TorchScript "
        f"as `gbdt2nn export` does (adult, {prepared['groups']} groups × hidden {prepared['hidden']}, "
        f"{prepared['encoded_width']} encoded inputs, {prepared['macs_per_row']:,} multiply-accumulates per row), "
        "run under `torch.no_grad()` on rows already on the GPU unless the case says otherwise; the teacher is "
        f"LightGBM ({prepared['teacher']['trees']} trees × {prepared['teacher']['leaves']} leaves) on all CPU "
        "threads of that machine; hummingbird-ml compiles the *twin* teacher (categories as numbers, as in section "
        "3) and runs on the same GPU. One batch per call, `torch.cuda.synchronize()` inside the timing, median of 5 "
        "interleaved rounds after a warm-up.",
        "",
    ]
    for rows, cases in sorted(record["batches"].items(), key=lambda item: int(item[0])):
        table_rows = [
            [name, seconds(c["median"]), spread(c), rate(c["rows_per_s"]), ratio(c["student_gpu_speed_vs"])]
            for name, c in cases.items()
        ]
        lines += [
            f"**{int(rows):,} rows**",
            "",
            *table(["case", "median", "spread", "rows/s", f"`{GPU_STUDENT}` speed ÷ it"], table_rows),
            "",
        ]
    parity = "; ".join(f"{name}: {value:.1e}" for name, value in record["parity"].items())
    flops = record["flops"]
    lines += [
        f"Largest absolute differences: {parity}.",
        "",
        f"**FLOP/s at {flops['rows']:,} rows**: the student reaches {flops['flops_per_s']['student'] / 1e12:.1f} "
        f"TFLOP/s (float32), {flops['student_fraction_of_bmm']:.0%} of `torch.bmm` at its own shapes "
        f"({flops['flops_per_s']['bmm'] / 1e12:.1f} TFLOP/s) and {flops['student_fraction_of_gemm']:.0%} of an "
        f"8192² float32 GEMM ({flops['flops_per_s']['gemm'] / 1e12:.1f} TFLOP/s).",
        "",
    ]
    if record["errors"]:
        lines += [f"Not measured: {'; '.join(f'{k}: {v}' for k, v in record['errors'].items())}.", ""]
    return lines


def _tie(stats: dict[str, float]) -> bool:
    """Whether a ratio's spread straddles 1."""
    return stats["min"] <= 1.0 <= stats["max"]


def reading(results: dict[str, Any]) -> list[str]:
    """Sentences built from the numbers above, so that they are regenerated with them."""
    lines = ["## Reading", ""]
    if results["meta"]["quick"]:
        lines += ["A `--quick` smoke run on toy sizes: nothing here says anything about performance.", ""]
    if "explain" in results:
        ex = results["explain"]
        ours, by_shap = ex["speed_vs_native"][EXPLAIN_FIRST], ex["speed_vs_native"][EXPLAIN_SHAP]
        lines.append(
            f"- **TreeSHAP.** Our path is LightGBM's own `pred_contrib` plus input checks, hashing and an atomic "
            f"write: {ours['median']:.2f}× LightGBM's speed on a first run"
            f"{' (a tie: the spread straddles 1)' if _tie(ours) else ''}. `shap.TreeExplainer` hands path-dependent "
            f"LightGBM explanations to the same `pred_contrib`: {by_shap['median']:.2f}×. The values agree "
            f"{'to 1e-6' if ex['agree_1e-6'] else '**not** to 1e-6'}. TreeSHAP is the expensive part "
            f"({rate(ex['timings'][EXPLAIN_NATIVE]['rows_per_s'])} rows/s here); a cached second run is "
            f"{ex['cached_speedup']['median']:.3g}× faster than recomputing, which is why it is cached."
        )
    if "train" in results:
        tr = results["train"]["ratio_to_plain"]
        parts = ", ".join(
            f"{name.split(': ', 1)[1]} {s['median']:.2f}×" for name, s in tr.items() if name.startswith("joint: ")
        )
        lines.append(
            f"- **Joint training** costs, per step and relative to plain distillation: {parts}. Every joint step "
            "back-propagates through one extra forward/backward pass (double back-propagation): over the batch for "
            "structure, gradient and gradient × input, over batch × steps (or samples) rows for integrated and "
            "expected gradients. The first-layer column paths run that pass through layers 2..L only (the first "
            "layer, most of the multiply-accumulates, is computed once per row and gathered per column)."
        )
    if "infer" in results:
        inf = results["infer"]
        speed = inf["ours_speed_vs"]
        hb = {name.rsplit(", ", 1)[-1]: s["median"] for name, s in speed.items() if "hummingbird" in name}
        hb_text = ", ".join(f"{v:.2f}× hummingbird `{k}`" for k, v in hb.items()) or "hummingbird-ml was not measured"
        matmul_share = inf["flops_fraction"]["bmm at the same shapes"]["median"]
        lines.append(
            f"- **Inference.** On the CPU the student's forward pass runs at {speed[TEACHER_NATIVE]['median']:.2f}× "
            f"the speed of the teacher's native predict and at {hb_text} (twin teacher), on the same threads. It does "
            f"{inf['macs_per_row']:,} multiply-accumulates per row, where a tree ensemble does a few comparisons per "
            f"tree. Its matmuls alone (bmm at the same shapes) take {matmul_share:.0%} of its time; the rest is "
            "bias adds, BatchNorm, ReLU and einsum's layout copies. It reaches "
            f"{inf['flops_fraction']['a large square matmul']['median']:.0%} of a large GEMM's FLOP/s."
        )
        api, forward = inf["timings"][FORWARD_API]["median"], inf["timings"][FORWARD]["median"]
        if api < forward and "context" in results:
            context = results["context"]
            layer = inf["rows"] * context["groups"] * context["hidden"][0] * 4 / 2**20
            lines.append(
                f"- **Batch size.** `predict_margin` (2,048-row chunks) beats one {inf['rows']:,}-row forward pass "
                f"by {forward / api:.2f}× even with the encoding included: the forward's intermediates are large (one "
                f"hidden layer is n·k·h floats, {layer:.0f} MiB here, well past the CPU's caches), and one pass over "
                "all of them is slower than several smaller ones."
            )
    if "e2e" in results:
        runs = results["e2e"]["runs"]
        epoch, aligned = _epochs(runs["plain"])["median"], _epochs(runs["aligned"])["median"]
        total = _median(runs["plain"], lambda r: r["total_s"])
        peak = _median(runs["plain"], lambda r: r["process_peak_mib"])
        shap_share = _median(runs["plain"], lambda r: _treeshap_seconds(r) / r["total_s"])
        peak_phase = max(runs["plain"][0]["phases"], key=lambda p: p["peak_mib"])["phase"]
        auc = statistics.median(r["metrics"]["student_test"].get("auc", float("nan")) for r in runs["plain"])
        deepgbm = deepgbm_side(results["e2e"])
        dg, label = deepgbm["figures"], deepgbm["label"].removeprefix("measured ")
        faster = "faster" if epoch < dg["epoch_s"] else "slower"
        caveat = (
            "DeepGBM ran in the same rounds, on the same threads and libraries: its ratios are paired, round by round."
            if deepgbm["measured"]
            else "DeepGBM's figures were measured in another session, under another load and perhaps on more "
            "threads: read ratios within ±20 % as a tie."
        )
        lines.append(
            f"- **End to end.** A plain epoch takes {seconds(epoch)} against DeepGBM's {seconds(dg['epoch_s'])} "
            f"{label} ({epoch / dg['epoch_s']:.2f}×: {faster}, for a student test AUC of {auc:.4f} against DeepGBM's "
            f"{dg['student_auc']:.4f}), an aligned one {seconds(aligned)} ({aligned / epoch:.2f}× plain). The whole "
            f"plain distillation takes {seconds(total)} against DeepGBM's {seconds(dg['end_to_end_s'])} "
            f"and peaks at {peak:.0f} MiB (in *{peak_phase}*) against ≈{dg['peak_mib']:.0f} MiB. Uncached TreeSHAP "
            f"of the test rows (all a plain run needs) is {shap_share:.0%} of the plain run; with the cache on, as by "
            f"default, a rerun on the same data skips it. {caveat}"
        )
    if "gpu_serving" in results:
        record = results["gpu_serving"]
        rows = max(record["batches"], key=int)
        student = record["batches"][rows][GPU_STUDENT]
        native = _gpu_case(record, rows, "teacher: LightGBM predict")
        lines.append(
            f"- **On a GPU** ({record['device']}, section 5) the same student serves {rate(student['rows_per_s'])} "
            f"rows/s at {int(rows):,} rows"
            + (
                f", {native['student_gpu_speed_vs']['median']:.1f}× LightGBM's native predict on "
                f"{record['cpu']['threads']} CPU threads"
                if native
                else ""
            )
            + ": dense matmuls are what a GPU does best, where tree traversal is not."
        )
        copies = _gpu_case(record, rows, "student: GPU, float32, with host")
        if copies is not None:
            extra = copies["median"] / student["median"] - 1
            width = record["prepared"]["encoded_width"]
            lines.append(
                f"- **Host↔device copies** of the encoded rows ({width} float32 = {width * 4 / 1000:.1f} kB per row) "
                f"and of the margins back add {extra:.1f}× the forward pass's own time: a serving pipeline should keep "
                "rows on the GPU or encode them there."
            )
    lines += [
        "",
        f"Every figure here ran on `--threads {results['meta']['threads']}`; on two shared, busy cores a second "
        "thread mostly adds contention. `--threads 2` measures the two-thread figures.",
    ]
    return lines
