"""How many draws expected gradients needs: to explain a GBDT2NN student, and inside a training step.

Expected gradients (the ``shap`` attributor) is a Monte Carlo estimate: each draw is a baseline from the background
and a point on the path to it. Two questions, two tables:

1. **Explaining** a trained student: the relative L2 error and rank agreement of a k-draw estimate against a
   reference of many draws (an estimate of the exact expectation over the background), its rank agreement with the
   teacher's interventional TreeSHAP, and its time per 1,000 rows.
2. **Training**: aligned students trained with k draws per estimate (``training_samples``; a joint step takes two
   independent estimates and trains on their unbiased cross term, so 2k draws a step), all explained afterwards by
   the same many-draw reference: does a cheaper step train a student that explains as well, and predicts as well?

    python benchmarks/eg_samples.py --dataset adult --seeds 0,1 --json benchmarks/results/eg-samples-adult.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import attrs
import numpy as np
import torch
from ig_points import attributed_columns, explained_rows

from gbdt2nn_core.pipeline import Pipeline
from gbdt2nn_core.pipeline.distill import run_student
from gbdt2nn_core.pipeline.metrics import agreement

EXPLAIN_DRAWS = (4, 8, 16, 32, 64, 128, 256)
TRAINING_DRAWS = (2, 4, 8)  # per estimate: 4, 8 and 16 draws a step
DEFAULT_TRAINING_DRAWS = 4  # the plugin's default: the aligned student the explaining table explains
REFERENCE_DRAWS = 2048
REPEATS = 3  # independent estimates per draw count: their errors are averaged


def columns(
    module: torch.nn.Module, z: torch.Tensor, background: torch.Tensor, aggregation: torch.Tensor, draws: int, seed: int
) -> np.ndarray:
    """Expected gradients of ``z`` per input column, ``(n, d·outputs)``, from ``draws`` draws seeded by ``seed``."""
    # 16 draws of every row per pass: about 1 GiB of working memory for 500 rows, whatever the draws
    return attributed_columns(
        module, z, background, aggregation, "shap", samples=draws, seed=seed, internal_batch_size=16 * len(z)
    )


def explain_records(
    module: torch.nn.Module,
    z: torch.Tensor,
    background: torch.Tensor,
    aggregation: torch.Tensor,
    teacher: np.ndarray,
    reference: np.ndarray,
) -> list[dict[str, Any]]:
    """Table 1: k-draw estimates against the reference, averaged over :data:`REPEATS` seeds."""
    records = []
    for draws in EXPLAIN_DRAWS:
        errors, vs_reference, vs_teacher, seconds = [], [], [], []
        for seed in range(REPEATS):
            started = time.perf_counter()
            values = columns(module, z, background, aggregation, draws, seed)
            seconds.append(time.perf_counter() - started)
            errors.append(float(np.linalg.norm(values - reference) / np.linalg.norm(reference)))
            vs_reference.append(agreement(values, reference)["spearman"])
            vs_teacher.append(agreement(values, teacher)["spearman"])
        records.append(
            {
                "draws": draws,
                "relative_l2_error": float(np.mean(errors)),
                "spearman_vs_reference": float(np.mean(vs_reference)),
                "spearman_vs_treeshap": float(np.mean(vs_teacher)),
                "seconds_per_1000_rows": float(np.median(seconds)) * 1000 / len(z),
            }
        )
    return records


def measure(
    dataset: str,
    seed: int,
    rows: int,
    explaining_table: bool = True,
    training_draws: Sequence[int] = TRAINING_DRAWS,
) -> dict[str, Any]:
    """Both tables for one dataset and seed (the training table only, without ``explaining_table``), the aligned
    students trained with each of ``training_draws`` draws per estimate."""
    # the teacher's explanations: interventional TreeSHAP, the same reference as expected gradients
    explained = explained_rows(dataset, rows, seed=seed, attributor="shap", threads=1)
    pipeline, prepared, aggregation, z, background, teacher = explained
    config = pipeline.config
    explaining: list[dict[str, Any]] = []
    training: list[dict[str, Any]] = []
    for draws in (None, *training_draws):  # None: the plain student
        options = {} if draws is None else {"training_samples": draws}
        student_pipeline = Pipeline(attrs.evolve(config, attributor_options=options))
        weight = 0.0 if draws is None else config.alignment_weight
        run = run_student(student_pipeline, prepared, weight)
        module = run.trained.student.module.double().eval()
        reference = columns(module, z, background, aggregation, REFERENCE_DRAWS, seed=1000)
        record = run.record.to_json()
        training.append(
            {
                "dataset": dataset,
                "seed": seed,
                "student": "plain" if draws is None else "aligned",
                "training_samples": draws,
                "draws_per_step": None if draws is None else 2 * draws,
                "test": record["student"]["test"],
                "teacher_test": record["teacher"]["test"],
                "epochs": len(run.trained.student.history["epochs"]),
                "training_seconds": run.trained.seconds,
                "spearman_reported": record["student"]["agreement"]["spearman"],
                "spearman_reference_vs_treeshap": agreement(reference, teacher)["spearman"],
            }
        )
        if explaining_table and (draws is None or draws == DEFAULT_TRAINING_DRAWS):
            explaining += [
                {"dataset": dataset, "seed": seed, "student": training[-1]["student"], **r}
                for r in explain_records(module, z, background, aggregation, teacher, reference)
            ]
    return {"explaining": explaining, "training": training}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="adult", choices=["california", "adult"])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds")
    parser.add_argument("--rows", type=int, default=500, help="test rows explained")
    parser.add_argument("--json", help="write the records here")
    parser.add_argument("--training-only", action="store_true", help="skip the explaining table (its many draws)")
    parser.add_argument(
        "--training-draws",
        default=",".join(map(str, TRAINING_DRAWS)),
        help="comma-separated draws per estimate of the aligned students",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one thread: the machine is shared (see BENCHMARKS.md)
    explaining: list[dict[str, Any]] = []
    training: list[dict[str, Any]] = []
    for seed in (int(s) for s in args.seeds.split(",")):
        draws = [int(d) for d in args.training_draws.split(",")]
        result = measure(args.dataset, seed, args.rows, explaining_table=not args.training_only, training_draws=draws)
        explaining += result["explaining"]
        training += result["training"]
    print("| student | draws | relative L2 error | Spearman vs reference | Spearman vs TreeSHAP | s / 1,000 rows |")
    print("|---|---|---|---|---|---|")
    for r in explaining:
        print(
            f"| {r['student']} (seed {r['seed']}) | {r['draws']} | {r['relative_l2_error']:.3f} | "
            f"{r['spearman_vs_reference']:.3f} | {r['spearman_vs_treeshap']:.3f} | {r['seconds_per_1000_rows']:.2f} |"
        )
    print()
    print("| student | draws per estimate (2× a step) | test | epochs | training s | Spearman vs TreeSHAP (ref.) |")
    print("|---|---|---|---|---|---|")
    for r in training:
        test = ", ".join(f"{k} {v:.4f}" for k, v in r["test"].items())
        print(
            f"| {r['student']} (seed {r['seed']}) | {r['training_samples'] or '—'} | {test} | {r['epochs']} | "
            f"{r['training_seconds']:.0f} | {r['spearman_reference_vs_treeshap']:.4f} |"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"explaining": explaining, "training": training}, out, indent=1)


if __name__ == "__main__":
    main()
