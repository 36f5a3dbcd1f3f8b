"""Memory bounded by a chunk, not by the data (issue 13, item 5): large per-row matrices kept in float32 files on
disk (``spill_bytes``) give the in-memory run's values exactly, the training phase's traced memory grows far less
than the rows, and no temporary file outlives a run, finished or failed."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gbdt2nn_core.data import rowfile
from gbdt2nn_core.data.rowfile import RowFolder, is_on_disk, read_rows, take_rows, update_digest
from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.pipeline import DistillConfig, Pipeline
from gbdt2nn_core.pipeline.distill import distill
from gbdt2nn_core.student import kit
from gbdt2nn_core.student.gbdt2nn import GBDT2NNStudent

#: Every run here aligns a share of the rows (so that the student's fitting rows and the aligned rows are subsets).
ALIGNED = {"alignment_rows": 0.2, "alignment_min_rows": 0}


def leftovers(config: DistillConfig) -> list[Path]:
    """Every file or folder under the cache folder's temporary rows folder."""
    root = Path(str(config.cache_dir)) / "rows"
    return sorted(root.rglob("*")) if root.exists() else []


def test_row_file_round_trip_and_cleanup(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(1000, 7)).astype(np.float32)
    folder = RowFolder(tmp_path)
    on_disk = folder.write("m", matrix.shape, lambda: (matrix[s : s + 300] for s in range(0, 1000, 300)))
    assert is_on_disk(on_disk)
    assert not is_on_disk(on_disk[10:20])
    assert not is_on_disk(matrix)
    assert RowFolder.holds(on_disk)
    users = np.memmap(tmp_path / "users.f32", dtype=np.float32, mode="w+", shape=matrix.shape)
    assert is_on_disk(users)  # read a batch at a time like ours, but nothing is ever written beside it
    assert not RowFolder.holds(users)
    del users
    (tmp_path / "users.f32").unlink()
    index = rng.permutation(1000)[:50]
    np.testing.assert_array_equal(take_rows(on_disk, index), matrix[index])
    np.testing.assert_array_equal(read_rows(on_disk, 990, 1010), matrix[990:])
    import hashlib

    whole, chunked = hashlib.sha256(matrix.tobytes()), hashlib.sha256()
    update_digest(chunked, on_disk)
    assert chunked.hexdigest() == whole.hexdigest()

    # a writer that fails half-way leaves no partial file
    def failing() -> Any:
        yield matrix[:10]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        folder.write("bad", (20, 7), failing)
    assert [p.suffix for p in folder.path.iterdir()] == [".bin"]
    folder.close()
    assert list(tmp_path.iterdir()) == []


def _run(frame: pd.DataFrame, config: DistillConfig) -> tuple[Any, Any, Any]:
    pipeline = Pipeline(config)
    prepared = pipeline.prepare(frame, "income_gt_50k")
    trained = pipeline.train(prepared)
    metrics = pipeline.evaluate(prepared, trained)
    return prepared, trained, metrics


