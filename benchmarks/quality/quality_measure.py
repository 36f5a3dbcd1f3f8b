"""One dataset, one seed: the teacher and every student of the suite, through the one pipeline.

The pipeline prepares the split once (teacher, encoding, leaves, margins); the students then train on that same
``Prepared``: GBDT2NN plain (λ = 0) and aligned (the config's default λ, attributor and loss), and the ``mlp``
student plain and aligned where its plugin is installed (explained by ``gradient-x-input``: the ``structure``
attributor explains GBDT2NN only). Every setting not named here is the pipeline's default, so the suite measures
what a user gets without tuning.
"""

from __future__ import annotations

from typing import Any

import attrs

from gbdt2nn_core.data import Dataset
from gbdt2nn_core.host.registry import get_registry
from gbdt2nn_core.pipeline import DistillConfig, Pipeline
from gbdt2nn_core.pipeline.distill import plain_and_aligned, run_student

__all__ = ["MLP_ATTRIBUTOR", "measure", "sample"]

#: How the ``mlp`` student is explained (and aligned): the default ``structure`` attributor explains GBDT2NN only.
MLP_ATTRIBUTOR = "gradient-x-input"


def sample(dataset: Dataset, rows: int | None) -> Dataset:
    """``dataset`` cut to ``rows`` rows drawn with ``random_state=0`` (all of it when ``rows`` is None or larger)."""
    if rows is None or rows >= len(dataset.frame):
        return dataset
    frame = dataset.frame.sample(n=rows, random_state=0).reset_index(drop=True)
    return attrs.evolve(dataset, frame=frame)


def _student_row(model: str, run: Any) -> dict[str, Any]:
    student = run.metrics["student"]
    return {
        "model": model,
        "weight": student["alignment"]["weight"],
        "attributor": student["alignment"]["attributor"],
        "loss": student["alignment"]["loss"],
        "test": student["test"],
        "fidelity": student["fidelity"],
        "agreement": student["agreement"],
        # multiclass: every (row, class) pair, not only the teacher's predicted class (the headline above)
        **({"agreement_every_class": student["agreement_every_class"]} if "agreement_every_class" in student else {}),
        "seconds": round(float(run.timings["student_s"]), 3),
        "epochs": len(run.student.history.get("epochs", [])),
        # what the student resolved for itself: λ actually used (after its cap), the targets' scale
        # and what the pipeline chose for it (the loss "auto" took; with alignment_check, what the check kept)
        "choices": {**run.student.history.get("choices", {}), **run.trained.choices},
        # how training ended: best epoch, why it stopped, the weight average, the clipped steps, the temperature
        "stopping": run.student.history.get("stopping", {}),
    }


def measure(
    dataset: Dataset,
    *,
    seed: int,
    threads: int,
    epochs: int | None,
    mlp: bool = True,
    gbdt2nn: bool = True,
    aligned: bool = True,
    plain: bool = True,
    student_options: dict[str, Any] | None = None,
    mlp_options: dict[str, Any] | None = None,
    teacher_options: dict[str, Any] | None = None,
    alignment_weight: float | None = None,
    alignment_loss: str | None = None,
    synthetic_rows: int | None = None,
    threshold_bins: int | None = None,
    settings: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Teacher and students of ``dataset`` with ``seed``: one record per model (task metrics, fidelity, agreement,
    seconds). ``gbdt2nn`` and ``mlp`` say which students train (the ``mlp`` student only where its plugin is
    installed), ``aligned`` whether the aligned students train and ``plain`` whether the plain ones do (at least one of
    the two); ``threads`` is LightGBM's
    thread count; ``epochs`` overrides the students' default when given; ``student_options`` are GBDT2NN settings
    and ``mlp_options`` the mlp student's; ``teacher_options`` the LightGBM teacher's (its threads are always
    ``threads``); ``alignment_weight`` is λ of the aligned students (the pipeline's default
    when ``None``) and ``alignment_loss`` their alignment loss (likewise); ``synthetic_rows`` the teacher-labelled
    synthetic rows per training row every student trains on besides its rows (likewise); ``threshold_bins`` the
    teacher thresholds per numeric column in the students' encoding (likewise); ``settings`` any other pipeline
    settings (``DistillConfig`` fields) for every student."""
    epoch_budget = {} if epochs is None else {"epochs": epochs}
    given = {
        "alignment_weight": alignment_weight,
        "alignment": alignment_loss,
        "synthetic_rows": synthetic_rows,
        "threshold_bins": threshold_bins,
    }
    # the pipeline's defaults for what is not given
    overrides: dict[str, Any] = {key: value for key, value in given.items() if value is not None} | dict(settings or {})
    config = DistillConfig(
        task=dataset.task,
        seed=seed,
        teacher_options={**(teacher_options or {}), "num_threads": threads},
        student_options={**(student_options or {}), **epoch_budget},
        # every run computes its teacher's TreeSHAP, so that its time is measured, not a cache hit
        cache=False,
        **overrides,
    )
    pipeline = Pipeline(config)
    pipeline.check()
    prepared = pipeline.prepare(dataset.frame, dataset.target)
    students: dict[str, Any] = {}
    if not (plain or aligned):
        raise ValueError("measure: plain=False and aligned=False train no student")
    if config.alignment_check and aligned and not plain:
        raise ValueError("alignment_check measures the aligned student against the plain one: drop --no-plain")

    def train(kind: str, student_pipeline: Pipeline) -> None:
        # both students as compare() trains them (with alignment_check, the plain one is the aligned one's yardstick)
        if plain and aligned:
            students[f"{kind} · plain"], students[f"{kind} · aligned"] = plain_and_aligned(student_pipeline, prepared)
        elif plain:
            students[f"{kind} · plain"] = run_student(student_pipeline, prepared, 0.0)
        else:
            students[f"{kind} · aligned"] = run_student(student_pipeline, prepared, config.alignment_weight)

    if gbdt2nn:
        train("gbdt2nn", pipeline)
    if mlp and "mlp" in get_registry().names("student"):
        mlp_config = attrs.evolve(
            config, student="mlp", attributor=MLP_ATTRIBUTOR, student_options={**(mlp_options or {}), **epoch_budget}
        )
        mlp_pipeline = Pipeline(mlp_config)
        mlp_pipeline.check()
        train("mlp", mlp_pipeline)
    first = next(iter(students.values()))
    teacher = {
        "model": f"teacher ({config.teacher})",
        "test": first.metrics["teacher"]["test"],
        "seconds": round(float(prepared.timings["teacher_s"]), 3),
        # the teacher's TreeSHAP of the training and test rows: the cost an aligned student adds to a plain one
        "treeshap_seconds": round(float(prepared.timings.get("treeshap_s", 0.0)), 3),
    }
    common = {
        "dataset": dataset.name,
        "task": dataset.task,
        "seed": seed,
        "rows_train": len(prepared.data.y_train),
        "rows_test": len(prepared.data.y_test),
        "features": int(dataset.frame.shape[1] - 1),
    }
    rows = [{**common, **teacher}]
    rows += [{**common, **_student_row(model, run)} for model, run in students.items()]
    return rows
