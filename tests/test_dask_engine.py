"""The teacher and its TreeSHAP on Dask (issue 13, item 3), against the single-machine path.

A 2-worker ``LocalCluster`` (worker processes, one thread each) trains the teacher with the library's own
distributed engine and computes TreeSHAP one partition per task. References: the same booster saved, reloaded
and explained in this process; the teacher's own margins; the single-machine CSV reader. Every test here needs
the optional extra (``pip install 'gbdt2nn-core[dask]'``) and is skipped, by the import checks below, without it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("dask.dataframe", reason="needs the dask extra: pip install 'gbdt2nn-core[dask]'")
pytest.importorskip("distributed", reason="needs the dask extra: pip install 'gbdt2nn-core[dask]'")

from gbdt2nn_core.host.registry import get_registry
from gbdt2nn_core.pipeline import DistillConfig, Pipeline
from gbdt2nn_core.pipeline.dask_engine import (
    DaskSettings,
    dask_client,
    prepare_on_dask,
    read_on_dask,
    shap_values_on_dask,
)

pytestmark = pytest.mark.usefixtures("single_thread_torch")

TARGET = "income_gt_50k"
#: Small teachers (the machine's cores are shared): enough trees for several splits per column.
TEACHERS: dict[str, dict[str, Any]] = {
    "lightgbm": {"n_estimators": 8, "num_leaves": 15},
    "xgboost": {"n_estimators": 8, "max_leaves": 15},
}


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """One 2-worker local cluster for the module (starting one takes seconds)."""
    with dask_client(DaskSettings(n_workers=2, threads_per_worker=1)) as dask_client_:
        yield dask_client_


@pytest.fixture(scope="module")
def rows(adult_dataset: Any) -> pd.DataFrame:
    """1,200 adult rows."""
    frame: pd.DataFrame = adult_dataset.frame.sample(1200, random_state=3).reset_index(drop=True)
    return frame


def _reloaded(teacher: Any, name: str, folder: Path) -> Any:
    """The teacher's booster saved to its model file and wrapped again: the single-machine reference."""
    suffix = get_registry().spec("teacher", name).file_suffix
    path = folder / f"teacher{suffix}"
    teacher.save(path)
    return get_registry().teacher(name, model=str(path))


@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_teacher_and_treeshap_on_two_workers_equal_the_single_machine_values(
    name: str, client: Any, rows: pd.DataFrame, tmp_path: Path
) -> None:
    pytest.importorskip(f"gbdt2nn_{name}")
    config = DistillConfig(teacher=name, teacher_options=TEACHERS[name], cache_dir=tmp_path / "cache")
    pipeline = Pipeline(config)
    split = pipeline.split(rows, TARGET)
    prepared = prepare_on_dask(pipeline, split, client)

    # The ordinary teacher, of the type a single-machine fit gives, wrapping the library's own booster type.
    local = pipeline.teacher().fit(split.train_frame, split.y_train, task=split.task, seed=0)
    assert type(prepared.teacher) is type(local)
    assert type(prepared.teacher.native_model) is type(local.native_model)  # type: ignore[attr-defined]
    # Trained on the rows, not only shaped like a model: it ranks the test rows far better than chance.
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(split.y_test, prepared.teacher.predict_margin(split.test_frame)) > 0.8

    reference = _reloaded(prepared.teacher, name, tmp_path)
    # the prepared training rows are the split's, fitting rows first (fitting_rows_first): explained in that order
    train = prepared.data.train_frame
    assert sorted(map(tuple, train.astype(str).to_numpy())) == sorted(
        map(tuple, split.train_frame.astype(str).to_numpy())
    )
    for frame, shap in ((train, prepared.shap_train), (split.test_frame, prepared.shap_test)):
        expected = reference.shap_values(frame, threads=1)
        assert shap.values.shape == expected.values.shape == (len(frame), frame.shape[1])
        np.testing.assert_allclose(shap.values, expected.values, rtol=0, atol=1e-6)
        np.testing.assert_allclose(shap.expected_value, expected.expected_value, rtol=0, atol=1e-6)
        # additive: the values and the expected value sum to the teacher's own margin
        margin = reference.predict_margin(frame)
        np.testing.assert_allclose(shap.values.sum(axis=1) + shap.expected_value[0], margin, rtol=1e-5, atol=1e-5)