def test_on_disk_rows_give_the_in_memory_run_exactly(
    adult_dataset: Any, small_config: Callable[..., DistillConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rowfile, "CHUNK_BYTES", 1)  # chunks of CHUNK_ALIGN (2,048) rows: several of every matrix
    frame = adult_dataset.frame.sample(12000, random_state=2).reset_index(drop=True)
    in_memory = small_config(**ALIGNED, device="cpu")
    on_disk = small_config(**ALIGNED, device="cpu", spill_bytes=0)
    memory_prepared, memory_trained, memory_metrics = _run(frame, in_memory)
    disk_prepared, disk_trained, disk_metrics = _run(frame, on_disk)
    assert len(disk_prepared.data.z_test) > rowfile.CHUNK_ALIGN  # evaluated in several chunks
    assert not is_on_disk(memory_prepared.data.z_train)
    assert is_on_disk(disk_prepared.data.z_train)
    assert is_on_disk(disk_prepared.data.z_test)
    assert is_on_disk(disk_prepared.leaves_train)
    assert leftovers(on_disk), "the on-disk run kept its rows in files"
    np.testing.assert_array_equal(np.asarray(disk_prepared.data.z_train), memory_prepared.data.z_train)
    np.testing.assert_array_equal(np.asarray(disk_prepared.data.z_test), memory_prepared.data.z_test)
    # the same training, step for step: the same weights, predictions and every metric
    memory_state, disk_state = memory_trained.student.module.state_dict(), disk_trained.student.module.state_dict()
    for name, tensor in memory_state.items():
        assert bool((disk_state[name] == tensor).all()), name
    z = memory_prepared.data.z_test
    np.testing.assert_array_equal(disk_trained.student.predict_margin(z), memory_trained.student.predict_margin(z))
    assert disk_metrics.to_json()["student"] == memory_metrics.to_json()["student"]
    assert (
        disk_trained.student.history["epochs"][-1]["task_loss"]
        == memory_trained.student.history["epochs"][-1]["task_loss"]
    )
    # the fitting rows are written once per split, the leaf-embedding targets removed by the student that made them
    Pipeline(on_disk).train(disk_prepared)
    assert sum(path.name.startswith("z-fit") for path in leftovers(on_disk)) == 1
    assert not any(path.name.startswith("targets") for path in leftovers(on_disk))
    disk_prepared.close()
    assert leftovers(on_disk) == []


def test_the_test_rows_are_encoded_when_first_read(
    adult_dataset: Any, small_config: Callable[..., DistillConfig]
) -> None:
    """Training never reads the test rows: they are encoded (here, written to their file) when evaluation first reads
    them, once, to the encoder's values; after the rows folder is removed they are encoded in memory."""
    frame = adult_dataset.frame.sample(3000, random_state=3).reset_index(drop=True)
    config = small_config(device="cpu", spill_bytes=0)

    def test_files() -> int:
        return sum(path.name.startswith("z-test") for path in leftovers(config))

    prepared = Pipeline(config).prepare(frame, "income_gt_50k")
    try:
        assert is_on_disk(prepared.data.z_train)
        assert test_files() == 0
        z_test = prepared.data.z_test
        assert is_on_disk(z_test)
        assert test_files() == 1
        expected = prepared.data.encoder.transform(prepared.data.test_frame)
        np.testing.assert_array_equal(np.asarray(z_test), expected)
        assert prepared.data.z_test is z_test
    finally:
        prepared.close()
    unread = Pipeline(config).prepare(frame, "income_gt_50k")
    unread.close()
    assert not is_on_disk(unread.data.z_test)
    np.testing.assert_array_equal(unread.data.z_test, expected)


def _traced_training_peak(frame: pd.DataFrame, config: DistillConfig) -> int:
    """Peak traced allocation (bytes above what was allocated before) of the student's training phase."""
    pipeline = Pipeline(config)
    prepared = pipeline.prepare(frame, "income_gt_50k")
    prepared.aligned_explanations(config.alignment_rows, config.seed, min_rows=config.alignment_min_rows)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        pipeline.train(prepared)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
        prepared.close()
    return peak


def test_training_memory_grows_far_less_than_the_rows(
    adult_dataset: Any, small_config: Callable[..., DistillConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rowfile, "CHUNK_BYTES", 1)  # chunks of CHUNK_ALIGN rows
    sizes = (3000, 12000)
    # the validation monitor re-estimates BatchNorm on a sample of at most MONITOR_BATCHNORM_ROWS rows, read into
    # memory: a bound of its own, not one that grows with the rows; above both sizes' fitting rows here, so that only
    # what grows with the rows is compared
    monkeypatch.setattr(kit, "MONITOR_BATCHNORM_ROWS", 16_384)
    small, large = (adult_dataset.frame.sample(n, random_state=0).reset_index(drop=True) for n in sizes)
    options = {"epochs": 1, "batch_size": 512}
    teacher = {"n_estimators": 50}  # 50 int32 leaves a row: as large as a third of an encoded row
    on_disk = small_config(**ALIGNED, device="cpu", spill_bytes=0, student_options=options, teacher_options=teacher)
    in_memory = small_config(**ALIGNED, device="cpu", student_options=options, teacher_options=teacher)
    disk = [_traced_training_peak(frame, on_disk) for frame in (small, large)]
    memory = [_traced_training_peak(frame, in_memory) for frame in (small, large)]
    added_rows = 0.8 * (sizes[1] - sizes[0])  # training rows (test_size 0.2)
    width = Pipeline(on_disk).prepare(small, "income_gt_50k").data.z_train.shape[1]
    encoded_row = 4 * width
    disk_per_row, memory_per_row = ((peaks[1] - peaks[0]) / added_rows for peaks in (disk, memory))
    # 4x the rows: on disk only the chunks and the small per-row vectors (labels, margins, leaf sums, validation
    # rows) grow; in memory the embedding targets too, but not the fitting rows: they are the first rows of the
    # encoding and of the leaves (fitting_rows_first), a view — a copy alone would add 0.9 of an encoded row and its
    # leaves per row
    assert disk_per_row < 0.4 * encoded_row, (disk_per_row, encoded_row, disk, memory)
    assert memory_per_row < 0.5 * encoded_row, (memory_per_row, encoded_row, disk, memory)


def test_no_file_left_after_a_run_that_fails(
    adult_small: pd.DataFrame, small_config: Callable[..., DistillConfig], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = small_config(**ALIGNED, device="cpu", spill_bytes=0)

    def broken(*args: Any, **kwargs: Any) -> Any:
        assert leftovers(config), "the rows were on disk when training failed"
        raise RuntimeError("interrupted in the middle of an epoch")

    monkeypatch.setattr(GBDT2NNStudent, "_train_epoch", broken)
    with pytest.raises(RuntimeError, match="interrupted"):
        distill(adult_small, "income_gt_50k", config)
    assert leftovers(config) == []


def test_no_file_left_after_the_cli_run(
    adult_small: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gbdt2nn_core.cli import main

    data = tmp_path / "adult.csv"
    adult_small.to_csv(data, index=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("GBDT2NN_CACHE_DIR", str(cache))
    config = tmp_path / "run.toml"
    config.write_text("[run]\nspill_bytes = 0\n", encoding="utf-8")
    code = main(
        ["distill", "--data", str(data), "--target", "income_gt_50k", "--config", str(config), "--epochs", "1",
         "--teacher-option", "n_estimators=10", "--teacher-option", "num_threads=1", "--threads", "1",
         "--out", str(tmp_path / "run")]
    )  # fmt: skip
    assert code == 0
    assert (tmp_path / "run" / "metrics.json").exists()
    assert not (cache / "rows").exists() or list((cache / "rows").iterdir()) == []


def test_spill_bytes_is_checked() -> None:
    with pytest.raises(ConfigError, match="spill_bytes"):
        DistillConfig(spill_bytes=-1)


def _ddp_worker(rank: int, world_size: int, port: int, folder: str) -> None:
    """Rank ``rank`` of two: the same data-parallel training with its rows in memory, then on disk."""
    import os

    import torch

    from gbdt2nn_core.data import load_bundled

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        adult = load_bundled("adult")
        frame = adult.frame.iloc[:1200].reset_index(drop=True)
        states = {}
        for spill in (2**40, 0):
            config = DistillConfig(
                teacher_options={"n_estimators": 8, "num_leaves": 8, "num_threads": 1},
                student_options={"n_groups": 3, "hidden": [16, 8], "epochs": 1, "batch_size": 128},
                device="cpu",
                cache=False,
                cache_dir=folder,
                spill_bytes=spill,
                **ALIGNED,
            )
            pipeline = Pipeline(config)
            prepared = pipeline.prepare(frame, adult.target)
            assert is_on_disk(prepared.data.z_train) == (spill == 0)
            trained = pipeline.train(prepared)
            states[spill] = {k: v.detach().clone() for k, v in trained.student.module.state_dict().items()}
            prepared.close()
        torch.save(states, Path(folder) / f"rank{rank}.pt")
        torch.distributed.barrier()  # leave together: see tests/test_distributed.py::_leave_together
    finally:
        torch.distributed.destroy_process_group()


def test_data_parallel_training_reads_each_shard_from_disk_alike(
    tmp_path: Path, spawn_two: Callable[[Callable[..., None], tuple[Any, ...]], None]
) -> None:
    """Two gloo processes, each with its shard on disk: the weights of the same run with the rows in memory."""
    import socket

    import torch

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    spawn_two(_ddp_worker, (2, port, str(tmp_path)))
    for rank in range(2):
        states = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        in_memory, on_disk = states[2**40], states[0]
        for name, tensor in in_memory.items():
            assert bool((on_disk[name] == tensor).all()), (rank, name)
    assert not (tmp_path / "rows").exists() or list((tmp_path / "rows").iterdir()) == []
