"""The teacher and its TreeSHAP on a Dask cluster (``gbdt2nn distill --engine dask``).

What runs where:

- **the workers** read the data file (or folder of Parquet files) partition by partition, train the teacher with
  the library's own distributed engine (``lightgbm.dask``, ``xgboost.dask``, through the teacher's optional
  :meth:`~gbdt2nn_core.kit.booster_teacher.BoosterTeacher.train_distributed` hook), and compute the teacher's
  TreeSHAP one partition per task, with the same code the single-machine path runs;
- **this process** holds the rows once (the student trains in one process on them), splits them exactly as the
  single-machine pipeline does, wraps the trained booster as the ordinary teacher, and writes the TreeSHAP values
  into the explanation cache under the same key the single-machine path uses, so that a later run without Dask
  (the same rows, the same ``teacher.txt`` via ``--teacher-model``) reads them back instead of recomputing them.

Everything here needs the optional extra: ``pip install 'gbdt2nn-core[dask]'``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pandas as pd

from gbdt2nn_core.errors import ConfigError, DataError
from gbdt2nn_core.host.interfaces import Teacher, TreeShap
from gbdt2nn_core.kit.booster_teacher import BoosterTeacher
from gbdt2nn_core.pipeline.core import Pipeline, Prepared
from gbdt2nn_core.pipeline.data import SplitData
from gbdt2nn_core.pipeline.explanations import TeacherExplanations
from gbdt2nn_core.pipeline.seeding import seeded
from gbdt2nn_core.validators import is_whole_number

__all__ = [
    "DASK_INSTALL",
    "DaskEngine",
    "DaskExplanations",
    "DaskSettings",
    "dask_client",
    "engine_client",
    "prepare_on_dask",
    "read_on_dask",
    "require_dask",
    "shap_values_on_dask",
]

#: The command that installs what ``--engine dask`` needs.
DASK_INSTALL = "pip install 'gbdt2nn-core[dask]'"


def _at_least_one(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not is_whole_number(value, 1):
        raise ConfigError(setting=attribute.name, value=value, fix="use a whole number ≥ 1")


@attrs.frozen(kw_only=True)
class DaskSettings:
    """Where the Dask work runs: an existing scheduler, or a local cluster of this size."""

    #: Address of a running scheduler (``tcp://host:8786``); ``None`` starts a ``LocalCluster``.
    scheduler: str | None = None
    #: Workers of the local cluster (ignored with a scheduler: its cluster has its own).
    n_workers: int = attrs.field(default=2, validator=_at_least_one)
    #: Threads of each local worker; each TreeSHAP task runs on this many native threads.
    threads_per_worker: int = attrs.field(default=1, validator=_at_least_one)
    #: Seconds to wait for the scheduler; ``None``: Dask's ``distributed.comm.timeouts.connect`` (30 s by default).
    connect_timeout_s: float | None = None


#: What a scheduler address looks like: ``[protocol://]host[:port]`` (``tcp://10.0.0.5:8786``, ``localhost:8786``).
_ADDRESS = re.compile(r"([a-z][a-z0-9+]*://)?[^\s:/]+(:\d+)?/?")


def require_dask() -> None:
    """A one-line :class:`ConfigError` naming the extra to install when Dask or its libraries are missing."""
    try:
        import dask.dataframe  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        raise ConfigError(setting="engine", value="dask", fix=f"Dask is not installed; {DASK_INSTALL}") from None


@contextlib.contextmanager
def dask_client(settings: DaskSettings) -> Iterator[Any]:
    """A ``distributed.Client`` of the scheduler at ``settings.scheduler``, or of a new local cluster.

    The local cluster runs its workers as processes (LightGBM's distributed training needs one network per
    process) with explicit thread counts, and without a dashboard; it is shut down when the block ends.
    """
    require_dask()
    from distributed import Client, LocalCluster

    if settings.scheduler is not None:
        if not _ADDRESS.fullmatch(settings.scheduler):
            raise ConfigError(
                setting="scheduler",
                value=settings.scheduler,
                fix="not a scheduler address; pass the one a running `dask scheduler` prints (tcp://HOST:PORT)",
            )
        timeout = None if settings.connect_timeout_s is None else f"{settings.connect_timeout_s}s"
        try:
            client = Client(settings.scheduler, timeout=timeout)  # type: ignore[no-untyped-call]
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(
                setting="scheduler",
                value=settings.scheduler,
                fix=f"no Dask scheduler answers there ({reason}); pass the address a running `dask scheduler` "
                "prints (tcp://HOST:PORT), or leave --scheduler out for a local cluster",
            ) from None
        with client:
            yield client
        return
    with (
        LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=settings.n_workers,
            threads_per_worker=settings.threads_per_worker,
            processes=True,
            dashboard_address=":0",  # any free port: several clusters may run on one machine
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,  # type: ignore[no-untyped-call]
    ):
        # The workers' native libraries print their progress (LightGBM's network set-up) to the stdout they
        # share with this process, where `--json` output goes: they write to nothing instead.
        client.run(_quiet_stdout)
        yield client


def _quiet_stdout() -> None:
    """Point this worker process's standard output (file descriptor 1) at the null device."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)


