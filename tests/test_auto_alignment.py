"""``alignment="auto"``, the default: ``rank`` for a multiclass task, ``mse`` otherwise, recorded with its reason.

The reference for what ``"auto"`` resolves to is a run that names the loss itself: the same seed must train the same
network, weight for weight.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_wine

from gbdt2nn_core import ConfigError, GBDT2NNClassifier
from gbdt2nn_core.host.registry import DISABLE_ENV, Registry
from gbdt2nn_core.pipeline import DistillConfig, Pipeline
from gbdt2nn_core.pipeline.config import AUTO_RANK_PAIRS
from gbdt2nn_core.pipeline.core import Prepared, Trained
from gbdt2nn_core.pipeline.distill import DistillRun
from gbdt2nn_core.pipeline.runfolder import write_run

pytestmark = pytest.mark.usefixtures("single_thread_torch")

#: Wine's 178 rows, three cultivars: a few seconds a student.
WINE_CONFIG: dict[str, Any] = {
    "teacher_options": {"n_estimators": 10, "num_leaves": 7, "min_child_samples": 5, "num_threads": 1},
    "student_options": {"n_groups": 6, "hidden": (16, 16), "batch_size": 32, "epochs": 4},
    "alignment_min_rows": 200,  # every training row carries the alignment term
    "cache": False,
    "threads": 1,
}


def _wine() -> pd.DataFrame:
    data = load_wine(as_frame=True)
    frame: pd.DataFrame = data.frame
    return frame


def _train(registry: Registry | None = None, **settings: Any) -> tuple[Prepared, Trained]:
    pipeline = Pipeline(DistillConfig(**WINE_CONFIG, **settings), registry or Registry())
    pipeline.check()
    prepared = pipeline.prepare(_wine(), "target")
    return prepared, pipeline.train(prepared)


def _margins(prepared: Prepared, trained: Trained) -> np.ndarray:
    return np.asarray(trained.student.predict_margin(prepared.data.z_test))


@pytest.fixture(scope="module")
def auto_on_wine(single_thread_torch: None) -> tuple[Prepared, Trained]:
    return _train()


def test_auto_takes_rank_for_a_multiclass_task_and_trains_as_naming_it_would(auto_on_wine: Any) -> None:
    prepared, trained = auto_on_wine
    assert prepared.data.task == "multiclass"
    assert trained.config.alignment == "rank"
    assert trained.choices["alignment"] == {"loss": "rank", "why": "auto: rank for a multiclass task"}
    named = _train(alignment="rank")
    np.testing.assert_array_equal(_margins(prepared, trained), _margins(*named))
    other = _train(alignment="mse")  # the loss is not inert here: mse trains another network
    assert not np.array_equal(_margins(prepared, trained), _margins(*other))
    assert other[1].choices["alignment"] == {"loss": "mse", "why": "as configured"}


def test_a_binary_run_resolves_to_cosine_and_records_why_in_the_run_folder(
    adult_run: DistillRun, tmp_path: Path
) -> None:
    assert DistillConfig().alignment == "auto"
    assert adult_run.config.alignment == "cosine"
    assert adult_run.metrics["student"]["alignment"]["loss"] == "cosine"
    write_run(tmp_path / "run", adult_run)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["alignment"] == "cosine"
    assert recorded["student_choices"]["alignment"] == {"loss": "cosine", "why": "auto: cosine for a binary task"}
    assert "batch_size" in recorded["student_choices"]  # the student's own choices are kept beside it


def test_auto_takes_mse_for_regression_wide_multiclass_data_and_where_its_loss_is_not_installed() -> None:
    config = DistillConfig()
    installed = ("cosine", "mse", "rank")
    assert config.alignment_for("regression", 1, 8, installed) == ("mse", "auto: mse for a regression task")
    assert config.alignment_for("binary", 1, 8, installed) == ("cosine", "auto: cosine for a binary task")
    assert config.alignment_for("multiclass", 10, 80, installed)[0] == "rank"  # 64,000 pairs a row
    name, why = config.alignment_for("multiclass", 10, 81, installed)  # 65,610
    assert 10 * 80**2 <= AUTO_RANK_PAIRS < 10 * 81**2
    assert name == "mse"
    assert "65,610 feature pairs" in why
    name, why = config.alignment_for("multiclass", 3, 13, ("cosine", "mse"))
    assert name == "mse"
    assert "pip install gbdt2nn-rank" in why
    name, why = config.alignment_for("binary", 1, 13, ("mse", "rank"))
    assert name == "mse"
    assert "pip install gbdt2nn-cosine" in why
    named = DistillConfig(alignment="mse")
    assert named.alignment_for("binary", 1, 13, installed) == ("mse", "as configured")


def test_without_the_rank_plugin_a_multiclass_run_falls_back_to_mse_and_says_so(
    monkeypatch: pytest.MonkeyPatch, auto_on_wine: Any
) -> None:
    monkeypatch.setenv(DISABLE_ENV, "gbdt2nn-rank")
    registry = Registry()
    assert "rank" not in registry.names("alignment loss")
    prepared, trained = _train(registry)
    assert trained.config.alignment == "mse"
    assert "pip install gbdt2nn-rank" in trained.choices["alignment"]["why"]
    named = _train(registry, alignment="mse")
    np.testing.assert_array_equal(_margins(prepared, trained), _margins(*named))


def test_auto_without_the_loss_it_needs_is_a_one_line_error_before_training(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DISABLE_ENV, "gbdt2nn-mse")
    registry = Registry()
    with pytest.raises(ConfigError, match="pip install gbdt2nn-mse") as caught:
        Pipeline(DistillConfig(task="regression"), registry).check()
    assert "\n" not in str(caught.value)
    Pipeline(DistillConfig(task="binary"), registry).check()  # cosine is there for it
    Pipeline(DistillConfig(task="multiclass"), registry).check()  # rank likewise
    Pipeline(DistillConfig(task="regression", alignment_weight=0.0), registry).check()  # plain: no loss needed
    monkeypatch.setenv(DISABLE_ENV, "gbdt2nn-mse,gbdt2nn-cosine")
    with pytest.raises(ConfigError, match="pip install gbdt2nn-mse"):  # the fallback, not there either
        Pipeline(DistillConfig(task="binary"), Registry()).check()


def test_loss_options_need_a_named_loss() -> None:
    with pytest.raises(ConfigError, match=r"alignment_options.*name the loss they are for"):
        DistillConfig(alignment_options={"temperature": 0.5})
    assert DistillConfig(alignment="rank", alignment_options={"temperature": 0.5}).alignment_options == {
        "temperature": 0.5
    }
    with pytest.raises(ConfigError, match="alignment"):
        DistillConfig(alignment="")


def _wine_estimator(*, epochs: int, alignment_weight: float) -> GBDT2NNClassifier:
    """A small classifier fitted on wine (multiclass: auto takes rank when it aligns)."""
    data = load_wine(as_frame=True)
    return GBDT2NNClassifier(
        teacher_options=WINE_CONFIG["teacher_options"],
        student_options={"n_groups": 6, "hidden": (16, 16), "batch_size": 32},
        epochs=epochs,
        alignment_weight=alignment_weight,
        cache_dir=False,
    ).fit(data.data, data.target)


#: What a multiclass run records about the loss auto took.
RANK_CHOICE = {"loss": "rank", "why": "auto: rank for a multiclass task"}


def _recorded_alignment(folder: Path) -> Any:
    return json.loads((folder / "config.json").read_text())["student_choices"].get("alignment")


def test_partial_fit_of_a_plain_multiclass_estimator_resolves_auto(tmp_path: Path) -> None:
    data = load_wine(as_frame=True)
    estimator = _wine_estimator(epochs=2, alignment_weight=0.0)
    assert estimator.config_.alignment == "auto"  # plain: nothing was chosen
    assert _recorded_alignment(estimator.save(tmp_path / "plain")) is None
    estimator.set_params(alignment_weight=1.0)
    before = estimator.decision_function(data.data)
    estimator.partial_fit(data.data, data.target, teacher_attributions=estimator.explain(data.data, "teacher"))
    assert not np.array_equal(before, estimator.decision_function(data.data))
    assert _recorded_alignment(estimator.save(tmp_path / "updated")) == RANK_CHOICE


def test_a_saved_estimator_records_the_loss_auto_took_and_why(tmp_path: Path) -> None:
    estimator = _wine_estimator(epochs=1, alignment_weight=1.0)
    recorded = json.loads((estimator.save(tmp_path / "fitted") / "config.json").read_text())
    assert (recorded["alignment"], recorded["student_choices"]["alignment"]) == ("rank", RANK_CHOICE)
    assert "batch_size" in recorded["student_choices"]  # the student's own choices beside it
    # a loaded estimator saved again keeps the record
    again = GBDT2NNClassifier.load(tmp_path / "fitted").save(tmp_path / "again")
    assert _recorded_alignment(again) == RANK_CHOICE
