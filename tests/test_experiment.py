"""``gbdt2nn experiment``: configurations, shared teachers, resume after an interruption or ``kill -9``, CLI errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gbdt2nn_core.cli import main
from gbdt2nn_core.errors import ConfigError, DataError
from gbdt2nn_core.experiment import Configuration, ExperimentConfig, ExperimentRunner, plan, read_experiment_file
from gbdt2nn_core.experiment.results import collect_results

TARGET = "income_gt_50k"


def _metrics(out: Path) -> dict[str, dict[str, Any]]:
    """Every run's numbers (without wall times and resume bookkeeping), keyed by ``seed/configuration``."""
    found = {}
    for path in sorted(out.glob("runs/*/*/metrics.json")):
        metrics = json.loads(path.read_text())
        found[f"{path.parent.parent.name}/{path.parent.name}"] = {
            k: v for k, v in metrics.items() if k not in ("timings", "resumed_from_epoch")
        }
    return found


def _events(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def _toml(path: Path, csv: Path, settings: dict[str, Any]) -> Path:
    """The settings of the ``small_experiment`` fixture as an experiment file, for the CLI."""
    teacher = ", ".join(f"{k} = {v}" for k, v in settings["teacher_options"].items())
    student = ", ".join(
        f"{k} = {list(v) if isinstance(v, tuple) else v}" for k, v in settings["student_options"].items()
    )
    path.write_text(
        f"""
[data]
path = "{csv.as_posix()}"
target = "{TARGET}"

[teacher]
options = {{ {teacher} }}

[student]
options = {{ {student} }}

[experiment]
seeds = {settings["seeds"]}
attributors = {json.dumps(settings["attributors"])}
losses = {json.dumps(settings["losses"])}
monitor_rows = {settings["monitor_rows"]}
threads = {settings["threads"]}

[imitation]
hidden = {settings["imitation"]["hidden"]}
""",
        encoding="utf-8",
    )
    return path


# ------------------------------------------------------------------------------------------------ configuration
def test_plan_runs_plain_then_independent_then_every_joint_pair() -> None:
    config = ExperimentConfig(alignment_weights={"rank": 0.5})
    configurations = plan(config, ("structure", "gradient"), ("mse", "rank"))
    assert [c.name for c in configurations] == [
        "plain",
        "independent",
        "joint-structure-mse",
        "joint-structure-rank",
        "joint-gradient-mse",
        "joint-gradient-rank",
    ]
    assert configurations[3] == Configuration(
        name="joint-structure-rank", kind="joint", attributor="structure", loss="rank", weight=0.5
    )
    assert plan(ExperimentConfig(independent=False), ("structure",), ("mse",))[1].name == "joint-structure-mse"


def test_seeds_are_a_count_or_a_list() -> None:
    assert ExperimentConfig().seeds == (0, 1, 2, 3, 4)
    assert ExperimentConfig(seeds=3).seeds == (0, 1, 2)
    assert ExperimentConfig(seeds=[7, 42]).seeds == (7, 42)
    for bad in (0, [1, 1], [-1], "3", True):
        with pytest.raises(ConfigError) as caught:
            ExperimentConfig(seeds=bad)
        assert caught.value.setting == "seeds"


def test_attributors_and_losses_accept_comma_separated_names() -> None:
    config = ExperimentConfig(attributors="structure, gradient-x-input", losses=["mse"])
    assert config.attributors == ("structure", "gradient-x-input")
    assert config.losses == ("mse",)
    with pytest.raises(ConfigError, match="name each plugin once"):
        ExperimentConfig(losses="mse,mse")


def test_experiment_file_is_read_and_unknown_keys_are_one_line_errors(tmp_path: Path) -> None:
    path = tmp_path / "experiment.toml"
    path.write_text(
        '[data]\ndataset = "california"\n[experiment]\nseeds = [1, 2]\nlosses = ["rank"]\n'
        "[attributor_options]\nintegrated-gradients = { steps = 4 }\n[imitation]\nhidden = [64]\n"
    )
    settings = read_experiment_file(path)
    assert settings["data"] == {"dataset": "california"}
    assert settings["attributor_options"] == {"integrated-gradients": {"steps": 4}}

    path.write_text("[experiment]\nseeds = 2\nepoch = 3\n")
    with pytest.raises(ConfigError) as caught:
        read_experiment_file(path)
    message = str(caught.value)
    assert "\n" not in message
    assert "[experiment] key='epoch'" in message
    assert "seeds" in message

    path.write_text("[run]\nseed = 1\n")
    with pytest.raises(ConfigError, match=r"use the sections \[data\], \[teacher\], \[student\], \[experiment\]"):
        read_experiment_file(path)


@pytest.mark.parametrize(
    "path", sorted((Path(__file__).parents[1] / "examples").glob("experiment-*.toml")), ids=lambda p: p.name
)
def test_shipped_experiment_files_are_valid(path: Path) -> None:
    # RESULTS.md quotes these files as the commands behind its tables: they must stay runnable
    from gbdt2nn_core.cli import build_parser
    from gbdt2nn_core.cli.experiment_cmd import _settings

    config, other = _settings(build_parser().parse_args(["experiment", "--config", str(path)]))
    experiment = ExperimentConfig(**config)
    assert experiment.dataset in {"adult", "california"}
    assert str(other["out"]).startswith("runs/experiment-")


def test_cli_flags_override_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gbdt2nn_core.cli import build_parser
    from gbdt2nn_core.cli.experiment_cmd import _settings

    path = tmp_path / "experiment.toml"
    path.write_text(
        '[data]\ndataset = "adult"\n[student]\noptions = { epochs = 5 }\n[experiment]\nseeds = 4\n'
        "alignment_min_rows = 300\n"
    )
    assert _settings(build_parser().parse_args(["experiment", "--config", str(path)]))[0]["alignment_min_rows"] == 300
    flags = ["--seeds", "2", "--epochs", "3", "--dataset", "california", "--alignment-min-rows", "0"]
    args = build_parser().parse_args(["experiment", "--config", str(path), *flags])
    config, other = _settings(args)
    assert config["seeds"] == 2
    assert ExperimentConfig(**config).distill_config(0).alignment_min_rows == 0
    assert config["student_options"] == {"epochs": 3}
    assert config["dataset"] == "california"
    assert other["out"] is None


# ------------------------------------------------------------------------------------------------ the run
def test_experiment_trains_every_configuration_per_seed(
    small_experiment: Path, small_experiment_settings: dict[str, Any]
) -> None:
    runs = sorted(
        p.parent.relative_to(small_experiment / "runs").as_posix()
        for p in small_experiment.glob("runs/*/*/metrics.json")
    )
    assert runs == [f"{seed}/{name}" for seed in (0, 1) for name in ("independent", "joint-structure-mse", "plain")]
    assert not list(small_experiment.glob("runs/*/*/checkpoint.pt"))  # removed once a configuration is complete
    for seed in (0, 1):
        plain = json.loads((small_experiment / f"runs/{seed}/plain/metrics.json").read_text())
        joint = json.loads((small_experiment / f"runs/{seed}/joint-structure-mse/metrics.json").read_text())
        independent = json.loads((small_experiment / f"runs/{seed}/independent/metrics.json").read_text())
        assert set(plain["student"]["agreement_by_attributor"]) == {"structure"}
        assert joint["configuration"]["weight"] == 1.0
        # independent imitation cannot change the prediction: it is the plain student's
        assert independent["student"]["test"] == plain["student"]["test"]
        assert set(independent["student"]["agreement_by_attributor"]) == {"imitation"}
        history = json.loads((small_experiment / f"runs/{seed}/joint-structure-mse/history.json").read_text())
        assert len(history["epochs"]) == small_experiment_settings["student_options"]["epochs"]
        assert {"spearman/structure", "cosine/structure", "val_auc"} <= set(history["epochs"][0]["extra"])
        assert history["epochs"][0]["alignment_loss"] > 0


def test_teacher_and_treeshap_are_computed_once_per_seed(small_experiment: Path) -> None:
    # one booster per seed, and one cache entry per (seed, rows): the test rows, the aligned share of the training
    # rows (joint students) and every training row (the independent imitation), shared by every configuration
    assert len(list(small_experiment.glob("runs/*/teacher/teacher.txt"))) == 2
    assert len(list((small_experiment / "cache").glob("treeshap-*.npz"))) == 6
    starts = [e for e in _events(small_experiment) if e["event"] == "start"]
    assert len(starts) == 6
    record = json.loads((small_experiment / "runs/0/teacher/teacher.json").read_text())
    assert record["timings"]["teacher_s"] > 0
    assert record["timings"]["treeshap_s"] > 0
    assert record["timings"]["treeshap_cache_hits"] == 0


class _Interrupted(Exception):
    """Stands in for a kill: raised from inside the training loop."""


def test_interrupted_experiment_resumes_and_equals_an_uninterrupted_one(
    small_experiment: Path,
    small_experiment_settings: dict[str, Any],
    experiment_csv: Path,
    tmp_path: Path,
    single_thread_torch: None,
) -> None:
    from gbdt2nn_core.data import read_table

    config = ExperimentConfig(data=str(experiment_csv), target=TARGET, **small_experiment_settings)
    frame = read_table(experiment_csv)
    out = tmp_path / "experiment"

    def interrupt(configuration: Configuration, seed: int, epoch: int) -> None:
        if configuration.name == "joint-structure-mse" and seed == 1 and epoch == 1:
            raise _Interrupted

    runner = ExperimentRunner(config, out, frame=frame, target=TARGET, data_source="csv", on_epoch_end=interrupt)
    with pytest.raises(_Interrupted):
        runner.run()
    checkpoint = out / "runs/1/joint-structure-mse/checkpoint.pt"
    assert checkpoint.is_file()
    assert not (checkpoint.parent / "metrics.json").exists()
    finished = {p.stat().st_mtime_ns for p in out.glob("runs/*/*/metrics.json")}
    assert len(finished) == 5

    with pytest.raises(DataError, match="pass --resume"):
        ExperimentRunner(config, out, frame=frame, target=TARGET, data_source="csv").run()
    ExperimentRunner(config, out, frame=frame, target=TARGET, data_source="csv", resume=True).run()

    events = _events(out)
    resumed_at = max(i for i, e in enumerate(events) if e["event"] == "open")
    restarted = [(e["seed"], e["run"]) for e in events[resumed_at:] if e["event"] == "start"]
    assert restarted == [(1, "joint-structure-mse")]  # nothing that had finished was trained again
    done = next(e for e in events[resumed_at:] if e["event"] == "done")
    assert done["resumed_from_epoch"] == 1  # epoch 0 came from the checkpoint
    assert finished <= {p.stat().st_mtime_ns for p in out.glob("runs/*/*/metrics.json")}
    assert _metrics(out) == _metrics(small_experiment)


def test_resume_refuses_other_settings(
    small_experiment: Path, small_experiment_settings: dict[str, Any], experiment_csv: Path
) -> None:
    from gbdt2nn_core.data import read_table

    config = ExperimentConfig(data=str(experiment_csv), target=TARGET, **{**small_experiment_settings, "seeds": 3})
    runner = ExperimentRunner(
        config, small_experiment, frame=read_table(experiment_csv), target=TARGET, data_source="csv", resume=True
    )
    with pytest.raises(ConfigError) as caught:
        runner.run()
    assert "seeds=[0, 1]" in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_kill_9_loses_at_most_one_epoch_and_resume_completes(
    small_experiment: Path, small_experiment_settings: dict[str, Any], experiment_csv: Path, tmp_path: Path
) -> None:
    config = _toml(tmp_path / "experiment.toml", experiment_csv, small_experiment_settings)
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "gbdt2nn_core.cli", "experiment", "--config", str(config), "--out", str(out)]
    environment = {**os.environ, "GBDT2NN_STRICT_PLUGINS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment)
    deadline = time.monotonic() + 240
    try:
        while not list(out.glob("runs/*/*/checkpoint.pt")):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    f"no checkpoint appeared (exit {process.returncode}): {process.stderr.read().decode()[-500:]}"
                )  # type: ignore[union-attr]
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
        if process.stderr is not None:
            process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    before = {p.parent.name + p.parent.parent.name: p.stat().st_mtime_ns for p in out.glob("runs/*/*/metrics.json")}
    assert len(before) < 6  # killed before the end

    resumed = subprocess.run(
        [*command, "--resume"], capture_output=True, text=True, env=environment, timeout=300, check=False
    )
    assert resumed.returncode == 0, resumed.stderr[-1000:]
    after = {p.parent.name + p.parent.parent.name: p.stat().st_mtime_ns for p in out.glob("runs/*/*/metrics.json")}
    assert all(after[key] == stamp for key, stamp in before.items())  # finished configurations were not redone
    events = _events(out)
    resumed_at = max(i for i, e in enumerate(events) if e["event"] == "open")
    restarted = {(str(e["seed"]), e["run"]) for e in events[resumed_at:] if e["event"] == "start"}
    assert len(restarted) == 6 - len(before)
    assert _metrics(out) == _metrics(small_experiment)
    assert collect_results(out, write=False)["complete"]


