"""The latency of one gloo all-reduce between two processes on this machine, by message size.

    python benchmarks/gloo_latency.py            # prints a JSON object: milliseconds per all-reduce, by floats

A data-parallel training step of the GBDT2NN student all-reduces its gradients once, and with BatchNorm on the
global batch's moments (``sync_batchnorm``, the default) also once per BatchNorm layer at every forward and
backward pass: on CPU the step pays this latency that many times. benchmarks/scale.py runs this beside its
distillations, so that the figure comes from the same machine and moment.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

#: Message sizes in float32 values: a 4-value step total, a BatchNorm layer's moments (10 groups × 100
#: channels, sums and squares), a gradient bucket of a quarter of a million values.
SIZES = (4, 2_001, 250_000)
ROUNDS = 200


def _worker(rank: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        result = {}
        for size in SIZES:
            values = torch.ones(size)
            for _ in range(10):  # connections and buffers warm
                dist.all_reduce(values)
            rounds = ROUNDS if size < 100_000 else ROUNDS // 10
            dist.barrier()
            started = time.perf_counter()
            for _ in range(rounds):
                dist.all_reduce(values)
            result[str(size)] = (time.perf_counter() - started) / rounds * 1e3
        if rank == 0:
            Path(folder, "latency.json").write_text(json.dumps(result), encoding="utf-8")
    finally:
        dist.destroy_process_group()


def measure() -> dict[str, float]:
    """Milliseconds per all-reduce of two gloo processes (one thread each), by the number of float32 values."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    with tempfile.TemporaryDirectory() as folder:
        # torch.multiprocessing re-exports spawn outside its __all__, and spawn has no annotations
        mp.spawn(_worker, args=(port, folder), nprocs=2, join=True)  # type: ignore[attr-defined,no-untyped-call]
        latency: dict[str, float] = json.loads(Path(folder, "latency.json").read_text(encoding="utf-8"))
    return latency


if __name__ == "__main__":
    json.dump(measure(), sys.stdout)
    print()