def _worker_threads(client: Any) -> tuple[int, int]:
    """(workers, threads of the smallest worker) of the client's cluster."""
    threads = list(client.nthreads().values())
    if not threads:
        raise ConfigError(setting="scheduler", value=str(client.scheduler.address), fix="the cluster has no workers")
    return len(threads), int(min(threads))


# ------------------------------------------------------------------------------------------------ reading
def _lazy_frame(path: Path) -> Any:
    """A ``dask.dataframe`` over ``path`` (CSV, Parquet, or a folder of Parquet files); nothing read yet."""
    import dask.dataframe as dd

    if not path.exists():
        raise DataError(problem=f"data file {str(path)!r} does not exist", fix="check the path passed to --data")
    if path.is_dir():
        parts = sorted(p for p in path.iterdir() if p.suffix.lower() in (".parquet", ".pq"))
        if not parts:
            raise DataError(
                problem=f"folder {str(path)!r} holds no .parquet files",
                fix="pass a CSV or Parquet file, or a folder of Parquet files",
            )
        return dd.read_parquet([str(p) for p in parts])
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] in ([".parquet"], [".pq"]):
        return dd.read_parquet(str(path))
    if suffixes[-1:] == [".csv"] or suffixes[-2:] == [".csv", ".gz"]:
        # As gbdt2nn reads a CSV on one machine: only an empty cell is missing. A gzip file cannot be split.
        blocksize = None if suffixes[-1] == ".gz" else "64MB"
        return dd.read_csv(str(path), keep_default_na=False, na_values=[""], blocksize=blocksize)
    raise DataError(problem=f"cannot tell the format of {path.name!r}", fix="use a .csv, .csv.gz or .parquet file")


def read_on_dask(client: Any, path: str | Path) -> pd.DataFrame:
    """Read ``path`` on the cluster's workers, partition by partition, and gather the rows here, in file order.

    ``client`` is a ``distributed.Client`` or a :class:`DaskEngine` (whose cluster then starts only once the path
    is known to be readable).
    """
    import dask

    path = Path(path)
    # Keep pandas' own column types, as the single-machine reader does (Dask would otherwise turn text columns into
    # pyarrow strings, and the rows would hash differently in the explanation cache).
    with dask.config.set({"dataframe.convert-string": False}):
        lazy = _lazy_frame(path)
        if isinstance(client, DaskEngine):
            client = client.client
        try:
            frame = client.compute(lazy).result()
        except (ValueError, OSError, EOFError, pd.errors.ParserError) as exc:
            message = str(exc).splitlines()[0] if str(exc) else ""
            raise DataError(
                problem=f"cannot read {path.name}: {type(exc).__name__}: {message}",
                fix="check that the file is a complete, valid CSV or Parquet file",
            ) from None
    frame = frame.reset_index(drop=True)
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DataError(problem=f"{path.name} has no rows or no columns", fix="pass a file with data in it")
    return frame


