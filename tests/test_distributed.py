"""Data-parallel training (issue 13 item 2): two gloo processes on CPU against one process on the same global batch.

The two-process runs are spawned here with ``torch.multiprocessing`` (the CLI's ``--nproc`` goes through torch's
elastic launcher: tests/test_cli_nproc.py). Each process prepares the same 400 adult rows; rank 0 trains the
teacher and sends it (:func:`~gbdt2nn_core.pipeline.processes.shared_teacher`), each trains on its own shard.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import attrs
import numpy as np
import pytest
import torch

from gbdt2nn_core.data import load_bundled
from gbdt2nn_core.pipeline import DistillConfig, Pipeline
from gbdt2nn_core.pipeline.processes import shard_of
from gbdt2nn_core.student.distributed import shard_rows
from gbdt2nn_core.student.gbdt2nn import GBDT2NNStudent

ROWS = 400  # 320 training rows: one global batch of 320, or 160 per process
STUDENT = {
    "n_groups": 3,
    "hidden": [16, 8],
    "embedding_dim": 4,
    "leaf_epochs": 1,
    "epochs": 1,
    "leaf_dropout": 0.0,  # dropout masks follow the row positions, which differ between one and two processes
    "early_stopping": False,
    "calibrate": False,
}


def _config(batch_size: int, alignment_rows: float = 1.0, synthetic_rows: int = 0) -> DistillConfig:
    return DistillConfig(
        teacher_options={"n_estimators": 8, "num_leaves": 8, "num_threads": 1},
        student_options={**STUDENT, "batch_size": batch_size},
        validation_fraction=0.0,  # every training row is a fitting row: one step covers them all
        alignment_weight=1.0,
        alignment_rows=alignment_rows,
        alignment_min_rows=0,  # the share alone: these tests split a share of the rows between processes
        synthetic_rows=synthetic_rows,
        cache=False,
    )


def _sgd(params: Any, lr: float, weight_decay: float, **_: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay)


def _train(batch_size: int, alignment_rows: float = 1.0, sgd: bool = False, synthetic_rows: int = 0) -> dict[str, Any]:
    """One pipeline training of the adult rows; what the processes must agree on.

    ``sgd``: the student's AdamW replaced by SGD (lr 0.1). Adam's first step moves every weight by ±lr whatever
    the size of its gradient, so for a gradient that is zero in exact arithmetic (a bias feeding BatchNorm, which
    subtracts it again; the leaf head's bias, which starts at the target mean) the sign of the rounding noise
    would decide the weight; with SGD the step is proportional to the gradient, and the weights compare it.
    """
    adult = load_bundled("adult")
    config = _config(batch_size, alignment_rows, synthetic_rows)
    if sgd:
        config = attrs.evolve(config, student_options={**config.student_options, "lr": 0.1})
    pipeline = Pipeline(config)
    prepared = pipeline.prepare(adult.frame.iloc[:ROWS].reset_index(drop=True), adult.target)
    with mock.patch.object(torch.optim, "AdamW", _sgd) if sgd else contextlib.nullcontext():
        trained = pipeline.train(prepared)
    module = trained.student.module
    initial = GBDT2NNStudent(seed=0, **config.student_options)._build(
        prepared.teacher, prepared.data.encoder.column_of, torch.device("cpu")
    )
    shard = shard_of(len(prepared.validation.fit))
    return {
        "state": {name: tensor.detach().clone() for name, tensor in module.state_dict().items()},
        "initial": initial[0].state_dict(),
        "history": trained.student.history["epochs"],
        "leaf_history": trained.student.history["leaf_embedding"],
        "teacher": prepared.teacher.fingerprint(),
        "column_of": torch.as_tensor(prepared.data.encoder.column_of),
        "shard": None if shard is None else torch.as_tensor(shard),
        "rows": len(prepared.validation.fit),
        "batchnorm_class": type(module.mlp.norms[0].norm).__name__,
    }


#: The ``mlp`` student's options for the one-step comparison (BatchNorm on: its moments are the global batch's).
MLP_STUDENT = {
    "hidden": [16, 8],
    "batch_norm": True,
    "dropout": 0.0,
    "epochs": 1,
    "early_stopping": False,
    "calibrate": False,
    "lr": 0.1,
}


def _train_mlp(batch_size: int) -> dict[str, Any]:
    """One pipeline training of the ``mlp`` student (SGD instead of AdamW, as ``_train(sgd=True)``), every row
    aligned through gradient-x-input; what the processes must agree on."""
    from gbdt2nn_mlp import MLPStudent

    adult = load_bundled("adult")
    options = {**MLP_STUDENT, "batch_size": batch_size}
    config = attrs.evolve(_config(batch_size), student="mlp", attributor="gradient-x-input", student_options=options)
    pipeline = Pipeline(config)
    prepared = pipeline.prepare(adult.frame.iloc[:ROWS].reset_index(drop=True), adult.target)
    with mock.patch.object(torch.optim, "AdamW", _sgd):
        trained = pipeline.train(prepared)
    module = trained.student.module
    torch.manual_seed(0)  # the student builds its network right after seeding torch with its seed
    initial = MLPStudent(**options)._new_module(module.n_inputs, module.n_outputs)
    shard = shard_of(len(prepared.validation.fit))
    return {
        "state": {name: tensor.detach().clone() for name, tensor in module.state_dict().items()},
        "initial": initial.state_dict(),
        "history": trained.student.history["epochs"],
        "shard": None if shard is None else torch.as_tensor(shard),
        "rows": len(prepared.validation.fit),
        "batchnorm_class": type(module.layers[1]).__name__,
    }


def _worker(
    rank: int,
    world_size: int,
    port: int,
    folder: str,
    batch_size: int,
    alignment_rows: float,
    sgd: bool,
    student: str = "gbdt2nn",
    synthetic_rows: int = 0,
) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        result = _train_mlp(batch_size) if student == "mlp" else _train(batch_size, alignment_rows, sgd, synthetic_rows)
        torch.save(result, Path(folder) / f"rank{rank}.pt")
        _leave_together()
    finally:
        torch.distributed.destroy_process_group()


def _leave_together() -> None:
    """Wait for the other process before leaving the group: gloo's TCP transport aborts a process (SIGABRT,
    "Connection reset by peer") whose peer closes its connections while I/O is in flight — seen once in CI when
    one rank left while the other was still writing its results."""
    torch.distributed.barrier()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: ``spawn_two(worker, arguments)``: the conftest fixture that runs ``worker`` in two processes.
Spawn = Callable[[Callable[..., None], tuple[Any, ...]], None]


def _two_processes(
    spawn: Spawn,
    tmp_path: Path,
    batch_size: int,
    alignment_rows: float = 1.0,
    sgd: bool = False,
    student: str = "gbdt2nn",
    synthetic_rows: int = 0,
) -> list[dict[str, Any]]:
    arguments = (2, _free_port(), str(tmp_path), batch_size, alignment_rows, sgd, student, synthetic_rows)
    spawn(_worker, arguments)
    return [torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2)]


def _assert_the_single_process_state(single: dict[str, Any], rank0: dict[str, Any], rank1: dict[str, Any]) -> None:
    """Both processes hold the single process's weights and statistics (1e-5), each other's exactly, and plain
    BatchNorm layers again (synchronised only while training)."""
    for name, expected in single["state"].items():
        torch.testing.assert_close(rank0["state"][name], expected, atol=1e-5, rtol=1e-5, msg=name)
        torch.testing.assert_close(rank1["state"][name], rank0["state"][name], atol=0, rtol=0, msg=name)
    assert rank0["batchnorm_class"] == "BatchNorm1d"


def _assert_the_single_process_losses(
    single: dict[str, Any], rank0: dict[str, Any], rank1: dict[str, Any], parts: tuple[str, ...]
) -> None:
    """The one step's recorded ``parts`` equal the single process's (1e-5), with a non-zero alignment term, and
    both processes record the same history (all but the seconds)."""
    (expected,), (got,) = single["history"], rank0["history"]
    for part in parts:
        assert got[part] == pytest.approx(expected[part], rel=1e-5), part
    assert expected["alignment_loss"] > 0
    for record in (rank0["history"][0], rank1["history"][0]):
        record.pop("seconds")
    assert rank1["history"] == rank0["history"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, spawn_two: Spawn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One process on a global batch of 320 rows, and two processes on 160 rows each (the same global batch)."""
    torch.set_num_threads(1)
    single = _train(batch_size=320, sgd=True)
    return single, _two_processes(spawn_two, tmp_path_factory.mktemp("ddp"), batch_size=160, sgd=True)


