"""scikit-learn estimators: distil a tree ensemble (yours or one trained here) into a GBDT2NN network.

:class:`GBDT2NNRegressor` and :class:`GBDT2NNClassifier` follow scikit-learn's conventions: constructor
arguments are only stored (and checked in :meth:`~GBDT2NNClassifier.fit`), ``get_params`` / ``set_params`` /
``sklearn.base.clone`` work, fitted attributes end in ``_``, and using an unfitted estimator raises
:class:`EstimatorNotFittedError` (both scikit-learn's ``NotFittedError`` and a
:class:`~gbdt2nn_core.Gbdt2nnError`)::

    import lightgbm as lgb
    from gbdt2nn_core import GBDT2NNClassifier

    booster = lgb.LGBMClassifier(n_estimators=100).fit(X_train, y_train)  # a model you already have
    student = GBDT2NNClassifier(epochs=20).fit(X_train, y_train, teacher=booster)
    student.predict_proba(X_test)
    student.explain(X_test)  # per-column attributions, in margin space
    student.partial_fit(X_new, y_new)  # online update, without the trees
    student.save("model-dir")
    student = GBDT2NNClassifier.load("model-dir")

``X`` is a pandas DataFrame (numeric, ``category`` and string columns, NaN for missing values) or a 2-D
numpy array. The teacher sees the columns as they are (native categorical splits, native missing values);
the student sees them through :class:`~gbdt2nn_core.data.encoding.InputEncoder`. Categories not seen in training
are missing values for the teacher and the average category (all-zero block) for the student.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import attrs
import numpy as np
import pandas as pd
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

from gbdt2nn_core.data import TabularSchema, TargetEncoder, check_finite_margins
from gbdt2nn_core.data.encoding import far_from_training_note
from gbdt2nn_core.errors import ConfigError, DataError, Gbdt2nnError, ModelFileError, warn
from gbdt2nn_core.host.device import module_device, resolve_device, rows_on
from gbdt2nn_core.host.interfaces import AlignmentBatches, Attributor, OnlineUpdate, Task, Teacher
from gbdt2nn_core.host.registry import Registry, get_registry
from gbdt2nn_core.pipeline import DistillConfig, Pipeline, SplitData, TeacherExplanations, evaluate_rows, seeded
from gbdt2nn_core.pipeline.core import Prepared, Trained, resolve_alignment
from gbdt2nn_core.pipeline.distill import plain_then_aligned
from gbdt2nn_core.pipeline.margins import frame_margins
from gbdt2nn_core.pipeline.metrics import agreement, agreement_per_output, explained_outputs
from gbdt2nn_core.pipeline.persistence import DistilledModel
from gbdt2nn_core.pipeline.runfolder import RunFolder, RunParts, read_folder, write_folder
from gbdt2nn_core.progress import NullProgress, Progress
from gbdt2nn_core.student.calibration import probabilities
from gbdt2nn_core.student.kit import adamw
from gbdt2nn_core.validators import is_positive_number, is_whole_number

__all__ = ["EstimatorNotFittedError", "GBDT2NNClassifier", "GBDT2NNRegressor", "load_estimator"]

#: The pipeline's defaults are the estimators' defaults (scikit-learn needs them spelt out in ``__init__``).
_DEFAULTS = DistillConfig()


class EstimatorNotFittedError(Gbdt2nnError, SklearnNotFittedError):  # type: ignore[misc]
    """An estimator was used before :meth:`fit`.

    Both a :class:`gbdt2nn_core.Gbdt2nnError` and scikit-learn's ``NotFittedError`` (itself a ``ValueError``
    and an ``AttributeError``), so ``except sklearn.exceptions.NotFittedError`` catches it as usual.
    (:class:`gbdt2nn_core.NotFittedError` is the components' error, a ``ConfigError``; Python cannot make one
    class of both.)
    """

    def __init__(self, *, component: str, method: str, fix: str) -> None:
        super().__init__(component, method, fix)
        self.component, self.method, self.fix = component, method, fix

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_not_fitted, (self.component, self.method, self.fix))

    def message(self) -> str:
        return f"{self.component}.{self.method} was called before fit; {self.fix}"


def _rebuild_not_fitted(component: str, method: str, fix: str) -> EstimatorNotFittedError:
    return EstimatorNotFittedError(component=component, method=method, fix=fix)


# ---------------------------------------------------------------------------------------------------- helpers
def _library_of(model: object, *, prefer: str | None = None) -> str | None:
    """The teacher plugin whose spec recognises ``model`` (by type, no import); ``prefer`` among several."""
    return get_registry().teacher_for_model(model, prefer=prefer)


def _native_model(teacher: Teacher) -> object:
    try:
        return teacher.native_model
    except (AttributeError, Gbdt2nnError):
        return None


def _outputs_of(teacher: Teacher) -> int | None:
    """The teacher's number of outputs, or ``None`` while it holds no booster yet."""
    try:
        return teacher.n_outputs
    except Gbdt2nnError:
        return None


def _sniff_model_file(path: str | os.PathLike[str], *, prefer: str | None = None) -> str | None:
    """The teacher plugin whose spec sniffs a model file's first bytes as its own; ``prefer`` among several."""
    return get_registry().teacher_for_file(path, prefer=prefer)


def _python_scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _teacher_categories(frame: pd.DataFrame, schema: TabularSchema) -> dict[str, list[Any]]:
    """Categorical columns whose categories are numbers: the schema keeps them as strings, the teacher must not.

    A booster trained on a ``category`` column of integers matches categories by value; handed the strings
    ``"1"``, ``"2"``... LightGBM would read every row as missing and XGBoost would refuse the frame.
    """
    restored = {}
    for column in schema.columns:
        series = frame[column.name]
        if column.kind != "categorical" or not isinstance(series.dtype, pd.CategoricalDtype):
            continue
        values = [_python_scalar(c) for c in series.cat.categories]
        if all(isinstance(v, str) for v in values):
            continue
        if all(isinstance(v, (bool, int, float)) for v in values):
            restored[column.name] = values
    return restored


