"""Rows for the pipeline: the train/test split, and the student's encoding of both sides."""

from __future__ import annotations

import functools

import attrs
import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from gbdt2nn_core.data import (
    TabularSchema,
    TargetEncoder,
    infer_task,
    rowfile,
    split_features_target,
    warn_if_few_test_rows,
)
from gbdt2nn_core.data.encoding import InputEncoder, teacher_category_slots, teacher_thresholds
from gbdt2nn_core.data.rowfile import SPILL_BYTES, RowFolder
from gbdt2nn_core.errors import DataError
from gbdt2nn_core.host.interfaces import Task, Teacher

__all__ = [
    "PreparedData",
    "SplitData",
    "ValidationSplit",
    "encode_rows",
    "encoded_bytes",
    "encoder_for",
    "fit_encoder",
    "fitting_rows_first",
    "split_data",
    "validation_split",
]


@attrs.frozen(kw_only=True)
class SplitData:
    """A train/test split of teacher-ready frames and encoded targets."""

    task: Task
    schema: TabularSchema
    target: TargetEncoder
    train_frame: pd.DataFrame = attrs.field(eq=False, repr=False)
    test_frame: pd.DataFrame = attrs.field(eq=False, repr=False)
    y_train: np.ndarray = attrs.field(eq=False, repr=False)
    y_test: np.ndarray = attrs.field(eq=False, repr=False)


@attrs.frozen(kw_only=True)
class PreparedData(SplitData):
    """A split plus the student's encoding of both sides (the test side when first read: :attr:`z_test`)."""

    encoder: InputEncoder
    z_train: np.ndarray = attrs.field(eq=False, repr=False)
    #: Where a side larger than ``spill_bytes`` is written (:func:`encode_rows`); ``None``: both in memory.
    folder: RowFolder | None = attrs.field(default=None, eq=False, repr=False)
    spill_bytes: int = attrs.field(default=SPILL_BYTES, eq=False, repr=False)

    @classmethod
    def encode(
        cls, split: SplitData, encoder: InputEncoder, *, folder: RowFolder | None = None, spill_bytes: int = SPILL_BYTES
    ) -> PreparedData:
        """Encode the training side now and the test side when first read; with ``folder``, a side larger than
        ``spill_bytes`` goes to a float32 file there (:func:`encode_rows`)."""
        fields = {f.name: getattr(split, f.name) for f in attrs.fields(SplitData)}
        z_train = encode_rows(encoder, split.train_frame, folder, spill_bytes, "z-train")
        return cls(**fields, encoder=encoder, z_train=z_train, folder=folder, spill_bytes=spill_bytes)

    @functools.cached_property
    def z_test(self) -> np.ndarray:
        """The test rows encoded, on first read: a distillation reads them to evaluate, after training, whose memory
        is the run's peak (adult's 9,769 test rows are 15 MiB that training would otherwise hold)."""
        # a folder already removed (the prepared rows closed) cannot take the file: encode in memory then
        folder = self.folder if self.folder is not None and self.folder.path.is_dir() else None
        return encode_rows(self.encoder, self.test_frame, folder, self.spill_bytes, "z-test")


def encoded_bytes(encoder: InputEncoder, rows: int) -> int:
    """The size of ``rows`` encoded rows (float32)."""
    return 4 * rows * encoder.n_encoded


def encode_rows(
    encoder: InputEncoder, frame: pd.DataFrame, folder: RowFolder | None, spill_bytes: int, name: str
) -> np.ndarray:
    """``encoder.transform(frame)``: in memory, or, with ``folder`` and more than ``spill_bytes`` of it, encoded a
    chunk of rows at a time into a float32 file in ``folder`` (the same values: see
    :mod:`gbdt2nn_core.data.rowfile`)."""
    if folder is None or encoded_bytes(encoder, len(frame)) <= spill_bytes:
        return encoder.transform(frame)
    size = rowfile.chunk_rows(4 * encoder.n_encoded)
    chunks = lambda: (encoder.transform(frame.iloc[start : start + size]) for start in range(0, len(frame), size))  # noqa: E731
    return folder.write(name, (len(frame), encoder.n_encoded), chunks)


def split_data(frame: pd.DataFrame, target: str, *, task: Task | None, test_size: float, seed: int) -> SplitData:
    """Check the data, fix the schema and split it (stratified for classification)."""
    features, y = split_features_target(frame, target)
    task = task or infer_task(y)
    target_encoder = TargetEncoder.fit(y, task)
    schema = TabularSchema.infer(features)
    teacher_frame = schema.to_frame(features)
    y_encoded = target_encoder.transform(y)
    if len(teacher_frame) < 10:
        raise DataError(problem=f"only {len(teacher_frame)} rows", fix="distil from at least 10 rows")
    stratify = y_encoded if task != "regression" else None
    try:
        train_index, test_index = train_test_split(
            np.arange(len(teacher_frame)), test_size=test_size, random_state=seed, stratify=stratify
        )
    except ValueError as exc:
        raise DataError(
            problem=f"cannot split the data for testing: {exc}", fix="add rows for the rare classes"
        ) from exc
    warn_if_few_test_rows(len(test_index), len(teacher_frame))
    return SplitData(
        task=task,
        schema=schema,
        target=target_encoder,
        train_frame=teacher_frame.iloc[train_index].reset_index(drop=True),
        test_frame=teacher_frame.iloc[test_index].reset_index(drop=True),
        y_train=y_encoded[train_index],
        y_test=y_encoded[test_index],
    )


