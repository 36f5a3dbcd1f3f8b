"""The shared skeleton of a gradient-boosting teacher: :class:`BoosterTeacher`, filled in by a backend's hooks.

A teacher plugin subclasses :class:`BoosterTeacher`, names its library and fills in a few hooks (train,
copy an in-memory model, load a model file, describe a booster, predict margins / leaves / contributions,
dump the trees, serialise). The base class does everything else the same way for every backend: wrapping a
model or model file, the fit sequence and its checks, input checks, the shapes of predictions, TreeSHAP
reshaping, the fingerprint, saving, and refusing unknown training options with "did you mean".

A sketch (see ``plugins/gbdt2nn-lightgbm`` and ``plugins/gbdt2nn-xgboost`` for complete ones)::

    class MyBoostTeacher(BoosterTeacher[myboost.Booster]):
        library = "MyBoost"
        default_params = {"n_estimators": 100, "max_leaves": 64}

        def train(self, X, labels, *, task, n_outputs, n_rounds, seed, params):
            return myboost.train({**params, "seed": seed}, X, labels, rounds=n_rounds)
        ...

Nothing here imports a tree library.
"""

from __future__ import annotations

import abc
import hashlib
import os
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

import attrs
import numpy as np
import pandas as pd

from gbdt2nn_core.errors import ConfigError, DataError
from gbdt2nn_core.host.interfaces import Task, Teacher, TreeEnsemble, TreeShap
from gbdt2nn_core.kit import teacher_checks as checks
from gbdt2nn_core.model_files import write_atomic
from gbdt2nn_core.validators import is_whole_number

__all__ = [
    "DEFAULT_SHAP_CHUNK_ROWS",
    "DEVICE_SHAP_CHUNK_ROWS",
    "BoosterFacts",
    "BoosterTeacher",
    "ShapProgress",
    "available_cores",
]

B = TypeVar("B")

#: Rows per native TreeSHAP call: the library's working memory is bounded by one chunk, and a progress report
#: follows each (at 100 trees x 64 leaves on adult, about a second per chunk on one thread).
DEFAULT_SHAP_CHUNK_ROWS = 8192
#: Rows per TreeSHAP call on a GPU (:meth:`BoosterTeacher.predict_contribs_cuda`): a GPU needs many rows at once to
#: be busy, and the result of 262,144 rows × 100 columns is 100 MB of float32.
DEVICE_SHAP_CHUNK_ROWS = 262_144


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the system has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


@attrs.frozen(kw_only=True)
class ShapProgress:
    """How far :meth:`BoosterTeacher.shap_values` is, reported after every chunk of rows."""

    #: Rows explained so far.
    rows_done: int
    #: Rows to explain in all.
    rows_total: int
    #: Seconds since the first chunk started.
    seconds: float
    #: Native threads each chunk runs on.
    threads: int

    @property
    def rows_per_second(self) -> float:
        """Throughput so far (``inf`` before any measurable time passed)."""
        return self.rows_done / self.seconds if self.seconds > 0 else float("inf")


@attrs.frozen(kw_only=True)
class BoosterFacts:
    """What the base class needs to know about a booster, read once by :meth:`BoosterTeacher.describe`."""

    #: The task the booster's objective solves; ``None`` when it cannot tell (a custom objective: taken on trust).
    task: Task | None
    #: The objective as the library names it, for messages.
    objective: str
    #: 1 for regression and binary, the number of classes for multiclass.
    n_outputs: int
    #: Number of trees, all outputs together (the width of :meth:`BoosterTeacher.leaf_indices`).
    n_trees: int
    #: Number of input columns.
    n_features: int
    #: The column names the booster stores, or ``None`` when it stores none.
    feature_names: tuple[str, ...] | None = None
    #: ``False`` when :attr:`feature_names` are placeholders the library made up (LightGBM's ``Column_0``...):
    #: the input's columns are then only counted.
    names_checked: bool = True
    #: Per column, whether the booster treats it as categorical; ``None`` when the booster cannot say.
    categorical: tuple[bool, ...] | None = None


