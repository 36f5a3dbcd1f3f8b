"""How good is the student: task metric, fidelity to the teacher, agreement of explanations with TreeSHAP.

Statistics come from scikit-learn and scipy; agreement is computed per row, then averaged over rows.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, softmax
from scipy.stats import rankdata
from sklearn import metrics as skm

from gbdt2nn_core.interfaces import Task

__all__ = ["agreement", "agreement_per_output", "fidelity", "task_metrics"]


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


def agreement(student: np.ndarray, teacher: np.ndarray, *, top_k: int = 5) -> dict[str, float]:
    """Per-row agreement between attributions, averaged over rows.

    - ``spearman``: rank correlation of the signed values (rows where either side is constant are skipped);
    - ``cosine``: cosine similarity of the signed values;
    - ``top5``: overlap of the ``top_k`` columns by absolute value, as a fraction of ``top_k``;
    - ``sign``: share of columns with the teacher's sign, among columns the teacher gives a non-zero value;
    - ``mse``: mean squared difference.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"attribution shapes differ: student {student.shape}, teacher {teacher.shape}")
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
