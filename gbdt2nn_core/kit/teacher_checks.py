"""Building blocks for :class:`~gbdt2nn_core.host.interfaces.Teacher` plugins: checks of tasks, frames, labels,
columns and training parameters, each failing with a one-line :class:`~gbdt2nn_core.errors.Gbdt2nnError`.

A teacher built on :class:`~gbdt2nn_core.kit.booster_teacher.BoosterTeacher` gets them all without calling them; a
teacher written from scratch calls them itself.

Nothing here imports a tree library, so a teacher's errors read the same whatever its backend, and a new
teacher plugin gets the same checks as the LightGBM and XGBoost ones::

    from gbdt2nn_core import teacher_checks as checks


    class MyTeacher(Teacher):
        def fit(self, X, y, *, task, seed=0):
            task = checks.check_task(task)
            X = checks.check_frame(X, forbidden="[]", library="MyBoost")
            params = dict(self._params)
            n_classes = checks.pop_n_classes(params, ("num_class",), task=task)
            labels, k = checks.check_target(y, n_rows=len(X), task=task, n_classes=n_classes)
            ...

        def predict_margin(self, X):
            if self._booster is None:
                raise checks.not_fitted_error(type(self).__name__, "predict_margin")
            checks.check_columns(checks.check_frame(X), self.feature_names)
            ...
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from gbdt2nn_core.errors import ConfigError, DataError, NotFittedError
from gbdt2nn_core.host.interfaces import TASKS, Task

__all__ = [
    "check_columns",
    "check_frame",
    "check_kinds",
    "check_known_params",
    "check_no_seed",
    "check_no_training_params",
    "check_target",
    "check_task",
    "not_fitted_error",
    "pop_n_classes",
    "pop_n_rounds",
    "pop_param",
]


def check_task(task: object) -> Task:
    """``task`` itself when it is one of :data:`~gbdt2nn_core.host.interfaces.TASKS`; a ``ConfigError`` otherwise."""
    if task not in TASKS:
        raise ConfigError(setting="task", value=task, fix=f"use one of {', '.join(TASKS)}")
    return task


def not_fitted_error(owner: str, method: str) -> NotFittedError:
    """The error to raise when ``owner.method`` is used on a teacher that has no booster yet."""
    return NotFittedError(
        component=owner,
        method=method,
        fix=f"call {owner}.fit(X, y, task=...) first, or build the teacher with model=... to wrap a trained booster",
    )


def _shorten(names: Sequence[object], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return f"[{shown}{f', ... {len(names) - limit} more' if len(names) > limit else ''}]"


def check_frame(X: object, *, forbidden: str = "", library: str = "the booster") -> pd.DataFrame:
    """Check that ``X`` is a non-empty DataFrame of numeric and categorical columns with usable names.

    ``forbidden`` lists characters the backend refuses in feature names (LightGBM: JSON punctuation).
    """
    if not isinstance(X, pd.DataFrame):
        raise DataError(
            problem=f"X is a {type(X).__name__}, not a pandas DataFrame",
            fix="pass a DataFrame with float64 and category columns (gbdt2nn_core.data.TabularSchema builds one)",
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(problem=f"X is empty ({X.shape[0]} rows, {X.shape[1]} columns)", fix="pass at least one row")
    bad_names = [c for c in X.columns if not isinstance(c, str)]
    if bad_names:
        raise DataError(
            problem=f"column names {_shorten(bad_names)} are not strings",
            fix="name every column with a string (X.columns = X.columns.astype(str))",
        )
    duplicated = sorted(set(X.columns[X.columns.duplicated()]))
    if duplicated:
        raise DataError(
            problem=f"X has duplicate columns {_shorten(duplicated)}", fix="give every column a unique name"
        )
    if forbidden:
        refused = [c for c in X.columns if any(ch in c for ch in forbidden)]
        if refused:
            raise DataError(
                problem=f"column names {_shorten(refused)} contain characters that {library} refuses: {forbidden}",
                fix="rename those columns",
            )
    wrong = [
        f"{c!r} ({X[c].dtype})"
        for c in X.columns
        if not (isinstance(X[c].dtype, pd.CategoricalDtype) or pd.api.types.is_numeric_dtype(X[c].dtype))
    ]
    if wrong:
        raise DataError(
            problem=f"columns {', '.join(wrong[:5])} are neither numeric nor categorical",
            fix="convert strings to pd.CategoricalDtype with fixed categories (gbdt2nn_core.data.TabularSchema does)",
        )
    return X


def check_columns(X: pd.DataFrame, expected: Sequence[str], *, normalise: Callable[[str], str] | None = None) -> None:
    """Check that ``X`` has exactly the booster's columns, in its order; the error names what differs.

    ``normalise`` maps a column name to the spelling the backend stores (LightGBM turns spaces into ``_``).
    """
    got = [normalise(c) for c in X.columns] if normalise else list(X.columns)
    want = list(expected)
    if got == want:
        return
    got_set, want_set = set(got), set(want)
    missing = [c for c in want if c not in got_set]
    unexpected = [c for c in got if c not in want_set]
    parts = []
    if missing:
        parts.append(f"missing {_shorten(missing)}")
    if unexpected:
        parts.append(f"unexpected {_shorten(unexpected)}")
    if not parts:
        first = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
        parts.append(f"reordered (column {first} is {got[first]!r}, the booster expects {want[first]!r})")
    raise DataError(
        problem=f"X's columns do not match the booster's {len(want)} features: " + "; ".join(parts),
        fix="pass X[teacher.feature_names], the columns the booster was trained on, in its order",
    )


def check_kinds(X: pd.DataFrame, categorical: Sequence[bool]) -> None:
    """Check that each column of ``X`` is categorical exactly where the booster's feature is."""
    wrong = [
        f"{column!r} is {'categorical' if is_cat else 'numeric'} in X but {'categorical' if want else 'numeric'} "
        "in the booster"
        for column, want in zip(X.columns, categorical, strict=True)
        if (is_cat := isinstance(X[column].dtype, pd.CategoricalDtype)) != want
    ]
    if wrong:
        raise DataError(
            problem="; ".join(wrong[:3]) + (f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""),
            fix="give those columns the dtype they had when the booster was trained",
        )