# ------------------------------------------------------------------------------------------------ CLI errors
def test_cli_misspelt_attributor_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never"
    code = main(["experiment", "--attributors", "structre", "--out", str(out), "--seeds", "1"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1
    assert "Did you mean 'structure'" in captured.err
    assert not out.exists()


def test_cli_rejects_a_non_differentiable_or_unknown_loss(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["experiment", "--losses", "l1", "--out", str(tmp_path / "never")])
    assert code == 2
    assert "alignment loss" in capsys.readouterr().err


def test_cli_rejects_data_and_dataset_together(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["experiment", "--data", str(tmp_path / "x.csv"), "--dataset", "adult", "--target", "y"])
    assert code == 2
    assert "only one" in capsys.readouterr().err


def test_cli_report_only_on_a_folder_without_experiment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["experiment", "--report-only", "--out", str(tmp_path)])
    assert code == 2
    assert "holds no experiment" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ recalibration
def test_recalibrated_batchnorm_statistics_do_not_depend_on_the_old_ones() -> None:
    import numpy as np
    import torch

    from gbdt2nn_core.experiment.recalibrate import recalibrate_batchnorm

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.ReLU()).eval()
    z = np.random.default_rng(0).normal(size=(300, 4)).astype(np.float32)
    module[1].running_mean.fill_(5.0)
    recalibrate_batchnorm(module, z, batch_size=100)
    first = module[1].running_mean.clone()
    module[1].running_mean.fill_(-3.0)
    recalibrate_batchnorm(module, z, batch_size=100)
    torch.testing.assert_close(module[1].running_mean, first)
    with torch.no_grad():
        expected = module[0](torch.as_tensor(z)).reshape(3, 100, 3).mean(dim=1).mean(dim=0)
    torch.testing.assert_close(first, expected)
    assert not module.training
    assert module[1].momentum == 0.1