def _restore_categories(frame: pd.DataFrame, categories: Mapping[str, list[Any]]) -> pd.DataFrame:
    if not categories:
        return frame
    frame = frame.copy()
    for name, values in categories.items():
        frame[name] = frame[name].cat.rename_categories(values)
    return frame


def _checked_training(pipeline: Pipeline, prepared: Prepared) -> Trained:
    """The configured student of ``prepared``; with ``alignment_check`` (and λ > 0) the aligned one that
    :func:`~gbdt2nn_core.pipeline.distill.checked_alignment` keeps against a plain student of the same rows."""
    config = pipeline.config
    if not (config.alignment_check and config.alignment_weight > 0):
        return pipeline.train(prepared)
    return plain_then_aligned(lambda weight: pipeline.train(prepared, alignment_weight=weight), config)[1]


def _check_target_array(y: object, n_rows: int) -> np.ndarray:
    if isinstance(y, pd.DataFrame):
        if y.shape[1] != 1:
            raise DataError(
                problem=f"y has {y.shape[1]} columns", fix="pass one target per row (a Series or 1-D array)"
            )
        y = y.iloc[:, 0]
    array = np.asarray(y)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise DataError(problem=f"y has shape {array.shape}", fix="pass one target per row as a 1-D array")
    if len(array) != n_rows:
        raise DataError(problem=f"y has {len(array)} values for {n_rows} rows of X", fix="pass one target per row")
    return array