def check_target(
    y: object, *, n_rows: int, task: Task, n_classes: int | None = None, training: bool = True
) -> tuple[np.ndarray, int]:
    """Validate the labels for ``task``; returns them as float64 and the number of margin outputs.

    ``n_classes`` fixes the class count (a wrapped booster's, or ``num_class`` given by the user); otherwise a
    multiclass target has ``max(y) + 1`` classes. ``training=False`` (a wrapped booster) allows a sample that
    lacks some classes.
    """
    array = np.asarray(y)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise DataError(problem=f"y has shape {array.shape}", fix="pass one label per row as a 1-D array")
    if array.dtype.kind not in "biuf":
        raise DataError(
            problem=f"y has dtype {array.dtype}, teachers take numbers",
            fix="encode labels as 0/1 (binary) or 0..k-1 (multiclass); gbdt2nn_core.data.TargetEncoder does",
        )
    if len(array) != n_rows:
        raise DataError(problem=f"y has {len(array)} labels for {n_rows} rows of X", fix="pass one label per row")
    values = array.astype(np.float64)
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise DataError(problem=f"y has {bad} NaN or infinite values", fix="drop those rows or impute their labels")
    if task == "regression":
        return values, 1
    if not np.array_equal(values, np.round(values)) or values.min() < 0:
        shown = _shorten([float(v) for v in np.unique(values[(values != np.round(values)) | (values < 0)])])
        raise DataError(
            problem=f"{task} labels must be non-negative integers, y has {shown}",
            fix="encode classes as 0..k-1 (gbdt2nn_core.data.TargetEncoder does), or use task='regression'",
        )
    present = np.unique(values).astype(np.int64)
    if task == "binary":
        if present.max() > 1:
            raise DataError(
                problem=f"binary labels must be 0 or 1, y has {_shorten(present.tolist())}",
                fix="encode the positive class as 1 and the other as 0, or use task='multiclass'",
            )
        if training and len(present) < 2:
            raise DataError(
                problem=f"y has only class {int(present[0])}, a binary teacher needs both",
                fix="use more rows or a stratified sample",
            )
        return values, 1
    k = int(present.max()) + 1
    if n_classes is not None:
        if k > n_classes:
            raise DataError(
                problem=f"y has class {k - 1} but the model has {n_classes} classes (0..{n_classes - 1})",
                fix="encode classes as 0..k-1 with the same encoding the booster was trained with",
            )
        k = n_classes
    if training and len(present) < 2:
        raise DataError(
            problem=f"y has only class {int(present[0])}, a multiclass teacher needs several",
            fix="use more rows or a stratified sample",
        )
    return values, k


