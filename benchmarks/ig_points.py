"""How many quadrature points integrated gradients needs on a trained GBDT2NN student.

A GBDT2NN student is a ReLU network: along the straight path from the baseline its gradient is piecewise constant, so
any quadrature rule converges only as ``1/points``. This script trains a plain and an aligned student (integrated
gradients as the attributor) on a bundled dataset and compares, on test rows, integrated gradients with k
Gauss-Legendre points against a 2,048-point trapezoid reference: the relative L2 error, the rank agreement with the
reference, and the rank agreement with the teacher's TreeSHAP (what alignment trains and evaluation reports).

    python benchmarks/ig_points.py --dataset california --rows 400
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from gbdt2nn_core.data import load_bundled
from gbdt2nn_core.host.attribution import ColumnAttributor, FirstLayerModel
from gbdt2nn_core.host.interfaces import Task
from gbdt2nn_core.host.registry import get_registry
from gbdt2nn_core.pipeline import DistillConfig, Pipeline, Prepared
from gbdt2nn_core.pipeline.distill import run_student
from gbdt2nn_core.pipeline.metrics import agreement

POINTS = (2, 4, 8, 16, 32)
REFERENCE_POINTS = 2048


def mean_spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over rows of the Spearman correlation of two attribution matrices ``(n, d)``: the evaluation's own
    agreement measure."""
    return agreement(a, b)["spearman"]


def attributed_columns(
    module: torch.nn.Module,
    z: torch.Tensor,
    background: torch.Tensor,
    aggregation: torch.Tensor,
    attributor_name: str,
    **options: Any,
) -> np.ndarray:
    """The registry attributor ``attributor_name`` with ``options``, fitted on ``background``: its explanation of
    ``z`` per input column, ``(n, d·outputs)``."""
    attributor = get_registry().attributor(attributor_name, **options)
    attributor.fit(module, background)
    # the attributors these benchmarks name (integrated, expected gradients) have a first-layer column path
    assert isinstance(attributor, ColumnAttributor)
    assert isinstance(module, FirstLayerModel)  # the students' modules: GBDT2NN's, the mlp student's
    return np.asarray(attributor.attribute_columns(module, z, aggregation).numpy()).reshape(len(z), -1)


def columns(
    module: torch.nn.Module,
    z: torch.Tensor,
    background: torch.Tensor,
    aggregation: torch.Tensor,
    points: int,
    method: str = "gausslegendre",
) -> np.ndarray:
    """Integrated gradients of ``z`` per input column, ``(n, d·outputs)``, with ``points`` points of ``method``."""
    # a bounded number of path rows per pass: the reference would otherwise hold 2,048 × rows activations
    return attributed_columns(
        module,
        z,
        background,
        aggregation,
        "integrated-gradients",
        steps=points,
        method=method,
        internal_batch_size=32 * len(z),
    )


class ExplainedRows(NamedTuple):
    """A prepared bundled dataset and the test rows a benchmark explains, in float64."""

    pipeline: Pipeline
    prepared: Prepared
    aggregation: torch.Tensor  # encoded value -> input column
    z: torch.Tensor  # the first ``rows`` encoded test rows
    background: torch.Tensor  # the attributors' background sample
    teacher: np.ndarray  # the teacher's explanations of those rows, (rows, d·outputs)


def explained_rows(dataset: str, rows: int, **settings: Any) -> ExplainedRows:
    """Prepare bundled ``dataset`` (teacher, its explanations) with ``settings`` for :class:`DistillConfig`."""
    bundled = load_bundled(dataset)
    task: Task = "regression" if dataset == "california" else "binary"
    pipeline = Pipeline(DistillConfig(task=task, teacher_options={"num_threads": 1}, **settings))
    pipeline.check()
    prepared = pipeline.prepare(bundled.frame, bundled.target)
    z = torch.as_tensor(np.asarray(prepared.data.z_test[:rows]), dtype=torch.float64)
    return ExplainedRows(
        pipeline=pipeline,
        prepared=prepared,
        aggregation=torch.as_tensor(prepared.data.encoder.aggregation(), dtype=torch.float64),
        z=z,
        background=torch.as_tensor(np.asarray(prepared.background), dtype=torch.float64),
        teacher=prepared.shap_test.values[:rows].reshape(len(z), -1),
    )


def measure(dataset: str, rows: int, epochs: int, seed: int) -> list[dict[str, Any]]:
    """One record per (student, number of points)."""
    explained = explained_rows(
        dataset, rows, seed=seed, attributor="integrated-gradients", student_options={"epochs": epochs}, cache=False
    )
    pipeline, prepared, aggregation, z, background, teacher = explained
    config = pipeline.config
    records = []
    for student, weight in (("plain", 0.0), ("aligned", config.alignment_weight)):
        module = run_student(pipeline, prepared, weight).trained.student.module.double().eval()

        reference = columns(module, z, background, aggregation, REFERENCE_POINTS, "riemann_trapezoid")
        for points in POINTS:
            values = columns(module, z, background, aggregation, points)
            records.append(
                {
                    "dataset": dataset,
                    "student": student,
                    "points": points,
                    "relative_l2_error": float(np.linalg.norm(values - reference) / np.linalg.norm(reference)),
                    "spearman_vs_reference": mean_spearman(values, reference),
                    "spearman_vs_treeshap": mean_spearman(values, teacher),
                    "reference_spearman_vs_treeshap": mean_spearman(reference, teacher),
                }
            )
    return records


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="california", choices=["california", "adult"])
    parser.add_argument("--rows", type=int, default=400, help="test rows explained")
    parser.add_argument("--epochs", type=int, default=6, help="the students' epoch budget")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the records here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one thread: the machine is shared (see BENCHMARKS.md)
    records = measure(args.dataset, args.rows, args.epochs, args.seed)
    print("| dataset | student | points | relative L2 error | Spearman vs reference | Spearman vs TreeSHAP |")
    print("|---|---|---|---|---|---|")
    for r in records:
        print(
            f"| {r['dataset']} | {r['student']} | {r['points']} | {r['relative_l2_error']:.4f} | "
            f"{r['spearman_vs_reference']:.4f} | {r['spearman_vs_treeshap']:.4f} "
            f"(reference {r['reference_spearman_vs_treeshap']:.4f}) |"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(records, out, indent=1)


if __name__ == "__main__":
    main()
