"""benchmarks/monitor_rows.py: the study behind ``MONITOR_BATCHNORM_ROWS`` replays early stopping on recorded losses.

Its conclusions rest on two claims, checked here against a fit that early stopping really drives: recording the
monitors does not change training (the recorded reference losses are the fit's own validation losses, bit for bit),
and the replay stops where the fit stopped and keeps the epoch the fit kept.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from gbdt2nn_core.data import load_bundled
from gbdt2nn_core.pipeline import DistillConfig, Pipeline
from gbdt2nn_core.pipeline.distill import run_student


def test_the_replay_decides_as_early_stopping_did_and_recording_changes_nothing(
    load_benchmark: Callable[[str], ModuleType], single_thread_torch: None
) -> None:
    import attrs

    script = load_benchmark("monitor_rows.py")
    adult = load_bundled("adult")
    dataset = attrs.evolve(adult, frame=adult.frame.sample(n=3_000, random_state=0).reset_index(drop=True))
    # a reference above the fitting rows (about 2,160): every row, as the fit's own monitor uses here
    outcome = script.study(dataset, seed=0, threads=1, reference_rows=100_000, candidates=[256])

    config = DistillConfig(task=dataset.task, seed=0, teacher_options={"num_threads": 1}, cache=False)
    pipeline = Pipeline(config)
    run = run_student(pipeline, pipeline.prepare(dataset.frame, dataset.target), 0.0)
    stopping = run.student.history["stopping"]
    fit_losses = [epoch["validation_loss"] for epoch in run.student.history["epochs"]]

    recorded = [epoch["loss"]["reference"] for epoch in outcome["epochs"]]
    assert len(recorded) == outcome["budget"] >= len(fit_losses)  # the study trains the whole budget
    assert recorded[: len(fit_losses)] == fit_losses
    assert outcome["reference"]["best_epoch"] == stopping["best_epoch"]
    assert outcome["reference"]["epochs_run"] == stopping["epochs_run"] < outcome["budget"]
    # the candidate is scored on its own, smaller sample: other losses, its decision replayed from them
    candidate = outcome["candidates"]["256"]
    smaller = [epoch["loss"]["256"] for epoch in outcome["epochs"]]
    assert all(a != b for a, b in zip(smaller, recorded, strict=True))
    assert candidate == {**candidate, **script.replay(smaller, stopping)}
    assert candidate["same_student"] == (candidate["best_epoch"] == stopping["best_epoch"])


def test_aligned_runs_are_the_benchmarks_own_with_the_monitor_rows_set(
    load_benchmark: Callable[[str], ModuleType], single_thread_torch: None
) -> None:
    """``--aligned-e2e`` runs the end-to-end suite's aligned distillation: with the monitor's rows above every fitting
    row it ends exactly as that suite's run does, and the constant is put back afterwards."""
    script = load_benchmark("monitor_rows.py")
    from bench_suites import SIZES, e2e_once

    from gbdt2nn_core.student import kit

    before = kit.MONITOR_BATCHNORM_ROWS
    records = script.aligned_end_to_end([0], [100_000, 64], quick=True)
    assert before == kit.MONITOR_BATCHNORM_ROWS
    suite = e2e_once(SIZES["quick"], 1, 1.0, seed=0)
    every_row = records[0]
    assert (every_row["epochs"], every_row["test"], every_row["spearman"]) == (
        len(suite["epoch_s"]),
        suite["metrics"]["student_test"],
        suite["metrics"]["agreement"]["spearman"],
    )
    assert records[1]["monitor_rows"] == 64
    assert records[1]["seed"] == 0
