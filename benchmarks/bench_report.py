"""The Markdown report (BENCHMARKS.md): headline ratios first, then one section per suite, then a reading."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

from bench_suites import (
    EXPLAIN_FIRST,
    EXPLAIN_NATIVE,
    EXPLAIN_SHAP,
    FORWARD,
    FORWARD_API,
    PLAIN_STEP,
    TEACHER_NATIVE,
)

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
    return sum(p["seconds"] for p in run["phases"] if p["phase"] == name)


def _phase_peak(run: dict[str, Any], name: str) -> float:
    return max((p["peak_mib"] for p in run["phases"] if p["phase"] == name), default=float("nan"))


def _epochs(runs: list[dict[str, Any]]) -> dict[str, float]:
    values = [s for run in runs for s in run["epoch_s"]]
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


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
        "timing, `--quick` for a smoke run of every code path). Needs the core, the plugins and the core's `bench` "
        "dependency group (hummingbird-ml, shap); see benchmarks/README.md.",
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
        f"- **Load**: the machine was **shared with other busy processes** while this ran (load average 1/5/15 min "
        f"{load_start} at the start, {load_end} at the end, on {m['logical_cores']} cores). Absolute times are noisy; "
        "the ratios are measured pairwise and are the numbers to read.",
        f"- **Method**: one process measures both sides of every ratio. A suite's cases run interleaved (A, B, C, A, "
        f"B, C, ... the order rotated each round) after one untimed warm-up round, with the garbage collector off "
        f"inside a timed call; a figure is the median of {meta['repeats']} rounds with the spread (min–max); a ratio "
        "is the median of the per-round ratios, with their min–max.",
        "",
    ]
    out += headline(results)
    if "explain" in results:
        out += section_explain(results["explain"], results["context"])
    if "train" in results:
        out += section_train(results["train"], results["context"])
    if "infer" in results:
        out += section_infer(results["infer"])
    if "e2e" in results:
        out += section_e2e(results["e2e"])
    out += reading(results)
    return "\n".join(out) + "\n"


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
        rows += [
            [f"training step, joint with {name.removeprefix('joint: ')} ÷ plain", "time (>1: slower)", ratio(stats)]
            for name, stats in results["train"]["ratio_to_plain"].items()
            if name != PLAIN_STEP
        ]
    if "infer" in results:
        inf = results["infer"]
        rows.append(["inference: student forward ÷ teacher LightGBM predict", "speed (>1: student faster)",
                     ratio(inf["ours_speed_vs"][TEACHER_NATIVE])])  # fmt: skip
        rows += [
            [f"inference: student forward ÷ {name.split(': ', 1)[1]}", "speed", ratio(stats)]
            for name, stats in inf["ours_speed_vs"].items()
            if "hummingbird" in name
        ]
        rows += [
            [f"student forward FLOP/s ÷ {what}", "fraction", ratio(stats)]
            for what, stats in inf["flops_fraction"].items()
        ]
    if "e2e" in results:
        runs, ref = results["e2e"]["runs"], results["e2e"]["reference"]
        epoch = _epochs(runs["plain"])["median"]
        total = _median(runs["plain"], lambda r: r["total_s"])
        peak = _median(runs["plain"], lambda r: r["process_peak_mib"])
        rows += [
            [f"plain epoch ÷ DeepGBM's (quoted, {ref['epoch_s']} s)", "time (<1: ours faster)",
             f"**{epoch / ref['epoch_s']:.3g}×**"],
            [f"plain distillation end to end ÷ DeepGBM's (quoted, {ref['end_to_end_s']} s)", "time",
             f"**{total / ref['end_to_end_s']:.3g}×**"],
            [f"plain distillation peak RSS ÷ DeepGBM's (quoted, ≈{ref['peak_mib']:.0f} MiB)", "memory",
             f"**{peak / ref['peak_mib']:.3g}×**"],
        ]  # fmt: skip
    return ["## Headline ratios", "", *table(["ratio", "compares", "median (min–max)"], rows), ""]


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


def section_train(tr: dict[str, Any], context: dict[str, Any]) -> list[str]:
    rows = [
        [name, seconds(t["median"]), spread(t), rate(t["rows_per_s"]), ratio(tr["ratio_to_plain"][name])]
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
        f"{tr['eg_samples']} samples. Each timed call runs {tr['steps_per_call']} steps; figures are per step.",
        "",
        *table(["step", "median", "spread", "rows/s", "time ÷ plain"], rows),
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
        f"÷ large GEMM: {ratio(inf['flops_fraction']['a large square matmul'])}. The forward also gathers each group's "
        "columns, adds biases and runs BatchNorm and ReLU, which the bare matmuls do not.",
        "",
    ]


def section_e2e(e2e: dict[str, Any]) -> list[str]:
    runs, ref, sizes = e2e["runs"], e2e["reference"], e2e["sizes"]
    first = runs["plain"][0]
    names: list[str] = []
    for run in runs["plain"] + runs["aligned"]:
        names += [p["phase"] for p in run["phases"] if p["phase"] not in names]
    rows = []
    for name in names:
        row = [name]
        for mode in ("plain", "aligned"):
            row += [
                seconds(_median(runs[mode], lambda r, name=name: _phase_seconds(r, name))),
                f"{_median(runs[mode], lambda r, name=name: _phase_peak(r, name)):.0f} MiB",
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
    plain_total = _median(runs["plain"], lambda r: r["total_s"])
    no_shap = _median(runs["plain"], lambda r: r["total_s"] - _phase_seconds(r, "teacher TreeSHAP"))
    plain_peak = _median(runs["plain"], lambda r: r["process_peak_mib"])

    def auc(mode: str, who: str) -> float:
        return statistics.median(r["metrics"][who].get("auc", float("nan")) for r in runs[mode])

    comparison = [
        ["time per epoch, plain", f"{seconds(plain_epoch['median'])} ({spread(plain_epoch)})",
         f"{ref['epoch_s']} s", f"{plain_epoch['median'] / ref['epoch_s']:.3g}×"],
        ["time per epoch, aligned (structure + MSE)", f"{seconds(aligned_epoch['median'])} ({spread(aligned_epoch)})",
         "—", "—"],
        ["end to end, plain (imports included)", seconds(plain_total), f"{ref['end_to_end_s']} s",
         f"{plain_total / ref['end_to_end_s']:.3g}×"],
        ["end to end, plain, less TreeSHAP (DeepGBM computes none)", seconds(no_shap), f"{ref['end_to_end_s']} s",
         f"{no_shap / ref['end_to_end_s']:.3g}×"],
        ["peak memory (RSS), plain", f"{plain_peak:.0f} MiB", f"≈{ref['peak_mib']:.0f} MiB",
         f"{plain_peak / ref['peak_mib']:.3g}×"],
        ["student test AUC, plain / aligned",
         f"{auc('plain', 'student_test'):.4f} / {auc('aligned', 'student_test'):.4f}",
         f"{ref['student_auc']} (mean of 3 seeds)", "—"],
        ["teacher test AUC", f"{auc('plain', 'teacher_test'):.4f}", f"{ref['teacher_auc']}", "—"],
    ]  # fmt: skip
    where = "in this process (a smoke run)" if e2e["in_process"] else "in a fresh Python process"
    return [
        f"## 4. End to end: `distill` on adult ({first['rows']:,} rows), plain and aligned",
        "",
        f"Each run is one `gbdt2nn_core.distill.distill` call {where}, as `gbdt2nn distill` runs it: teacher "
        f"{sizes['trees']} trees × {sizes['leaves']} leaves, {sizes['groups']} groups, batch {sizes['batch']}, "
        f"{sizes['epochs']} epochs, stratified 80/20 split, seed 0, explanation cache off. *Plain*: λ = 0 (TreeSHAP is "
        "still computed, for the agreement metrics); *aligned*: λ = 1, structure attributor, MSE. "
        f"{len(runs['plain'])} run(s) of each, alternating; medians. Phases are the pipeline's own progress steps; "
        "time between them is listed as *outside steps* (splitting and encoding the data before and after the "
        "teacher, the teacher's margins and leaf indices, building the student). **Peak memory** is the resident "
        f"set size (RSS: Python and native allocations alike) measured as {first['peak_method']}; the process "
        "peak is the largest phase peak.",
        "",
        *table(["phase", "plain: wall", "plain: peak RSS", "aligned: wall", "aligned: peak RSS"], rows),
        "",
        "Against DeepGBM's reference implementation on the same setup — its figures are **quoted** from "
        "docs/DESIGN.md §2.7 (measured by another session on this kind of machine), **not re-measured here**:",
        "",
        *table(["figure", "gbdt2nn (this run)", "DeepGBM (quoted)", "ratio"], comparison),
        "",
    ]


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
            f"{name.split(': ', 1)[1]} {s['median']:.2f}×" for name, s in tr.items() if name != PLAIN_STEP
        )
        lines.append(
            f"- **Joint training** costs, per step and relative to plain distillation: {parts}. Structure and "
            "gradient × input back-propagate through one extra forward/backward pass over the batch (double "
            "back-propagation); integrated and expected gradients do it over batch × steps (or samples) rows, so "
            "they cost an order of magnitude more."
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
            "gathering each group's columns, bias adds, BatchNorm, ReLU and einsum's layout copies. It reaches "
            f"{inf['flops_fraction']['a large square matmul']['median']:.0%} of a large GEMM's FLOP/s."
        )
        api, forward = inf["timings"][FORWARD_API]["median"], inf["timings"][FORWARD]["median"]
        if api < forward and "context" in results:
            context = results["context"]
            gathered = inf["rows"] * context["groups"] * context["group_width"] * 4 / 2**20
            lines.append(
                f"- **Batch size.** `predict_margin` (8,192-row chunks) beats one {inf['rows']:,}-row forward pass "
                f"by {forward / api:.2f}× even with the encoding included: the forward's intermediates are large (the "
                f"gathered group inputs alone are n·k·W floats, {gathered:.0f} MiB here), and one pass over all of "
                "them is slower than several smaller ones."
            )
    if "e2e" in results:
        runs, ref = results["e2e"]["runs"], results["e2e"]["reference"]
        epoch, aligned = _epochs(runs["plain"])["median"], _epochs(runs["aligned"])["median"]
        total = _median(runs["plain"], lambda r: r["total_s"])
        peak = _median(runs["plain"], lambda r: r["process_peak_mib"])
        shap_share = _median(runs["plain"], lambda r: _phase_seconds(r, "teacher TreeSHAP") / r["total_s"])
        peak_phase = max(runs["plain"][0]["phases"], key=lambda p: p["peak_mib"])["phase"]
        auc = statistics.median(r["metrics"]["student_test"].get("auc", float("nan")) for r in runs["plain"])
        faster = "faster" if epoch < ref["epoch_s"] else "slower"
        lines.append(
            f"- **End to end.** A plain epoch takes {seconds(epoch)} against DeepGBM's quoted {ref['epoch_s']} s "
            f"({epoch / ref['epoch_s']:.2f}×: {faster}, for a student test AUC of {auc:.4f} against DeepGBM's quoted "
            f"{ref['student_auc']}), an aligned one {seconds(aligned)} ({aligned / epoch:.2f}× plain). The whole plain "
            f"distillation takes {seconds(total)} against the quoted {ref['end_to_end_s']} s "
            f"and peaks at {peak:.0f} MiB (in *{peak_phase}*) against ≈{ref['peak_mib']:.0f} MiB. Uncached TreeSHAP "
            f"(training and test rows) is {shap_share:.0%} of the plain run; with the cache on, as by default, a "
            "rerun on the same data skips it. DeepGBM's figures were measured in another session, under another load "
            "and perhaps on more threads: read ratios within ±20 % as a tie."
        )
    lines += [
        "",
        f"Every figure here ran on `--threads {results['meta']['threads']}`; on two shared, busy cores a second "
        "thread mostly adds contention. `--threads 2` measures the two-thread figures.",
    ]
    return lines
