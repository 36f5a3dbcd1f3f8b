"""``--threads``: one setting for torch's intra-op threads, the teacher's training threads and its TreeSHAP threads.

References: what torch reports while the run trains, the parameters LightGBM's own ``lgb.train`` receives, the
thread count LightGBM's TreeSHAP call receives, and ``config.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from gbdt2nn_core.cli import main
from gbdt2nn_core.experiment import ExperimentConfig
from gbdt2nn_core.kit.booster_teacher import available_cores
from gbdt2nn_core.pipeline import DistillConfig, Pipeline

TARGET = "income_gt_50k"
SMALL = ["--teacher-option", "n_estimators=5", "--student-option", "n_groups=2", "--student-option", "hidden=[8]"]


class _Seen:
    """What the run handed to torch, to ``lgb.train`` and to LightGBM's TreeSHAP."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import gbdt2nn_lightgbm.teacher as lightgbm_teacher

        self.torch_threads: list[int] = []
        self.train_params: list[dict[str, Any]] = []
        self.shap_threads: list[int] = []
        real_train, real_fit = lightgbm_teacher.lgb.train, Pipeline.train
        real_contribs = lightgbm_teacher.LightGBMTeacher.predict_contribs_threaded

        def train(params: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            self.train_params.append(dict(params))
            return real_train(params, *args, **kwargs)

        def fit(pipeline: Pipeline, *args: Any, **kwargs: Any) -> Any:
            self.torch_threads.append(torch.get_num_threads())
            return real_fit(pipeline, *args, **kwargs)

        def contribs(teacher: Any, booster: Any, X: pd.DataFrame, threads: int) -> Any:
            self.shap_threads.append(threads)
            return real_contribs(teacher, booster, X, threads)

        monkeypatch.setattr(lightgbm_teacher.lgb, "train", train)
        monkeypatch.setattr(Pipeline, "train", fit)
        monkeypatch.setattr(lightgbm_teacher.LightGBMTeacher, "predict_contribs_threaded", contribs)


@pytest.fixture
def small_csv(adult_tiny: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("GBDT2NN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    adult_tiny.to_csv("small.csv", index=False)
    return ["distill", "--data", "small.csv", "--target", TARGET, "--epochs", "1", *SMALL]


def test_threads_pins_torch_the_teacher_and_treeshap_and_is_recorded(
    small_csv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen = _Seen(monkeypatch)
    before = torch.get_num_threads()
    threads = 3 if before != 3 else 2
    assert main([*small_csv, "--out", "run", "--threads", str(threads)]) == 0
    assert seen.torch_threads == [threads]  # while the student trained
    assert [params["num_threads"] for params in seen.train_params] == [threads]
    assert seen.shap_threads
    assert set(seen.shap_threads) == {threads}
    assert json.loads((tmp_path / "run" / "config.json").read_text())["threads"] == threads
    assert torch.get_num_threads() == before  # put back for the caller


def test_by_default_every_core_is_used_and_the_number_recorded(
    small_csv: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen = _Seen(monkeypatch)
    assert main([*small_csv, "--out", "run"]) == 0
    cores = available_cores()
    assert seen.torch_threads == [cores]
    assert [params["num_threads"] for params in seen.train_params] == [cores]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["threads"] == cores


def test_a_thread_option_given_to_the_teacher_wins_for_its_training(
    small_csv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _Seen(monkeypatch)
    assert main([*small_csv, "--out", "run", "--threads", "2", "--teacher-option", "n_jobs=1"]) == 0
    (params,) = seen.train_params
    assert params["n_jobs"] == 1
    assert "num_threads" not in params  # one thread setting reaches LightGBM, the user's
    assert set(seen.shap_threads) == {2}


def test_the_run_file_and_the_experiment_carry_threads(
    adult_tiny: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gbdt2nn_core.cli import build_parser
    from gbdt2nn_core.cli.distill_cmd import _settings

    path = tmp_path / "run.toml"
    path.write_text("[run]\nthreads = 2\n")
    assert _settings(build_parser().parse_args(["distill", "--config", str(path)]))["config"]["threads"] == 2
    args = build_parser().parse_args(["distill", "--config", str(path), "--threads", "1"])
    assert _settings(args)["config"]["threads"] == 1
    assert ExperimentConfig(dataset="adult", threads=2).distill_config(0).threads == 2
    # the pipeline's teacher trains and explains on the config's threads (an estimator or script, no CLI)
    seen = _Seen(monkeypatch)
    pipeline = Pipeline(DistillConfig(threads=2, teacher_options={"n_estimators": 3}))
    split = pipeline.split(adult_tiny, TARGET)
    teacher = pipeline.teacher().fit(split.train_frame, split.y_train, task=split.task)
    teacher.shap_values(split.train_frame.iloc[:20])
    assert [params["num_threads"] for params in seen.train_params] == [2]
    assert seen.shap_threads == [2]