def test_two_processes_give_the_single_process_parameters(runs: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    """One leaf-embedding step and one joint step (every row aligned, BatchNorm on the global batch's moments),
    then the BatchNorm pass: the same weights and statistics as one process on the same global batch."""
    single, (rank0, rank1) = runs
    assert single["rows"] == rank0["rows"] == 320
    _assert_the_single_process_state(single, rank0, rank1)
    # the comparison can fail: the step moved the weights by far more than the tolerance
    moved = single["state"]["mlp.hidden.0.weight"] - single["initial"]["mlp.hidden.0.weight"]
    assert float(moved.abs().max()) > 1e-3


def test_joint_loss_under_ddp_equals_the_single_process_joint_loss(
    runs: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    """The epoch's task, embedding and alignment losses (one step: the joint loss of the global batch) agree."""
    single, (rank0, rank1) = runs
    _assert_the_single_process_losses(single, rank0, rank1, ("task_loss", "embedding_loss", "alignment_loss"))
    assert rank0["leaf_history"] == pytest.approx(single["leaf_history"], rel=1e-5)


def test_every_process_sees_the_same_teacher_and_encoder(runs: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    single, (rank0, rank1) = runs
    assert rank0["teacher"] == rank1["teacher"] == single["teacher"]
    assert torch.equal(rank0["column_of"], rank1["column_of"])


def test_shards_are_disjoint_and_cover_the_training_rows(runs: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
    _, (rank0, rank1) = runs
    shards = [rank0["shard"].numpy(), rank1["shard"].numpy()]
    assert not set(shards[0]) & set(shards[1])
    assert np.array_equal(np.sort(np.concatenate(shards)), np.arange(320))
    for n in (0, 1, 7, 10):
        for size in (1, 2, 3):
            parts = [shard_rows(n, rank, size) for rank in range(size)]
            assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_synthetic_rows_split_between_the_processes_give_the_single_process_step(
    tmp_path: Path, runs: tuple[dict[str, Any], list[dict[str, Any]]], spawn_two: Spawn
) -> None:
    """With two teacher-labelled synthetic rows per fitting row (960 rows in all), each process trains on its shard's
    rows and the synthetic rows made from them: one global step of 480 rows per process gives the weights and losses
    of one process's step over all 960."""
    single = _train(batch_size=960, sgd=True, synthetic_rows=2)
    rank0, rank1 = _two_processes(spawn_two, tmp_path, batch_size=480, sgd=True, synthetic_rows=2)
    _assert_the_single_process_state(single, rank0, rank1)
    _assert_the_single_process_losses(single, rank0, rank1, ("task_loss", "embedding_loss", "alignment_loss"))
    # the comparison can fail: synthetic rows change the step (the same step without them, the module's single-process
    # run, moves the weights elsewhere)
    without = runs[0]
    moved = single["state"]["mlp.hidden.0.weight"] - without["state"]["mlp.hidden.0.weight"]
    assert float(moved.abs().max()) > 1e-3


def test_only_a_student_that_trains_in_one_process_is_refused_under_several() -> None:
    """Both bundled students train data-parallel; a (third-party) student that does not declare it is a one-line
    error naming ``--nproc``, before any process starts."""
    from gbdt2nn_mlp import MLPStudent

    from gbdt2nn_core.errors import ConfigError
    from gbdt2nn_core.pipeline.processes import check_data_parallel

    class OneProcessStudent(MLPStudent):
        supports_data_parallel = False

    for student in (GBDT2NNStudent(), MLPStudent()):
        check_data_parallel(student, "bundled", 2)
    check_data_parallel(OneProcessStudent(), "one-process", 1)
    with pytest.raises(ConfigError, match=r"^invalid --nproc=2: the 'one-process' student trains in one process only"):
        check_data_parallel(OneProcessStudent(), "one-process", 2)


def test_a_share_of_aligned_rows_is_split_between_the_processes(tmp_path: Path, spawn_two: Spawn) -> None:
    """With a tenth of the rows aligned, each process explains only the aligned rows of its own shard, and two
    processes of 4 batches each still train in step (a batch may carry the term on one process only)."""
    rank0, rank1 = _two_processes(spawn_two, tmp_path, batch_size=40, alignment_rows=0.1)
    for name, tensor in rank0["state"].items():
        torch.testing.assert_close(rank1["state"][name], tensor, atol=0, rtol=0, msg=name)
    assert rank0["history"][0]["alignment_loss"] > 0


def _checked(batch_size: int) -> dict[str, Any]:
    """``alignment_check`` with its threshold moved so that it always retrains (SGD, as ``_train(sgd=True)``):
    the kept student and the check's record."""
    import gbdt2nn_core.pipeline.distill as distill_module

    adult = load_bundled("adult")
    # 64 of the 320 training rows held out: the yardstick's and the aligned student's validation losses compare
    config = attrs.evolve(_config(batch_size), validation_fraction=0.2, alignment_check=True)
    pipeline = Pipeline(config)
    prepared = pipeline.prepare(adult.frame.iloc[:ROWS].reset_index(drop=True), adult.target)
    with (
        mock.patch.object(distill_module, "ALIGNMENT_COST_NOTICE", -math.inf),
        mock.patch.object(torch.optim, "AdamW", _sgd),
    ):
        _, kept = distill_module.plain_then_aligned(
            lambda weight: pipeline.train(prepared, alignment_weight=weight), config
        )
    return {
        "state": {name: tensor.detach().clone() for name, tensor in kept.student.module.state_dict().items()},
        "record": kept.choices["alignment_check"],
        "weight": kept.config.alignment_weight,
        "batchnorm_class": type(kept.student.module.mlp.norms[0].norm).__name__,
    }


def _check_worker(rank: int, world_size: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.save(_checked(batch_size=128), Path(folder) / f"check-rank{rank}.pt")
        _leave_together()
    finally:
        torch.distributed.destroy_process_group()


def test_alignment_check_decides_once_for_every_process(tmp_path: Path, spawn_two: Spawn) -> None:
    """Two processes run the check in step: both retrain at a tenth of λ and keep the weights one process keeps on
    the same global batch (256 fitting rows: one step of 128 rows per process)."""
    torch.set_num_threads(1)
    single = _checked(batch_size=256)
    spawn_two(_check_worker, (2, _free_port(), str(tmp_path)))
    rank0, rank1 = (torch.load(tmp_path / f"check-rank{rank}.pt", weights_only=True) for rank in range(2))
    assert single["weight"] == rank0["weight"] == rank1["weight"] == pytest.approx(0.1)
    assert [tried["weight"] for tried in rank0["record"]["tried"]] == pytest.approx([1.0, 0.1])
    assert rank1["record"] == rank0["record"]  # the same held-out rows and weights: the same costs, to the bit
    for tried, expected in zip(rank0["record"]["tried"], single["record"]["tried"], strict=True):
        assert tried["validation_cost"] == pytest.approx(expected["validation_cost"], rel=1e-3, abs=1e-5)
    _assert_the_single_process_state(single, rank0, rank1)


def _agree_worker(rank: int, world_size: int, port: int, folder: str) -> None:
    from gbdt2nn_core.pipeline.distill import _every_process_agrees

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        decided = [_every_process_agrees(rank == 1), _every_process_agrees(False)]
        (Path(folder) / f"agree-rank{rank}.json").write_text(json.dumps(decided))
        _leave_together()
    finally:
        torch.distributed.destroy_process_group()


def test_a_process_that_would_retrain_alone_retrains_every_process(tmp_path: Path, spawn_two: Spawn) -> None:
    """The guard against a hang: had the processes computed different costs, one retraining alone would wait for
    the others forever; one decision for all retrains them all."""
    spawn_two(_agree_worker, (2, _free_port(), str(tmp_path)))
    for rank in range(2):
        assert json.loads((tmp_path / f"agree-rank{rank}.json").read_text()) == [True, False]


def _resume_worker(rank: int, world_size: int, port: int, folder: str, student: str) -> None:
    """Two epochs with a checkpoint (rank 0 keeps a copy of the one after the first epoch), then the same training
    again from that copy, as a rerun after an interruption: the weights of both, and the files each rank wrote."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        adult = load_bundled("adult")
        config = _config(batch_size=40, alignment_rows=0.1)
        config = attrs.evolve(config, student_options={**config.student_options, "epochs": 2})
        if student == "mlp":  # AdamW, as users train it
            options = {**MLP_STUDENT, "lr": 1e-3, "epochs": 2, "batch_size": 40}
            config = attrs.evolve(config, student="mlp", attributor="gradient-x-input", student_options=options)
        pipeline = Pipeline(config)
        prepared = pipeline.prepare(adult.frame.iloc[:ROWS].reset_index(drop=True), adult.target)
        # a path per rank: a rank other than 0 must neither write its path nor need it to resume
        checkpoint = Path(folder) / f"checkpoints-rank{rank}" / "student.pt"
        interrupted = Path(folder) / "after-epoch-1.pt"

        def keep_first_epoch(_student: Any, epoch: int) -> None:
            if epoch == 1 and rank == 0:  # the file now holds the state after epoch 1 of 2
                interrupted.write_bytes(checkpoint.read_bytes())

        first = pipeline.train(prepared, checkpoint=checkpoint, on_epoch_end=keep_first_epoch)
        torch.distributed.barrier()
        if rank == 0:
            checkpoint.write_bytes(interrupted.read_bytes())
        torch.distributed.barrier()
        resumed = pipeline.train(prepared, checkpoint=checkpoint)
        torch.save(
            {
                "first": first.student.module.state_dict(),
                "resumed": resumed.student.module.state_dict(),
                "resumed_from": resumed.first_epoch,
                "files": sorted(
                    str(path.relative_to(folder))
                    for path in Path(folder).rglob("*")
                    if not path.name.startswith("resume-")  # the results of this test, written in any order
                ),
            },
            Path(folder) / f"resume-rank{rank}.pt",
        )
        _leave_together()
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("student", ["gbdt2nn", "mlp"])
def test_an_interrupted_run_resumes_from_rank_zeros_checkpoint(tmp_path: Path, student: str, spawn_two: Spawn) -> None:
    """Rank 0 alone writes the checkpoint and reads it back; every process resumes from it and ends with the weights
    of the uninterrupted run. A tenth of the rows is aligned: some batches carry the term on one process only."""
    spawn_two(_resume_worker, (2, _free_port(), str(tmp_path), student))
    rank0, rank1 = (torch.load(tmp_path / f"resume-rank{rank}.pt", weights_only=True) for rank in range(2))
    assert rank0["resumed_from"] == rank1["resumed_from"] == 1
    for name, tensor in rank0["first"].items():  # the processes trained in step
        torch.testing.assert_close(rank1["first"][name], tensor, atol=0, rtol=0, msg=name)
    for result in (rank0, rank1):
        for name, tensor in result["first"].items():
            torch.testing.assert_close(result["resumed"][name], tensor, atol=1e-6, rtol=1e-6, msg=name)
    # the only files: rank 0's checkpoint and the test's copy of it
    assert rank0["files"] == rank1["files"] == ["after-epoch-1.pt", "checkpoints-rank0", "checkpoints-rank0/student.pt"]


def test_every_attributor_differentiates_inputs_never_parameters(adult_run: Any) -> None:
    """DistributedDataParallel syncs gradients in the one backward of the joint loss: an alignment term that took
    ``torch.autograd.grad`` with respect to parameters, or ran a backward of its own, would bypass it (torch issues
    #47562, #63812). Every installed differentiable attributor's training path is checked."""
    import copy

    from gbdt2nn_core.host.registry import get_registry
    from gbdt2nn_core.kit.alignment import Alignment
    from gbdt2nn_core.student.kit import alignment_loss

    registry = get_registry()
    module = copy.deepcopy(adult_run.student.module).train()
    parameters = {id(parameter) for parameter in module.parameters()}
    z = torch.as_tensor(adult_run.data.z_test[:64], dtype=torch.float32)
    aggregation = torch.as_tensor(adult_run.data.encoder.aggregation(), dtype=torch.float32)
    background = torch.as_tensor(adult_run.prepared.background, dtype=torch.float32)
    original_grad, original_backward = torch.autograd.grad, torch.Tensor.backward
    checked = []
    for name in registry.names("attributor"):
        attributor = registry.attributor(name)
        if not attributor.differentiable or (attributor.students is not None and "gbdt2nn" not in attributor.students):
            continue
        attributor.fit(module, background)
        differentiated: list[int] = []

        def grad(outputs: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            targets = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)
            differentiated.extend(id(target) for target in targets)  # noqa: B023 - used within this iteration
            return original_grad(outputs, inputs, *args, **kwargs)

        def backward(*args: Any, **kwargs: Any) -> None:
            raise AssertionError(f"{name} runs a backward of its own")  # noqa: B023

        alignment = Alignment(
            attributor=attributor, loss=torch.nn.functional.mse_loss, teacher_attributions=np.zeros(1)
        )
        with mock.patch.object(torch.autograd, "grad", grad), mock.patch.object(torch.Tensor, "backward", backward):
            loss = alignment_loss(alignment, module, z, aggregation, torch.zeros(64, aggregation.shape[1]))
        # an attributor may take its input gradients without autograd.grad (GBDT2NN's frozen chain: one pass)
        assert not parameters & set(differentiated), f"{name} differentiates with respect to parameters"
        original_backward(loss)  # and the term back-propagates to the parameters, in the one backward
        assert module.mlp.hidden[0].weight.grad is not None
        module.zero_grad(set_to_none=True)
        checked.append(name)
    assert "structure" in checked


def test_a_shard_without_aligned_rows_gets_an_empty_target_and_a_zero_term(adult_run: Any) -> None:
    """A process whose shard holds none of the aligned rows explains nothing, and in a batch that carries the term
    elsewhere computes it as zero through the same graph (so that every process runs the same backward)."""
    import copy

    from gbdt2nn_core.kit.alignment import Alignment
    from gbdt2nn_core.student.kit import AlignmentTargets

    prepared = adult_run.prepared
    n = len(prepared.validation.fit)
    everything, _ = prepared.aligned_explanations(0.01, 0, min_rows=0)  # the aligned rows of one process
    assert everything is not None
    outside = np.setdiff1d(np.arange(n), everything)[:50]  # a shard of other rows
    rows, target = prepared.aligned_explanations(0.01, 0, min_rows=0, shard=outside)
    d = prepared.data.encoder.aggregation().shape[1]
    assert rows is not None
    assert len(rows) == 0
    assert target.values.shape == (0, d)
    inside = everything[:3]
    rows, target = prepared.aligned_explanations(0.01, 0, min_rows=0, shard=np.sort(np.concatenate([inside, outside])))
    assert rows is not None
    assert len(rows) == 3
    expected = prepared.explanations.explain(prepared.data.train_frame.iloc[prepared.validation.fit[inside]])
    np.testing.assert_allclose(target.values, expected.values)  # the shard's aligned rows' own TreeSHAP

    module = copy.deepcopy(adult_run.student.module).train()
    attributor = adult_run.attributor
    alignment = Alignment(
        attributor=attributor,
        loss=torch.nn.functional.mse_loss,
        teacher_attributions=np.zeros((0, d)),
        rows=np.zeros(0, dtype=np.int64),
    )
    aggregation = torch.as_tensor(prepared.data.encoder.aggregation(), dtype=torch.float32)
    targets = AlignmentTargets(alignment, 50, aggregation)
    z = torch.as_tensor(prepared.data.z_train[:50], dtype=torch.float32)
    assert targets.batch_loss(module, z, torch.arange(50)) is None
    term = targets.empty_loss(module, z)
    assert float(term.detach()) == 0.0
    term.backward()  # type: ignore[no-untyped-call]
    assert module.mlp.hidden[0].weight.grad is not None


# ------------------------------------------------------------------------------------------------ the mlp student
@pytest.fixture(scope="module")
def mlp_runs(tmp_path_factory: pytest.TempPathFactory, spawn_two: Spawn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The ``mlp`` student: one process on a global batch of 320 rows, and two on 160 rows each."""
    torch.set_num_threads(1)
    single = _train_mlp(batch_size=320)
    return single, _two_processes(
        spawn_two, tmp_path_factory.mktemp("mlp-ddp"), batch_size=160, sgd=True, student="mlp"
    )


def test_mlp_two_processes_give_the_single_process_parameters(
    mlp_runs: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    """One joint aligned step of the mlp (BatchNorm on the global batch's moments), then the BatchNorm pass: the
    weights and statistics of one process on the same global batch."""
    single, (rank0, rank1) = mlp_runs
    assert single["rows"] == rank0["rows"] == rank1["rows"] == 320
    _assert_the_single_process_state(single, rank0, rank1)
    # the comparison can fail: the step moved the weights, and the BatchNorm pass the statistics, far beyond it
    moved = single["state"]["layers.0.weight"] - single["initial"]["layers.0.weight"]
    assert float(moved.abs().max()) > 1e-3
    assert float((single["state"]["layers.1.running_var"] - 1).abs().max()) > 1e-3


def test_mlp_joint_loss_under_ddp_equals_the_single_process_joint_loss(
    mlp_runs: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    """The step's task and alignment losses and its λ (one step: the global batch's) agree."""
    single, (rank0, rank1) = mlp_runs
    _assert_the_single_process_losses(single, rank0, rank1, ("task_loss", "alignment_loss", "alignment_weight"))


def test_mlp_shards_are_disjoint_and_cover_the_training_rows(
    mlp_runs: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    single, (rank0, rank1) = mlp_runs
    assert single["shard"] is None
    shards = [rank0["shard"].numpy(), rank1["shard"].numpy()]
    assert len(shards[0]) == len(shards[1]) == 160
    assert not set(shards[0]) & set(shards[1])
    assert np.array_equal(np.sort(np.concatenate(shards)), np.arange(320))


def _batchnorm_worker(rank: int, world_size: int, port: int, folder: str, sync: bool) -> None:
    """One training on two processes with BatchNorm on the global batch (``sync``) or on each process's rows, and
    how many all-reduces it made (every collective of the student's loops goes through ``dist.all_reduce``)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    calls = [0]
    original = torch.distributed.all_reduce

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    try:
        student = {**STUDENT, "sync_batchnorm": sync}
        with mock.patch.dict(globals(), STUDENT=student), mock.patch.object(torch.distributed, "all_reduce", counted):
            result = _train(batch_size=160, sgd=True)
        torch.save({**result, "all_reduces": calls[0]}, Path(folder) / f"bn-{sync}-rank{rank}.pt")
        _leave_together()
    finally:
        torch.distributed.destroy_process_group()


def test_batchnorm_on_each_process_rows_keeps_the_processes_in_step(tmp_path: Path, spawn_two: Spawn) -> None:
    """``sync_batchnorm=False`` (DistributedDataParallel without SyncBatchNorm): fewer collectives, the processes
    still hold the very same weights and statistics, and training differs from the global-moments run."""
    runs = {}
    for sync in (True, False):
        spawn_two(_batchnorm_worker, (2, _free_port(), str(tmp_path), sync))
        runs[sync] = [torch.load(tmp_path / f"bn-{sync}-rank{rank}.pt", weights_only=True) for rank in range(2)]
    rank0, rank1 = runs[False]
    for name, tensor in rank0["state"].items():
        torch.testing.assert_close(rank1["state"][name], tensor, atol=0, rtol=0, msg=name)
    # the synchronised layers all-reduce at every BatchNorm layer of every pass; the local ones never do
    assert rank0["all_reduces"] < runs[True][0]["all_reduces"]
    moved = rank0["state"]["mlp.hidden.0.weight"] - runs[True][0]["state"]["mlp.hidden.0.weight"]
    assert float(moved.abs().max()) > 1e-5  # the moments of 160 rows are not those of 320


def _plan_worker(rank: int, world_size: int, port: int, folder: str, whole_shard_aligned: bool = False) -> None:
    from gbdt2nn_core.kit.alignment import Alignment
    from gbdt2nn_core.student.joint_step import epoch_plan
    from gbdt2nn_core.student.kit import AlignmentTargets

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        n = 1_000 + 37 * rank  # shards of different sizes, with different shares of aligned rows
        aligned = np.sort(np.random.default_rng(rank).choice(n, size=100 + 60 * rank, replace=False))
        if whole_shard_aligned and rank == 0:  # this shard's rows are all aligned, the other's are not
            n, aligned = 100, np.arange(100)
        alignment = Alignment(
            attributor=object(),  # type: ignore[arg-type]  # the layout never calls it
            loss=torch.nn.functional.mse_loss,
            teacher_attributions=np.ones((len(aligned), 2)),
            rows=aligned,
        )
        targets = AlignmentTargets(alignment, n, torch.eye(2))
        n_all = 1_137 if whole_shard_aligned else 2_037
        plan = epoch_plan(n, n_all, 64, torch.Generator().manual_seed(5), alignment, targets)
        is_aligned = np.isin(np.arange(n), aligned)
        result = {
            "kinds": torch.tensor([bool(is_aligned[rows.numpy()].all()) for rows in plan.batches]),
            "pure": all(
                bool(is_aligned[rows.numpy()].any()) == bool(is_aligned[rows.numpy()].all()) for rows in plan.batches
            ),
            "rows": torch.sort(torch.cat(plan.batches)).values,
            "carry": plan.carry,
            "factor": plan.alignment_factor,
        }
        torch.save(result, Path(folder) / f"rank{rank}.pt")
        _leave_together()
    finally:
        torch.distributed.destroy_process_group()


def test_grouped_aligned_batches_fall_on_the_same_steps_on_every_process(tmp_path: Path, spawn_two: Spawn) -> None:
    """Under several processes the aligned rows of every shard are grouped into batches of the same steps (their
    count from every process's aligned rows), so that each step is an aligned batch everywhere or nowhere, with
    one factor on the term."""
    spawn_two(_plan_worker, (2, _free_port(), str(tmp_path)))
    rank0, rank1 = (torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2))
    steps = len(rank0["kinds"])
    assert steps == len(rank1["kinds"]) == math.ceil(1_037 / 64)  # the largest shard's batches
    assert rank0["kinds"].tolist() == rank1["kinds"].tolist()
    assert rank0["carry"].tolist() == rank1["carry"].tolist() == rank0["kinds"].tolist()
    k = int(rank0["kinds"].sum())
    assert k == round(steps * (100 + 160) / 2_037)
    assert rank0["factor"] == rank1["factor"] == pytest.approx(steps / k)
    assert rank0["pure"]
    assert rank1["pure"]
    torch.testing.assert_close(rank0["rows"], torch.arange(1_000))
    torch.testing.assert_close(rank1["rows"], torch.arange(1_037))


def test_a_shard_whose_rows_are_all_aligned_plans_with_the_others(tmp_path: Path, spawn_two: Spawn) -> None:
    """Whether grouping applies is decided on every process's aligned rows: a shard whose rows are all aligned
    (it alone would need no grouping) still joins the others' collective, and every process falls back to the mixed
    layout together (that shard has no other rows to make its unaligned batches from)."""
    spawn_two(_plan_worker, (2, _free_port(), str(tmp_path), True))
    rank0, rank1 = (torch.load(tmp_path / f"rank{rank}.pt", weights_only=True) for rank in range(2))
    assert rank0["factor"] == rank1["factor"] == 1.0
    assert len(rank0["kinds"]) == len(rank1["kinds"])
    torch.testing.assert_close(rank0["rows"], torch.arange(100))
    torch.testing.assert_close(rank1["rows"], torch.arange(1_037))
