"""How good is the student: task metric, fidelity to the teacher, agreement of explanations with TreeSHAP.

Statistics come from scikit-learn and scipy; agreement is computed per row, then averaged over rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np
from scipy.special import expit, softmax
from scipy.stats import rankdata
from sklearn import metrics as skm

from gbdt2nn_core.host.interfaces import Task

__all__ = [
    "ALIGNMENT_COST_NOTICE",
    "Metrics",
    "StudentMetrics",
    "agreement",
    "agreement_per_output",
    "explained_outputs",
    "fidelity",
    "task_metrics",
    "validation_cost",
]

#: An aligned student's validation task loss this much above its plain student's (relative; see
#: :func:`validation_cost`) is reported as alignment's cost on the data (``gbdt2nn distill --compare``). On the
#: quality suite every seed whose aligned student was less accurate than its plain one beyond the dataset's spread
#: was at +1 % or more; where alignment cost nothing, 14 of 18 seeds stayed below +0.5 % (RESULTS.md, "λ under the
#: clip").
ALIGNMENT_COST_NOTICE = 0.005


def validation_cost(aligned_history: Mapping[str, Any], plain_history: Mapping[str, Any]) -> float | None:
    """How much higher the aligned student's best validation task loss is than the plain student's, relative
    (``0.01``: 1 % higher), from the two students' ``history`` (``stopping.best_validation_loss``: the held-out rows
    of one split, which both students of a comparison share); ``None`` where either recorded none (no validation
    rows, or a student that does not monitor them)."""
    aligned = aligned_history.get("stopping", {}).get("best_validation_loss")
    plain = plain_history.get("stopping", {}).get("best_validation_loss")
    if aligned is None or plain is None or not float(plain) > 0:
        return None
    return float(aligned) / float(plain) - 1.0


def task_metrics(task: Task, y: np.ndarray, margin: np.ndarray) -> dict[str, float]:
    """AUC / log-loss / accuracy (binary), log-loss / accuracy (multiclass), RMSE / R² (regression)."""
    if task == "regression":
        return {
            "rmse": float(skm.root_mean_squared_error(y, margin)),
            "r2": float(skm.r2_score(y, margin)),
        }
    if task == "binary":
        probability = expit(margin)
        return {
            "auc": float(skm.roc_auc_score(y, probability)),
            "logloss": float(skm.log_loss(y, probability, labels=[0, 1])),
            "accuracy": float(skm.accuracy_score(y, probability >= 0.5)),
        }
    probability = softmax(margin, axis=1)
    labels = np.arange(margin.shape[1])
    return {
        "logloss": float(skm.log_loss(y, probability, labels=labels)),
        "accuracy": float(skm.accuracy_score(y, probability.argmax(axis=1))),
    }


def fidelity(task: Task, student_margin: np.ndarray, teacher_margin: np.ndarray) -> dict[str, float]:
    """How closely the student reproduces the teacher: margin RMSE and R², and label agreement."""
    result = {
        "margin_rmse": float(skm.root_mean_squared_error(teacher_margin.ravel(), student_margin.ravel())),
        "margin_r2": float(skm.r2_score(teacher_margin.ravel(), student_margin.ravel())),
    }
    if task == "binary":
        result["label_agreement"] = float(np.mean((student_margin >= 0) == (teacher_margin >= 0)))
    elif task == "multiclass":
        result["label_agreement"] = float(np.mean(student_margin.argmax(1) == teacher_margin.argmax(1)))
    return result


def _rows(values: np.ndarray) -> np.ndarray:
    """Flatten multi-output attributions ``(n, c, d)`` to ``(n * c, d)`` rows."""
    return values.reshape(-1, values.shape[-1]).astype(np.float64)


def explained_outputs(task: Task, teacher_margin: np.ndarray) -> np.ndarray | None:
    """The output whose explanation :func:`agreement` compares for each row: the class the teacher predicts
    (multiclass), ``None`` (every output, i.e. the only one) otherwise.

    A multiclass row has one explanation per class, and the other classes' explain why the row is *not* of
    them: small, mostly noise, and nine tenths of the pairs on a 10-class task. Explaining the predicted class is
    what shap's plots show and what "The Disagreement Problem in Explainable Machine Learning" (Krishna et al.
    2022) compares; on digits (seed 0, plain student) Spearman was 0.27 over every class and 0.58 for the
    predicted one. :func:`agreement_per_output` still measures every class.
    """
    if task != "multiclass":
        return None
    explained: np.ndarray = np.asarray(teacher_margin).argmax(axis=1)
    return explained


def agreement(
    student: np.ndarray, teacher: np.ndarray, *, top_k: int = 5, explained: np.ndarray | None = None
) -> dict[str, float]:
    """Per-row agreement between attributions, averaged over rows.

    Multi-output attributions ``(n, c, d)`` count every ``(row, output)`` pair as one row, or, with
    ``explained`` (``(n,)`` output indices, e.g. :func:`explained_outputs`), only each row's explained output.

    - ``spearman``: rank correlation of the signed values (rows where either side is constant are skipped);
    - ``cosine``: cosine similarity of the signed values;
    - ``top5``: overlap of the ``top_k`` columns by absolute value, as a fraction of ``top_k``;
    - ``sign``: share of columns with the teacher's sign, among columns the teacher gives a non-zero value;
    - ``mse``: mean squared difference.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"attribution shapes differ: student {student.shape}, teacher {teacher.shape}")
    if explained is not None:
        chosen = np.asarray(explained)
        if student.ndim != 3 or chosen.shape != (student.shape[0],):
            raise ValueError(
                f"explained needs (n, c, d) attributions and (n,) outputs, got {student.shape}, {chosen.shape}"
            )
        rows = np.arange(student.shape[0])
        student, teacher = student[rows, chosen], teacher[rows, chosen]
    s, t = _rows(student), _rows(teacher)
    d = s.shape[1]
    k = min(top_k, d)

    rank_s, rank_t = rankdata(s, axis=1), rankdata(t, axis=1)
    rank_s -= rank_s.mean(axis=1, keepdims=True)
    rank_t -= rank_t.mean(axis=1, keepdims=True)
    denominator = np.sqrt((rank_s**2).sum(1) * (rank_t**2).sum(1))
    valid = denominator > 0
    spearman = (rank_s * rank_t).sum(1)[valid] / denominator[valid]

    norms = np.linalg.norm(s, axis=1) * np.linalg.norm(t, axis=1)
    cosine = (s * t).sum(1)[norms > 0] / norms[norms > 0]

    top_s = np.argsort(-np.abs(s), axis=1, kind="stable")[:, :k]
    top_t = np.argsort(-np.abs(t), axis=1, kind="stable")[:, :k]
    overlap = np.array([len(np.intersect1d(a, b)) for a, b in zip(top_s, top_t, strict=False)]) / k

    informative = t != 0
    counted = informative.sum(1)
    same_sign = ((np.sign(s) == np.sign(t)) & informative).sum(1)
    sign = same_sign[counted > 0] / counted[counted > 0]

    def mean(values: np.ndarray) -> float:
        return float(values.mean()) if values.size else float("nan")

    return {
        "spearman": mean(spearman),
        "cosine": mean(cosine),
        f"top{top_k}": mean(overlap),
        "sign": mean(sign),
        "mse": float(np.mean((s - t) ** 2)),
    }


