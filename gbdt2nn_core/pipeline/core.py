"""The one orchestrator: ``Pipeline(config).prepare(...)`` → ``train(...)`` → ``evaluate(...)``.

Every entry point — ``gbdt2nn distill``, the scikit-learn estimators, ``gbdt2nn experiment`` — builds a
:class:`~gbdt2nn_core.pipeline.DistillConfig` and calls this. Preparing (split, teacher, encoder, leaves, margins,
the background sample) happens once; training and evaluating may then run for many settings of the alignment::

    pipeline = Pipeline(DistillConfig(alignment_weight=1.0))
    prepared = pipeline.prepare(frame, "income_gt_50k")
    trained = pipeline.train(prepared)
    metrics = pipeline.evaluate(prepared, trained)
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pandas as pd
import torch

from gbdt2nn_core.data import rowfile
from gbdt2nn_core.data.cache import ExplanationCache, default_cache_dir
from gbdt2nn_core.data.rowfile import RowFolder, is_on_disk, take_rows
from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.host.device import module_device, resolve_device, rows_on
from gbdt2nn_core.host.interfaces import (
    Attributor,
    Student,
    StudentInputs,
    Task,
    Teacher,
    TreeShap,
    ValidationRows,
)
from gbdt2nn_core.host.registry import Registry, get_registry
from gbdt2nn_core.kit.alignment import Alignment
from gbdt2nn_core.kit.booster_teacher import BoosterTeacher
from gbdt2nn_core.pipeline.background import BACKGROUND_ROWS, background_index
from gbdt2nn_core.pipeline.config import DistillConfig
from gbdt2nn_core.pipeline.data import (
    PreparedData,
    SplitData,
    ValidationSplit,
    encode_rows,
    encoded_bytes,
    encoder_for,
    fitting_rows_first,
    split_data,
    validation_split,
)
from gbdt2nn_core.pipeline.evaluate import evaluate_rows
from gbdt2nn_core.pipeline.explanations import TeacherExplanations, explanation_cache
from gbdt2nn_core.pipeline.margins import enable_lookup
from gbdt2nn_core.pipeline.metrics import Metrics
from gbdt2nn_core.pipeline.processes import check_data_parallel, shard_of, shared_teacher
from gbdt2nn_core.pipeline.seeding import seeded
from gbdt2nn_core.pipeline.synthetic import SyntheticRows, munge, teacher_labels
from gbdt2nn_core.progress import NullProgress, Progress
from gbdt2nn_core.student.distributed import world

__all__ = ["Pipeline", "Prepared", "Trained", "check_explains"]


@attrs.define(kw_only=True, eq=False)
class Prepared:
    """What every student of one split shares: rows, encoding, teacher, its margins and leaves, backgrounds.

    The teacher's explanations are computed on first use (only aligned students and evaluation need them; on
    adult they are half the wall time of a plain run) and cached, in memory and on disk.
    """

    data: PreparedData
    teacher: Teacher
    leaves_train: np.ndarray = attrs.field(repr=False)
    teacher_margin_train: np.ndarray = attrs.field(repr=False)
    #: Encoded training rows that every attributor of this split measures against.
    background: np.ndarray = attrs.field(repr=False)
    #: Teacher-ready training rows that interventional TreeSHAP measures against.
    teacher_background: pd.DataFrame = attrs.field(repr=False)
    explanations: TeacherExplanations = attrs.field(repr=False)
    progress: Progress = attrs.field(repr=False)
    #: The training rows the student fits on and those it holds out for early stopping (the teacher used all).
    validation: ValidationSplit = attrs.field(repr=False)
    #: Teacher-labelled synthetic rows the student trains on besides its fitting rows (``synthetic_rows``).
    synthetic: SyntheticRows | None = attrs.field(default=None, repr=False)
    timings: dict[str, float] = attrs.field(factory=dict)
    #: The temporary folder of the matrices kept on disk (``spill_bytes``), or ``None`` when all are in memory.
    rows_folder: RowFolder | None = attrs.field(default=None, repr=False)
    _cached: dict[str, Any] = attrs.field(factory=dict, repr=False)

    def close(self) -> None:
        """Remove the on-disk matrices (also done when this object is garbage-collected, or at exit); the rows kept
        on disk can no longer be read afterwards."""
        if self.rows_folder is not None:
            self.rows_folder.close()

    def _explain(self, key: str, frame: pd.DataFrame, label: str) -> TreeShap:
        if key not in self._cached:
            started = time.perf_counter()
            with self.progress.step(f"teacher TreeSHAP ({label})"):
                self._cached[key] = self.explanations.explain(frame)
            self.timings["treeshap_s"] = self.timings.get("treeshap_s", 0.0) + time.perf_counter() - started
            self.timings["treeshap_cache_hits"] = float(self.explanations.cache.hits)
        result: TreeShap = self._cached[key]
        return result

    @property
    def shap_train(self) -> TreeShap:
        """The teacher's explanations of the training rows (the alignment target)."""
        return self._explain("train", self.data.train_frame, "training rows")

    def aligned_explanations(
        self, share: float, seed: int, *, min_rows: int, shard: np.ndarray | None = None
    ) -> tuple[np.ndarray | None, TreeShap]:
        """The aligned rows and the teacher's explanations of them (the alignment target): a share ``share`` of the
        student's fitting rows (:attr:`validation`'s ``fit``), but at least ``min_rows`` of them (all when there are
        fewer), drawn with ``seed`` (by the background policy's sampler), as positions among those rows, or
        ``None`` when that is every one of them. Only these rows are explained; the cache keys them by content, so
        a subset and the full set never share an entry.

        With ``shard`` (this process's positions among the fitting rows, see
        :func:`~gbdt2nn_core.pipeline.processes.shard_of`), only the aligned rows inside the shard, as positions
        among the shard's rows: each process explains its own share of the aligned rows.
        """
        if shard is not None:
            return self._aligned_in_shard(share, seed, shard, min_rows)
        fit = self.validation.fit
        n = len(fit)
        count = max(math.ceil(share * n), min_rows)
        if count >= n:
            if n == len(self.data.y_train):
                return None, self.shap_train
            frame = self.data.train_frame.iloc[fit].reset_index(drop=True)
            return None, self._explain(f"fit-{n}-{seed}", frame, f"{n} fitting training rows")
        rows = background_index(n, count, seed)
        frame = self.data.train_frame.iloc[fit[rows]].reset_index(drop=True)
        return rows, self._explain(f"train-{count}-{seed}", frame, f"{count} aligned training rows")

    def _aligned_in_shard(
        self, share: float, seed: int, shard: np.ndarray, min_rows: int
    ) -> tuple[np.ndarray, TreeShap]:
        fit = self.validation.fit
        n = len(fit)
        count = max(math.ceil(share * n), min_rows)  # the same aligned rows as one process would draw
        aligned = np.arange(n) if count >= n else background_index(n, count, seed)
        local = np.flatnonzero(np.isin(shard, aligned))  # sorted, as the shard is
        frame = self.data.train_frame.iloc[fit[shard[local]]].reset_index(drop=True)
        if len(local) == 0:  # no aligned row here: an empty target of the right shape (explaining one row)
            one = self.explanations.explain(self.data.train_frame.iloc[fit[shard[:1]]].reset_index(drop=True))
            return local, attrs.evolve(one, values=one.values[:0])
        key = f"train-{count}-{seed}-shard-{shard[0]}-{len(shard)}"
        return local, self._explain(key, frame, f"{len(local)} aligned training rows of this process's shard")

    @property
    def shap_test(self) -> TreeShap:
        """The teacher's explanations of the test rows (what evaluation compares against)."""
        return self._explain("test", self.data.test_frame, "test rows")

    def student_inputs(
        self,
        *,
        alignment: Alignment | None = None,
        progress: Progress | None = None,
        on_epoch_end: Callable[[Any, int], dict[str, float] | None] | None = None,
        checkpoint: Path | None = None,
        device: torch.device | str = "cpu",
        shard: np.ndarray | None = None,
    ) -> StudentInputs:
        """What a student learns from on these training rows: the fitting rows, and the held-out ones as
        :attr:`StudentInputs.validation` (see :attr:`validation`); with ``shard``, only those positions among the
        fitting rows (this process's shard; every process keeps every validation row)."""
        data, fit, held_out = self.data, self.validation.fit, self.validation.validation
        validation = None
        if len(held_out):
            validation = ValidationRows(z=rows_of(data.z_train, held_out), y=data.y_train[held_out])
        fitting = len(fit)
        if shard is not None:
            fit = fit[shard]
        every_row = len(fit) == len(data.y_train)
        z = data.z_train if every_row else self._fitting_rows(data.z_train, fit, "z-fit")
        y = data.y_train if every_row else data.y_train[fit]
        leaves = self.leaves_train if every_row else self._fitting_rows(self.leaves_train, fit, "leaves-fit")
        margin = self.teacher_margin_train if every_row else self.teacher_margin_train[fit]
        if self.synthetic is not None:
            extra = self.synthetic.positions(fitting, shard)
            if alignment is not None and alignment.rows is None:  # "every row" would now take in the synthetic ones
                alignment = attrs.evolve(alignment, rows=np.arange(len(y)))
            z = self._stacked(z, self.synthetic.z, extra, "z-with-synthetic")
            leaves = self._stacked(leaves, self.synthetic.leaves, extra, "leaves-with-synthetic")
            y = np.concatenate([y, self.synthetic.y[extra].astype(y.dtype)])
            margin = np.concatenate([margin, self.synthetic.teacher_margin[extra]])
        return StudentInputs(
            teacher=self.teacher,
            z=z,
            y=y,
            task=data.task,
            leaves=leaves,
            teacher_margin=margin,
            column_of=data.encoder.column_of,
            aggregation=data.encoder.aggregation(),
            background=self.background,
            alignment=alignment,
            progress=progress,
            on_epoch_end=on_epoch_end,
            checkpoint=checkpoint,
            validation=validation,
            device=device,
        )

    def _stacked(self, rows: np.ndarray, synthetic: np.ndarray, positions: np.ndarray, name: str) -> np.ndarray:
        """``rows`` followed by ``synthetic[positions]``: in memory, or, when either is kept on disk, written a chunk of
        rows at a time to a file beside it, once per set of rows (every student of this split reads the same file)."""
        on_disk = [matrix for matrix in (rows, synthetic) if RowFolder.holds(matrix)]
        if not on_disk:
            return np.concatenate([rows, synthetic[positions]])
        key = f"{name}-{len(rows)}-{hashlib.sha256(np.ascontiguousarray(positions).data).hexdigest()}"
        if key in self._cached:
            cached: np.ndarray = self._cached[key]
            return cached
        size = rowfile.chunk_rows(rows.itemsize * int(np.prod(rows.shape[1:])))

        def chunks() -> Iterator[np.ndarray]:
            for start in range(0, len(rows), size):
                yield rowfile.read_rows(rows, start, min(start + size, len(rows)))
            for start in range(0, len(positions), size):
                yield take_rows(synthetic, positions[start : start + size])

        shape = (len(rows) + len(positions), *rows.shape[1:])
        stacked: np.ndarray = RowFolder.beside(on_disk[0]).write(name, shape, chunks, dtype=rows.dtype.type)
        self._cached[key] = stacked
        return stacked

    def _fitting_rows(self, z: np.ndarray, fit: np.ndarray, name: str) -> np.ndarray:
        """``z[fit]``: a view when ``fit`` is a run of consecutive positions in memory (the fitting rows come first:
        :func:`fitting_rows_first`); from a matrix on disk, written to a file of its own a chunk at a time (the
        student reads its batches from there), once per set of rows: every student of this split reads the same
        file."""
        if not RowFolder.holds(z):
            return rows_of(z, fit)
        key = f"{name}-{hashlib.sha256(np.ascontiguousarray(fit).data).hexdigest()}"
        if key not in self._cached:
            self._cached[key] = self._write_rows(z, fit, name)
        cached: np.ndarray = self._cached[key]
        return cached

    @staticmethod
    def _write_rows(z: np.ndarray, fit: np.ndarray, name: str) -> np.ndarray:
        size = rowfile.chunk_rows(z.itemsize * int(np.prod(z.shape[1:])))
        written: np.ndarray = RowFolder.beside(z).write(
            name,
            (len(fit), *z.shape[1:]),
            lambda: (take_rows(z, fit[start : start + size]) for start in range(0, len(fit), size)),
            dtype=z.dtype.type,
        )
        return written

    @property
    def teacher_margin_test(self) -> np.ndarray:
        if "margin_test" not in self._cached:
            self._cached["margin_test"] = self.teacher.predict_margin(self.data.test_frame)
        margin: np.ndarray = self._cached["margin_test"]
        return margin