def test_multiclass_treeshap_per_partition_keeps_the_class_axis(client: Any, tmp_path: Path) -> None:
    """A 3-class teacher: values ``(n, k, columns)``, as ``shap_values`` gives them, and additive per class."""
    pytest.importorskip("gbdt2nn_lightgbm")
    from sklearn.datasets import load_wine

    frame = load_wine(as_frame=True).frame
    config = DistillConfig(teacher="lightgbm", teacher_options={"n_estimators": 5, "num_leaves": 7}, cache=False)
    pipeline = Pipeline(config)
    split = pipeline.split(frame, "target")
    prepared = prepare_on_dask(pipeline, split, client)
    reference = _reloaded(prepared.teacher, "lightgbm", tmp_path)
    expected = reference.shap_values(split.test_frame, threads=1)
    assert prepared.shap_test.values.shape == (len(split.test_frame), 3, frame.shape[1] - 1)
    np.testing.assert_allclose(prepared.shap_test.values, expected.values, rtol=0, atol=1e-6)
    margin = reference.predict_margin(split.test_frame)
    summed = prepared.shap_test.values.sum(axis=2) + prepared.shap_test.expected_value
    np.testing.assert_allclose(summed, margin, rtol=1e-5, atol=1e-5)


def test_a_cache_entry_written_on_dask_is_read_by_a_single_machine_run(
    client: Any, rows: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("gbdt2nn_lightgbm")
    cache_dir = tmp_path / "cache"
    options = TEACHERS["lightgbm"]
    config = DistillConfig(teacher="lightgbm", teacher_options=options, cache_dir=cache_dir, alignment_weight=1.0)
    pipeline = Pipeline(config)
    split = pipeline.split(rows, TARGET)
    on_dask = prepare_on_dask(pipeline, split, client)
    assert len(list(cache_dir.glob("treeshap-*.npz"))) == 2  # the aligned training rows and the test rows

    # Later, without Dask: the same rows and the saved booster (--teacher-model), in a fresh pipeline.
    path = tmp_path / "teacher.txt"
    on_dask.teacher.save(path)
    later = Pipeline(DistillConfig(teacher="lightgbm", cache_dir=cache_dir, alignment_weight=1.0))
    prepared = later.prepare_split(later.split(rows, TARGET), later.teacher(str(path)))

    def recompute(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the single-machine run recomputed TreeSHAP instead of reading the Dask values")

    monkeypatch.setattr(type(prepared.teacher), "shap_values", recompute)
    aligned = (config.alignment_rows, config.seed)
    rows_later, later_values = prepared.aligned_explanations(*aligned, min_rows=config.alignment_min_rows)
    rows_dask, dask_values = on_dask.aligned_explanations(*aligned, min_rows=config.alignment_min_rows)
    np.testing.assert_array_equal(rows_later, rows_dask)  # type: ignore[arg-type]
    np.testing.assert_array_equal(later_values.values, dask_values.values)
    np.testing.assert_array_equal(prepared.shap_test.values, on_dask.shap_test.values)
    assert later.cache.hits == 2


def test_a_wrapped_booster_is_not_retrained_only_explained_on_the_cluster(
    client: Any, rows: pd.DataFrame, tmp_path: Path
) -> None:
    """``--teacher-model``: the booster stays byte for byte the same; its TreeSHAP runs per partition."""
    pytest.importorskip("gbdt2nn_lightgbm")
    pipeline = Pipeline(DistillConfig(teacher="lightgbm", cache=False))
    split = pipeline.split(rows, TARGET)
    trained = get_registry().teacher("lightgbm", **TEACHERS["lightgbm"])
    trained.fit(split.train_frame, split.y_train, task=split.task, seed=0)
    wrapped = _reloaded(trained, "lightgbm", tmp_path)
    prepared = prepare_on_dask(pipeline, split, client, wrapped)
    assert prepared.teacher.fingerprint() == trained.fingerprint()
    expected = trained.shap_values(split.test_frame, threads=1)
    np.testing.assert_allclose(prepared.shap_test.values, expected.values, rtol=0, atol=1e-6)


def test_a_backend_without_a_distributed_engine_refuses_in_one_line(rows: pd.DataFrame) -> None:
    """The base hook (what a backend that does not override it inherits) is a ConfigError naming the library."""
    pytest.importorskip("gbdt2nn_lightgbm")
    from gbdt2nn_core.errors import ConfigError
    from gbdt2nn_core.kit.booster_teacher import BoosterTeacher

    teacher = get_registry().teacher("lightgbm")
    assert type(teacher).trains_distributed()
    assert not BoosterTeacher.trains_distributed()
    with pytest.raises(ConfigError, match=r"^invalid engine='dask': the LightGBM teacher has no distributed training"):
        BoosterTeacher.train_distributed(
            teacher, None, None, None, task="binary", n_outputs=1, n_rounds=1, seed=0, params={}
        )


def test_treeshap_of_rows_cut_unevenly_comes_back_in_order(client: Any, rows: pd.DataFrame) -> None:
    """7 rows over 2 workers (partitions of 4 and 3), against the same teacher explained in this process."""
    pytest.importorskip("gbdt2nn_lightgbm")
    split = Pipeline(DistillConfig()).split(rows, TARGET)
    teacher = get_registry().teacher("lightgbm", **TEACHERS["lightgbm"])
    teacher.fit(split.train_frame, split.y_train, task=split.task, seed=0)
    few = split.test_frame.iloc[:7]
    shap = shap_values_on_dask(client, teacher, few)
    np.testing.assert_allclose(shap.values, teacher.shap_values(few, threads=1).values, rtol=0, atol=1e-6)


def test_reading_on_dask_gives_the_rows_the_single_machine_reader_gives(
    client: Any, rows: pd.DataFrame, tmp_path: Path
) -> None:
    from gbdt2nn_core.data import read_table

    rows.to_csv(tmp_path / "rows.csv", index=False)
    pd.testing.assert_frame_equal(read_on_dask(client, tmp_path / "rows.csv"), read_table(tmp_path / "rows.csv"))
    folder = tmp_path / "parts"
    folder.mkdir()
    rows.iloc[:500].to_parquet(folder / "part-0.parquet", index=False)
    rows.iloc[500:].to_parquet(folder / "part-1.parquet", index=False)
    gathered = read_on_dask(client, folder)
    pd.testing.assert_frame_equal(gathered, rows, check_dtype=False)


def test_cli_distill_on_dask_from_a_folder_of_parquet_files(
    rows: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``gbdt2nn distill --engine dask`` end to end: its own local cluster, a run folder, TreeSHAP in the cache."""
    pytest.importorskip("gbdt2nn_lightgbm")
    from gbdt2nn_core.cli import main

    monkeypatch.setenv("GBDT2NN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    get_registry.cache_clear()
    folder = tmp_path / "parts"
    folder.mkdir()
    rows.iloc[:600].to_parquet(folder / "a.parquet", index=False)
    rows.iloc[600:].to_parquet(folder / "b.parquet", index=False)
    argv = ["distill", "--engine", "dask", "--dask-workers", "2", "--data", str(folder), "--target", TARGET]
    argv += ["--out", "run", "--epochs", "1", "--teacher-option", "n_estimators=5", "--json"]
    argv += ["--student-option", "n_groups=2", "--student-option", "hidden=[8, 8]"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)  # stdout is the JSON alone: the workers' logs went elsewhere
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert printed["teacher"]["test"]["auc"] == metrics["teacher"]["test"]["auc"] > 0.8
    assert len(list((tmp_path / "cache").glob("treeshap-*.npz"))) == 2
    get_registry.cache_clear()


def test_the_benchmark_script_runs_and_checks_its_values(
    tmp_path: Path, load_benchmark: Callable[[str], ModuleType]
) -> None:
    """benchmarks/dask_treeshap.py on 300 rows, one round: every case's values agree with the 1-thread values."""
    pytest.importorskip("gbdt2nn_lightgbm")
    module = load_benchmark("dask_treeshap.py")
    out = tmp_path / "dask.json"
    assert module.main(["--rows", "300", "--repeats", "1", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["rows"] == 300
    assert set(record["cases"]) == {
        "threaded, 1 thread",
        "threaded, 2 threads",
        "dask, 1 worker x 1 thread",
        "dask, 2 workers x 1 thread",
    }
    assert all(case["max_abs_diff_vs_1_thread"] <= 1e-6 for case in record["cases"].values())
