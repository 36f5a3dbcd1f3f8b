"""Temperature scaling of classification students (issue 12, item 2): fitted on the validation rows, saved with the
student, applied to probabilities only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sklearn.metrics as skm
from scipy.special import expit, softmax

from gbdt2nn_core.host.registry import get_registry
from gbdt2nn_core.pipeline.distill import DistillRun
from gbdt2nn_core.student.calibration import confidence_floor, fit_temperature, probabilities

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def test_the_fitted_temperature_minimises_sklearns_log_loss() -> None:
    rng = np.random.default_rng(0)
    logit = rng.normal(0, 2, 4000)
    y = (rng.random(4000) < expit(logit)).astype(int)
    under_confident = logit / 3  # the true log-odds shrunk: T ≈ 1/3 undoes it
    temperature = fit_temperature("binary", under_confident, y)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 2001))
    by_sklearn = grid[np.argmin([skm.log_loss(y, expit(under_confident / t)) for t in grid])]
    assert temperature == pytest.approx(by_sklearn, rel=0.01)
    assert temperature == pytest.approx(1 / 3, rel=0.1)


def test_multiclass_temperature_and_probabilities() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 2, (3000, 5))
    y = np.array([rng.choice(5, p=p) for p in softmax(logits, axis=1)])
    over_confident = logits * 2
    temperature = fit_temperature("multiclass", over_confident, y)
    assert temperature == pytest.approx(2.0, rel=0.1)
    calibrated = probabilities(over_confident, temperature)
    np.testing.assert_allclose(calibrated, softmax(over_confident / temperature, axis=1), rtol=1e-12)
    np.testing.assert_array_equal(calibrated.argmax(axis=1), over_confident.argmax(axis=1))  # decisions unchanged
    assert skm.log_loss(y, calibrated) < skm.log_loss(y, softmax(over_confident, axis=1))


def _student(run: DistillRun, **options: Any) -> Any:
    # a heavy weight decay shrinks the weights and so the margins: a deliberately under-confident student
    settings = {"epochs": 2, "weight_decay": 10.0, "lr": 0.01, "n_groups": 3, "hidden": (16, 8), "seed": 0}
    student = get_registry().student("gbdt2nn", **settings, **options)
    return student.fit(run.prepared.student_inputs())


def test_calibration_lowers_held_out_log_loss_and_keeps_auc_and_accuracy(adult_run: DistillRun) -> None:
    raw = _student(adult_run, calibrate=False)
    calibrated = _student(adult_run)
    z, y = adult_run.data.z_test, adult_run.data.y_test
    margin = calibrated.predict_margin(z)
    np.testing.assert_array_equal(margin, raw.predict_margin(z))  # the same network: margins are never scaled
    assert raw.temperature == 1.0
    assert 0 < calibrated.temperature < 1  # under-confident: the fit sharpens
    before, after = expit(margin), probabilities(margin, calibrated.temperature)[:, 1]
    assert skm.log_loss(y, after) < skm.log_loss(y, before)
    assert skm.roc_auc_score(y, after) == pytest.approx(skm.roc_auc_score(y, before), abs=1e-12)
    assert skm.accuracy_score(y, after >= 0.5) == skm.accuracy_score(y, before >= 0.5)


def test_a_reloaded_run_folder_gives_the_same_calibrated_probabilities(adult_run: DistillRun, tmp_path: Path) -> None:
    from gbdt2nn_core.pipeline.persistence import load_model
    from gbdt2nn_core.pipeline.runfolder import write_run

    out = write_run(tmp_path / "run", adult_run)
    saved = json.loads((out / "student.json").read_text())["student_state"]["calibration"]["temperature"]
    assert saved == adult_run.student.temperature != 1.0
    loaded = load_model(out)
    rows = adult_run.data.test_frame
    expected = probabilities(adult_run.student.predict_margin(adult_run.data.z_test), adult_run.student.temperature)
    np.testing.assert_allclose(loaded.predict_proba(rows), expected, rtol=1e-5, atol=1e-7)


def test_a_validation_set_without_a_wrong_row_is_not_sharpened_without_limit() -> None:
    # 150 rows all on the right side: the log-loss keeps falling as T -> 0, so the unbounded fit would end at the
    # search's lower bound; the floor stops where the mean confidence reaches the rule of succession's 151/152
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 1, (150, 4))
    y = rng.integers(0, 4, 150)
    logits[np.arange(150), y] = logits.max(axis=1) + rng.uniform(0.1, 3.0, 150)  # every row's largest margin
    assert (logits.argmax(axis=1) == y).all()
    temperature = fit_temperature("multiclass", logits, y)
    assert temperature > 0.05 * 1.5  # not the search's bound
    confidence = softmax(logits / temperature, axis=1).max(axis=1).mean()  # computed here, not by the module
    assert confidence == pytest.approx(151 / 152, abs=1e-6)
    # binary: the same rule on the positive class's log-odds
    margin = np.where(rng.random(150) < 0.5, -1.0, 1.0) * rng.uniform(0.5, 2.0, 150)
    labels = (margin > 0).astype(int)
    t_binary = fit_temperature("binary", margin, labels)
    p = expit(margin / t_binary)
    assert np.maximum(p, 1 - p).mean() == pytest.approx(151 / 152, abs=1e-6)


def test_the_floor_is_the_lowest_temperature_that_keeps_confidence_within_the_accuracy_estimate() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(0, 3, (200, 3))
    y = np.where(rng.random(200) < 0.97, logits.argmax(axis=1), rng.integers(0, 3, 200))
    correct = int((logits.argmax(axis=1) == y).sum())
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 20001))
    within = [t for t in grid if softmax(logits / t, axis=1).max(axis=1).mean() <= (correct + 1) / 202]
    assert confidence_floor(logits, y) == pytest.approx(min(within), rel=1e-3)
    # with a wrong row the log-loss has its own minimum and the fit is that minimum, floor or not
    by_grid = grid[np.argmin([skm.log_loss(y, softmax(logits / t, axis=1)) for t in grid])]
    assert fit_temperature("multiclass", logits, y) == pytest.approx(by_grid, rel=1e-3)
