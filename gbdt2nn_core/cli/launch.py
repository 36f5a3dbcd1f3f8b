"""``gbdt2nn distill --nproc N``: start N copies of the command on this machine through torch's elastic launcher.

The copies find the process group in their environment (see :mod:`gbdt2nn_core.pipeline.processes`), as under
``torchrun``, which runs the same command across machines.
"""

from __future__ import annotations

from collections.abc import Sequence

from gbdt2nn_core.errors import ConfigError

__all__ = ["launch"]


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run ``python -m gbdt2nn_core.cli *argv`` in ``nproc`` processes on this machine through torch's elastic
    launcher (``torch.distributed.launcher.api.elastic_launch``, what ``torchrun --standalone`` uses); returns the
    exit code of the group: 0, or the first failed process's code (its one-line error is already on stderr)."""
    import logging
    import sys
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(setting="--nproc", value=nproc, fix="use a whole number of processes ≥ 1")
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=nproc,
        run_id=str(uuid.uuid4()),
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # a free port, as torchrun --standalone
        max_restarts=0,  # a failed distillation fails again: report it instead (a rerun resumes from checkpoints)
        monitor_interval=0.2,
    )
    # the launcher logs every start and, on a failure or Ctrl-C, a multi-line report; the failed process printed its
    # line. Its modules set their loggers' levels themselves, so each one is quietened (they are imported by now)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("torch.distributed.elastic", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        # this package's command line, in new interpreters (python -m gbdt2nn_core.cli); nothing is imported here
        elastic_launch(config, sys.executable)("-m", str(__package__), *argv)
    except ChildFailedError as failure:
        codes = [info.exitcode for info in failure.failures.values()]
        return next((code for code in codes if code > 0), 1)
    except SignalException as signal:  # Ctrl-C or a kill: the launcher stopped the processes; a rerun resumes
        raise KeyboardInterrupt from signal
    return 0