def test_the_batchnorm_pass_of_a_reevaluation_batches_as_the_student_trained() -> None:
    """The size a student recorded wins; a student without one is re-run at its option's size (``"auto"``: about 100
    steps an epoch, so 128 rows for 14,800) or at 512, the default before students recorded theirs."""
    from types import SimpleNamespace

    from gbdt2nn_core.experiment.recalibrate import training_batch_size

    assert training_batch_size(SimpleNamespace(batch_size_=64), {"batch_size": 512}, 14_800) == 64
    assert training_batch_size(SimpleNamespace(batch_size_=None), {"batch_size": "auto"}, 14_800) == 128
    assert training_batch_size(object(), {"batch_size": 300}, 14_800) == 300
    assert training_batch_size(object(), {}, 14_800) == 512


def test_reevaluated_copy_of_an_experiment(small_experiment: Path, tmp_path: Path) -> None:
    from gbdt2nn_core.experiment.recalibrate import reevaluate

    dest = reevaluate(small_experiment, tmp_path / "bn")
    results = json.loads((dest / "results.json").read_text())
    assert results["complete"]
    assert "**Re-evaluated** copy" in (dest / "report.md").read_text()
    for seed in (0, 1):
        plain = json.loads((dest / f"runs/{seed}/plain/metrics.json").read_text())
        independent = json.loads((dest / f"runs/{seed}/independent/metrics.json").read_text())
        original = json.loads((small_experiment / f"runs/{seed}/independent/metrics.json").read_text())
        assert plain["batchnorm"] == "recalibrated"
        # the explanation network still predicts with the plain student
        assert independent["student"]["test"] == plain["student"]["test"]
        assert independent["student"]["agreement"] == original["student"]["agreement"]