#: Fewer held-out rows than this measure no loss worth stopping on: the student then trains its whole budget.
MIN_VALIDATION_ROWS = 20


@attrs.frozen(kw_only=True)
class ValidationSplit:
    """Positions in the training rows that the student fits on and that it validates on (empty: none), and why."""

    fit: np.ndarray = attrs.field(eq=False, repr=False)
    validation: np.ndarray = attrs.field(eq=False, repr=False)
    #: What was done, for the run's record ("stratified", "random", or why there are no validation rows).
    note: str

    def describe(self) -> dict[str, object]:
        return {"validation_rows": len(self.validation), "fit_rows": len(self.fit), "validation_split": self.note}


def validation_split(y: np.ndarray, *, task: Task, fraction: float, seed: int) -> ValidationSplit:
    """Hold a seeded share ``fraction`` of the training rows out for the student (stratified for classification).

    Falls back to a random split when a class is too rare to stratify, and to no validation rows (the whole
    budget is trained) when the share would be under :data:`MIN_VALIDATION_ROWS` rows or leave fewer fitting rows.
    """
    n = len(y)
    everything = np.arange(n)
    if fraction == 0:
        return ValidationSplit(fit=everything, validation=everything[:0], note="off (validation_fraction 0)")
    held_out = round(fraction * n)
    if held_out < MIN_VALIDATION_ROWS or n - held_out < MIN_VALIDATION_ROWS:
        note = f"none: {n} training rows are too few to hold out {MIN_VALIDATION_ROWS} (whole budget trained)"
        return ValidationSplit(fit=everything, validation=everything[:0], note=note)
    note = "random"
    if task != "regression" and np.bincount(np.asarray(y, dtype=np.int64)).min(initial=n) >= 2:
        try:
            fit, validation = train_test_split(everything, test_size=held_out, random_state=seed, stratify=y)
            return ValidationSplit(fit=np.sort(fit), validation=np.sort(validation), note="stratified")
        except ValueError:  # too few rows per class for the held-out count: a random split instead
            note = "random (classes too rare to stratify)"
    fit, validation = train_test_split(everything, test_size=held_out, random_state=seed)
    return ValidationSplit(fit=np.sort(fit), validation=np.sort(validation), note=note)


def fitting_rows_first(split: SplitData, validation: ValidationSplit) -> tuple[SplitData, ValidationSplit]:
    """``split`` with its training rows reordered so that the fitting rows come first and the held-out ones after
    them, each group in its previous order, and the split's positions in the new order.

    The held-out rows are the same rows. What changes is memory: every matrix made from the training rows (the
    encoding, the teacher's leaves) then holds a student's fitting rows as its first rows, a view instead of a copy
    of nine tenths of it (70 MiB of a plain distillation on adult).
    """
    if len(validation.validation) == 0:
        return split, validation
    order = np.concatenate([validation.fit, validation.validation])
    reordered = attrs.evolve(
        split, train_frame=split.train_frame.iloc[order].reset_index(drop=True), y_train=split.y_train[order]
    )
    n_fit = len(validation.fit)
    positions = np.arange(len(order))
    return reordered, attrs.evolve(validation, fit=positions[:n_fit], validation=positions[n_fit:])


def fit_encoder(
    split: SplitData, teacher: Teacher | None, threshold_bins: int, merge_categories: bool = True
) -> InputEncoder:
    """The student's input encoder for this split, using the teacher's splits when there is a teacher."""
    return encoder_for(split.train_frame, split.schema, teacher, threshold_bins, merge_categories)


def encoder_for(
    frame: pd.DataFrame,
    schema: TabularSchema,
    teacher: Teacher | None,
    threshold_bins: int,
    merge_categories: bool = True,
) -> InputEncoder:
    """The student's input encoder fitted on teacher-ready training rows ``frame``.

    With a fitted ``teacher`` and ``threshold_bins > 0``, numeric columns also get the one-hot of the interval
    between the teacher's own split thresholds that a value falls in; with ``merge_categories``, categories that
    no split of the teacher tells apart share one one-hot slot (when the backend reports its category sets).
    """
    if teacher is None or (threshold_bins == 0 and not merge_categories):
        return InputEncoder.fit(frame, schema)
    ensemble = teacher.structure()
    return InputEncoder.fit(
        frame,
        schema,
        thresholds=teacher_thresholds(ensemble, schema, threshold_bins),
        split_rule=getattr(ensemble, "split_rule", "<="),
        category_slots=teacher_category_slots(ensemble, schema) if merge_categories else None,
    )