def pop_param(params: dict[str, Any], names: Sequence[str], default: Any) -> Any:
    """Pop every alias in ``names`` from ``params``; the value given (at most one alias), else ``default``.

    Libraries resolve clashing aliases silently (a user's ``eta`` could lose to our ``learning_rate``), so the
    teachers resolve them first and refuse two spellings of one setting with a :class:`ConfigError`.
    """
    given = [name for name in names if name in params]
    if len(given) > 1:
        raise ConfigError(
            setting=given[1], value=params[given[1]], fix=f"it is an alias of {given[0]!r}; pass only one of them"
        )
    return params.pop(given[0]) if given else default


def pop_n_rounds(params: dict[str, Any], names: Sequence[str], default: int) -> int:
    """Pop the number of boosting rounds (any alias in ``names``) from ``params``; at least 1, else ConfigError."""
    n_rounds = int(pop_param(params, names, default))
    if n_rounds < 1:
        raise ConfigError(setting="n_estimators", value=n_rounds, fix="train at least one tree")
    return n_rounds


def pop_n_classes(params: dict[str, Any], names: Sequence[str], *, task: Task) -> Any:
    """Pop the class count the user fixed (any alias in ``names``) from ``params``; ``None`` if not given.

    Only a multiclass teacher takes one: for another ``task`` a given value is a :class:`ConfigError`.
    """
    n_classes = pop_param(params, names, None)
    if n_classes is not None and task != "multiclass":
        raise ConfigError(setting="num_class", value=n_classes, fix=f"only multiclass teachers take it, not {task}")
    return n_classes


def check_no_seed(params: Mapping[str, Any], names: Sequence[str]) -> None:
    """Refuse a seed among the training parameters (any alias in ``names``): it belongs in ``fit(seed=...)``."""
    given = [name for name in names if name in params]
    if given:
        raise ConfigError(setting=given[0], value=params[given[0]], fix="pass the seed to fit(..., seed=...) instead")


def check_no_training_params(params: Mapping[str, Any]) -> None:
    """Refuse training parameters given together with a booster to wrap: they could only be ignored."""
    if params:
        raise ConfigError(
            setting="params",
            value=sorted(params),
            fix="training parameters only apply with model=None; remove them to wrap an existing booster",
        )


def check_known_params(
    params: Mapping[str, Any], known: Collection[str], *, library: str, examples: Sequence[str] = ()
) -> None:
    """Refuse a training option the library does not know: libraries often ignore one silently (a misspelt
    ``num_leave`` would leave the default number of leaves), so it is a :class:`ConfigError` with a suggestion.

    ``known`` holds every name the library accepts (aliases included); ``examples`` are the names shown when
    nothing is close.
    """
    unknown = sorted(name for name in params if name not in known)
    if not unknown:
        return
    name = unknown[0]
    close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.6)
    listed = ", ".join(examples) if examples else ", ".join(sorted(known)[:8])
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise ConfigError(
        setting="teacher option",
        value=name,
        fix=f"{hint}{library} does not know it; it takes {listed} and the other {library} parameters",
    )
