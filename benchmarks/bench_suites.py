"""The four benchmark suites: teacher explanations, training step, inference, end to end.

Third-party and gbdt2nn modules are imported inside the functions, after ``run.py`` has pinned the threads.
"""

from __future__ import annotations

import copy
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench_measure import ROOT, PhaseRecorder, measure, paired_ratio, summary

if TYPE_CHECKING:  # types only: the modules themselves are imported after run.py has pinned the threads
    from gbdt2nn_core.host.interfaces import AlignmentBatches

RUN_SCRIPT = Path(__file__).resolve().parent / "run.py"

#: DeepGBM's own code on adult, measured on this kind of machine (docs/DESIGN.md §2.7); quoted, not re-measured.
DEEPGBM_REFERENCE = {
    "epoch_s": 1.16,
    "end_to_end_s": 30.6,
    "peak_mib": 730.0,
    "student_auc": 0.9122,
    "teacher_auc": 0.9266,
    "setup": "100 trees x 64 leaves, 10 groups, batch 512, 20 epochs, stratified 80/20 split (random_state=0)",
}
SUITES = ("explain", "train", "infer", "treeshap", "e2e")


# ------------------------------------------------------------------------------------------------------ sizes
SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "rows": None,  # every adult row (48,842)
        "trees": 100,
        "leaves": 64,
        "explain_rows": 5_000,
        "batch": 512,
        "steps": 4,  # training steps per timed call
        "inference_rows": 10_000,
        "ig_steps": 16,
        "eg_samples": 16,
        "groups": 10,
        "hidden": (100, 100, 100, 50),
        "epochs": 20,
        "gemm": 2048,
        "repeats": 5,
        "shap_rows": None,  # TreeSHAP suite: every training row (39,073)
        "shap_repeats": 3,  # a round costs about two minutes on one core
        "shap_chunk_rows": 8192,
    },
    "quick": {
        "rows": 1_500,
        "trees": 6,
        "leaves": 8,
        "explain_rows": 200,
        "batch": 64,
        "steps": 1,
        "inference_rows": 400,
        "ig_steps": 4,
        "eg_samples": 4,
        "groups": 3,
        "hidden": (16, 16),
        "epochs": 2,
        "gemm": 128,
        "repeats": 2,
        "shap_rows": 300,
        "shap_repeats": 1,
        "shap_chunk_rows": 128,
    },
}


# Case labels: keys of the results and rows of the report.
EXPLAIN_FIRST = "ours: plugin shap_values + ExplanationCache, first run"
EXPLAIN_CACHED = "ours: cached second run"
EXPLAIN_NATIVE = "LightGBM predict(pred_contrib=True)"
EXPLAIN_SHAP = "shap.TreeExplainer(booster).shap_values"
PLAIN_STEP = "plain (λ = 0)"
PLAIN_LOOKUP_STEP = "plain (λ = 0), lookup first layer"
#: Suffixes of the joint-step labels: the dense autograd path (before issue 11), and the default first-layer path
#: with the module's lookup first layer on (the plain step then uses it too: compare with PLAIN_LOOKUP_STEP).
DENSE_SUFFIX = ", dense path (before)"
LOOKUP_SUFFIX = ", lookup first layer"
FORWARD = "ours: GBDT2NN forward (eval, no grad)"
FORWARD_API = "ours: encode the DataFrame + predict_margin"
FORWARD_BEFORE = "before: GBDT2NN forward as trained (dense first layer, batch norm unfolded)"
FORWARD_API_BEFORE = "before: encode the DataFrame + 2,048-row chunks of the forward as trained"
FORWARD_LOOKUP = "ours: GBDT2NN forward, lookup first layer read from z"
FORWARD_API_LOOKUP = "ours: encode the DataFrame + predict_margin, lookup first layer read from z"
FRAME_LOOKUP = "ours: lookup inputs from the DataFrame + forward_lookup (no one-hot written)"
FRAME_PREDICT = "ours: predict from the DataFrame via the lookup (frame_margins, what every predict path runs)"
FRAME_PREDICT_DENSE = "ours: predict from the DataFrame, dense encoding per chunk (frame_margins, no lookup)"
SHAP_TODAY = "before: one native call, 1 thread (LightGBM predict(pred_contrib=True))"
TEACHER_NATIVE = "teacher: LightGBM predict(raw_score=True)"
TWIN_NATIVE = "twin teacher: LightGBM predict(raw_score=True)"
MACHINE_BMM = "machine: torch.bmm at the group MLP's shapes"
MACHINE_GEMM = "machine: one large square matmul"
IMPORT_PHASE = "import gbdt2nn, torch (with torch._dynamo, which AdamW loads), LightGBM"