def test_options_for_a_component_the_experiment_does_not_run_are_an_error() -> None:
    from gbdt2nn_core.experiment.runner import resolve_components
    from gbdt2nn_core.host.registry import get_registry

    config = ExperimentConfig(attributors=["structure"], attributor_options={"integrated-gradients": {"steps": 4}})
    with pytest.raises(ConfigError) as caught:
        resolve_components(config, get_registry())
    assert caught.value.setting == "attributor_options.integrated-gradients"
    assert "now: structure" in str(caught.value)
    assert resolve_components(ExperimentConfig(attributors=["gradient"], losses=["rank"]), get_registry()) == (
        ("gradient",),
        ("rank",),
    )


def test_multiclass_monitors_compare_the_class_the_teacher_predicts(
    adult_dataset: Any,
    tmp_path: Path,
    small_experiment_settings: dict[str, Any],
    single_thread_torch: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every agreement a multiclass experiment measures (per-epoch monitors, the explanation network's final
    score) compares each row's explanation of the class its teacher predicts, as the pipeline's metrics do."""
    import numpy as np

    from gbdt2nn_core.experiment import run_experiment
    from gbdt2nn_core.experiment import runner as runner_module
    from gbdt2nn_core.pipeline.metrics import agreement

    calls: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []

    def recorded(student: np.ndarray, teacher: np.ndarray, **kwargs: Any) -> dict[str, float]:
        calls.append((student, teacher, kwargs.get("explained")))
        return agreement(student, teacher, **kwargs)

    monkeypatch.setattr(runner_module, "agreement", recorded)
    frame = adult_dataset.frame.sample(600, random_state=5).reset_index(drop=True)
    hours = frame.pop("hours-per-week")
    frame["hours_band"] = np.digitize(hours, [35, 45]).astype(str)  # three classes
    frame = frame.drop(columns=[TARGET])
    settings = {**small_experiment_settings, "seeds": 1, "monitor_rows": 10_000}  # every test row is monitored
    settings["student_options"] = {**settings["student_options"], "epochs": 2}
    config = ExperimentConfig(data="memory", target="hours_band", **settings)
    out = tmp_path / "multiclass"
    run_experiment(config, out, frame=frame, target="hours_band", data_source="memory")

    teacher = np.load(out / "runs/0/teacher/explanations.npz")
    predicted = teacher["teacher_margin"].argmax(axis=1)
    # plain and joint monitor 2 epochs each, the explanation network 2 epochs and its final score
    explaining = [call for call in calls if call[2] is not None]
    assert len(explaining) >= 7
    assert len(calls) - len(explaining) == 1  # the explanation network's agreement_every_class record
    for _, shap, explained in explaining:
        assert shap.shape[0] == len(predicted)
        np.testing.assert_array_equal(explained, predicted)
    independent = json.loads((out / "runs/0/independent/metrics.json").read_text())
    every_class = independent["student"]["agreement_every_class"]["spearman"]
    assert every_class != pytest.approx(independent["student"]["agreement"]["spearman"], abs=1e-3)
