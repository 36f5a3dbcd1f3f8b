"""End to end: every installed teacher x attributor x alignment loss, distilled from 3,000 adult census rows.

For each combination a GBDT2NN student is trained with the alignment term and compared with the plain (λ = 0)
student of the same teacher and split. Both must train to valid metrics, and the aligned student's attributions
must agree better with the teacher's TreeSHAP (row-wise Spearman on the test rows) by at least ``MIN_GAIN``.

The names come from the plugin registry, so an installed plugin joins the grid by itself; an attributor that is
not differentiable cannot be trained through and is skipped with that reason. Each teacher is trained (and its
TreeSHAP computed) once, and each plain student once per attributor.

Run it with ``nox -s e2e``, which prints the grid's table and writes it to ``$E2E_REPORT``. The normal test run
leaves this folder out, and the module skips itself unless ``GBDT2NN_E2E=1``.
"""

from __future__ import annotations

import functools
import math
import os
import time
from typing import Any

import pytest

if not os.environ.get("GBDT2NN_E2E"):
    pytest.skip("the end-to-end grid runs in `nox -s e2e` (or with GBDT2NN_E2E=1)", allow_module_level=True)

from gbdt2nn_core.data import load_bundled
from gbdt2nn_core.host.registry import Registry
from gbdt2nn_core.pipeline import DistillConfig, Pipeline, Prepared
from gbdt2nn_core.pipeline.distill import DistillRun

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("single_thread_torch")]

ROWS = 3000
#: The smallest rise in mean row-wise Spearman with TreeSHAP that counts as "alignment worked". Measured on
#: seeds 0-3: the smallest rise is +0.09 (shap with mse), most are +0.2 to +0.7.
MIN_GAIN = 0.05
#: A tiny teacher, one thread; backends name their settings differently, so options are per teacher.
TEACHER_OPTIONS: dict[str, dict[str, Any]] = {
    "lightgbm": {"n_estimators": 20, "num_leaves": 15, "num_threads": 1},
    "xgboost": {"n_estimators": 20, "max_leaves": 15, "nthread": 1},
    "catboost": {"n_estimators": 20, "depth": 4, "threads": 1},
}
DEFAULT_TEACHER_OPTIONS: dict[str, Any] = {"n_estimators": 20}
#: DeepGBM's rate, fixed: ``lr="auto"`` takes 3e-3 at 256-row batches. In these 4 short epochs (9 steps each) the
#: plain students then fit their teacher better and already agree more with TreeSHAP (lightgbm · structure 0.843),
#: leaving alignment rises of +0.01 to +0.046 (session 29) — as on 5,000 adult rows at 14 steps an epoch, where 3e-3
#: made both students more accurate (RESULTS.md, session 30). ``MIN_GAIN`` was measured at 1e-3.
STUDENT_OPTIONS: dict[str, Any] = {"epochs": 4, "n_groups": 4, "hidden": (32, 32), "batch_size": 256, "lr": 1e-3}
#: Fewer explanation points / background samples than the defaults (training takes the plugins' own): the grid
#: checks that training works.
ATTRIBUTOR_OPTIONS: dict[str, dict[str, Any]] = {"integrated-gradients": {"steps": 4}, "shap": {"samples": 8}}
#: λ per loss. cosine and rank are scale-free; mse compares values, and TreeSHAP values on adult are small
#: (a fraction of a log-odds per column), so at λ = 1 its term hardly registers next to the task loss.
LOSS_WEIGHT: dict[str, float] = {"mse": 10.0}

REGISTRY = Registry(strict=True)


def _grid() -> list[Any]:
    params = []
    for teacher in REGISTRY.names("teacher"):
        for attributor in REGISTRY.names("attributor"):
            differentiable = REGISTRY.attributor(attributor, **ATTRIBUTOR_OPTIONS.get(attributor, {})).differentiable
            for loss in REGISTRY.names("alignment loss"):
                marks = (
                    ()
                    if differentiable
                    else pytest.mark.skip(reason=f"attributor {attributor!r} is not differentiable: no joint training")
                )
                params.append(pytest.param(teacher, attributor, loss, id=f"{teacher}-{attributor}-{loss}", marks=marks))
    return params