class BoosterTeacher(Teacher, Generic[B]):
    """A :class:`~gbdt2nn_core.Teacher` built on a tree library's booster; subclasses fill in the hooks.

    ``model`` is ``None`` to train a booster in :meth:`fit`; otherwise an in-memory model of the library
    (accepted by :meth:`copy_model`) or the path of a model file (read by :meth:`load_model_file`). A wrapped
    model is copied, so later changes to the original do not leak in. ``**params`` are training options (only
    with ``model=None``): :attr:`default_params` overridden by the user's; a name the library does not know
    (:meth:`known_params`) is a :class:`~gbdt2nn_core.ConfigError` with a suggestion. The seed goes to :meth:`fit`.

    A subclass sets the class attributes ``library`` (the name in messages), ``forbidden_characters``
    (characters the library refuses in column names), ``default_params`` (must hold ``n_estimators``),
    ``aliases`` (the library's spellings of ``n_estimators``, ``num_class`` and ``seed``) and ``native_errors``
    (the library's exceptions that mean "cannot predict on this data"). It defines the abstract hooks
    :meth:`train`, :meth:`copy_model`, :meth:`load_model_file`, :meth:`describe`, :meth:`predict_raw`,
    :meth:`predict_leaves`, :meth:`predict_contribs`, :meth:`dump_structure` and :meth:`model_bytes`, and may
    override :meth:`predict_contribs_threaded` (TreeSHAP on a set number of native threads),
    :meth:`train_distributed` (training on a Dask cluster with the library's own engine),
    :meth:`known_params`, :meth:`models_accepted`, :meth:`normalise_name`, :meth:`name_columns` and
    :meth:`error_message`. Every hook receives the booster explicitly; :attr:`n_outputs` is readable in the
    prediction and structure hooks.
    """

    #: The library's name, as messages show it (e.g. ``"LightGBM"``).
    library: ClassVar[str] = "the booster"
    #: Characters the library refuses in column names.
    forbidden_characters: ClassVar[str] = ""
    #: Training defaults; the user's options override them. ``n_estimators`` is the number of boosting rounds.
    default_params: ClassVar[Mapping[str, Any]] = {"n_estimators": 100}
    #: The library's spellings of ``n_estimators``, ``num_class`` and ``seed`` (each tuple includes the name).
    aliases: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "n_estimators": ("n_estimators",),
        "num_class": ("num_class",),
        "seed": ("seed", "random_state"),
    }
    #: Exceptions of the library that mean it cannot predict on the given data (turned into a ``DataError``).
    native_errors: ClassVar[tuple[type[BaseException], ...]] = (ValueError,)
    #: The library's training option for its native threads, then its other spellings (empty: :meth:`use_threads`
    #: sets only the TreeSHAP threads).
    thread_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: object = None, **params: Any) -> None:
        self._params = dict(params)
        self._native_threads: int | None = None
        self._wrapped = model is not None
        self._booster: B | None = None
        self._facts: BoosterFacts | None = None
        self._task: Task | None = None
        self._columns: tuple[str, ...] | None = None
        self._structure: TreeEnsemble | None = None
        self._fingerprint: str | None = None
        if model is None:
            known = self.known_params()
            if known is not None:
                checks.check_known_params(params, known, library=self.library, examples=tuple(self.default_params))
        else:
            checks.check_no_training_params(params)
            if isinstance(model, (str, os.PathLike)):
                self._adopt(self.load_model_file(model))
            else:
                copy = self.copy_model(model)
                if copy is None:
                    raise ConfigError(setting="model", value=type(model).__name__, fix=self.models_accepted())
                self._adopt(copy)

    def __repr__(self) -> str:
        facts = self._facts
        state = "unfitted" if facts is None else f"{facts.n_trees} trees, task={self._task!r}"
        return f"{type(self).__name__}({state})"

    def use_threads(self, threads: int) -> BoosterTeacher[B]:
        """Run on ``threads`` native threads: training (the library's option :attr:`thread_options`, unless the
        user's options already set it: theirs wins) and :meth:`shap_values` when it is not given ``threads``."""
        if not is_whole_number(threads, 1):
            raise ConfigError(setting="threads", value=threads, fix="use a whole number ≥ 1")
        self._native_threads = threads
        if self.thread_options and not self._wrapped and not any(name in self._params for name in self.thread_options):
            self._params[self.thread_options[0]] = threads
        return self

    # ------------------------------------------------------------------ hooks a backend fills in
    @abc.abstractmethod
    def train(
        self,
        X: pd.DataFrame,
        labels: np.ndarray,
        *,
        task: Task,
        n_outputs: int,
        n_rounds: int,
        seed: int,
        params: dict[str, Any],
    ) -> B:
        """Train and return a booster (a private copy, as a saved-and-loaded one would be).

        ``labels`` are checked float64; ``n_outputs`` is the class count for multiclass, else 1; ``params`` are
        the user's options with ``n_estimators``, ``num_class`` and the seed already taken out (apply
        :attr:`default_params` and fix the objective). Raise ``ConfigError`` when the library refuses them.
        """

    @abc.abstractmethod
    def copy_model(self, model: object) -> B | None:
        """A private copy of an in-memory model of the library (booster, scikit-learn wrapper...), or ``None``
        when ``model`` is not one (the base class then raises a ``ConfigError`` with :meth:`models_accepted`)."""

    @abc.abstractmethod
    def load_model_file(self, path: str | os.PathLike[str]) -> B:
        """A booster from the model file at ``path``, checked first; ``ModelFileError`` when it is not usable."""

    @abc.abstractmethod
    def describe(self, booster: B) -> BoosterFacts:
        """Read what the base class needs from ``booster``; ``ConfigError`` for a model gbdt2nn cannot use."""

    @abc.abstractmethod
    def predict_raw(self, booster: B, X: pd.DataFrame) -> np.ndarray:
        """Raw margins of the checked frame ``X``, any shape with ``n * n_outputs`` values (row-major)."""

    @abc.abstractmethod
    def predict_leaves(self, booster: B, X: pd.DataFrame) -> np.ndarray:
        """Leaf ordinals ``(n, n_trees)`` of ``X``, numbered as :meth:`dump_structure` numbers each tree's leaves."""

    @abc.abstractmethod
    def predict_contribs(self, booster: B, X: pd.DataFrame) -> np.ndarray:
        """Path-dependent TreeSHAP contributions: ``n * n_outputs * (n_features + 1)`` values, the bias last."""

    @abc.abstractmethod
    def dump_structure(self, booster: B) -> TreeEnsemble:
        """The ensemble in normalised form (called once per booster; the base class caches it)."""

    @abc.abstractmethod
    def model_bytes(self, booster: B, *, suffix: str = "") -> bytes:
        """The serialised model: what :meth:`save` writes to a file with ``suffix`` (lower case, e.g. ``".json"``),
        and, with ``suffix=""``, the canonical bytes the fingerprint hashes. Never a pickle."""

    def predict_contribs_threaded(self, booster: B, X: pd.DataFrame, threads: int) -> np.ndarray:
        """:meth:`predict_contribs` on exactly ``threads`` native threads (the library's own thread parameter).

        Optional: the default calls :meth:`predict_contribs`, which runs on whatever the library chooses; backends
        written before this hook keep working, but should override it so that the thread count is explicit.
        """
        return self.predict_contribs(booster, X)

    def predict_contribs_cuda(self, booster: B, X: pd.DataFrame, device: str) -> np.ndarray:
        """Optional: :meth:`predict_contribs` computed on the CUDA device ``device`` (``"cuda:0"``), e.g. XGBoost's
        GPUTreeShap. The default refuses; a backend that overrides it gets its TreeSHAP on the GPU whenever the run's
        device is a CUDA device (:meth:`shap_values_on`, :meth:`treeshap_on_cuda`)."""
        raise ConfigError(
            setting="device", value=device, fix=f"the {self.library} teacher computes TreeSHAP on the CPU only"
        )

    @classmethod
    def treeshap_on_cuda(cls) -> bool:
        """Whether this backend overrides :meth:`predict_contribs_cuda` (computes TreeSHAP on a CUDA device)."""
        return cls.predict_contribs_cuda is not BoosterTeacher.predict_contribs_cuda

    def train_distributed(
        self,
        client: Any,
        X: Any,
        labels: Any,
        *,
        task: Task,
        n_outputs: int,
        n_rounds: int,
        seed: int,
        params: dict[str, Any],
    ) -> B:
        """Optional: :meth:`train` on a Dask cluster, through the library's own distributed engine.

        ``client`` is a ``distributed.Client``; ``X`` a ``dask.dataframe.DataFrame`` of checked rows and
        ``labels`` a ``dask.dataframe.Series`` of float64 labels partitioned like it, both already on the
        workers; the other arguments are :meth:`train`'s. Return a booster of the same type :meth:`train` returns
        (a private copy), so that everything after the teacher works unchanged. The default refuses: a backend
        without a distributed engine is still a complete teacher (see :meth:`trains_distributed`).
        """
        raise ConfigError(
            setting="engine",
            value="dask",
            fix=f"the {self.library} teacher has no distributed training; use the local engine, "
            "or a teacher that has one (lightgbm, xgboost)",
        )

    @classmethod
    def trains_distributed(cls) -> bool:
        """Whether this backend overrides :meth:`train_distributed` (can train on a Dask cluster)."""
        return cls.train_distributed is not BoosterTeacher.train_distributed

    def known_params(self) -> Collection[str] | None:
        """Every training option name the library accepts, or ``None`` when it cannot list them (the backend
        must then refuse unknown ones itself, e.g. with :func:`~gbdt2nn_core.kit.teacher_checks.check_known_params`
        after training)."""
        return None

    def models_accepted(self) -> str:
        """The fix of the error for an unsupported ``model=``: what may be wrapped."""
        return f"pass a {self.library} model, a model file path, or None to train a new booster"

    def normalise_name(self, column: str) -> str:
        """The spelling the library stores for a column name (LightGBM turns whitespace into ``_``)."""
        return column

    def name_columns(self, booster: B, columns: tuple[str, ...]) -> bool:
        """Store ``columns`` in a booster that has no column names (called by :meth:`fit`).

        Return ``True`` if the model changed, so that it is fingerprinted again; the default stores nothing.
        """
        return False

    def error_message(self, exc: BaseException) -> str:
        """One line from a library exception, for messages."""
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__

    # ------------------------------------------------------------------ properties
    @property
    def native_model(self) -> B:
        """The library's own booster (a private copy: do not train it further)."""
        return self._require("native_model")

    @property
    def task(self) -> Task:
        """The task the booster solves: set by :meth:`fit`, or read from a wrapped booster's objective."""
        if self._task is None:
            raise checks.not_fitted_error(type(self).__name__, "task")
        return self._task

    @property
    def n_outputs(self) -> int:
        """1 for regression and binary, the number of classes for multiclass."""
        return self._facts_of("n_outputs").n_outputs

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The booster's input columns, in order (as spelled in the data given to :meth:`fit`)."""
        facts = self._facts_of("feature_names")
        if self._columns is not None:
            return self._columns
        if facts.feature_names is None:
            raise checks.not_fitted_error(type(self).__name__, "feature_names (the booster has no column names)")
        return facts.feature_names

    # ------------------------------------------------------------------ training / wrapping
    def fit(self, X: pd.DataFrame, y: np.ndarray, *, task: Task, seed: int = 0) -> BoosterTeacher[B]:
        """Train a booster on ``(X, y)``; a wrapped booster is not retrained, only checked against X and task."""
        task = checks.check_task(task)
        X = checks.check_frame(X, forbidden=self.forbidden_characters, library=self.library)
        if self._wrapped:
            return self._check_wrapped(X, y, task)
        params = dict(self._params)
        n_classes = checks.pop_n_classes(params, self.aliases["num_class"], task=task)
        labels, k = checks.check_target(y, n_rows=len(X), task=task, n_classes=n_classes)
        checks.check_no_seed(params, self.aliases["seed"])
        n_rounds = checks.pop_n_rounds(params, self.aliases["n_estimators"], int(self.default_params["n_estimators"]))
        booster = self.train(X, labels, task=task, n_outputs=k, n_rounds=n_rounds, seed=seed, params=params)
        self._adopt(booster)
        self._task = task
        self._set_columns(tuple(X.columns))
        return self

    def fit_distributed(
        self, client: Any, X: pd.DataFrame, y: np.ndarray, *, task: Task, seed: int = 0, partitions: int
    ) -> B:
        """Train a booster on ``(X, y)`` on ``client``'s Dask cluster (:meth:`train_distributed`) and return it.

        The same checks and options as :meth:`fit`; the rows go to the workers in ``partitions`` partitions of
        consecutive rows. The teacher itself stays unfitted: wrap the returned booster (``factory(model=...)``)
        to get the ordinary teacher, which :meth:`fit` then only checks. Needs ``pip install 'gbdt2nn-core[dask]'``.
        """
        if self._wrapped:
            raise ConfigError(
                setting="model", value=type(self).__name__, fix="a wrapped booster is not retrained; pass model=None"
            )
        if not is_whole_number(partitions, 1):
            raise ConfigError(setting="partitions", value=partitions, fix="use a whole number ≥ 1")
        task = checks.check_task(task)
        X = checks.check_frame(X, forbidden=self.forbidden_characters, library=self.library)
        params = dict(self._params)
        n_classes = checks.pop_n_classes(params, self.aliases["num_class"], task=task)
        labels, k = checks.check_target(y, n_rows=len(X), task=task, n_classes=n_classes)
        checks.check_no_seed(params, self.aliases["seed"])
        n_rounds = checks.pop_n_rounds(params, self.aliases["n_estimators"], int(self.default_params["n_estimators"]))
        import dask.dataframe as dd  # the optional extra: imported only when a distributed fit is asked for

        # Consecutive chunks of equal size, for the rows and their labels alike, so partition i of one matches
        # partition i of the other.
        chunk = -(-len(X) // partitions)
        rows = dd.from_pandas(X.reset_index(drop=True), chunksize=chunk, sort=False)  # type: ignore[no-untyped-call]
        targets = dd.from_pandas(pd.Series(labels, name="label"), chunksize=chunk, sort=False)  # type: ignore[no-untyped-call]
        rows, targets = client.persist([rows, targets])
        return self.train_distributed(
            client, rows, targets, task=task, n_outputs=k, n_rounds=n_rounds, seed=seed, params=params
        )

    def _check_wrapped(self, X: pd.DataFrame, y: object, task: Task) -> BoosterTeacher[B]:
        facts = self._facts_of("fit")
        if facts.task is not None and task != facts.task:
            raise ConfigError(
                setting="task",
                value=task,
                fix=f"the booster's objective {facts.objective!r} solves {facts.task}; "
                f"pass task={facts.task!r} or wrap another model",
            )
        if (task == "multiclass") != (facts.n_outputs > 1):
            raise ConfigError(
                setting="task", value=task, fix=f"the booster has {facts.n_outputs} output(s); it is not a {task} model"
            )
        self._check_input(X)
        if y is not None:
            checks.check_target(
                y, n_rows=len(X), task=task, n_classes=facts.n_outputs if task == "multiclass" else None, training=False
            )
        self._task = task
        self._set_columns(tuple(X.columns))
        return self

    def _set_columns(self, columns: tuple[str, ...]) -> None:
        booster = self._require("fit")
        self._columns = columns
        if self._facts is not None and self._facts.feature_names is None and self.name_columns(booster, columns):
            self._facts = attrs.evolve(self._facts, feature_names=columns)
            self._fingerprint = None

    def _adopt(self, booster: B) -> None:
        """Make ``booster`` (already a private copy) the model, and read what the teacher needs from it."""
        facts = self.describe(booster)
        self._booster = booster
        self._facts = facts
        self._task = facts.task
        self._columns = None
        self._structure = None
        self._fingerprint = None

    # ------------------------------------------------------------------ predictions
    def _require(self, method: str) -> B:
        if self._booster is None:
            raise checks.not_fitted_error(type(self).__name__, method)
        return self._booster

    def _facts_of(self, method: str) -> BoosterFacts:
        self._require(method)
        assert self._facts is not None  # set together with the booster
        return self._facts

    def _check_input(self, X: object) -> pd.DataFrame:
        facts = self._facts_of("predict")
        frame = checks.check_frame(X, forbidden=self.forbidden_characters, library=self.library)
        if self._columns is not None:
            checks.check_columns(frame, self._columns)
        elif facts.feature_names is not None and facts.names_checked:
            checks.check_columns(frame, facts.feature_names, normalise=self.normalise_name)
        elif frame.shape[1] != facts.n_features:
            raise DataError(
                problem=f"X has {frame.shape[1]} columns, the booster takes {facts.n_features}",
                fix="pass the columns the booster was trained on, in its order",
            )
        if facts.categorical is not None:
            checks.check_kinds(frame, facts.categorical)
        return frame

    def _native(self, method: str, X: object, hook: Any) -> np.ndarray:
        booster = self._require(method)
        frame = self._check_input(X)
        try:
            return np.asarray(hook(booster, frame))
        except self.native_errors as exc:
            raise self._cannot_predict(exc) from None

    def _cannot_predict(self, exc: BaseException) -> DataError:
        return DataError(
            problem=f"{self.library} cannot predict on X: {self.error_message(exc)}",
            fix="pass data like the training data",
        )

    def predict_margin(self, X: pd.DataFrame) -> np.ndarray:
        """Raw scores: shape ``(n,)``, or ``(n, k)`` for ``k`` classes."""
        margin = self._native("predict_margin", X, self.predict_raw).astype(np.float64, copy=False)
        k = self._facts_of("predict_margin").n_outputs
        return margin.reshape(len(X), k) if k > 1 else margin.reshape(len(X))

    def leaf_indices(self, X: pd.DataFrame) -> np.ndarray:
        """``(n, n_trees)`` int32: the leaf of each row in each tree, in :meth:`structure` order."""
        leaves = self._native("leaf_indices", X, self.predict_leaves)
        return leaves.astype(np.int32, copy=False).reshape(len(X), self._facts_of("leaf_indices").n_trees)

    def shap_values(
        self,
        X: pd.DataFrame,
        *,
        threads: int | None = None,
        chunk_rows: int = DEFAULT_SHAP_CHUNK_ROWS,
        progress: Callable[[ShapProgress], None] | None = None,
    ) -> TreeShap:
        """Path-dependent TreeSHAP from the library, in margin space.

        Rows go to the library ``chunk_rows`` at a time, each chunk on ``threads`` native threads (default: those
        of :meth:`use_threads`, else every core this process may use, :func:`available_cores`); ``progress`` is
        called after each chunk. Each row's values are computed on their own, so chunks and threads give the same
        values as one single-threaded call.
        """
        if threads is None:
            threads = self._native_threads if self._native_threads is not None else available_cores()
        for setting, value in (("threads", threads), ("chunk_rows", chunk_rows)):
            if not is_whole_number(value, 1):
                raise ConfigError(setting=setting, value=value, fix="use a whole number ≥ 1")
        return self._chunked_shap(
            X,
            lambda booster, rows: self.predict_contribs_threaded(booster, rows, threads),
            chunk_rows,
            progress,
            threads,
        )

    def shap_values_on(self, X: pd.DataFrame, device: str) -> TreeShap:
        """:meth:`shap_values` on a CUDA ``device`` when the backend has :meth:`predict_contribs_cuda` (in chunks of
        :data:`DEVICE_SHAP_CHUNK_ROWS` rows), on every CPU core otherwise."""
        if not (str(device).startswith("cuda") and self.treeshap_on_cuda()):
            return self.shap_values(X)
        return self._chunked_shap(
            X, lambda booster, rows: self.predict_contribs_cuda(booster, rows, str(device)), DEVICE_SHAP_CHUNK_ROWS
        )

    def _chunked_shap(
        self,
        X: pd.DataFrame,
        contribs: Callable[[B, pd.DataFrame], np.ndarray],
        chunk_rows: int,
        progress: Callable[[ShapProgress], None] | None = None,
        threads: int = 1,
    ) -> TreeShap:
        """TreeSHAP of ``X`` from ``contribs(booster, rows)``, ``chunk_rows`` rows at a time."""
        booster = self._require("shap_values")
        frame = self._check_input(X)
        k = self._facts_of("shap_values").n_outputs
        n = len(frame)
        contrib: np.ndarray | None = None
        started = time.perf_counter()
        for start in range(0, n, chunk_rows):
            rows = frame.iloc[start : start + chunk_rows]
            try:
                chunk = np.asarray(contribs(booster, rows), dtype=np.float64)
            except self.native_errors as exc:
                raise self._cannot_predict(exc) from None
            chunk = chunk.reshape(len(rows), k, -1)
            if contrib is None:  # filled in place: no second copy of the result at the end
                contrib = np.empty((n, k, chunk.shape[2]), dtype=np.float64)
            contrib[start : start + len(rows)] = chunk
            if progress is not None:
                seconds = time.perf_counter() - started
                progress(ShapProgress(rows_done=start + len(rows), rows_total=n, seconds=seconds, threads=threads))
        assert contrib is not None  # the frame has rows (checked above)
        values = contrib[:, :, :-1]
        return TreeShap(
            values=values[:, 0, :] if k == 1 else values,
            expected_value=contrib[0, :, -1],
            method="path-dependent",
        )

    # ------------------------------------------------------------------ structure, identity, saving
    def structure(self) -> TreeEnsemble:
        """The ensemble in normalised form (computed once per booster by :meth:`dump_structure`)."""
        booster = self._require("structure")
        if self._structure is None:
            self._structure = self.dump_structure(booster)
        return self._structure

    def fingerprint(self) -> str:
        """SHA-256 of the canonical serialised model (:meth:`model_bytes` with no suffix)."""
        booster = self._require("fingerprint")
        if self._fingerprint is None:
            self._fingerprint = hashlib.sha256(self.model_bytes(booster)).hexdigest()
        return self._fingerprint

    def save(self, path: Path) -> None:
        """Write the model to ``path`` atomically; ``factory(model=path)`` loads it back."""
        booster = self._require("save")
        write_atomic(path, self.model_bytes(booster, suffix=Path(path).suffix.lower()))