# ------------------------------------------------------------------------------------------------ TreeSHAP
def _explain_partition(part: pd.DataFrame, teacher: Teacher, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """One partition's TreeSHAP, on a worker, by the teacher's own single-machine path."""
    # A booster teacher runs on exactly the worker's threads; any other teacher on what its library chooses.
    shap = (
        teacher.shap_values(part, threads=threads) if isinstance(teacher, BoosterTeacher) else teacher.shap_values(part)
    )
    return shap.values, shap.expected_value


def shap_values_on_dask(client: Any, teacher: Teacher, frame: pd.DataFrame, *, threads: int | None = None) -> TreeShap:
    """Path-dependent TreeSHAP of ``frame``, one partition per worker task; the same values and shape as
    ``teacher.shap_values(frame)``.

    ``frame`` is cut into as many partitions of consecutive rows as the cluster has workers; each task runs the
    teacher's :meth:`~gbdt2nn_core.Teacher.shap_values` on ``threads`` native threads (default: the smallest
    worker's thread count), and the values come back in row order.
    """
    import dask.dataframe as dd
    from dask.delayed import delayed

    workers, worker_threads = _worker_threads(client)
    threads = worker_threads if threads is None else threads
    chunk = max(1, -(-len(frame) // workers))
    partitions = dd.from_pandas(frame.reset_index(drop=True), chunksize=chunk, sort=False)  # type: ignore[no-untyped-call]
    # Shipped once, not once per partition. A key of its own (hash=False): with a content hash, a later call on the
    # same booster would reuse the key of an earlier call's future, whose release can then drop the data mid-call.
    remote_teacher = client.scatter(teacher, broadcast=True, hash=False)
    tasks = [delayed(_explain_partition)(part, remote_teacher, threads) for part in partitions.to_delayed()]
    results = client.compute(tasks, sync=True)
    values = np.concatenate([v for v, _ in results], axis=0)
    return TreeShap(values=values, expected_value=results[0][1], method="path-dependent")


class DaskExplanations(TeacherExplanations):
    """:class:`TeacherExplanations` whose path-dependent TreeSHAP is computed on a Dask cluster.

    The values go through the same cache, under the same key, as the single-machine ones: a cached entry is read
    instead of computed, and a computed one is stored for any later run. Interventional TreeSHAP stays local.
    """

    def __init__(self, base: TeacherExplanations, *, client: Any, threads: int | None = None) -> None:
        super().__init__(
            base.teacher, config=base.config, registry=base.registry, background=base.background, cache=base.cache
        )
        self.client, self.threads = client, threads

    def explain(self, frame: pd.DataFrame) -> TreeShap:
        if self.config.teacher_explanation != "path-dependent":
            return super().explain(frame)
        teacher, client, threads = self.teacher, self.client, self.threads
        return self.cache.get_or_compute(
            teacher, frame, "path-dependent", lambda: shap_values_on_dask(client, teacher, frame, threads=threads)
        )


# ------------------------------------------------------------------------------------------------ the pipeline step
def prepare_on_dask(pipeline: Pipeline, split: SplitData, client: Any, teacher: Teacher | None = None) -> Prepared:
    """:meth:`Pipeline.prepare_split` with the teacher trained and its TreeSHAP computed on ``client``'s cluster.

    ``teacher`` is an already wrapped booster (``--teacher-model``): it is not retrained, only its TreeSHAP runs on
    the cluster. Otherwise the configured teacher trains through its backend's distributed engine, and the booster
    it returns is wrapped as the ordinary teacher (same booster type, same fingerprint as its saved file). The
    TreeSHAP values the run needs (test rows; the aligned training rows too when the student aligns) are computed
    before this returns, while the cluster is up.
    """
    config, registry = pipeline.config, pipeline.registry
    teacher_s = None
    if teacher is None:
        trainer = pipeline.teacher()
        if not isinstance(trainer, BoosterTeacher) or not trainer.trains_distributed():
            raise ConfigError(
                setting="teacher",
                value=config.teacher,
                fix="this teacher cannot train on Dask; use --engine local, or --teacher lightgbm or xgboost",
            )
        workers, _ = _worker_threads(client)
        started = time.perf_counter()
        with pipeline.progress.step(f"teacher ({config.teacher}) on Dask, {workers} workers"), seeded(config.seed):
            booster = trainer.fit_distributed(
                client, split.train_frame, split.y_train, task=split.task, seed=config.seed, partitions=workers
            )
        teacher_s = time.perf_counter() - started
        teacher = registry.teacher(config.teacher, model=booster)
    prepared = pipeline.prepare_split(split, teacher)
    if teacher_s is not None:
        prepared.timings["teacher_s"] = teacher_s
    local = prepared.explanations
    prepared.explanations = DaskExplanations(local, client=client)
    try:
        prepared.shap_test  # noqa: B018 - computed now, while the cluster is up; kept by `prepared`
        if config.alignment_weight > 0:
            # the rows training will align (the same draw as Pipeline.train's), not every training row
            prepared.aligned_explanations(config.alignment_rows, config.seed, min_rows=config.alignment_min_rows)
    finally:
        prepared.explanations = local  # anything asked later runs here, with the cluster gone
    return prepared


# ------------------------------------------------------------------------------------------------ the CLI's seam
class DaskEngine:
    """The Dask client of ``--engine dask``, connected when first asked for (:attr:`client`); :meth:`close` ends it.

    A scheduler address is connected to at once (a bad one fails before any work); a local cluster starts on
    first use, so that a mistake found earlier (a missing data file) does not wait for workers to start.
    """

    def __init__(self, settings: DaskSettings) -> None:
        self.settings = settings
        self._stack = contextlib.ExitStack()
        self._client: Any = None
        if settings.scheduler is not None:
            self.client  # noqa: B018 - connect now

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` (connected, or its local cluster started, on first use)."""
        if self._client is None:
            self._client = self._stack.enter_context(dask_client(self.settings))
        return self._client

    def close(self) -> None:
        """Close the client and shut down a local cluster this engine started."""
        self._stack.close()
        self._client = None


@contextlib.contextmanager
def engine_client(engine: str, *, scheduler: str | None = None, workers: int | None = None) -> Iterator[Any]:
    """The :class:`DaskEngine` of ``--engine dask [--scheduler ADDRESS] [--dask-workers N]``; ``None`` for the local
    engine. Checked before any work: a missing extra or a bad address fails first, in one line."""
    if engine == "local":
        for flag, value in (("--scheduler", scheduler), ("--dask-workers", workers)):
            if value is not None:
                raise ConfigError(setting=flag, value=value, fix="it needs --engine dask")
        yield None
        return
    if engine != "dask":
        raise ConfigError(setting="--engine", value=engine, fix="choose local or dask")
    if workers is not None and not is_whole_number(workers, 1):
        raise ConfigError(setting="--dask-workers", value=workers, fix="use a whole number ≥ 1")
    if scheduler is not None and workers is not None:
        raise ConfigError(
            setting="--dask-workers",
            value=workers,
            fix="it sizes a local cluster; the cluster behind --scheduler has its own workers",
        )
    require_dask()
    settings = DaskSettings(scheduler=scheduler, n_workers=2 if workers is None else workers)
    dask_engine = DaskEngine(settings)
    try:
        yield dask_engine
    finally:
        dask_engine.close()
