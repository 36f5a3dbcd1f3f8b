"""Task metrics, fidelity and attribution agreement against scipy / scikit-learn / numpy computed here."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit, softmax
from sklearn import metrics as skm

from gbdt2nn_core.pipeline.metrics import agreement, explained_outputs, fidelity, task_metrics


def _spearman_reference(s: np.ndarray, t: np.ndarray) -> float:
    """Mean over rows of scipy's Spearman correlation, skipping rows where either side is constant."""
    values = [stats.spearmanr(a, b).statistic for a, b in zip(s, t, strict=True) if np.ptp(a) > 0 and np.ptp(b) > 0]
    return float(np.mean(values))


def _cosine_reference(s: np.ndarray, t: np.ndarray) -> float:
    """Mean over rows of scikit-learn's cosine similarity, skipping all-zero rows."""
    keep = (np.abs(s).sum(1) > 0) & (np.abs(t).sum(1) > 0)
    similarity = skm.pairwise.cosine_similarity(s[keep], t[keep])
    return float(np.mean(np.diag(similarity)))


def _top_k_reference(s: np.ndarray, t: np.ndarray, k: int) -> float:
    overlaps = []
    for a, b in zip(s, t, strict=True):
        top_a = set(np.argsort(np.abs(a))[::-1][:k].tolist())
        top_b = set(np.argsort(np.abs(b))[::-1][:k].tolist())
        overlaps.append(len(top_a & top_b) / k)
    return float(np.mean(overlaps))


def _sign_reference(s: np.ndarray, t: np.ndarray) -> float:
    shares = []
    for a, b in zip(s, t, strict=True):
        counted = [i for i in range(len(b)) if b[i] != 0]
        if counted:
            shares.append(sum(np.sign(a[i]) == np.sign(b[i]) for i in counted) / len(counted))
    return float(np.mean(shares))


@pytest.fixture
def attributions() -> tuple[np.ndarray, np.ndarray]:
    """Correlated continuous student / teacher attributions, 40 rows x 9 columns, distinct absolute values."""
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(40, 9))
    student = 0.6 * teacher + rng.normal(scale=0.8, size=(40, 9))
    return student, teacher


def test_agreement_matches_independent_references(attributions: tuple[np.ndarray, np.ndarray]) -> None:
    student, teacher = attributions
    result = agreement(student, teacher)
    assert set(result) == {"spearman", "cosine", "top5", "sign", "mse"}
    assert result["spearman"] == pytest.approx(_spearman_reference(student, teacher), abs=1e-12)
    assert result["cosine"] == pytest.approx(_cosine_reference(student, teacher), abs=1e-12)
    assert result["top5"] == pytest.approx(_top_k_reference(student, teacher, 5), abs=1e-12)
    assert result["sign"] == pytest.approx(_sign_reference(student, teacher), abs=1e-12)
    assert result["mse"] == pytest.approx(skm.mean_squared_error(teacher.ravel(), student.ravel()), abs=1e-12)
    assert 0.2 < result["spearman"] < 0.9  # the fixture is informative: neither random nor identical


def test_agreement_with_ties_and_constant_rows() -> None:
    rng = np.random.default_rng(1)
    student = rng.integers(-2, 3, size=(30, 6)).astype(float)  # many ties
    teacher = rng.integers(-2, 3, size=(30, 6)).astype(float)
    student[3] = 1.0  # constant student row: no rank correlation
    teacher[7] = 0.0  # all-zero teacher row: no rank correlation, no cosine, no sign
    student[11] = 0.0  # all-zero student row: no cosine
    result = agreement(student, teacher)
    assert result["spearman"] == pytest.approx(_spearman_reference(student, teacher), abs=1e-12)
    assert result["cosine"] == pytest.approx(_cosine_reference(student, teacher), abs=1e-12)
    assert result["sign"] == pytest.approx(_sign_reference(student, teacher), abs=1e-12)
    assert result["mse"] == pytest.approx(np.mean((student - teacher) ** 2), abs=1e-12)
    # the constant rows are skipped, not counted as 0 or NaN
    assert np.isfinite(result["spearman"])
    rows = [i for i in range(30) if i not in (3, 7)]
    assert result["spearman"] == pytest.approx(_spearman_reference(student[rows], teacher[rows]), abs=1e-12)


def test_agreement_flattens_multiple_outputs_row_by_row(attributions: tuple[np.ndarray, np.ndarray]) -> None:
    student, teacher = attributions
    # (10 rows, 4 outputs, 9 columns): every (row, output) pair is one explanation
    result = agreement(student.reshape(10, 4, 9), teacher.reshape(10, 4, 9))
    assert result["spearman"] == pytest.approx(_spearman_reference(student, teacher), abs=1e-12)
    assert result["cosine"] == pytest.approx(_cosine_reference(student, teacher), abs=1e-12)
    assert result["top5"] == pytest.approx(_top_k_reference(student, teacher, 5), abs=1e-12)
    assert result["sign"] == pytest.approx(_sign_reference(student, teacher), abs=1e-12)