def agreement_per_output(
    student: np.ndarray, teacher: np.ndarray, labels: list[str] | None = None, *, top_k: int = 5
) -> dict[str, dict[str, float]]:
    """:func:`agreement` separately for each output (class) of ``(n, k, d)`` attributions, keyed by ``labels``.

    ``labels`` name the outputs (default ``"0"``, ``"1"``...). :func:`agreement` itself averages over every
    ``(row, class)`` pair, so it equals the mean of these when each class has the same rows.
    """
    if student.ndim != 3 or student.shape != teacher.shape:
        raise ValueError(f"expected two (n, k, d) arrays of one shape, got {student.shape} and {teacher.shape}")
    names = [str(label) for label in labels] if labels is not None else [str(c) for c in range(student.shape[1])]
    if len(names) != student.shape[1]:
        raise ValueError(f"{len(names)} labels for {student.shape[1]} outputs")
    return {name: agreement(student[:, c], teacher[:, c], top_k=top_k) for c, name in enumerate(names)}


@attrs.frozen(kw_only=True)
class StudentMetrics:
    """How one student did on held-out rows: task metric, fidelity to its teacher, agreement with its TreeSHAP."""

    name: str
    attributor: str
    loss: str
    #: λ of the alignment term the student was trained with (0 = plain distillation).
    weight: float
    test: dict[str, float]
    fidelity: dict[str, float]
    #: Agreement of the ``attributor``'s explanations with the teacher's.
    agreement: dict[str, float]
    #: Agreement of every attributor measured, by name (the experiment explains a plain student with several).
    agreement_by_attributor: dict[str, dict[str, float]] = attrs.field(factory=dict)
    #: Multiclass only: the ``attributor``'s agreement per class label.
    agreement_per_class: dict[str, dict[str, float]] | None = None
    #: Multiclass only: the ``attributor``'s agreement over every ``(row, class)`` pair (``agreement`` compares
    #: the explanations of the class the teacher predicts; see :func:`explained_outputs`).
    agreement_every_class: dict[str, float] | None = None

    def to_json(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "name": self.name,
            "alignment": {"attributor": self.attributor, "loss": self.loss, "weight": self.weight},
            "test": dict(self.test),
            "fidelity": dict(self.fidelity),
            "agreement": dict(self.agreement),
        }
        if self.agreement_by_attributor:
            payload["agreement_by_attributor"] = {k: dict(v) for k, v in self.agreement_by_attributor.items()}
        if self.agreement_per_class is not None:
            payload["agreement_per_class"] = {k: dict(v) for k, v in self.agreement_per_class.items()}
        if self.agreement_every_class is not None:
            payload["agreement_every_class"] = dict(self.agreement_every_class)
        return payload