@attrs.define(kw_only=True, eq=False)
class Trained:
    """A trained student, the attributor that explains it (fitted on the split's background) and its settings."""

    config: DistillConfig
    student: Student
    attributor: Attributor
    #: Wall time of ``student.fit``.
    seconds: float
    #: The first epoch this call trained (> 0 when it resumed from a checkpoint).
    first_epoch: int = 0
    #: The device the student trained on (``config.device`` resolved on this machine, e.g. ``"cuda:0"``).
    device: str = "cpu"
    #: What the pipeline chose for the student and why, beside the student's own choices (``history["choices"]``,
    #: the run folder's ``student_choices``): the alignment loss ``"auto"`` resolved to.
    choices: dict[str, Any] = attrs.field(factory=dict)


def rows_of(z: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """``z[positions]``: a view of an in-memory matrix when ``positions`` is a run of consecutive rows — as the fitting
    rows and the held-out rows are (:func:`fitting_rows_first`) — else a copy in memory (:func:`take_rows`)."""
    first = int(positions[0]) if len(positions) else 0
    if not is_on_disk(z) and np.array_equal(positions, np.arange(first, first + len(positions))):
        return z[first : first + len(positions)]
    return take_rows(z, positions)


def synthetic_rows(
    data: PreparedData, teacher: Teacher, fit: np.ndarray, config: DistillConfig, folder: RowFolder | None
) -> SyntheticRows:
    """``config.synthetic_rows`` rows per fitting row (positions ``fit``), made by :func:`munge`, encoded, and
    labelled with the teacher's leaves, margins and targets (kept on disk like the training rows when large)."""
    copies = config.synthetic_rows_for(data.task, len(fit))
    frame = data.train_frame.iloc[fit].reset_index(drop=True)
    synthetic = munge(frame, copies, seed=config.seed)
    margin = teacher.predict_margin(synthetic)
    return SyntheticRows(
        copies=copies,
        chosen=config.synthetic_rows_rule(),
        z=encode_rows(data.encoder, synthetic, folder, config.spill_bytes, "z-synthetic"),
        y=teacher_labels(margin, data.task),
        leaves=leaf_rows(teacher, synthetic, folder, config.spill_bytes),
        teacher_margin=margin,
    )


def leaf_rows(teacher: Teacher, frame: pd.DataFrame, folder: RowFolder | None, spill_bytes: int) -> np.ndarray:
    """``teacher.leaf_indices(frame)``: in memory, or, with ``folder`` and more than ``spill_bytes`` of them, computed a
    chunk of rows at a time into an int32 file there (the same values: every row's leaves are its own)."""
    n_trees = teacher.structure().n_trees
    if folder is None or 4 * len(frame) * n_trees <= spill_bytes:
        return teacher.leaf_indices(frame)
    size = rowfile.chunk_rows(4 * n_trees)
    chunks = (teacher.leaf_indices(frame.iloc[start : start + size]) for start in range(0, len(frame), size))
    return folder.write("leaves", (len(frame), n_trees), lambda: chunks, dtype=np.int32)


def check_explains(name: str, attributor: Attributor, student: str) -> None:
    """Refuse an attributor that cannot explain the ``student`` (see :attr:`Attributor.students`)."""
    if attributor.students is not None and student not in attributor.students:
        raise ConfigError(
            setting="attributor",
            value=name,
            fix=f"it explains {', '.join(attributor.students)} students only; for the {student!r} student choose "
            "another attributor (e.g. gradient-x-input)",
        )


def resolve_alignment(
    config: DistillConfig, task: Task, shape: tuple[int, ...], registry: Registry
) -> tuple[DistillConfig, dict[str, str]]:
    """``config`` with its alignment loss named (``"auto"`` resolved by :meth:`DistillConfig.alignment_for` for
    teacher explanations of ``shape``, ``(n, d)`` or ``(n, k, d)``), and the record of the choice."""
    classes = shape[1] if len(shape) == 3 else 1
    name, why = config.alignment_for(task, classes, shape[-1], registry.names("alignment loss"))
    if config.alignment == "auto":
        check_auto_loss_installed(name, registry)
    return attrs.evolve(config, alignment=name), {"loss": name, "why": why}


def check_auto_loss_installed(name: str, registry: Registry) -> None:
    """Refuse, in one line, the loss ``alignment="auto"`` chose when no plugin provides it."""
    installed = registry.names("alignment loss")
    if name not in installed:
        raise ConfigError(
            setting="alignment",
            value="auto",
            fix=f"auto takes {name} for this data and no plugin provides it: pip install gbdt2nn-{name}, or name "
            f"an installed loss ({', '.join(installed) or 'none installed'})",
        )


class Pipeline:
    """Prepare once, then train and evaluate students, all with one config's components and one background policy."""

    def __init__(
        self,
        config: DistillConfig | None = None,
        registry: Registry | None = None,
        *,
        progress: Progress | None = None,
        cache: ExplanationCache | None = None,
    ) -> None:
        self.config = config or DistillConfig()
        self.registry = registry or get_registry()
        self.progress = progress or NullProgress()
        self.cache = cache if cache is not None else explanation_cache(self.config)

    # ------------------------------------------------------------------ checks
    def device(self) -> torch.device:
        """``config.device`` on this machine (:func:`~gbdt2nn_core.host.device.resolve_device`): a CUDA device it
        lacks is a :class:`ConfigError`."""
        return resolve_device(self.config.device)

    def check(self) -> None:
        """Resolve every component and its options now, so that a typo fails before minutes of training."""
        config, registry = self.config, self.registry
        self.device()
        registry.spec("teacher", config.teacher)
        student = registry.student(config.student, seed=config.seed, **config.student_options)
        check_data_parallel(student, config.student, world().size)
        attributor = registry.attributor(config.attributor, **config.attributor_options)
        check_explains(config.attributor, attributor, config.student)
        if config.alignment_weight > 0:  # a plain distillation needs no alignment-loss plugin installed
            if config.alignment == "auto":
                # Resolved with the data: with the task known, the loss auto takes for it (a multiclass task's
                # width may still send it to mse); with the task unknown, mse, which every task may fall back to.
                name = "mse"
                if config.task is not None:
                    name, _ = config.alignment_for(config.task, 1, 0, registry.names("alignment loss"))
                check_auto_loss_installed(name, registry)
            else:
                registry.alignment_loss(config.alignment, **config.alignment_options)

    def teacher(self, teacher_model: Any = None) -> Teacher:
        """The configured teacher, unfitted; ``teacher_model`` (a booster or model file) makes it wrap that model."""
        options = dict(self.config.teacher_options)
        if teacher_model is not None:
            options["model"] = teacher_model
        teacher = self.registry.teacher(self.config.teacher, **options)
        if self.config.threads is not None and isinstance(teacher, BoosterTeacher):
            teacher.use_threads(self.config.threads)
        return teacher

    # ------------------------------------------------------------------ prepare
    def split(self, frame: pd.DataFrame, target: str) -> SplitData:
        """Check the rows and split them (stratified for classification) with the config's seed."""
        config = self.config
        return split_data(frame, target, task=config.task, test_size=config.test_size, seed=config.seed)

    def prepare(self, frame: pd.DataFrame, target: str, teacher_model: Any = None) -> Prepared:
        """Split ``frame``, fit (or wrap ``teacher_model``) the teacher, encode, and compute leaves and margins."""
        started = time.perf_counter()
        split = self.split(frame, target)
        split_s = time.perf_counter() - started
        prepared = self.prepare_split(split, teacher_model)
        prepared.timings["prepare_s"] += split_s
        return prepared

    def prepare_split(self, split: SplitData, teacher: Teacher | Any = None) -> Prepared:
        """:meth:`prepare` for rows already split; ``teacher`` is a :class:`Teacher` or a model to wrap."""
        config, progress = self.config, self.progress
        unfitted = teacher if isinstance(teacher, Teacher) else self.teacher(teacher)
        device = self.device()  # a missing GPU is an error before the teacher trains

        def fitted(teacher_obj: Teacher) -> Teacher:
            return teacher_obj.fit(split.train_frame, split.y_train, task=split.task, seed=config.seed)

        started = time.perf_counter()
        with progress.step(f"teacher ({config.teacher})"), seeded(config.seed):
            # several processes: rank 0 trains it and every other process wraps rank 0's booster
            teacher_obj = shared_teacher(
                lambda: fitted(unfitted),
                lambda path: fitted(self.registry.teacher(config.teacher, model=path)),  # wraps: no options
                self.registry.teacher_suffix(config.teacher),
            )
        teacher_s = time.perf_counter() - started
        started = time.perf_counter()
        validation = validation_split(
            split.y_train, task=split.task, fraction=config.validation_fraction, seed=config.seed
        )
        split, validation = fitting_rows_first(split, validation)
        encoder = encoder_for(
            split.train_frame, split.schema, teacher_obj, config.threshold_bins, config.merge_categories
        )
        copies = config.synthetic_rows_for(split.task, len(validation.fit))
        # the synthetic rows (as many again per fitting row) are the largest matrices when there are any
        n_rows = len(split.train_frame) * max(1, copies)
        leaf_bytes = 4 * n_rows * teacher_obj.structure().n_trees  # int32 leaf indices
        folder = self.rows_folder(max(encoded_bytes(encoder, n_rows), leaf_bytes))
        data = PreparedData.encode(split, encoder, folder=folder, spill_bytes=config.spill_bytes)
        n = len(data.z_train)
        background = take_rows(data.z_train, background_index(n, BACKGROUND_ROWS, config.seed))
        teacher_background = split.train_frame.iloc[
            background_index(n, config.background_rows, config.seed)
        ].reset_index(drop=True)
        leaves = leaf_rows(teacher_obj, data.train_frame, folder, config.spill_bytes)
        margin = teacher_obj.predict_margin(data.train_frame)
        prepare_s = time.perf_counter() - started
        explanations = TeacherExplanations(
            teacher_obj,
            config=config,
            registry=self.registry,
            background=teacher_background,
            cache=self.cache,
            device=device,
        )
        synthetic = None
        if copies > 0:
            with progress.step("synthetic rows labelled by the teacher"):
                synthetic = synthetic_rows(data, teacher_obj, validation.fit, config, folder)
        return Prepared(
            data=data,
            teacher=teacher_obj,
            synthetic=synthetic,
            leaves_train=leaves,
            teacher_margin_train=margin,
            background=background,
            teacher_background=teacher_background,
            explanations=explanations,
            progress=progress,
            timings={"prepare_s": prepare_s, "teacher_s": teacher_s},
            rows_folder=folder,
            validation=validation,
        )

    def rows_folder(self, largest: int) -> RowFolder | None:
        """A temporary folder for matrices kept on disk when the ``largest`` one exceeds ``spill_bytes`` (under the
        cache folder: a per-user place on disk, unlike a ``/tmp`` that may live in memory), else ``None``."""
        if largest <= self.config.spill_bytes:
            return None
        return RowFolder(Path(self.config.cache_dir or default_cache_dir()) / "rows")

    # ------------------------------------------------------------------ train
    def settings(self, **overrides: Any) -> DistillConfig:
        """The config with some settings changed (the experiment trains several attributors and losses)."""
        return attrs.evolve(self.config, **{k: v for k, v in overrides.items() if v is not None})

    def train(
        self,
        prepared: Prepared,
        *,
        alignment_weight: float | None = None,
        attributor: str | None = None,
        attributor_options: Mapping[str, Any] | None = None,
        alignment: str | None = None,
        alignment_options: Mapping[str, Any] | None = None,
        alignment_rows: float | None = None,
        alignment_min_rows: int | None = None,
        alignment_fraction: float | None = None,
        alignment_batches: str | None = None,
        on_epoch_end: Callable[[Any, int], dict[str, float] | None] | None = None,
        checkpoint: Path | None = None,
    ) -> Trained:
        """Train the configured student on the prepared rows; settings given here override the config's.

        ``alignment_weight > 0`` adds ``λ · L_align`` towards the teacher's explanations of the aligned training
        rows (a share ``alignment_rows`` of them but at least ``alignment_min_rows``, on a share
        ``alignment_fraction`` of the batches, grouped into batches of their own or mixed: ``alignment_batches``).
        ``on_epoch_end(student, epoch)`` runs after every epoch (its result goes into the epoch's record);
        ``checkpoint`` saves after every epoch and resumes a matching checkpoint found there.
        """
        config = self.settings(
            alignment_weight=alignment_weight,
            attributor=attributor,
            attributor_options=attributor_options,
            alignment=alignment,
            alignment_options=alignment_options,
            alignment_rows=alignment_rows,
            alignment_min_rows=alignment_min_rows,
            alignment_fraction=alignment_fraction,
            alignment_batches=alignment_batches,
        )
        registry = self.registry
        student = registry.student(config.student, seed=config.seed, **config.student_options)
        check_data_parallel(student, config.student, world().size)
        enable_lookup(student, prepared.data.encoder)  # the lookup first layer in training's forward and serving
        explainer = registry.attributor(config.attributor, **config.attributor_options)
        alignment_term = None
        choices: dict[str, Any] = {}
        shard = shard_of(len(prepared.validation.fit))  # several processes: each trains on its own rows
        if config.alignment_weight > 0:
            rows, target = prepared.aligned_explanations(
                config.alignment_rows, config.seed, min_rows=config.alignment_min_rows, shard=shard
            )
            config, choices["alignment"] = resolve_alignment(config, prepared.data.task, target.values.shape, registry)
            alignment_term = Alignment(
                attributor=explainer,
                loss=registry.alignment_loss(config.alignment, **config.alignment_options),
                teacher_attributions=target.values,
                weight=config.alignment_weight,
                fraction=config.alignment_fraction,
                rows=rows,
                batches=config.alignment_batches,
            )
        first_epoch: list[int] = []

        def epoch_end(trained: Any, epoch: int) -> dict[str, float] | None:
            if not first_epoch:
                first_epoch.append(epoch)
            return on_epoch_end(trained, epoch) if on_epoch_end is not None else None

        device = resolve_device(config.device)
        inputs = prepared.student_inputs(
            alignment=alignment_term,
            progress=self.progress,
            on_epoch_end=epoch_end,
            checkpoint=checkpoint,
            device=device,
            shard=shard,
        )
        started = time.perf_counter()
        with seeded(config.seed):
            student.fit(inputs)
        seconds = time.perf_counter() - started
        explainer.fit(student.module, rows_on(prepared.background, module_device(student.module), torch.float32))
        epochs = len(student.history["epochs"])
        return Trained(
            config=config,
            student=student,
            attributor=explainer,
            seconds=seconds,
            first_epoch=first_epoch[0] if first_epoch else epochs,
            device=str(device),
            choices=choices,
        )

    # ------------------------------------------------------------------ evaluate
    def attributors(self, names: Mapping[str, Mapping[str, Any]]) -> dict[str, Attributor]:
        """Fresh attributors by name (with their options), for measuring agreement beside the trained one."""
        return {name: self.registry.attributor(name, **dict(options)) for name, options in names.items()}

    def evaluate(
        self,
        prepared: Prepared,
        trained: Trained,
        *,
        attributors: Mapping[str, Attributor] | None = None,
        keep: dict[str, np.ndarray] | None = None,
        timings: Mapping[str, float] | None = None,
    ) -> Metrics:
        """Teacher and student on the test rows: task metric, fidelity, agreement with the teacher's explanations.

        ``attributors`` (fresh ones, fitted here on the split's background) are measured too, in
        ``agreement_by_attributor``; ``keep`` receives the student's test margins (``"margin"``) and each
        attributor's attributions, for callers that store them.
        """
        data = prepared.data
        started = time.perf_counter()
        with self.progress.step("evaluation"), seeded(trained.config.seed):
            metrics = evaluate_rows(
                config=trained.config,
                task=data.task,
                classes=data.target.classes,
                y=data.y_test,
                z=data.z_test,
                aggregation=data.encoder.aggregation(),
                teacher_margin=prepared.teacher_margin_test,
                teacher_attributions=prepared.shap_test.values,
                student=trained.student,
                attributor=trained.attributor,
                attributors=attributors or {},
                background=prepared.background,
                rows_train=len(data.y_train),
                keep=keep,
            )
        evaluate_s = time.perf_counter() - started
        all_timings = {**prepared.timings, "student_s": trained.seconds, "evaluate_s": evaluate_s, **(timings or {})}
        # the processes that trained the student (see gbdt2nn_core.pipeline.processes); the batch size is per process
        run = {**metrics.run, "world_size": world().size}
        return attrs.evolve(metrics, timings=all_timings, run=run)