def test_agreement_of_the_explained_output_compares_one_class_per_row() -> None:
    rng = np.random.default_rng(5)
    teacher = rng.normal(size=(12, 3, 8))
    student = teacher + rng.normal(scale=2.0, size=teacher.shape)  # noisy everywhere...
    chosen = rng.integers(0, 3, size=12)
    rows = np.arange(12)
    student[rows, chosen] = teacher[rows, chosen] + rng.normal(scale=0.1, size=(12, 8))  # ...but the chosen class
    result = agreement(student, teacher, explained=chosen)
    picked_s = np.stack([student[i, c] for i, c in enumerate(chosen)])
    picked_t = np.stack([teacher[i, c] for i, c in enumerate(chosen)])
    assert result["spearman"] == pytest.approx(_spearman_reference(picked_s, picked_t), abs=1e-12)
    assert result["top5"] == pytest.approx(_top_k_reference(picked_s, picked_t, 5), abs=1e-12)
    assert result["spearman"] > agreement(student, teacher)["spearman"] + 0.2
    with pytest.raises(ValueError, match="explained needs"):
        agreement(student[:, 0], teacher[:, 0], explained=chosen)


def test_explained_outputs_are_the_class_the_teacher_predicts() -> None:
    margin = np.array([[0.1, 2.0, -1.0], [3.0, 0.0, 0.5], [-1.0, -2.0, -0.5]])
    np.testing.assert_array_equal(explained_outputs("multiclass", margin), [1, 0, 2])
    assert explained_outputs("binary", margin[:, 0]) is None
    assert explained_outputs("regression", margin[:, 0]) is None


def test_agreement_extremes() -> None:
    teacher = np.random.default_rng(2).normal(size=(20, 7))
    same = agreement(teacher.copy(), teacher)
    assert same == pytest.approx({"spearman": 1.0, "cosine": 1.0, "top5": 1.0, "sign": 1.0, "mse": 0.0})
    opposite = agreement(-teacher, teacher)
    assert opposite["spearman"] == pytest.approx(-1.0)
    assert opposite["cosine"] == pytest.approx(-1.0)
    assert opposite["top5"] == pytest.approx(1.0)  # same magnitudes, so the same top features
    assert opposite["sign"] == pytest.approx(0.0)


def test_agreement_top_k_is_capped_at_the_number_of_columns() -> None:
    rng = np.random.default_rng(3)
    student, teacher = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    result = agreement(student, teacher, top_k=10)
    assert result["top10"] == pytest.approx(1.0)  # all 3 columns are in both "top 10"s
    assert agreement(student, teacher, top_k=2)["top2"] == pytest.approx(_top_k_reference(student, teacher, 2))


def test_agreement_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        agreement(np.zeros((3, 4)), np.zeros((3, 5)))


def test_binary_task_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    margin = 1.5 * (y - 0.5) + rng.normal(size=300)
    result = task_metrics("binary", y, margin)
    assert result["auc"] == pytest.approx(skm.roc_auc_score(y, margin), abs=1e-12)  # AUC is rank-based
    probability = 1 / (1 + np.exp(-margin))
    logloss = -np.mean(y * np.log(probability) + (1 - y) * np.log(1 - probability))
    assert result["logloss"] == pytest.approx(logloss, rel=1e-9)
    assert result["accuracy"] == pytest.approx(np.mean((margin > 0) == y), abs=1e-12)


def test_regression_task_metrics_match_numpy() -> None:
    rng = np.random.default_rng(5)
    y = rng.normal(size=200)
    prediction = y + rng.normal(scale=0.3, size=200)
    result = task_metrics("regression", y, prediction)
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean((y - prediction) ** 2)), rel=1e-12)
    r2 = 1 - np.sum((y - prediction) ** 2) / np.sum((y - y.mean()) ** 2)
    assert result["r2"] == pytest.approx(r2, rel=1e-12)
    assert set(result) == {"rmse", "r2"}


def test_multiclass_task_metrics_match_numpy() -> None:
    rng = np.random.default_rng(6)
    y = rng.integers(0, 3, 150)
    margin = rng.normal(size=(150, 3))
    margin[np.arange(150), y] += 1.0
    result = task_metrics("multiclass", y, margin)
    probability = np.exp(margin) / np.exp(margin).sum(axis=1, keepdims=True)
    assert result["logloss"] == pytest.approx(-np.mean(np.log(probability[np.arange(150), y])), rel=1e-9)
    assert result["accuracy"] == pytest.approx(np.mean(margin.argmax(axis=1) == y), abs=1e-12)
    assert set(result) == {"logloss", "accuracy"}


def test_fidelity_binary_and_regression() -> None:
    rng = np.random.default_rng(7)
    teacher = rng.normal(size=100)
    student = teacher + rng.normal(scale=0.5, size=100)
    result = fidelity("binary", student, teacher)
    assert result["margin_rmse"] == pytest.approx(np.sqrt(np.mean((student - teacher) ** 2)), rel=1e-12)
    r2 = 1 - np.sum((teacher - student) ** 2) / np.sum((teacher - teacher.mean()) ** 2)
    assert result["margin_r2"] == pytest.approx(r2, rel=1e-12)
    assert result["label_agreement"] == pytest.approx(np.mean(expit(student).round() == expit(teacher).round()))
    assert set(fidelity("regression", student, teacher)) == {"margin_rmse", "margin_r2"}


def test_fidelity_multiclass_compares_predicted_classes() -> None:
    rng = np.random.default_rng(8)
    teacher = rng.normal(size=(80, 4))
    student = teacher + rng.normal(scale=0.7, size=(80, 4))
    result = fidelity("multiclass", student, teacher)
    agree = np.mean(softmax(student, axis=1).argmax(1) == softmax(teacher, axis=1).argmax(1))
    assert result["label_agreement"] == pytest.approx(agree, abs=1e-12)
    assert 0 < result["label_agreement"] < 1
    assert result["margin_rmse"] == pytest.approx(np.sqrt(np.mean((student - teacher) ** 2)), rel=1e-12)