@attrs.frozen(kw_only=True)
class Metrics:
    """The one metrics record: ``metrics.json`` of ``gbdt2nn distill``, of every experiment run, and
    :meth:`GBDT2NNClassifier.evaluate <gbdt2nn_core.GBDT2NNClassifier.evaluate>`.

    Its JSON shape (:meth:`to_json`)::

        {"task": ..., "rows": {"train": n, "test": m},
         "teacher": {"name": ..., "test": {...}},
         "student": {"name": ..., "alignment": {"attributor", "loss", "weight"},
                     "test": {...}, "fidelity": {...}, "agreement": {...},
                     ["agreement_by_attributor": {name: {...}}], ["agreement_per_class": {label: {...}}],
                     ["agreement_every_class": {...}]},
         "timings": {...}, [run fields: "seed", "configuration", "epochs", "resumed_from_epoch"]}
    """

    task: Task
    rows_train: int
    rows_test: int
    teacher_name: str
    teacher_test: dict[str, float]
    student: StudentMetrics
    timings: dict[str, float] = attrs.field(factory=dict)
    #: What the caller adds about the run (the experiment: seed, configuration, epochs, resumed_from_epoch).
    run: dict[str, Any] = attrs.field(factory=dict)

    def to_json(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "task": self.task,
            "rows": {"train": self.rows_train, "test": self.rows_test},
            "teacher": {"name": self.teacher_name, "test": dict(self.teacher_test)},
            "student": self.student.to_json(),
        }
        if self.timings:
            payload["timings"] = {k: round(float(v), 4) for k, v in self.timings.items()}
        payload.update(self.run)
        return payload
