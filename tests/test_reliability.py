"""Issue 10: what the bad-input catalogue cannot show in one line.

Stale temporaries of killed writers (a real ``kill -9`` in a child process), cache entries that do not match
their rows, a tampered ``student.json`` that must not allocate, integer categories served from CSV, large
regression targets, BatchNorm batches. Each test checks against an independent reference: the teacher's own
TreeSHAP or margins, the model's in-memory predictions, the file system after a rerun.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pytest
import torch

from gbdt2nn_core.data.cache import ExplanationCache
from gbdt2nn_core.errors import ConfigError, Gbdt2nnWarning, ModelFileError
from gbdt2nn_core.model_files import staged_folder, sweep_temporaries, write_atomic

if TYPE_CHECKING:
    from conftest import TeacherOnRows

    from gbdt2nn_core.pipeline.distill import DistillConfig


# ------------------------------------------------------------------------------------------- kill -9
def _run_killed(script: str, cwd: Path) -> None:
    """Run ``script`` in a child Python that SIGKILLs itself where the script says; check that it died so."""
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=cwd, capture_output=True, text=True)
    assert child.returncode == -signal.SIGKILL, child.stderr


_KILL = "import os, signal; kill = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_file_write_killed_before_its_rename_is_swept_by_the_next_write(tmp_path: Path) -> None:
    _run_killed(
        f"""
        {_KILL}
        from gbdt2nn_core import model_files
        model_files.os.replace = kill  # dies with the data written, before the rename
        model_files.write_atomic("pred.csv", b"half")
        """,
        tmp_path,
    )
    assert [name.endswith(".tmp") for name in _leftovers(tmp_path)] == [True]
    assert not (tmp_path / "pred.csv").exists()

    write_atomic(tmp_path / "pred.csv", b"complete")

    assert _leftovers(tmp_path) == []
    assert (tmp_path / "pred.csv").read_bytes() == b"complete"


def test_a_run_folder_killed_while_assembled_is_swept_by_the_next_write(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "old.txt").write_text("previous run")
    _run_killed(
        f"""
        {_KILL}
        from pathlib import Path
        from gbdt2nn_core.model_files import staged_folder
        with staged_folder(Path("run")) as staging:
            (staging / "student.json").write_text("{{}}")
            kill()
        """,
        tmp_path,
    )
    assert [name.endswith(".partial") for name in _leftovers(tmp_path)] == [True]
    assert (tmp_path / "run" / "old.txt").read_text() == "previous run"  # the previous run is untouched

    with staged_folder(tmp_path / "run") as staging:
        (staging / "new.txt").write_text("new run")

    assert _leftovers(tmp_path) == []
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["new.txt"]


def test_a_swap_killed_between_its_renames_leaves_an_old_folder_that_the_next_write_sweeps(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    _run_killed(
        f"""
        {_KILL}
        from pathlib import Path
        import gbdt2nn_core.model_files as model_files
        rename = Path.rename
        def rename_then_die(self, target):
            rename(self, target)
            if Path(target).name == ".run.old":
                kill()
        Path.rename = rename_then_die
        with model_files.staged_folder(Path("run")) as staging:
            (staging / "student.json").write_text("{{}}")
        """,
        tmp_path,
    )
    assert ".run.old" in _leftovers(tmp_path)

    with staged_folder(tmp_path / "run") as staging:
        (staging / "student.json").write_text("{}")

    assert _leftovers(tmp_path) == []


def test_a_treeshap_cache_write_killed_midway_is_swept_and_recomputed(
    adult_teacher: TeacherOnRows, tmp_path: Path
) -> None:
    """The child trains the same small teacher as the fixture and is killed while writing its cache entry."""
    cache = tmp_path / "cache"
    _run_killed(
        f"""
        {_KILL}
        import numpy as np
        from gbdt2nn_core import model_files
        from gbdt2nn_core.data.cache import ExplanationCache
        from gbdt2nn_core.data import TabularSchema, TargetEncoder, load_bundled, split_features_target
        from gbdt2nn_core.host.registry import Registry

        frame = load_bundled("adult").frame.sample(400, random_state=2).reset_index(drop=True)
        features, target = split_features_target(frame, "income_gt_50k")
        X = TabularSchema.infer(features).to_frame(features)
        y = TargetEncoder.fit(target, "binary").transform(target)
        teacher = Registry().teacher("lightgbm", n_estimators=20, num_leaves=15, num_threads=1)
        teacher.fit(X, y, task="binary", seed=0)
        model_files.os.fsync = kill  # dies inside the entry's write
        ExplanationCache({str(cache)!r}).get_or_compute(teacher, X, "path-dependent", lambda: teacher.shap_values(X))
        """,
        tmp_path,
    )
    assert [p.suffix for p in cache.iterdir()] == [".tmp"]

    teacher, X = adult_teacher.teacher, adult_teacher.X
    result = ExplanationCache(cache).get_or_compute(teacher, X, "path-dependent", lambda: teacher.shap_values(X))

    assert [p.suffix for p in cache.iterdir()] == [".npz"]
    native = teacher.native_model.predict(X, pred_contrib=True)
    np.testing.assert_allclose(result.values, native[:, :-1], atol=1e-12)


def test_temporaries_of_live_writers_and_of_other_names_are_kept(tmp_path: Path) -> None:
    mine = tmp_path / f".model.pt.{os.getpid()}.abc123.tmp"
    other_name = tmp_path / ".model.pt.old.99999999.x.tmp"  # a temporary of the file 'model.pt.old'
    for path in (mine, other_name):
        path.write_bytes(b"")
    dead = tmp_path / ".model.pt.99999999.abc123.tmp"  # process ids stop far below this
    dead.write_bytes(b"")

    assert sweep_temporaries(tmp_path, ".model.pt.", ".tmp") == [dead]
    assert mine.exists()
    assert other_name.exists()


def test_a_symlinked_out_is_written_through(tmp_path: Path) -> None:
    (tmp_path / "runs" / "2024").mkdir(parents=True)
    (tmp_path / "runs" / "2024" / "stale.txt").write_text("old")
    link = tmp_path / "latest"
    link.symlink_to(tmp_path / "runs" / "2024")

    with staged_folder(link) as staging:
        (staging / "student.json").write_text("{}")

    assert link.is_symlink()
    assert sorted(p.name for p in link.iterdir()) == ["student.json"]
    assert _leftovers(tmp_path) == []
    assert _leftovers(tmp_path / "runs") == []


# ------------------------------------------------------------------------------------------- TreeSHAP cache
def test_swapped_cache_entries_are_recomputed_with_a_warning(adult_teacher: TeacherOnRows, tmp_path: Path) -> None:
    teacher, X = adult_teacher.teacher, adult_teacher.X
    small, large = X.head(100), X.head(300)
    cache = ExplanationCache(tmp_path)
    for rows in (small, large):
        cache.get_or_compute(teacher, rows, "path-dependent", lambda rows=rows: teacher.shap_values(rows))
    path_small = tmp_path / f"treeshap-{cache.key(teacher, small, 'path-dependent')}.npz"
    path_large = tmp_path / f"treeshap-{cache.key(teacher, large, 'path-dependent')}.npz"
    swap = tmp_path / "swap"
    path_small.rename(swap)
    path_large.rename(path_small)
    swap.rename(path_large)

    fresh = ExplanationCache(tmp_path)
    with pytest.warns(Gbdt2nnWarning, match=r"does not match its rows .*; recomputing it"):
        result = fresh.get_or_compute(teacher, small, "path-dependent", lambda: teacher.shap_values(small))

    native = teacher.native_model.predict(small, pred_contrib=True)
    np.testing.assert_allclose(result.values, native[:, :-1], atol=1e-12)
    assert fresh.misses == 1
    # the entry was replaced: the next read is a hit, without a warning
    again = ExplanationCache(tmp_path)
    again.get_or_compute(teacher, small, "path-dependent", lambda: pytest.fail("recomputed twice"))
    assert again.hits == 1


@pytest.mark.parametrize("below", [False, True])
def test_a_cache_dir_that_cannot_be_a_folder_fails_before_the_teacher_trains(
    below: bool, adult_tiny: pd.DataFrame, small_config: Callable[..., DistillConfig], tmp_path: Path
) -> None:
    from gbdt2nn_core.pipeline.distill import distill

    blocker = tmp_path / "cachefile"
    blocker.write_text("a file")
    steps: list[str] = []

    class Recorder:
        @contextlib.contextmanager
        def step(self, description: str, total: float | None = None) -> Iterator[None]:
            steps.append(description)
            yield

        def advance(self, amount: float = 1.0, **fields: Any) -> None:
            pass

    config = small_config(cache_dir=str(blocker / "sub" if below else blocker))
    with pytest.raises(ConfigError, match="is a file, not a folder") as info:
        distill(adult_tiny, "income_gt_50k", config, progress=Recorder())
    assert info.value.setting == "cache_dir"
    assert steps == []


# ------------------------------------------------------------------------------------------- model files
def test_a_tampered_hidden_size_is_refused_before_the_network_is_built(
    adult_run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10: a ``hidden`` of [6000, 6000] allocated 1.8 GB before the weights were compared with it."""
    import json

    from gbdt2nn_core.pipeline import persistence
    from gbdt2nn_core.pipeline.runfolder import write_run

    write_run(tmp_path / "run", adult_run)
    path = tmp_path / "run" / "student.json"
    metadata = json.loads(path.read_text())
    metadata["student_state"]["architecture"]["hidden"] = [6000, 6000]
    path.write_text(json.dumps(metadata))
    built: list[tuple[int, ...]] = []
    from gbdt2nn_core.student import gbdt2nn

    real = gbdt2nn.GBDT2NNModule

    def spy(**kwargs: Any) -> Any:
        built.append(tuple(kwargs["hidden"]))
        return real(**kwargs)

    monkeypatch.setattr(gbdt2nn, "GBDT2NNModule", spy)  # where the loaded student builds its network
    with pytest.raises(ModelFileError, match=r"declares mlp\.hidden\.0\.weight of shape \[4, \d+, 6000\]"):
        persistence.load_model(tmp_path / "run")
    assert built == []


