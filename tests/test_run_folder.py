"""One saved-model format: a run folder written by `gbdt2nn distill` or by `estimator.save` serves both ways,
and a second student (`mlp`) goes through every entry point like GBDT2NN."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gbdt2nn_core.cli import main
from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.estimator import GBDT2NNClassifier, load_estimator
from gbdt2nn_core.registry import get_registry

pytestmark = pytest.mark.usefixtures("single_thread_torch")

TARGET = "income_gt_50k"
TEACHER = [
    "--teacher-option",
    "n_estimators=10",
    "--teacher-option",
    "num_leaves=15",
    "--teacher-option",
    "num_threads=1",
]
SMALL: dict[str, Any] = {
    "teacher_options": {"n_estimators": 10, "num_leaves": 15, "num_threads": 1},
    "student_options": {"n_groups": 4, "hidden": (16, 16), "batch_size": 128},
    "epochs": 2,
    "cache_dir": False,
}


@pytest.fixture(autouse=True)
def quiet_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("GBDT2NN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("COLUMNS", "160")
    monkeypatch.chdir(tmp_path)
    get_registry.cache_clear()
    yield
    get_registry.cache_clear()


@pytest.fixture(scope="module")
def rows(adult_dataset: Any) -> pd.DataFrame:
    return adult_dataset.frame.sample(900, random_state=1).reset_index(drop=True)  # type: ignore[no-any-return]


def _cli(argv: list[str]) -> None:
    assert main(argv) == 0


def _predict(model: Path, data: pd.DataFrame) -> pd.DataFrame:
    data.drop(columns=[TARGET], errors="ignore").to_csv("rows.csv", index=False)
    _cli(["predict", "--model", str(model), "--data", "rows.csv", "--out", "predictions.csv", "--overwrite"])
    return pd.read_csv("predictions.csv")


def test_a_cli_run_folder_loads_as_an_estimator(rows: pd.DataFrame, capsys: pytest.CaptureFixture[str]) -> None:
    rows[:700].to_csv("train.csv", index=False)
    _cli(["distill", "--data", "train.csv", "--target", TARGET, "--epochs", "1", *TEACHER, "--out", "run", "--json"])
    capsys.readouterr()
    estimator = load_estimator("run")
    assert isinstance(estimator, GBDT2NNClassifier)
    test = rows[700:]
    served = _predict(Path("run"), test)
    np.testing.assert_allclose(estimator.decision_function(test.drop(columns=[TARGET])), served["margin"], rtol=1e-6)
    assert list(estimator.predict(test.drop(columns=[TARGET]))) == list(served["prediction"])
    # the folder's teacher came back too, with the config the CLI recorded
    config = json.loads(Path("run/config.json").read_text())
    assert estimator.config_.teacher == config["teacher"] == "lightgbm"
    assert estimator.teacher_ is not None
    np.testing.assert_allclose(
        estimator.teacher_margin(test.drop(columns=[TARGET])),
        estimator.teacher_.native_model.predict(estimator._teacher_frame(test.drop(columns=[TARGET])), raw_score=True),
    )


def test_an_estimator_folder_is_served_by_gbdt2nn_predict(rows: pd.DataFrame) -> None:
    X, y = rows.drop(columns=[TARGET])[:700], rows[TARGET][:700]
    estimator = GBDT2NNClassifier(**SMALL).fit(X, y)
    estimator.save("saved")
    test = rows[700:]
    served = _predict(Path("saved"), test)
    X_test = test.drop(columns=[TARGET])
    np.testing.assert_allclose(served["margin"], estimator.decision_function(X_test), rtol=1e-6)
    np.testing.assert_allclose(served[f"probability_{estimator.classes_[1]}"], estimator.predict_proba(X_test)[:, 1])
    assert list(served["prediction"]) == list(estimator.predict(X_test))
    assert {"config.json", "history.json", "student.json", "student.safetensors", "teacher.txt"} <= {
        p.name for p in Path("saved").iterdir()
    }


def test_the_mlp_student_through_the_cli(rows: pd.DataFrame, capsys: pytest.CaptureFixture[str]) -> None:
    rows[:700].to_csv("train.csv", index=False)
    argv = [
        "distill",
        "--data",
        "train.csv",
        "--target",
        TARGET,
        "--student",
        "mlp",
        "--attributor",
        "gradient-x-input",
    ]
    _cli([*argv, "--student-option", "hidden=[16]", "--epochs", "2", *TEACHER, "--out", "mlp-run", "--json"])
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["student"]["name"] == "mlp"
    assert json.loads(Path("mlp-run/student.json").read_text())["student"] == "mlp"
    served = _predict(Path("mlp-run"), rows[700:])
    estimator = load_estimator("mlp-run")
    np.testing.assert_allclose(
        estimator.decision_function(rows[700:].drop(columns=[TARGET])), served["margin"], rtol=1e-6
    )
    _cli(["explain", "--model", "mlp-run", "--data", "rows.csv", "--out", "explained.csv"])
    assert pd.read_csv("explained.csv").shape == (200, len(rows.columns) - 1)


def test_the_mlp_student_in_the_estimator(rows: pd.DataFrame) -> None:
    X, y = rows.drop(columns=[TARGET])[:700], rows[TARGET][:700]
    params = {
        **SMALL,
        "student": "mlp",
        "student_options": {"hidden": (16,), "batch_size": 64},
        "epochs": 10,
        "attributor": "gradient-x-input",
    }
    estimator = GBDT2NNClassifier(**params).fit(X, y)
    X_test = rows.drop(columns=[TARGET])[700:]
    assert estimator.score(X_test, rows[TARGET][700:]) > 0.75  # the majority class is 0.70 of these rows
    loaded = GBDT2NNClassifier.load(estimator.save("mlp-saved"))
    np.testing.assert_array_equal(loaded.decision_function(X_test), estimator.decision_function(X_test))
    with pytest.raises(ConfigError, match="does not support online updates"):
        estimator.partial_fit(X_test, rows[TARGET][700:])


def test_an_attributor_that_cannot_explain_the_student_fails_before_training(
    rows: pd.DataFrame, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from gbdt2nn_core.experiment import ExperimentConfig
    from gbdt2nn_core.experiment.runner import resolve_components

    rows[:300].to_csv("train.csv", index=False)
    teacher_type = type(get_registry().teacher("lightgbm"))
    monkeypatch.setattr(teacher_type, "fit", lambda *a, **k: pytest.fail("the teacher trained first"))
    code = main(["distill", "--data", "train.csv", "--target", TARGET, "--student", "mlp", "--out", "run"])
    lines = capsys.readouterr().err.splitlines()
    assert code != 0
    assert lines == [
        "gbdt2nn: error: invalid attributor='structure': it explains gbdt2nn students only; for the 'mlp' student "
        "choose another attributor (e.g. gradient-x-input)"
    ]
    # an experiment on the mlp student leaves structure out of "every installed attributor"
    attributors, _ = resolve_components(ExperimentConfig(student="mlp"), get_registry())
    assert "structure" not in attributors
    assert "gradient-x-input" in attributors
    assert "structure" in resolve_components(ExperimentConfig(), get_registry())[0]