@pytest.fixture(scope="module")
def components(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``(teacher, attributor) -> (parts, plain run)``, computing each teacher and each plain student only once."""
    dataset = load_bundled("adult")
    frame = dataset.frame.sample(ROWS, random_state=0).reset_index(drop=True)
    cache = str(tmp_path_factory.mktemp("treeshap-cache"))

    @functools.cache
    def teacher_parts(teacher: str) -> tuple[Pipeline, Prepared]:
        config = DistillConfig(
            teacher=teacher,
            teacher_options=TEACHER_OPTIONS.get(teacher, DEFAULT_TEACHER_OPTIONS),
            student_options=STUDENT_OPTIONS,
            cache_dir=cache,
            # the default schedule: on 2,400 training rows the floor of aligned rows (alignment_min_rows, 3,000)
            # aligns every row the student fits on (the rows the former alignment_rows=1.0 override gave); the
            # tenth alone (about 220 rows) was too few here (catboost x gradient x cosine fell to AUC 0.78)
        )
        pipeline = Pipeline(config, REGISTRY)
        return pipeline, pipeline.prepare(frame, dataset.target)

    @functools.cache
    def pair(teacher: str, attributor: str) -> tuple[Pipeline, Prepared, DistillRun]:
        pipeline, prepared = teacher_parts(teacher)
        return pipeline, prepared, _run(pipeline, prepared, attributor, "mse", 0.0)

    return pair


def _run(pipeline: Pipeline, prepared: Prepared, attributor: str, loss: str, weight: float) -> DistillRun:
    trained = pipeline.train(
        prepared,
        alignment_weight=weight,
        attributor=attributor,
        attributor_options=ATTRIBUTOR_OPTIONS.get(attributor, {}),
        alignment=loss,
    )
    metrics = pipeline.evaluate(prepared, trained)
    return DistillRun(config=trained.config, prepared=prepared, trained=trained, record=metrics)


def _check_metrics(run: DistillRun, weight: float) -> None:
    """Metrics have the documented shape and every number is finite and in range."""
    metrics = run.metrics
    assert metrics["task"] == "binary"
    assert metrics["rows"]["train"] + metrics["rows"]["test"] == ROWS
    student = metrics["student"]
    assert set(student) == {"name", "alignment", "test", "fidelity", "agreement"}
    assert student["alignment"]["weight"] == weight
    assert set(student["test"]) == {"auc", "logloss", "accuracy"}
    assert set(student["fidelity"]) == {"margin_rmse", "margin_r2", "label_agreement"}
    assert set(student["agreement"]) == {"spearman", "cosine", "top5", "sign", "mse"}
    numbers = [*student["test"].values(), *student["fidelity"].values(), *student["agreement"].values()]
    assert all(isinstance(x, float) and math.isfinite(x) for x in numbers), numbers
    for key in ("spearman", "cosine"):
        assert -1.0 <= student["agreement"][key] <= 1.0
    for key in ("top5", "sign"):
        assert 0.0 <= student["agreement"][key] <= 1.0
    # It learnt the task: the teacher is at about 0.90 AUC on these rows, a constant guess at 0.5.
    assert student["test"]["auc"] > 0.8, student["test"]
    assert student["fidelity"]["label_agreement"] > 0.8, student["fidelity"]


@pytest.mark.parametrize(("teacher", "attributor", "loss"), _grid())
def test_alignment_improves_agreement_with_treeshap(
    components: Any, grid_report: list[dict[str, Any]], teacher: str, attributor: str, loss: str
) -> None:
    pipeline, prepared, plain = components(teacher, attributor)
    weight = LOSS_WEIGHT.get(loss, 1.0)
    started = time.perf_counter()
    aligned = _run(pipeline, prepared, attributor, loss, weight)
    seconds = time.perf_counter() - started

    before, after = plain.metrics["student"], aligned.metrics["student"]
    grid_report.append(
        {
            "teacher": teacher,
            "attributor": attributor,
            "loss": loss,
            "weight": f"{weight:g}",
            "spearman": f"{before['agreement']['spearman']:.3f} → {after['agreement']['spearman']:.3f}",
            "cosine": f"{before['agreement']['cosine']:.3f} → {after['agreement']['cosine']:.3f}",
            "auc": f"{before['test']['auc']:.3f} → {after['test']['auc']:.3f}",
            "seconds": f"{seconds:.1f}",
        }
    )
    _check_metrics(plain, 0.0)
    _check_metrics(aligned, weight)
    assert after["alignment"] == {"attributor": attributor, "loss": loss, "weight": weight}
    gain = after["agreement"]["spearman"] - before["agreement"]["spearman"]
    assert gain >= MIN_GAIN, (
        f"{teacher} x {attributor} x {loss} (λ={weight:g}): Spearman with TreeSHAP "
        f"{before['agreement']['spearman']:.3f} → {after['agreement']['spearman']:.3f}, expected a rise of {MIN_GAIN}"
    )


def test_the_grid_covers_every_installed_component() -> None:
    """At least one of each kind is installed, or the grid above would be silently empty."""
    for kind in ("teacher", "attributor", "alignment loss"):
        assert REGISTRY.names(kind), f"no {kind} is installed: install the plugins (nox -s e2e does)"