def test_an_intact_run_folder_passes_the_file_checks(adult_run: Any, tmp_path: Path) -> None:
    import json

    from gbdt2nn_core.pipeline.persistence import load_model
    from gbdt2nn_core.pipeline.runfolder import write_run
    from gbdt2nn_core.student.file_checks import check_saved_student

    write_run(tmp_path / "run", adult_run)
    metadata = json.loads((tmp_path / "run" / "student.json").read_text())
    view = {**metadata, "config": metadata["student_options"], **metadata["student_state"]}  # as load_model reads it
    check_saved_student(metadata["student"], view, tmp_path / "run" / "student.safetensors")
    frame = adult_run.data.test_frame.head(50)
    in_memory = adult_run.student.predict_margin(adult_run.data.encoder.transform(frame))
    np.testing.assert_array_equal(load_model(tmp_path / "run").predict_margin(frame), in_memory)


# ------------------------------------------------------------------------------------------- serving
def test_integer_categories_served_from_csv_predict_like_the_model_in_memory(
    adult_tiny: pd.DataFrame,
    small_config: Callable[..., DistillConfig],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 10 (6): every row was reported as an unseen category although the predictions were right."""
    from gbdt2nn_core.cli import main
    from gbdt2nn_core.pipeline.distill import distill
    from gbdt2nn_core.pipeline.runfolder import write_run

    frame = adult_tiny[["age", "hours-per-week", "income_gt_50k"]].copy()
    frame["grade"] = pd.Categorical(adult_tiny["educational-num"] // 4)
    run = distill(frame, "income_gt_50k", small_config(alignment_weight=0.0))
    write_run(tmp_path / "run", run)
    rows = frame.drop(columns=["income_gt_50k"]).head(100).assign(grade=lambda f: f["grade"].astype(int))
    rows.to_csv(tmp_path / "rows.csv", index=False)

    assert (
        main(
            [
                "predict",
                "--model",
                str(tmp_path / "run"),
                "--data",
                str(tmp_path / "rows.csv"),
                "--out",
                str(tmp_path / "p.csv"),
            ]
        )
        == 0
    )

    assert "note" not in capsys.readouterr().err
    written = pd.read_csv(tmp_path / "p.csv")
    encoder = run.data.encoder
    in_memory = run.student.predict_margin(encoder.transform(encoder.schema.to_frame(frame.head(100))))
    np.testing.assert_allclose(written["margin"], in_memory, rtol=1e-6)


def test_a_large_regression_target_trains_and_follows_its_teacher(
    california_small: pd.DataFrame, small_config: Callable[..., DistillConfig]
) -> None:
    """Issue 10 (8): a target in the 1e20s made the squared errors overflow and the run end in NaN metrics.

    The reference is the teacher's margins; the same student on the target in its own unit shows how closely a
    student of this size follows them at all.
    """
    from gbdt2nn_core.pipeline.distill import distill

    def margin_r2(multiplier: float) -> float:
        frame = california_small.assign(MedHouseVal=california_small["MedHouseVal"] * multiplier)
        config = small_config(alignment_weight=0.0, task="regression", student_options={"epochs": 10})
        run = distill(frame, "MedHouseVal", config)
        test = run.data.test_frame
        student = run.student.predict_margin(run.data.encoder.transform(test))
        teacher = run.teacher.predict_margin(test)
        assert np.isfinite(student).all()
        return float(1 - np.sum((student - teacher) ** 2) / np.sum((teacher - teacher.mean()) ** 2))

    plain = margin_r2(1.0)
    assert plain > 0.4
    assert margin_r2(1e20) > plain - 0.2


def test_an_online_update_on_a_large_regression_target_trains_in_its_scaled_unit() -> None:
    """Issue 10 (8), online: squared errors of a 1e20 target overflow float32, so the update used to stop at once."""
    from gbdt2nn_core.student.kit import target_scale
    from gbdt2nn_core.student.online import online_update

    rng = np.random.default_rng(0)
    z = rng.normal(size=(64, 5)).astype(np.float32)
    y = (z @ rng.normal(size=5) + 3.0) * 1e20
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(5, 1), torch.nn.Flatten(0))
    with torch.no_grad():
        before = module(torch.as_tensor(z)).numpy().astype(np.float64)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.0)  # no step: the reported loss is the starting one
    records = online_update(module, z, y, task="regression", optimizer=optimizer, batch_size=64)
    scale = target_scale("regression", y)
    assert scale > 1e19
    # the reference: numpy's mean squared error of the untouched module, in the same power-of-two unit
    assert records[0]["task_loss"] == pytest.approx(np.mean(((before - y) / scale) ** 2), rel=1e-5)


def test_a_last_one_row_batch_joins_the_batch_before_it() -> None:
    from gbdt2nn_core.student.batchnorm import row_batches

    assert [b.tolist() for b in row_batches(torch.arange(5), 2)] == [[0, 1], [2, 3, 4]]
    assert [b.tolist() for b in row_batches(torch.arange(4), 2)] == [[0, 1], [2, 3]]
    assert [len(b) for b in row_batches(torch.arange(1025), 512)] == [512, 513]


# ------------------------------------------------------------------------------------------- kill -9 during distill
_DISTILL = [
    "distill", "--data", "train.csv", "--target", "income_gt_50k", "--out", "out", "--epochs", "1",
    "--teacher-option", "n_estimators=5", "--teacher-option", "num_threads=1",
    "--student-option", "n_groups=2", "--student-option", "hidden=[8]",
]  # fmt: skip

_KILL_POINTS = {
    # dies writing the first TreeSHAP cache entry
    "treeshap cache": "from gbdt2nn_core import model_files\nmodel_files.os.fsync = kill",
    # dies with the run folder assembled, before it is renamed into place
    "run folder": textwrap.dedent(
        """
        from pathlib import Path
        rename = Path.rename
        Path.rename = lambda self, target: kill() if Path(target).name == "out" else rename(self, target)
        """
    ),
    # dies while the teacher trains, before anything is written: the run again must simply start over
    "teacher": "import lightgbm\nlightgbm.train = lambda *args, **kwargs: kill()",
}
#: Kill points where nothing has been written yet, so the kill leaves no temporaries to sweep.
_KILL_POINTS_BEFORE_WRITING = {"teacher"}


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """One torch thread for this test even if an earlier test changed it: the run again resumes from the killed
    child's checkpoint, so this process must compute like that child (OMP_NUM_THREADS=1) to end the same."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("point", list(_KILL_POINTS))
@pytest.mark.usefixtures("one_torch_thread")
def test_distill_killed_then_run_again_leaves_no_temporaries_and_the_same_metrics(
    point: str, adult_dataset: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from gbdt2nn_core.cli import main

    adult_dataset.frame.sample(300, random_state=6).to_csv(tmp_path / "train.csv", index=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GBDT2NN_CACHE_DIR", str(tmp_path / "cache"))
    _run_killed(f"{_KILL}\n{_KILL_POINTS[point]}\nfrom gbdt2nn_core.cli import main\nmain({_DISTILL!r})", tmp_path)
    cache = tmp_path / "cache"
    stale = [
        p.name for p in (*tmp_path.iterdir(), *(cache.iterdir() if cache.is_dir() else ())) if p.name.startswith(".")
    ]
    if point in _KILL_POINTS_BEFORE_WRITING:
        assert not (tmp_path / "out").exists()
        assert stale == []
    else:
        assert stale, "the kill left nothing behind: it did not happen where intended"

    assert main(_DISTILL) == 0

    left = [p.name for p in (*tmp_path.iterdir(), *(tmp_path / "cache").iterdir()) if p.name.startswith(".")]
    assert left == []
    assert main([*_DISTILL[:6], "uninterrupted", *_DISTILL[7:]]) == 0
    metrics = [json.loads((tmp_path / name / "metrics.json").read_text()) for name in ("out", "uninterrupted")]
    assert metrics[0]["student"] == metrics[1]["student"]


def test_an_online_update_that_diverges_stops_at_once_with_a_training_error(adult_run: Any) -> None:
    import copy

    from gbdt2nn_core.errors import TrainingError
    from gbdt2nn_core.student.online import online_update

    module = copy.deepcopy(adult_run.student.module)
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e308)
    data = adult_run.data
    with pytest.raises(TrainingError, match=r"pass 1 of the online update: the loss became infinite or NaN; lower"):
        online_update(module, data.z_train, data.y_train, task="binary", optimizer=optimizer, batch_size=64)


def test_the_estimator_checks_its_cache_folder_before_the_teacher_trains(
    adult_tiny: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gbdt2nn_core.host.registry import get_registry
    from gbdt2nn_core.pipeline.estimator import GBDT2NNClassifier

    (tmp_path / "cachefile").write_text("a file")
    teacher_type = type(get_registry().teacher("lightgbm"))
    monkeypatch.setattr(teacher_type, "fit", lambda *a, **k: pytest.fail("the teacher trained first"))
    estimator = GBDT2NNClassifier(cache_dir=tmp_path / "cachefile", epochs=1)
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        estimator.fit(adult_tiny.drop(columns=["income_gt_50k"]), adult_tiny["income_gt_50k"])