#: label -> (registry name, its options given the sizes)
ATTRIBUTORS: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "structure (core default)": ("structure", lambda s: {}),
    "gradient (saliency)": ("gradient", lambda s: {}),
    "gradient-x-input": ("gradient-x-input", lambda s: {}),
    # a joint step integrates over the attributor's training_steps points
    "integrated gradients": ("integrated-gradients", lambda s: {"training_steps": s["ig_steps"]}),
    # the plugin's own default points in a training step (4): what an aligned run uses unless told otherwise
    "integrated gradients (default points)": ("integrated-gradients", lambda s: {}),
    # a joint step takes two independent estimates of a Monte Carlo attributor: eg_samples draws a step in all
    "expected gradients (shap)": (
        "shap",
        lambda s: {"samples": s["eg_samples"], "training_samples": max(1, s["eg_samples"] // 2)},
    ),
    # the plugin's own default draws inside a training step (2 estimates of 4): what an aligned run uses by default
    "expected gradients (default draws)": ("shap", lambda s: {}),
}


#: Attributors that have a first-layer column path (saliency stays dense).
COLUMN_PATH = ("structure", "gradient-x-input", "integrated-gradients", "shap")


def timing_table(samples: dict[str, list[float]], rows: int) -> dict[str, dict[str, float]]:
    """Median, spread and rows/s of every case."""
    return {name: {**summary(times), "rows_per_s": rows / statistics.median(times)} for name, times in samples.items()}


# ------------------------------------------------------------------------------------------------------ setup
class Context:
    """Adult, a LightGBM teacher of DeepGBM's size, its TreeSHAP and a one-epoch student: built once, shared."""

    def __init__(self, sizes: dict[str, Any], threads: int) -> None:
        import numpy as np
        import torch

        from gbdt2nn_core.data import load_bundled
        from gbdt2nn_core.host.interfaces import StudentInputs
        from gbdt2nn_core.host.registry import get_registry
        from gbdt2nn_core.kit.booster_teacher import BoosterTeacher
        from gbdt2nn_core.pipeline import BACKGROUND_ROWS, PreparedData, background_index, fit_encoder, split_data
        from gbdt2nn_core.student.gbdt2nn import GBDT2NNStudent

        torch.set_num_threads(threads)
        self.sizes, self.threads = sizes, threads
        self.registry = get_registry()
        adult = load_bundled("adult")
        frame = adult.frame
        if sizes["rows"] is not None:
            frame = frame.sample(sizes["rows"], random_state=0).reset_index(drop=True)
        split = split_data(frame, adult.target, task=adult.task, test_size=0.2, seed=0)
        self.teacher_options = {"n_estimators": sizes["trees"], "num_leaves": sizes["leaves"]}
        teacher = self.registry.teacher("lightgbm", **self.teacher_options)
        assert isinstance(teacher, BoosterTeacher)  # LightGBM's: TreeSHAP with threads, chunks and progress
        self.teacher = teacher
        self.teacher.fit(split.train_frame, split.y_train, task=split.task, seed=0)
        self.data = PreparedData.encode(split, fit_encoder(split, self.teacher, 64))
        self.task = split.task
        self.shap_train = self.teacher.shap_values(self.data.train_frame, threads=threads)
        self.margin_train = self.teacher.predict_margin(self.data.train_frame)
        self.aggregation = self.data.encoder.aggregation()
        student = self.registry.student(
            "gbdt2nn", seed=0, epochs=1, batch_size=sizes["batch"], n_groups=sizes["groups"], hidden=sizes["hidden"]
        )
        assert isinstance(student, GBDT2NNStudent)  # its config, module and epoch loop are timed directly
        self.student = student
        self.student.fit(
            StudentInputs(
                teacher=self.teacher,
                leaves=self.teacher.leaf_indices(self.data.train_frame),
                z=self.data.z_train,
                y=self.data.y_train,
                task=self.task,
                teacher_margin=self.margin_train,
                column_of=self.data.encoder.column_of,
                aggregation=self.aggregation,
                background=self.data.z_train[background_index(len(self.data.z_train), BACKGROUND_ROWS, 0)],
            )
        )
        rows = np.random.default_rng(0).permutation(len(self.data.z_train))[:256]
        self.background = torch.as_tensor(self.data.z_train[rows], dtype=torch.float32)

    def describe(self) -> dict[str, Any]:
        ensemble = self.teacher.structure()
        module = self.student.module
        return {
            "rows_train": len(self.data.y_train),
            "rows_test": len(self.data.y_test),
            "columns": self.data.encoder.n_columns,
            "categorical_columns": sum(c.kind != "numeric" for c in self.data.schema.columns),
            "encoded_width": self.data.encoder.n_encoded,
            "trees": ensemble.n_trees,
            "max_leaves": ensemble.max_leaves,
            "groups": module.n_groups,
            "group_width": int(module.group_input_index.shape[1]),
            "hidden": list(module.hidden_sizes),
        }


# ------------------------------------------------------------------------------------------------------ suite 1
def bench_explain(ctx: Context) -> dict[str, Any]:
    """Path-dependent TreeSHAP: our path (first run, cached run) vs LightGBM's pred_contrib vs shap.TreeExplainer."""
    import numpy as np
    import shap

    from gbdt2nn_core.data.cache import ExplanationCache

    sizes, teacher = ctx.sizes, ctx.teacher
    booster = teacher.native_model
    frame = ctx.data.test_frame.iloc[: sizes["explain_rows"]].reset_index(drop=True)
    n, d = frame.shape
    started = time.perf_counter()
    explainer = shap.TreeExplainer(booster)
    explainer_build_s = time.perf_counter() - started

    def by_shap() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # shap warns on every call that its LightGBM output format changed
            return explainer.shap_values(frame)

    scratch = Path(tempfile.mkdtemp(prefix="gbdt2nn-bench-"))
    ExplanationCache(scratch / "warm").get_or_compute(
        teacher, frame, "path-dependent", lambda: teacher.shap_values(frame)
    )
    fresh = iter(range(10**9))

    def first_run() -> Any:
        # an empty cache directory: compute, hash the model and the rows, store atomically
        cache = ExplanationCache(scratch / f"cold-{next(fresh)}")
        return cache.get_or_compute(teacher, frame, "path-dependent", lambda: teacher.shap_values(frame))

    def cached_run() -> Any:
        cache = ExplanationCache(scratch / "warm")
        result = cache.get_or_compute(teacher, frame, "path-dependent", _never_compute)
        assert cache.hits == 1
        return result

    cases: dict[str, Callable[[], object]] = {
        EXPLAIN_FIRST: first_run,
        EXPLAIN_CACHED: cached_run,
        EXPLAIN_NATIVE: lambda: booster.predict(frame, pred_contrib=True),
        EXPLAIN_SHAP: by_shap,
    }
    try:
        samples = measure(cases, repeats=sizes["repeats"])
        ours, cached = first_run(), cached_run()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    native = np.asarray(booster.predict(frame, pred_contrib=True), dtype=np.float64)
    shap_values = by_shap()
    shap_values = np.asarray(shap_values[-1] if isinstance(shap_values, list) else shap_values, dtype=np.float64)
    differences = {
        "ours vs LightGBM (values)": float(np.abs(ours.values - native[:, :d]).max()),
        "ours vs LightGBM (expected value)": float(np.abs(ours.expected_value[0] - native[:, d]).max()),
        "shap vs LightGBM (values)": float(np.abs(shap_values - native[:, :d]).max()),
        "shap vs LightGBM (expected value)": float(np.abs(np.ravel(explainer.expected_value)[-1] - native[:, d]).max()),
        "ours cached vs ours computed": float(np.abs(cached.values - ours.values).max()),
        "additivity: ours values + expected value vs raw margin": float(
            np.abs(ours.values.sum(1) + ours.expected_value[0] - booster.predict(frame, raw_score=True)).max()
        ),
    }
    return {
        "rows": n,
        "columns": d,
        "timings": timing_table(samples, n),
        "speed_vs_native": {name: paired_ratio(samples[EXPLAIN_NATIVE], times) for name, times in samples.items()},
        "cached_speedup": paired_ratio(samples[EXPLAIN_FIRST], samples[EXPLAIN_CACHED]),
        "max_abs_diff": differences,
        "agree_1e-6": all(value <= 1e-6 for value in differences.values()),
        "explainer_build_s": explainer_build_s,
        "samples": samples,
    }


def _never_compute() -> Any:
    raise AssertionError("the cache missed on its second run")


# ------------------------------------------------------------------------------------------------------ suite 2
def dense_path(attributor: Any) -> Any:
    """``attributor`` without its first-layer column path: ``column_attributions`` then takes the dense path."""
    from gbdt2nn_core.host.interfaces import Attributor

    class DensePath(Attributor):
        differentiable = attributor.differentiable
        reference = attributor.reference
        monte_carlo = attributor.monte_carlo

        def fit(self, model: Any, background: Any) -> Any:
            attributor.fit(model, background)
            return self

        def attribute(self, model: Any, z: Any, *, create_graph: bool = False) -> Any:
            return attributor.attribute(model, z, create_graph=create_graph)

    return DensePath()


def training_step(
    ctx: Context, attributor: str | None, options: dict[str, Any], *, dense: bool = False, lookup: bool = False
) -> Callable[[], object]:
    """``steps`` batches of the real epoch loop (``GBDT2NNStudent._train_epoch``), on a private copy of the student.

    ``dense`` hides the attributor's first-layer column path (the joint step as before issue 11); ``lookup`` turns
    the module's lookup first layer on (its training forward and the column path read one-hot blocks as table rows).
    ``_train_epoch`` and ``_Objective`` are private; the smoke test runs this so that a change to them breaks it.
    """
    import torch

    from gbdt2nn_core.kit.alignment import Alignment
    from gbdt2nn_core.student.gbdt2nn import _Objective
    from gbdt2nn_core.student.kit import adamw, target_scaling

    sizes = ctx.sizes
    student = copy.deepcopy(ctx.student)
    module, cfg = student.module, student.config.for_task(ctx.task)  # the task's "auto" settings, as the fit does
    module.use_lookup(ctx.data.encoder.onehot_blocks() if lookup else None)
    rows = sizes["batch"] * sizes["steps"]
    z = torch.as_tensor(ctx.data.z_train[:rows], dtype=torch.float32)
    scaling = target_scaling(ctx.task, ctx.data.y_train[:rows], standardize=cfg.standardize_targets)
    y = scaling.targets(ctx.task, ctx.data.y_train[:rows])
    with torch.no_grad():
        # the embedding targets' values change the loss, not the work of a step
        targets = module.eval().embeddings(z).detach()
    alignment = None
    if attributor is not None:
        chosen = ctx.registry.attributor(attributor, **options)
        alignment = Alignment(
            attributor=dense_path(chosen) if dense else chosen,
            loss=ctx.registry.alignment_loss("mse"),
            teacher_attributions=ctx.shap_train.values[:rows],
            weight=1.0,
            fraction=1.0,
        )
        alignment.attributor.fit(module, ctx.background)
    margin = ctx.margin_train[:rows]
    # as the fit does: the rows' lookup slots found once, not checked again every batch
    slots = module.rows_slots(z) if lookup else None
    objective = _Objective(cfg, ctx.task, module, targets, y, margin, alignment, ctx.aggregation, scaling, slots=slots)
    # the fit's own optimizer (fused AdamW): the for-loop one cost 2 ms more a step than the student's training pays
    optimizer = adamw(module.parameters(), lr=student.learning_rate(), weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(0)
    beta = cfg.beta(0)
    return lambda: student._train_epoch(0, z, objective, optimizer, generator, alignment, None, beta)


def bench_train(ctx: Context) -> dict[str, Any]:
    """Median time of one training step: plain, and joint with each attributor (dense path, first-layer path, and
    first-layer path with the lookup first layer)."""
    sizes = ctx.sizes
    cases = {PLAIN_STEP: training_step(ctx, None, {}), PLAIN_LOOKUP_STEP: training_step(ctx, None, {}, lookup=True)}
    for label, (name, options) in ATTRIBUTORS.items():
        if name in COLUMN_PATH:
            cases[f"joint: {label}{DENSE_SUFFIX}"] = training_step(ctx, name, options(sizes), dense=True)
        cases[f"joint: {label}"] = training_step(ctx, name, options(sizes))
        if name in COLUMN_PATH:
            cases[f"joint: {label}{LOOKUP_SUFFIX}"] = training_step(ctx, name, options(sizes), lookup=True)
    samples = measure(cases, repeats=sizes["repeats"])
    per_step = {name: [t / sizes["steps"] for t in times] for name, times in samples.items()}
    return {
        "batch": sizes["batch"],
        "steps_per_call": sizes["steps"],
        "ig_steps": sizes["ig_steps"],
        "eg_samples": sizes["eg_samples"],
        "timings": timing_table(per_step, sizes["batch"]),
        "ratio_to_plain": {name: paired_ratio(times, per_step[PLAIN_STEP]) for name, times in per_step.items()},
        "ratio_to_lookup_plain": {
            name: paired_ratio(times, per_step[PLAIN_LOOKUP_STEP])
            for name, times in per_step.items()
            if name.startswith("joint: ") and name.endswith(LOOKUP_SUFFIX)
        },
        "samples": per_step,
    }


# ------------------------------------------------------------------------------------------------------ suite 3
def group_linears(module: Any) -> list[Any]:
    from gbdt2nn_core.student._layers import GroupLinear

    return [layer for layer in module.modules() if isinstance(layer, GroupLinear)]


def group_mlp_macs(module: Any) -> int:
    """Multiply-accumulates per row of the group MLP's einsums: ``Σ_layers k · in · out``."""
    return sum(layer.groups * layer.in_features * layer.out_features for layer in group_linears(module))


def codes_frame(frame: Any) -> Any:
    """Categorical columns as float codes (NaN for missing): input for a tree compiler that has no categories."""
    import numpy as np
    import pandas as pd

    columns = {}
    for name in frame.columns:
        series = frame[name]
        if isinstance(series.dtype, pd.CategoricalDtype):
            codes = series.cat.codes.to_numpy().astype(np.float64)
            columns[name] = np.where(codes < 0, np.nan, codes)
        else:
            columns[name] = series.to_numpy(dtype=np.float64)
    return pd.DataFrame(columns)


def bench_infer(ctx: Context) -> dict[str, Any]:
    """One inference batch: the student vs the teacher's native predict vs hummingbird-ml; FLOP/s."""
    import numpy as np
    import pandas as pd
    import torch

    sizes = ctx.sizes
    n = sizes["inference_rows"]
    frame = pd.concat([ctx.data.test_frame, ctx.data.train_frame], ignore_index=True).iloc[:n]
    encoder, student, booster = ctx.data.encoder, ctx.student, ctx.teacher.native_model
    module = student.module.eval()
    z = torch.as_tensor(encoder.transform(frame), dtype=torch.float32)

    def forward() -> object:
        with torch.no_grad():
            return module(z)

    def as_trained(rows: Any) -> Any:
        # the forward before the inference path: dense first layer, then batch norm, ReLU, ..., the head
        with torch.no_grad():
            return module.combine(module.group_outputs(module.embeddings(rows)))

    def api_as_trained() -> object:
        rows = torch.as_tensor(encoder.transform(frame), dtype=torch.float32)
        return torch.cat([as_trained(rows[i : i + 2048]) for i in range(0, len(rows), 2048)])

    looked_up = copy.deepcopy(student)
    looked_up.module.use_lookup(encoder.onehot_blocks())
    lookup_module = looked_up.module.eval()

    def forward_lookup() -> object:
        with torch.no_grad():
            return lookup_module(z)

    from gbdt2nn_core.pipeline.margins import enable_lookup, frame_margins

    served = copy.deepcopy(student)  # as a fitted or loaded student is: the lookup enabled through the Student API
    assert enable_lookup(served, encoder)
    dense_served = copy.deepcopy(student)
    dense_served.use_lookup(None)

    def from_frame() -> object:
        # what predict_margin would run given the encoder's lookup inputs instead of z (same 2,048-row chunks)
        with torch.no_grad():
            chunks = []
            for i in range(0, len(frame), 2048):
                rows = frame.iloc[i : i + 2048]
                other = torch.as_tensor(encoder.outside_blocks(rows))
                chunks.append(lookup_module.forward_lookup(other, torch.as_tensor(encoder.active_slots(rows))))
            return torch.cat(chunks)

    # hummingbird-ml compiles numeric splits only (LightGBM's categorical '0||5' splits make it fail), so it is
    # compared on a twin teacher of the same size trained on the category codes as numbers
    twin = ctx.registry.teacher("lightgbm", **ctx.teacher_options)
    twin.fit(codes_frame(ctx.data.train_frame), ctx.data.y_train, task=ctx.task, seed=0)
    twin_booster = twin.native_model
    codes = codes_frame(frame).to_numpy()

    cases: dict[str, Callable[[], object]] = {
        FORWARD: forward,
        FORWARD_API: lambda: student.predict_margin(encoder.transform(frame)),
        FORWARD_BEFORE: lambda: as_trained(z),
        FORWARD_API_BEFORE: api_as_trained,
        FORWARD_LOOKUP: forward_lookup,
        FORWARD_API_LOOKUP: lambda: looked_up.predict_margin(encoder.transform(frame)),
        FRAME_LOOKUP: from_frame,
        FRAME_PREDICT: lambda: frame_margins(served, encoder, frame),
        FRAME_PREDICT_DENSE: lambda: frame_margins(dense_served, encoder, frame),
        TEACHER_NATIVE: lambda: booster.predict(frame, raw_score=True),
        TWIN_NATIVE: lambda: twin_booster.predict(codes, raw_score=True),
    }
    compiled_teachers = _hummingbird_cases(twin_booster, codes, ctx.threads, cases)

    # this machine's matmul FLOP/s on the same threads: the MLP's own shapes as bmm, and one large square GEMM
    bmm_inputs = [
        (
            torch.randn(layer.groups, n, layer.in_features),
            torch.randn(layer.groups, layer.in_features, layer.out_features),
        )
        for layer in group_linears(module)
    ]
    g = sizes["gemm"]
    a, b = torch.randn(g, g), torch.randn(g, g)
    cases[MACHINE_BMM] = lambda: [torch.bmm(x, w) for x, w in bmm_inputs]
    cases[MACHINE_GEMM] = lambda: a @ b

    samples = measure(cases, repeats=sizes["repeats"])
    macs = group_mlp_macs(module)
    flops = {FORWARD: 2 * n * macs, MACHINE_BMM: 2 * n * macs, MACHINE_GEMM: 2 * g**3}
    rate = {name: [flops[name] / t for t in samples[name]] for name in flops}
    with torch.no_grad():
        finite = bool(np.isfinite(module(z).numpy()).all())
        reference = as_trained(z).numpy()
        differences = {
            name: float(np.abs(np.asarray(compute()) - reference).max())
            for name, compute in (
                (FORWARD, forward),
                (FORWARD_LOOKUP, forward_lookup),
                (FORWARD_API_LOOKUP, cases[FORWARD_API_LOOKUP]),
                (FRAME_LOOKUP, from_frame),
                (FRAME_PREDICT, cases[FRAME_PREDICT]),
                (FRAME_PREDICT_DENSE, cases[FRAME_PREDICT_DENSE]),
            )
        }
    return {
        "rows": n,
        "macs_per_row": macs,
        "gemm_size": g,
        "timings": timing_table(samples, n),
        "ours_speed_vs": {name: paired_ratio(times, samples[FORWARD]) for name, times in samples.items()},
        "speed_vs_teacher": {
            name: paired_ratio(samples[TEACHER_NATIVE], samples[name])
            for name in (
                FORWARD_BEFORE,
                FORWARD_API_BEFORE,
                FORWARD,
                FORWARD_API,
                FORWARD_LOOKUP,
                FORWARD_API_LOOKUP,
                FRAME_LOOKUP,
                FRAME_PREDICT_DENSE,
                FRAME_PREDICT,
            )
        },
        # hummingbird compiles the twin teacher and takes its rows as codes: the student's side includes its encoding
        "speed_vs_hummingbird": {
            entry["case"]: {
                name: paired_ratio(samples[entry["case"]], samples[name])
                for name in (FORWARD, FRAME_PREDICT_DENSE, FRAME_PREDICT)
            }
            for entry in compiled_teachers.values()
            if "case" in entry
        },
        "max_abs_diff_vs_before": differences,
        "flops_per_s": {name: summary(values) for name, values in rate.items()},
        "flops_fraction": {
            "bmm at the same shapes": paired_ratio(rate[FORWARD], rate[MACHINE_BMM]),
            "a large square matmul": paired_ratio(rate[FORWARD], rate[MACHINE_GEMM]),
        },
        "hummingbird": compiled_teachers,
        "student_output_finite": finite,
        "samples": samples,
    }


# ------------------------------------------------------------------------------------------------------ suite 4
def shap_case(threads: int) -> str:
    return f"ours: shap_values(threads={threads}), chunked"


def bench_treeshap(ctx: Context) -> dict[str, Any]:
    """The teacher's TreeSHAP of the training rows: one native single-threaded call vs ours on 1..all cores."""
    import numpy as np

    from gbdt2nn_core.kit.booster_teacher import ShapProgress, available_cores

    sizes, teacher = ctx.sizes, ctx.teacher
    booster = teacher.native_model
    frame = ctx.data.train_frame
    if sizes["shap_rows"] is not None:
        frame = frame.iloc[: sizes["shap_rows"]].reset_index(drop=True)
    n, d = frame.shape
    chunk = sizes["shap_chunk_rows"]
    counts = sorted({1, min(2, available_cores()), available_cores()})
    reports: dict[int, list[ShapProgress]] = {t: [] for t in counts}

    def ours(threads: int) -> Callable[[], object]:
        def run() -> object:
            reports[threads].clear()
            return teacher.shap_values(frame, threads=threads, chunk_rows=chunk, progress=reports[threads].append)

        return run

    cases: dict[str, Callable[[], object]] = {
        SHAP_TODAY: lambda: booster.predict(frame, pred_contrib=True, num_threads=1),
        **{shap_case(t): ours(t) for t in counts},
    }
    samples = measure(cases, repeats=sizes["shap_repeats"], warmup=0)
    native = np.asarray(booster.predict(frame, pred_contrib=True, num_threads=1), dtype=np.float64)
    differences = {}
    for t in counts:
        values = teacher.shap_values(frame, threads=t, chunk_rows=chunk)
        differences[shap_case(t)] = max(
            float(np.abs(values.values - native[:, :d]).max()),
            float(np.abs(values.expected_value[0] - native[:, d]).max()),
        )
    return {
        "rows": n,
        "columns": d,
        "chunk_rows": chunk,
        "usable_cores": available_cores(),
        "timings": timing_table(samples, n),
        "speed_vs_today": {name: paired_ratio(samples[SHAP_TODAY], times) for name, times in samples.items()},
        "progress_rows_per_s": {shap_case(t): [round(r.rows_per_second) for r in reports[t]] for t in counts},
        "max_abs_diff": differences,
        "agree_1e-6": all(value <= 1e-6 for value in differences.values()),
        "samples": samples,
    }


def _hummingbird_cases(
    booster: Any, rows: Any, threads: int, cases: dict[str, Callable[[], object]]
) -> dict[str, dict[str, Any]]:
    """Compile ``booster`` with each of hummingbird-ml's tree strategies, add each to ``cases``, check its values."""
    import numpy as np
    import torch

    try:
        import hummingbird.ml
    except ImportError:
        return {"(all)": {"error": "hummingbird-ml is not installed: pip install -c constraints.txt hummingbird-ml"}}
    reference = booster.predict(rows, raw_score=True)
    compiled_teachers: dict[str, dict[str, Any]] = {}
    for strategy in ("default", "gemm", "tree_trav", "perf_tree_trav"):
        # hummingbird sets torch's global thread count to the physical cores unless told otherwise
        extra: dict[str, Any] = {"n_threads": threads}
        if strategy != "default":
            extra["tree_implementation"] = strategy
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                compiled = hummingbird.ml.convert(booster, "torch", rows[:100], extra_config=extra)
        except Exception as exc:  # e.g. perf_tree_trav allocates 2^depth nodes per tree
            message = str(exc).splitlines()[0][:160] if str(exc) else ""
            compiled_teachers[strategy] = {"error": f"{type(exc).__name__}: {message}"}
            continue
        finally:
            torch.set_num_threads(threads)
        label = f"twin teacher: hummingbird-ml torch, {strategy}"
        predict = _predictor(compiled, rows)
        cases[label] = predict
        difference = float(np.abs(np.ravel(predict()) - reference).max())
        compiled_teachers[strategy] = {"case": label, "max_abs_diff_vs_lightgbm": difference}
    return compiled_teachers


def _predictor(compiled: Any, rows: Any) -> Callable[[], Any]:
    def predict() -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.from_numpy of a read-only array, on every call
            return compiled.predict(rows)

    return predict


# ------------------------------------------------------------------------------------------------------ suite 4
DEEPGBM_SCRIPT = Path(__file__).resolve().parent / "deepgbm_reference.py"


def deepgbm_once(checkout: Path, threads: int, seed: int, *, quick: bool) -> dict[str, Any]:
    """DeepGBM's own GBDT2NN on adult in a fresh process (``deepgbm_reference.py``): phases, epochs, peak RSS."""
    command = [sys.executable, str(DEEPGBM_SCRIPT), "--checkout", str(checkout), "--threads", str(threads)]
    command += ["--seed", str(seed)]
    if quick:
        command += ["--rows", str(SIZES["quick"]["rows"]), "--epochs", str(SIZES["quick"]["epochs"])]
    return child_record(command, "DeepGBM's run")


def child_record(command: list[str], what: str) -> dict[str, Any]:
    """Run ``command`` (a benchmark child in a fresh process) and return the JSON record it prints last."""
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def e2e_once(
    sizes: dict[str, Any],
    threads: int,
    alignment_weight: float,
    seed: int = 0,
    alignment_batches: AlignmentBatches = "grouped",
) -> dict[str, Any]:
    """One ``distill`` run as a user runs it (no explanation cache), phase by phase: wall time and peak RSS."""
    recorder = PhaseRecorder()
    started = time.perf_counter()
    with recorder.phase(IMPORT_PHASE):
        import torch
        import torch._dynamo  # the first optimizer imports it: seconds that are not the leaf embedding's

        from gbdt2nn_core.data import load_bundled
        from gbdt2nn_core.pipeline.distill import DistillConfig, distill

        torch.set_num_threads(threads)
    with recorder.phase("load adult"):
        adult = load_bundled("adult")
        frame = adult.frame
        if sizes["rows"] is not None:
            frame = frame.sample(sizes["rows"], random_state=0).reset_index(drop=True)
    config = DistillConfig(
        alignment_weight=alignment_weight,
        alignment_batches=alignment_batches,
        seed=seed,
        cache=False,
        teacher_options={"n_estimators": sizes["trees"], "num_leaves": sizes["leaves"]},
        student_options={
            "epochs": sizes["epochs"],
            "batch_size": sizes["batch"],
            "n_groups": sizes["groups"],
            "hidden": sizes["hidden"],
        },
    )
    run = distill(frame, adult.target, config, progress=recorder)
    recorder.finish()
    return {
        "alignment_weight": alignment_weight,
        "alignment_batches": alignment_batches,
        "seed": seed,
        "rows": len(frame),
        "total_s": time.perf_counter() - started,
        "phases": recorder.phases,
        "pipeline_timings": dict(run.timings),
        "epoch_s": [record["seconds"] for record in run.student.history["epochs"]],
        "process_peak_mib": recorder.peak.process_peak,
        "peak_method": recorder.peak.method,
        # the loss alignment="auto" took (mse before session 32, cosine on adult since): the report names it
        "alignment_loss": run.metrics["student"]["alignment"]["loss"],
        "metrics": {
            "student_test": run.metrics["student"]["test"],
            "teacher_test": run.metrics["teacher"]["test"],
            "agreement": run.metrics["student"]["agreement"],
        },
    }


def bench_e2e(
    sizes: dict[str, Any],
    threads: int,
    *,
    quick: bool,
    in_process: bool,
    repeats: int,
    seeds: bool = False,
    mixed: bool = False,
    deepgbm: Path | None = None,
) -> dict[str, Any]:
    """Plain and aligned distillations, alternating, each in a fresh process (so each has its own peak RSS); with
    ``seeds``, round ``i`` runs both with seed ``i`` (early stopping's epoch count varies with the seed, and one
    seed's luck would decide the end-to-end ratio), else every round with seed 0; with ``mixed``, also an aligned
    run with ``alignment_batches="mixed"`` (the layout before grouping) in every round; with ``deepgbm`` (a
    checkout of DeepGBM's code), also DeepGBM's own GBDT2NN on the same data in every round
    (``deepgbm_reference.py``), so its figures are measured beside ours instead of quoted."""
    modes: list[tuple[str, float, AlignmentBatches]] = [("plain", 0.0, "grouped"), ("aligned", 1.0, "grouped")]
    if mixed:
        modes.append(("aligned_mixed", 1.0, "mixed"))
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode, _, _ in modes}
    for round_ in range(repeats):
        seed = round_ if seeds else 0
        for mode, weight, batches in modes:
            if in_process:
                runs[mode].append(e2e_once(sizes, threads, weight, seed, batches))
                continue
            command = [sys.executable, str(RUN_SCRIPT), "--e2e-child", mode, "--threads", str(threads)]
            command += ["--e2e-seed", str(seed)]
            if quick:
                command.append("--quick")
            runs[mode].append(child_record(command, f"the {mode} end-to-end run"))
        if deepgbm is not None:
            runs.setdefault("deepgbm", []).append(deepgbm_once(deepgbm, threads, seed, quick=quick))
    return {
        "runs": runs,
        "in_process": in_process,
        "sizes": {k: sizes[k] for k in ("trees", "leaves", "groups", "batch", "epochs")},
        "reference": DEEPGBM_REFERENCE,
    }