def _jsonable(value: Any, where: str) -> Any:
    try:
        return json.loads(json.dumps(value, default=_json_default))
    except (TypeError, ValueError) as exc:
        raise ConfigError(setting=where, value=value, fix=f"only JSON-like settings can be saved ({exc})") from None


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (tuple, np.ndarray)):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# ---------------------------------------------------------------------------------------------------- base
class _GBDT2NNBase(BaseEstimator):  # type: ignore[misc]
    """Shared implementation of :class:`GBDT2NNRegressor` and :class:`GBDT2NNClassifier`."""

    _kind: ClassVar[str] = ""

    def __init__(
        self,
        *,
        teacher: str = _DEFAULTS.teacher,
        teacher_options: dict[str, Any] | None = None,
        student: str = _DEFAULTS.student,
        student_options: dict[str, Any] | None = None,
        attributor: str = _DEFAULTS.attributor,
        attributor_options: dict[str, Any] | None = None,
        alignment: str = _DEFAULTS.alignment,
        alignment_options: dict[str, Any] | None = None,
        alignment_weight: float = _DEFAULTS.alignment_weight,
        alignment_fraction: float = _DEFAULTS.alignment_fraction,
        alignment_rows: float = _DEFAULTS.alignment_rows,
        alignment_min_rows: int = _DEFAULTS.alignment_min_rows,
        alignment_batches: AlignmentBatches = _DEFAULTS.alignment_batches,
        alignment_check: bool = _DEFAULTS.alignment_check,
        epochs: int = 20,
        validation_fraction: float = _DEFAULTS.validation_fraction,
        synthetic_rows: int | Literal["auto"] = _DEFAULTS.synthetic_rows,
        early_stopping: bool = True,
        n_iter_no_change: int = 3,
        teacher_explanation: str = _DEFAULTS.teacher_explanation,
        background_rows: int = _DEFAULTS.background_rows,
        threshold_bins: int = _DEFAULTS.threshold_bins,
        merge_categories: bool = _DEFAULTS.merge_categories,
        online_epochs: int = 1,
        online_lr: float | None = None,
        random_state: int | np.random.RandomState | None = 0,
        cache_dir: str | os.PathLike[str] | bool | None = None,
        device: str = _DEFAULTS.device,
        verbose: bool = False,
    ) -> None:
        self.teacher = teacher
        self.teacher_options = teacher_options
        self.student = student
        self.student_options = student_options
        self.attributor = attributor
        self.attributor_options = attributor_options
        self.alignment = alignment
        self.alignment_options = alignment_options
        self.alignment_weight = alignment_weight
        self.alignment_fraction = alignment_fraction
        self.alignment_rows = alignment_rows
        self.alignment_min_rows = alignment_min_rows
        self.alignment_batches = alignment_batches
        self.alignment_check = alignment_check
        self.epochs = epochs
        self.validation_fraction = validation_fraction
        self.synthetic_rows = synthetic_rows
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.teacher_explanation = teacher_explanation
        self.background_rows = background_rows
        self.threshold_bins = threshold_bins
        self.merge_categories = merge_categories
        self.online_epochs = online_epochs
        self.online_lr = online_lr
        self.random_state = random_state
        self.cache_dir = cache_dir
        self.device = device
        self.verbose = verbose

    # ------------------------------------------------------------------ scikit-learn plumbing
    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        tags.input_tags.categorical = True
        tags.input_tags.string = True
        tags.non_deterministic = False
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "student_")

    def _check_fitted(self, method: str) -> None:
        if not hasattr(self, "student_"):
            raise EstimatorNotFittedError(
                component=type(self).__name__,
                method=method,
                fix=f"call {type(self).__name__}.fit(X, y) first, or load a saved one with "
                f"{type(self).__name__}.load(path)",
            )

    # ------------------------------------------------------------------ settings
    def _seed(self) -> int:
        state = self.random_state
        if state is None:
            return int(np.random.SeedSequence().generate_state(1)[0] % (2**31 - 1))
        if isinstance(state, np.random.RandomState):
            return int(state.randint(0, 2**31 - 1))
        if isinstance(state, (int, np.integer)) and not isinstance(state, bool) and state >= 0:
            return int(state)
        raise ConfigError(
            setting="random_state", value=state, fix="use a whole number ≥ 0, a numpy RandomState or None"
        )

    def _config(self, teacher_name: str, task: Task | None, seed: int) -> DistillConfig:
        """The pipeline settings these parameters stand for; every parameter is checked here."""
        student_options = dict(self.student_options or {})
        own = {
            "epochs": "epochs",
            "seed": "random_state",
            "early_stopping": "early_stopping",
            "patience": "n_iter_no_change",
        }
        for key, parameter in own.items():
            if key in student_options:
                raise ConfigError(
                    setting=f"student_options[{key!r}]",
                    value=student_options[key],
                    fix=f"set the estimator's {parameter}=... instead",
                )
        student_options["epochs"] = self.epochs
        student_options["early_stopping"] = self.early_stopping
        student_options["patience"] = self.n_iter_no_change
        for name in ("online_epochs",):
            value = getattr(self, name)
            if not is_whole_number(value, 1):
                raise ConfigError(setting=name, value=value, fix="use a whole number of at least 1")
        if self.online_lr is not None and not is_positive_number(self.online_lr):
            raise ConfigError(setting="online_lr", value=self.online_lr, fix="use a number > 0, or None for the lr")
        for name in ("teacher", "student", "attributor", "alignment"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(setting=name, value=getattr(self, name), fix="give a plugin name (a string)")
        cache = self.cache_dir is not False
        cache_dir = None if self.cache_dir in (None, True, False) else os.fspath(self.cache_dir)  # type: ignore[arg-type]
        return DistillConfig(
            task=task,
            teacher=teacher_name,
            teacher_options=self.teacher_options,
            student=self.student,
            student_options=student_options,
            attributor=self.attributor,
            attributor_options=self.attributor_options,
            alignment=self.alignment,
            alignment_options=self.alignment_options,
            alignment_weight=self.alignment_weight,
            alignment_fraction=self.alignment_fraction,
            alignment_rows=self.alignment_rows,
            alignment_min_rows=self.alignment_min_rows,
            alignment_batches=self.alignment_batches,
            alignment_check=self.alignment_check,
            validation_fraction=self.validation_fraction,
            synthetic_rows=self.synthetic_rows,
            teacher_explanation=self.teacher_explanation,
            background_rows=self.background_rows,
            threshold_bins=self.threshold_bins,
            merge_categories=self.merge_categories,
            seed=seed,
            cache_dir=cache_dir,
            cache=cache,
            device=self.device,
        )

    # ------------------------------------------------------------------ inputs
    def _input_frame(self, X: object, teacher: Teacher | None) -> pd.DataFrame:
        """``X`` as a DataFrame with string column names (a numpy array borrows a wrapped booster's names)."""
        if isinstance(X, pd.DataFrame):
            frame = X
        else:
            if isinstance(X, pd.Series):
                raise DataError(problem="X is a Series (one column)", fix="pass X.to_frame() or a 2-D array")
            array = np.asarray(X)
            if array.ndim != 2:
                raise DataError(
                    problem=f"X has shape {array.shape}, expected (rows, columns)",
                    fix="pass a 2-D array or a DataFrame (use X.reshape(-1, 1) for a single column)",
                )
            names = [f"x{i}" for i in range(array.shape[1])]
            if teacher is not None:
                try:
                    booster_names = list(teacher.feature_names)
                except Gbdt2nnError:
                    booster_names = []
                if len(booster_names) == array.shape[1]:
                    names = booster_names
            # an object array mixes numbers and strings: numeric columns must stay numeric
            frame = pd.DataFrame(array, columns=names).infer_objects()
        if frame.shape[0] == 0 or frame.shape[1] == 0:
            raise DataError(
                problem=f"X is empty ({frame.shape[0]} rows, {frame.shape[1]} columns)", fix="pass rows with data"
            )
        if frame.columns.duplicated().any():
            duplicated = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
            raise DataError(problem=f"X has duplicate columns {duplicated[:5]}", fix="give every column a unique name")
        return frame.rename(columns=str)

    def _teacher_frame(self, X: object) -> pd.DataFrame:
        """Check ``X`` against the fitted schema and return the teacher-ready frame."""
        frame = self.encoder_.schema.to_frame(X if isinstance(X, (pd.DataFrame, np.ndarray)) else np.asarray(X))
        return _restore_categories(frame, self.teacher_categories_)

    def _student_frame(self, X: object) -> pd.DataFrame:
        """:meth:`_teacher_frame`, with a warning for rows where the student would extrapolate (not the teacher)."""
        frame = self._teacher_frame(X)
        far = far_from_training_note(self.encoder_, frame)
        if far:
            warn(f"X holds {far}")
        return frame

    def _encode(self, X: object) -> np.ndarray:
        return self.encoder_.transform(self._teacher_frame(X))

    # ------------------------------------------------------------------ fitting
    def _task_and_target(self, y: np.ndarray, model: object, teacher: Teacher) -> tuple[Task, TargetEncoder]:
        raise NotImplementedError

    def fit(self, X: Any, y: Any, teacher: Any = None) -> _GBDT2NNBase:
        """Distil a teacher into a GBDT2NN student on ``(X, y)``.

        ``teacher`` is ``None`` (train the booster named by the ``teacher`` parameter, with
        ``teacher_options``), an existing model — a LightGBM ``Booster`` / ``LGBMModel``, an XGBoost
        ``Booster`` / ``XGBModel``, the path of a model file (LightGBM text, XGBoost JSON / UBJ) — or a
        :class:`~gbdt2nn_core.Teacher`. For a model of a known library the teacher plugin is picked from its
        type; otherwise the ``teacher`` parameter names the plugin that wraps it. A wrapped booster is never
        retrained: its feature names and order must match ``X``'s columns (an error names the differences).
        """
        registry = get_registry()
        seed = self._seed()
        if isinstance(teacher, Teacher):
            name = self.teacher
        elif isinstance(teacher, (str, os.PathLike)):
            name = _sniff_model_file(teacher, prefer=self.teacher) or self.teacher
        else:
            name = _library_of(teacher, prefer=self.teacher) or self.teacher
        config = self._config(name, None, seed)
        try:
            Pipeline(config, registry).check()
        except ConfigError as exc:
            if exc.setting == "patience":  # the estimator's name for the student's option
                raise ConfigError(setting="n_iter_no_change", value=exc.value, fix=exc.fix) from None
            if exc.setting != "student option":
                raise
            # the parameter the user set is student_options: name it
            raise ConfigError(setting="student_options", value=sorted(config.student_options), fix=exc.fix) from None
        if teacher is not None and not isinstance(teacher, Teacher) and self.teacher_options:
            raise ConfigError(
                setting="teacher_options",
                value=self.teacher_options,
                fix="they train a new booster; leave them out (teacher_options=None) when fit gets a trained one",
            )
        progress: Progress = NullProgress()
        if self.verbose:
            from gbdt2nn_core.progress import RichProgress

            progress = RichProgress()
        self._fit(X, y, teacher, config, registry, progress)
        return self

    def _fit(self, X: Any, y: Any, model: Any, config: DistillConfig, registry: Registry, progress: Progress) -> None:
        pipeline = Pipeline(config, registry, progress=progress)
        teacher_obj = model if isinstance(model, Teacher) else pipeline.teacher(model)
        # a booster given to fit, or a Teacher component that already holds one
        trained = model is not None and _outputs_of(teacher_obj) is not None
        frame = self._input_frame(X, teacher_obj if trained else None)
        y_array = _check_target_array(y, len(frame))
        task, target = self._task_and_target(y_array, model if trained else None, teacher_obj)
        schema = TabularSchema.infer(frame)
        categories = _teacher_categories(frame, schema)
        teacher_frame = _restore_categories(schema.to_frame(frame), categories)
        y_encoded = np.array(target.transform(y_array))
        if len(teacher_frame) < 2:
            raise DataError(problem=f"only {len(teacher_frame)} row", fix="fit on at least two rows")
        pipeline = Pipeline(attrs.evolve(config, task=task), registry, progress=progress)
        # every row trains: an estimator is evaluated on the rows its user holds out
        split = SplitData(
            task=task,
            schema=schema,
            target=target,
            train_frame=teacher_frame,
            test_frame=teacher_frame.iloc[:0],
            y_train=y_encoded,
            y_test=y_encoded[:0],
        )
        prepared = pipeline.prepare_split(split, teacher_obj)
        try:
            result = _checked_training(pipeline, prepared)
        finally:
            prepared.close()  # the rows it kept on disk, if any: the fitted estimator needs none of them
        config = result.config
        if isinstance(model, Teacher):  # name the plugin after the booster the component holds, for save/load
            config = attrs.evolve(
                config, teacher=_library_of(_native_model(teacher_obj), prefer=config.teacher) or config.teacher
            )
        student = result.student

        # set only once everything worked, so a failed refit leaves the previous model whole
        if task != "regression":
            self.classes_ = np.asarray(target.classes)
        self.config_ = config
        # the pipeline's choices for the student (the loss alignment="auto" took, and why), for save's record
        self._pipeline_choices = dict(result.choices)
        self.task_ = task
        self.target_ = target
        self.teacher_: Teacher | None = teacher_obj
        self.teacher_name_ = config.teacher
        self.encoder_ = prepared.data.encoder
        self.teacher_categories_ = categories
        self.student_ = student
        self.device_ = result.device
        self.attributor_ = result.attributor
        self.background_ = prepared.background
        self.teacher_background_ = prepared.teacher_background
        self.seed_ = config.seed
        self.n_features_in_ = frame.shape[1]
        if isinstance(X, pd.DataFrame) and all(isinstance(c, str) for c in X.columns):
            self.feature_names_in_ = np.asarray(list(X.columns), dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.history_ = [
            {"phase": "fit", **{k: v for k, v in record.items() if k != "extra"}}
            for record in student.history["epochs"]
        ]
        self._attributors: dict[str, Attributor] = {config.attributor: result.attributor}
        self._online_optimizer: torch.optim.Optimizer | None = None
        self._updates = 0

    # ------------------------------------------------------------------ prediction
    @property
    def n_outputs_(self) -> int:
        """Margin outputs: 1 for regression and binary, the number of classes for multiclass."""
        self._check_fitted("n_outputs_")
        return self.student_.n_outputs

    @property
    def feature_names_(self) -> tuple[str, ...]:
        """The input columns, in order (also for numpy input, where they are ``x0, x1, ...``)."""
        self._check_fitted("feature_names_")
        return self.encoder_.schema.names

    def _place(self) -> None:
        """Move the fitted network to the ``device`` parameter's device when it was changed since fit or load (the
        online optimizer starts again there: its moments live on the old device)."""
        target = str(resolve_device(self.device))
        if target != self.device_:
            self.student_.move_to(target)
            self.device_ = target
            self._online_optimizer = None

    def predict_margin(self, X: Any) -> np.ndarray:
        """The student's raw scores: ``(n,)`` (regression, binary log-odds) or ``(n, k)`` (multiclass)."""
        self._check_fitted("predict_margin")
        self._place()
        frame = self._student_frame(X)
        margin = frame_margins(self.student_, self.encoder_, frame).astype(np.float64)
        check_finite_margins(margin, frame)
        return margin

    def teacher_margin(self, X: Any) -> np.ndarray:
        """The teacher's raw scores on ``X``, shaped like :meth:`predict_margin`."""
        self._check_fitted("teacher_margin")
        return np.asarray(self._require_teacher("teacher_margin").predict_margin(self._teacher_frame(X)))

    def _require_teacher(self, method: str) -> Teacher:
        teacher: Teacher | None = getattr(self, "teacher_", None)
        if teacher is None:
            raise ConfigError(
                setting=f"{type(self).__name__}.{method}",
                value="no teacher",
                fix="this estimator was loaded without its teacher (its plugin is missing or the file was not "
                "saved); install the teacher plugin and save the model with include_teacher=True",
            )
        return teacher

    # ------------------------------------------------------------------ explanations
    def _attributor(self, method: str) -> Attributor:
        cached = self._attributors.get(method)
        if cached is not None:
            return cached
        attributor = get_registry().attributor(method)
        module = self.student_.module
        attributor.fit(module, rows_on(self.background_, module_device(module), torch.float32))
        self._attributors[method] = attributor
        return attributor

    def explain(self, X: Any, method: str | None = None, *, as_frame: bool = False) -> Any:
        """Per-column attributions of the predictions on ``X``, in margin space.

        ``method`` is the name of an attributor plugin (``"structure"``, ``"gradient-x-input"``,
        ``"integrated-gradients"``, ``"expected-gradients"``...; default: the ``attributor`` parameter) or
        ``"teacher"`` for the teacher's TreeSHAP (of the kind set by ``teacher_explanation``). Returns a numpy
        array ``(n, d)``, or ``(n, k, d)`` for ``k`` classes; with ``as_frame=True`` a DataFrame whose columns
        are the feature names (a ``(class, feature)`` MultiIndex for ``k`` classes). Categorical columns get
        one value each: the student's encoded block is summed back to its column, as TreeSHAP reports it.
        """
        self._check_fitted("explain")
        self._place()
        method = method or self.config_.attributor
        frame = self._student_frame(X)
        if method == "teacher":
            values = self._teacher_shap(frame)
        else:
            z = self.encoder_.transform(frame)
            values = self.student_.attributions(z, self._attributor(method), self.encoder_.aggregation())
            values = values.astype(np.float64)
            check_finite_margins(values, frame)  # overflowing rows are an error, not NaN attributions
        if not as_frame:
            return values
        index = X.index if isinstance(X, pd.DataFrame) else None
        names = list(self.encoder_.schema.names)
        if values.ndim == 2:
            return pd.DataFrame(values, columns=names, index=index)
        labels = self._output_labels()
        columns = pd.MultiIndex.from_product([labels, names], names=["class", "feature"])
        return pd.DataFrame(values.reshape(len(values), -1), columns=columns, index=index)

    def _output_labels(self) -> list[Any]:
        return list(range(self.n_outputs_))

    def _teacher_shap(self, frame: pd.DataFrame) -> np.ndarray:
        """The teacher's explanations of ``frame``, of the kind and against the background that training used."""
        explanations = TeacherExplanations(
            self._require_teacher("explain"),
            config=self.config_,
            registry=get_registry(),
            background=self.teacher_background_,
        )
        return np.asarray(explanations.explain(frame).values, dtype=np.float64)

    def explanation_agreement(self, X: Any, method: str | None = None, *, top_k: int = 5) -> dict[str, Any]:
        """How well the student's explanations of ``X`` agree with the teacher's TreeSHAP, per row then averaged.

        Returns ``{"overall": {spearman, cosine, top5, sign, mse}}``, plus for a multiclass model ``"per_class"``
        (the same per class label) and ``"every_class"`` (over every ``(row, class)`` pair): its ``"overall"``
        compares each row's explanation of the class the teacher predicts
        (:func:`~gbdt2nn_core.pipeline.metrics.explained_outputs`). See
        :func:`gbdt2nn_core.pipeline.metrics.agreement`.
        """
        student = self.explain(X, method)
        teacher = self.explain(X, "teacher")
        explained = None
        if student.ndim == 3:
            explained = explained_outputs("multiclass", self.teacher_margin(X))
        result: dict[str, Any] = {"overall": agreement(student, teacher, top_k=top_k, explained=explained)}
        if student.ndim == 3:
            result["per_class"] = agreement_per_output(
                student, teacher, [str(label) for label in self._output_labels()], top_k=top_k
            )
            result["every_class"] = agreement(student, teacher, top_k=top_k)
        return result

    def evaluate(self, X: Any, y: Any, method: str | None = None) -> dict[str, Any]:
        """Teacher and student on held-out ``(X, y)``: task metric, fidelity to the teacher, explanation agreement.

        The :class:`~gbdt2nn_core.pipeline.metrics.Metrics` JSON of a CLI run's ``metrics.json`` (``task``, ``rows``,
        ``teacher.test``, ``student.test``, ``student.fidelity``, ``student.agreement`` and, for multiclass,
        ``student.agreement_per_class``); ``method`` names the attributor (default: the ``attributor`` parameter).
        """
        self._check_fitted("evaluate")
        self._place()
        method = method or self.config_.attributor
        frame = self._student_frame(X)
        y_encoded = self.target_.transform(_check_target_array(y, len(frame)))
        metrics = evaluate_rows(
            config=attrs.evolve(self.config_, attributor=method),
            task=self.task_,
            classes=self._output_labels() if self.n_outputs_ > 1 else list(self.target_.classes),
            y=np.asarray(y_encoded),
            z=self.encoder_.transform(frame),
            aggregation=self.encoder_.aggregation(),
            teacher_margin=np.asarray(self._require_teacher("evaluate").predict_margin(frame)),
            teacher_attributions=self._teacher_shap(frame),
            student=self.student_,
            attributor=self._attributor(method),
            attributors={},
            background=self.background_,
            rows_train=0,
        )
        return metrics.to_json()

    # ------------------------------------------------------------------ online update
    def partial_fit(self, X: Any, y: Any, *, teacher_attributions: Any = None) -> _GBDT2NNBase:
        """Update the fitted student on a new batch ``(X, y)`` without the trees (DeepGBM's online update).

        The network trains end to end on the task loss for ``online_epochs`` passes (learning rate
        ``online_lr``, default the student's); the input encoder, the frozen leaf-embedding heads and the
        teacher stay as fitted, and the teacher is not consulted. One optimizer is kept across calls (not
        across :meth:`save` / :meth:`load`). ``teacher_attributions`` — the teacher's TreeSHAP of these rows,
        ``(n, d)`` or ``(n, k, d)``, e.g. ``explain(X, "teacher")`` — keeps the alignment term at
        ``alignment_weight`` (with ``alignment_check``, at the λ the check kept: ``config_.alignment_weight``;
        needs λ > 0). Labels must be among ``classes_``. Call :meth:`fit` first.
        """
        self._check_fitted("partial_fit")
        from gbdt2nn_core.kit.alignment import Alignment

        self._config(self.config_.teacher, self.task_, self.seed_)  # re-check parameters changed since fit
        self._place()
        frame = self._student_frame(X)
        y_encoded = np.array(self.target_.transform(_check_target_array(y, len(frame))))
        z = self.encoder_.transform(frame)
        alignment = None
        # with alignment_check, the λ the check kept for the fitted student (config_), not the one it started from
        weight = self.config_.alignment_weight if self.alignment_check else self.alignment_weight
        if teacher_attributions is not None:
            if not weight > 0:
                raise ConfigError(
                    setting="alignment_weight",
                    value=self.alignment_weight,
                    fix="set alignment_weight > 0 to train on teacher_attributions, or leave them out",
                )
            values = np.asarray(teacher_attributions, dtype=np.float64)
            expected = (len(frame), *((self.n_outputs_,) if self.n_outputs_ > 1 else ()), self.n_features_in_)
            if values.shape != expected:
                raise DataError(
                    problem=f"teacher_attributions have shape {values.shape}, expected {expected}",
                    fix="pass one attribution per row and column (explain(X, 'teacher') has the right shape)",
                )
            registry = get_registry()
            # a student fitted plain kept alignment="auto" unresolved: resolve it as fit would have
            config, choice = resolve_alignment(self.config_, self.task_, values.shape, registry)
            self._pipeline_choices.setdefault("alignment", choice)
            alignment = Alignment(
                attributor=self.attributor_,
                loss=registry.alignment_loss(config.alignment, **config.alignment_options),
                teacher_attributions=values,
                weight=float(weight),
                fraction=float(self.alignment_fraction),
            )
        options = self.student_.options()
        if self._online_optimizer is None:
            lr = self.online_lr if self.online_lr is not None else self.student_.learning_rate()
            self._online_optimizer = adamw(
                self.student_.module.parameters(), lr=lr, weight_decay=float(options.get("weight_decay", 0.0))
            )
        seed = self.seed_ + 1 + self._updates
        with seeded(seed):
            records = self.student_.partial_fit(
                OnlineUpdate(
                    z=z,
                    y=y_encoded,
                    task=self.task_,
                    optimizer=self._online_optimizer,
                    epochs=self.online_epochs,
                    generator=torch.Generator().manual_seed(seed),
                    alignment=alignment,
                    aggregation=self.encoder_.aggregation(),
                )
            )
        self._updates += 1
        self.history_.extend({"phase": "partial_fit", "update": self._updates, **r} for r in records)
        return self

    # ------------------------------------------------------------------ saving and loading
    def save(self, path: str | os.PathLike[str], *, include_teacher: bool = True, overwrite: bool = False) -> Path:
        """Write the fitted estimator to the folder ``path`` (no pickle) and return it.

        The folder holds the student (``student.safetensors`` + ``student.json``: weights, feature schema,
        task, class labels, encoder, the parameters that made it, training history), the attributors'
        background rows (``background.safetensors``) and, with ``include_teacher``, the teacher in its own
        format (``teacher.txt`` / ``teacher.json``). It is written under a temporary name and renamed into
        place, so a failure leaves nothing half-written. ``gbdt2nn predict --model`` reads it too.
        """
        self._check_fitted("save")
        out = Path(path)
        if out.exists() and not out.is_dir():
            raise DataError(problem=f"{str(out)!r} is a file", fix="save to a folder path")
        if out.is_dir() and any(out.iterdir()) and not overwrite:
            raise DataError(
                problem=f"the folder {str(out)!r} already exists and is not empty",
                fix="pass overwrite=True or choose another path",
            )
        params = _jsonable({**self.get_params(), "random_state": self.seed_}, "parameters")
        estimator = {
            "class": type(self).__name__,
            "params": params,
            "teacher_categories": _jsonable(self.teacher_categories_, "teacher categories"),
            "feature_names_in": list(self.feature_names_in_) if hasattr(self, "feature_names_in_") else None,
            "history": _jsonable(self.history_, "history"),
        }
        model = DistilledModel(
            student=self.student_,
            encoder=self.encoder_,
            target=self.target_,
            metadata={"estimator": estimator},
            background=self.background_,
            student_name=self.config_.student,
        )
        history = self.student_.history
        choices = {**history.get("choices", {}), **self._pipeline_choices}
        parts = RunParts(
            model=model,
            config=self.config_,
            history={**history, "choices": choices},
            teacher_background=self.teacher_background_,
            device=self.device_,
        )
        teacher = self._require_teacher("save") if include_teacher and self.teacher_ is not None else None
        return write_folder(out, parts, teacher=teacher, overwrite=True)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: str = "cpu") -> Any:
        """A fitted estimator from a run folder written by :meth:`save` or by ``gbdt2nn distill``.

        Never unpickles anything. The teacher is loaded too when its file and plugin are there (otherwise
        ``teacher_`` is ``None``: predictions, student explanations and :meth:`partial_fit` still work). The
        network loads on the CPU whatever device it trained on, then moves to ``device`` (also the estimator's
        ``device`` parameter; ``set_params(device=...)`` moves it again before the next prediction).
        """
        return cls._from_folder(read_folder(Path(path)), device=device)

    @classmethod
    def _from_folder(cls, folder: RunFolder, device: str = "cpu") -> Any:
        model, config = folder.model, folder.config
        task = model.task
        if (task == "regression") != (cls._kind == "regressor"):
            other = "GBDT2NNRegressor" if task == "regression" else "GBDT2NNClassifier"
            raise ModelFileError(
                path=str(folder.path), problem=f"it holds a {task} model", fix=f"load it with {other}.load"
            )
        stored = model.metadata.get("estimator") or {}
        valid = cls._get_param_names()
        params = {k: v for k, v in dict(stored.get("params") or {}).items() if k in valid}
        estimator = cls(**params)
        if not stored:  # a CLI run folder: the parameters its config stands for
            estimator.set_params(
                teacher=config.teacher,
                student=config.student,
                attributor=config.attributor,
                alignment=config.alignment,
                alignment_weight=config.alignment_weight,
                teacher_explanation=config.teacher_explanation,
                background_rows=config.background_rows,
                random_state=config.seed,
            )
        estimator.config_ = config
        estimator.task_ = task
        estimator.target_ = model.target
        estimator.encoder_ = model.encoder
        estimator.student_ = model.student
        estimator.device_ = "cpu"  # loaded there (safetensors' map_location); _place moves it
        estimator.set_params(device=device)
        estimator.teacher_name_ = config.teacher
        estimator.teacher_categories_ = dict(stored.get("teacher_categories") or {})
        estimator.seed_ = int(config.seed)
        estimator.n_features_in_ = model.encoder.n_columns
        if stored.get("feature_names_in") is not None:
            estimator.feature_names_in_ = np.asarray(stored["feature_names_in"], dtype=object)
        background = model.background
        if background is None:  # the training mean, z = 0, stands in for a background sample
            background = np.zeros((1, model.encoder.n_encoded), dtype=np.float32)
        estimator.background_ = background
        teacher_background = folder.teacher_background
        if teacher_background is None:
            teacher_background = pd.DataFrame(columns=model.encoder.schema.names)
        estimator.teacher_background_ = _restore_categories(teacher_background, estimator.teacher_categories_)
        estimator.history_ = list(stored.get("history") or [])
        estimator.teacher_ = folder.teacher
        estimator._attributors = {}
        estimator.attributor_ = estimator._attributor(config.attributor)
        estimator._online_optimizer = None
        estimator._updates = 0
        estimator._pipeline_choices = dict(folder.pipeline_choices)
        estimator._place()
        if task != "regression":
            estimator.classes_ = np.asarray(model.target.classes)
        return estimator


# ---------------------------------------------------------------------------------------------------- public
class GBDT2NNRegressor(RegressorMixin, _GBDT2NNBase):  # type: ignore[misc]
    """Distil a regression tree ensemble into a GBDT2NN network; ``score`` is R².

    Parameters
    ----------
    teacher:
        Teacher plugin that trains the booster when ``fit`` gets none (``"lightgbm"``, ``"xgboost"``); a
        booster given to ``fit`` picks its own plugin.
    teacher_options:
        Training parameters of the booster (e.g. ``{"n_estimators": 100, "num_leaves": 64}``); not allowed
        with a booster given to ``fit``.
    student_options:
        Fields of :class:`~gbdt2nn_core.student.GBDT2NNConfig` (``n_groups``, ``hidden``, ``batch_size``,
        ``lr``...), except ``epochs``, ``seed``, ``early_stopping`` and ``patience``, which are parameters of
        their own.
    attributor, attributor_options:
        How the student explains itself while it learns to explain like the teacher (default ``"structure"``).
    alignment, alignment_options, alignment_weight, alignment_fraction, alignment_rows, alignment_min_rows:
        The alignment loss (``"mse"``, ``"cosine"``, ``"rank"``, or the default ``"auto"``: ``rank`` for a
        multiclass task, ``cosine`` for binary, ``mse`` for regression and where those are not installed, resolved in
        ``config_.alignment`` when ``fit`` aligns; see
        :meth:`~gbdt2nn_core.pipeline.DistillConfig.alignment_for`), λ (0 = plain distillation), the share of
        batches that carry it and the share of training rows it covers (a seeded random subset: only those rows'
        teacher TreeSHAP is computed), but at least ``alignment_min_rows`` rows (every row of a smaller training
        set; 0 = no floor). ``partial_fit`` aligns every row it is given attributions for.
    alignment_batches:
        ``"grouped"`` (default): the aligned rows train in batches of their own, a share of the steps, weighted up
        so that an epoch aligns as much (a tenth of the steps pays for the attributions' double backward at
        ``alignment_rows=0.1``); ``"mixed"``: every batch carries its few aligned rows.
    alignment_check:
        Check alignment's cost on the held-out rows (``validation_fraction``): ``fit`` trains a plain (λ = 0)
        student too, and where the aligned one's best validation task loss is more than 0.5 % above the plain
        one's, trains it again at a tenth of λ and keeps that one
        (:func:`~gbdt2nn_core.pipeline.distill.checked_alignment`; what was tried and kept is in the saved
        folder's ``config.json`` → ``student_choices.alignment_check``, the kept λ in ``config_``). Off by default:
        a fit costs about 2.25 × a plain one (1.42 × an aligned one) on adult, more where it retrains.
    epochs:
        The student's budget of training epochs (early stopping usually ends training sooner).
    validation_fraction, early_stopping, n_iter_no_change:
        The share of the training rows the student holds out (seeded, stratified for classification; 0 = none;
        the teacher trains on every row), whether it stops once the task loss on them has not improved for
        ``n_iter_no_change`` epochs, restoring the best epoch's weights (as scikit-learn's ``MLPClassifier``).
    synthetic_rows:
        Synthetic rows per training row that the student also trains on, labelled by the teacher (MUNGE: rows near
        the data, see :mod:`gbdt2nn_core.pipeline.synthetic`); ``"auto"`` (default): 4 for a regressor, fewer on a
        large training set so that they are at most 200,000 in all
        (:data:`~gbdt2nn_core.pipeline.config.AUTO_SYNTHETIC_ROWS_TOTAL`), none for a classifier; 0 = none.
    teacher_explanation, background_rows:
        The teacher's TreeSHAP to imitate: ``"path-dependent"`` (native) or ``"interventional"`` against a
        background of ``background_rows`` training rows (needs the ``shap`` plugin).
    threshold_bins:
        Teacher split thresholds per numeric column that the student's input encoding uses (0 = none).
    merge_categories:
        Whether categories that no split of the teacher tells apart share one slot of the student's one-hot
        encoding (fewer, better-estimated weights for high-cardinality columns; ``False``: a slot per category).
    online_epochs, online_lr:
        Passes over each batch and learning rate (default: the student's) of :meth:`partial_fit`.
    random_state:
        Seed of everything random (teacher, student, sampling). Fitting twice with the same seed gives the
        same model. ``None`` draws one (kept as ``seed_``).
    cache_dir:
        Where teacher TreeSHAP is cached (default ``$GBDT2NN_CACHE_DIR`` or ``~/.cache/gbdt2nn``); ``False``
        turns the cache off.
    device:
        Where the student trains and serves: ``"auto"`` (the first CUDA device when there is one, else the CPU),
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; an XGBoost teacher's TreeSHAP runs there too. Changing it after
        ``fit`` (``set_params``) moves the network before the next prediction; :meth:`load` puts it on the CPU.
    verbose:
        Show progress bars.

    Attributes
    ----------
    teacher_, student_, encoder_, attributor_:
        The fitted :class:`~gbdt2nn_core.Teacher`, :class:`~gbdt2nn_core.student.GBDT2NNStudent`,
        :class:`~gbdt2nn_core.data.encoding.InputEncoder` and attributor.
    n_features_in_, feature_names_in_:
        As in scikit-learn (``feature_names_in_`` only for DataFrame input).
    history_:
        One record per training epoch (``phase`` ``"fit"``) and per :meth:`partial_fit` pass.
    task_, config_, seed_, device_:
        ``"regression"``; the full pipeline settings; the seed used; the device the network is on (``"cuda:0"``).
    """

    _kind: ClassVar[str] = "regressor"

    def _task_and_target(self, y: np.ndarray, model: object, teacher: Teacher) -> tuple[Task, TargetEncoder]:
        return "regression", TargetEncoder.fit(y, "regression")

    def predict(self, X: Any) -> np.ndarray:
        """The student's predictions."""
        self._check_fitted("predict")
        return self.predict_margin(X)


class GBDT2NNClassifier(ClassifierMixin, _GBDT2NNBase):  # type: ignore[misc]
    """Distil a binary or multiclass tree ensemble into a GBDT2NN network; ``score`` is accuracy.

    Takes the parameters of :class:`GBDT2NNRegressor`. Two classes give a binary model (one log-odds margin),
    more give a multiclass one with one margin per class: the teacher's trees of each class are grouped
    apart, so each class has its own group networks, and explanations are per class, ``(n, k, d)``.
    ``classes_`` holds the labels in sorted order (for a wrapped scikit-learn model, its own ``classes_``).
    """

    _kind: ClassVar[str] = "classifier"

    def _task_and_target(self, y: np.ndarray, model: object, teacher: Teacher) -> tuple[Task, TargetEncoder]:
        labels = pd.Series(y)
        if labels.isna().any():
            raise DataError(
                problem=f"the target has {int(labels.isna().sum())} missing value(s)", fix="drop those rows first"
            )
        present = sorted(labels.unique().tolist(), key=lambda v: (str(type(v)), v))
        given_classes = getattr(model, "classes_", None) if model is not None else None
        if given_classes is not None and not isinstance(model, Teacher):
            classes = tuple(_python_scalar(c) for c in np.asarray(given_classes).tolist())
        elif model is not None:
            k = teacher.n_outputs
            wanted = max(k, 2)
            if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in present) and (
                present and min(present) >= 0 and max(present) < wanted
            ):
                classes = tuple(range(wanted))
            elif len(present) == wanted:
                classes = tuple(present)
            else:
                raise DataError(
                    problem=f"y has {len(present)} distinct labels, the booster has {wanted} classes",
                    fix=f"pass labels 0..{wanted - 1} as the booster was trained with",
                )
        else:
            if len(present) < 2:
                raise DataError(
                    problem=f"y has a single class ({present[0]!r}); a classifier needs at least two",
                    fix="check the target or the rows selected",
                )
            classes = tuple(present)
        unknown = [v for v in present if v not in set(classes)]
        if unknown:
            raise DataError(
                problem=f"y has labels {unknown[:5]} that the booster does not know (its classes: {list(classes)})",
                fix="pass labels among the booster's classes",
            )
        task: Task = "binary" if len(classes) == 2 else "multiclass"
        return task, TargetEncoder(task=task, classes=classes)

    def _output_labels(self) -> list[Any]:
        return list(self.classes_) if self.n_outputs_ > 1 else [self.classes_[1]]

    def decision_function(self, X: Any) -> np.ndarray:
        """The student's margins: log-odds of ``classes_[1]`` ``(n,)`` (binary), or per-class scores ``(n, k)``."""
        self._check_fitted("decision_function")
        return self.predict_margin(X)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(n, k)``, columns in ``classes_`` order, calibrated by the student's temperature
        (fitted on its validation rows; ``calibrate=False`` in ``student_options`` leaves it at 1)."""
        self._check_fitted("predict_proba")
        return probabilities(self.predict_margin(X), self.student_.temperature)

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class label of each row."""
        self._check_fitted("predict")
        probabilities = self.predict_proba(X)
        labels: np.ndarray = np.asarray(self.classes_)[probabilities.argmax(axis=1)]
        return labels


def load_estimator(path: str | os.PathLike[str], *, device: str = "cpu") -> GBDT2NNRegressor | GBDT2NNClassifier:
    """Load a run folder (``estimator.save`` or ``gbdt2nn distill``) as the estimator class of its task, its network
    on ``device`` (see :meth:`GBDT2NNClassifier.load`)."""
    folder = read_folder(Path(path))
    cls = GBDT2NNRegressor if folder.model.task == "regression" else GBDT2NNClassifier
    return cls._from_folder(folder, device=device)  # type: ignore[no-any-return]
