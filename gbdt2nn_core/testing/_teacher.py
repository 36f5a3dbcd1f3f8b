"""Conformance check for teachers: :func:`check_teacher`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gbdt2nn_core.errors import ConfigError, DataError, Gbdt2nnError
from gbdt2nn_core.host.interfaces import TASKS, Task, Teacher, TreeEnsemble, TreeShap
from gbdt2nn_core.host.specs import TeacherSpec

__all__ = ["check_teacher"]

#: Relative tolerance of sums of leaf values / SHAP values against the margin. Backends that accumulate in
#: float32 (XGBoost) drift by about n_trees * 6e-8 of the summed magnitude; a wrong leaf is off by far more.
RTOL = 1e-5

# Methods that need a booster, with the argument each takes (``X`` or nothing).
_NEED_MODEL: tuple[tuple[str, bool], ...] = (
    ("predict_margin", True),
    ("leaf_indices", True),
    ("shap_values", True),
    ("structure", False),
)


def check_teacher(
    spec_or_factory: TeacherSpec | Callable[..., Teacher],
    X: pd.DataFrame,
    y: np.ndarray,
    *,
    task: Task,
    tmp_path: str | os.PathLike[str],
    params: Mapping[str, Any] | None = None,
    save_name: str = "teacher.model",
) -> None:
    """Check that a teacher keeps the :class:`~gbdt2nn_core.Teacher` contract on ``(X, y)`` for ``task``.

    ``spec_or_factory`` is a :class:`~gbdt2nn_core.TeacherSpec` or its factory; it is called as
    ``factory(**params)`` to train and as ``factory(model=path)`` to wrap a saved model. Use small data (a few
    hundred rows, containing every class) and few trees: the teacher is trained three times.

    Checked: methods that need a booster raise a :class:`~gbdt2nn_core.Gbdt2nnError` before ``fit``; ``fit``
    returns the teacher and leaves ``X`` untouched; ``task``, ``n_outputs`` and ``feature_names``; the shape,
    dtype and finiteness of margins, leaf indices and TreeSHAP values; leaf indices within each tree's leaves;
    ``structure()`` describing the trees (split features in range, one split per internal node) and
    reproducing the margins as ``base_margin + sum of the leaf values reached``; TreeSHAP values that sum to
    the margin; a stable fingerprint that changes when the data change the model; the same model and
    fingerprint from the same seed; ``save`` writing one file atomically, which ``factory(model=path)`` loads
    back with identical margins, leaves and fingerprint; and ``DataError`` / ``ConfigError`` from a wrapped
    teacher given reordered columns or the wrong task.

    Raises ``AssertionError`` naming the broken promise.
    """
    factory = spec_or_factory.factory if isinstance(spec_or_factory, TeacherSpec) else spec_or_factory
    name = spec_or_factory.name if isinstance(spec_or_factory, TeacherSpec) else getattr(factory, "__name__", "?")
    where = f"teacher {name!r} ({task})"
    assert task in TASKS, f"check_teacher: task must be one of {TASKS}, got {task!r}"
    assert isinstance(X, pd.DataFrame), f"check_teacher: X must be a DataFrame, got {type(X).__name__}"
    assert len(X) >= 3, "check_teacher: X needs at least 3 rows"
    options = dict(params or {})
    y = np.asarray(y)
    n, d = X.shape
    k = int(y.max()) + 1 if task == "multiclass" else 1

    def build(**extra: Any) -> Teacher:
        teacher = factory(**extra)
        assert isinstance(teacher, Teacher), f"{where}: the factory returned {type(teacher).__name__}, not a Teacher"
        return teacher

    _check_unfitted(build(**options), X, where)

    original = X.copy(deep=True)
    teacher = build(**options)
    returned = teacher.fit(X, y, task=task, seed=0)
    assert returned is teacher, f"{where}: fit must return the teacher itself (got {type(returned).__name__})"
    _assert_unchanged(X, original, f"{where}: fit")
    assert teacher.task == task, f"{where}: task is {teacher.task!r} after fit(task={task!r})"
    assert teacher.n_outputs == k, f"{where}: n_outputs is {teacher.n_outputs}, expected {k}"
    assert tuple(teacher.feature_names) == tuple(X.columns), (
        f"{where}: feature_names {tuple(teacher.feature_names)} differ from X's columns {tuple(X.columns)}"
    )

    margin = _check_margin(teacher, X, k, where)
    ensemble = _check_structure(teacher, d, k, where)
    leaves = _check_leaves(teacher, X, ensemble, where)
    _check_reconstruction(ensemble, leaves, margin, where)
    _check_shap(teacher.shap_values(X), margin, n, d, k, where)
    _assert_unchanged(X, original, f"{where}: the prediction methods")

    fingerprint = teacher.fingerprint()
    assert isinstance(fingerprint, str), f"{where}: fingerprint() returned {type(fingerprint).__name__}, not str"
    assert fingerprint, f"{where}: fingerprint() returned an empty string"
    assert teacher.fingerprint() == fingerprint, f"{where}: fingerprint() changed between two calls"
    _check_determinism(build(**options), X, y, task, margin, fingerprint, where)
    _check_changes(build(**options), X, y, task, k, fingerprint, where)

    folder = Path(tmp_path) / f"check-teacher-{name}-{task}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / save_name
    teacher.save(path)
    left = sorted(p.name for p in folder.iterdir())
    assert left == [save_name], f"{where}: save({save_name!r}) left {left} in its folder (write atomically)"
    _check_reload(build(model=path), X, y, task, margin, leaves, fingerprint, where)


def _check_unfitted(teacher: Teacher, X: pd.DataFrame, where: str) -> None:
    for method, takes_x in _NEED_MODEL:
        call = getattr(teacher, method)
        try:
            call(X) if takes_x else call()
        except Gbdt2nnError:
            continue
        except Exception as exc:  # the contract asks for a one-line gbdt2nn error, not a library's
            raise AssertionError(
                f"{where}: {method} before fit raised {type(exc).__name__} ({exc}); raise a Gbdt2nnError "
                "subclass such as ConfigError that says to call fit first"
            ) from exc
        raise AssertionError(f"{where}: {method} before fit returned instead of raising a Gbdt2nnError")


def _assert_unchanged(X: pd.DataFrame, original: pd.DataFrame, what: str) -> None:
    try:
        pd.testing.assert_frame_equal(X, original)
    except AssertionError as exc:
        raise AssertionError(f"{what} modified X in place: {exc}") from None


def _check_margin(teacher: Teacher, X: pd.DataFrame, k: int, where: str) -> np.ndarray:
    margin = teacher.predict_margin(X)
    shape = (len(X),) if k == 1 else (len(X), k)
    assert isinstance(margin, np.ndarray), f"{where}: predict_margin returned {type(margin).__name__}"
    assert margin.shape == shape, f"{where}: predict_margin has shape {margin.shape}, expected {shape}"
    assert np.issubdtype(margin.dtype, np.floating), f"{where}: predict_margin has dtype {margin.dtype}"
    assert np.isfinite(margin).all(), f"{where}: predict_margin has NaN or infinite values"
    return margin


def _check_structure(teacher: Teacher, d: int, k: int, where: str) -> TreeEnsemble:
    ensemble = teacher.structure()
    assert isinstance(ensemble, TreeEnsemble), f"{where}: structure() returned {type(ensemble).__name__}"
    assert ensemble.n_trees >= 1, f"{where}: structure() has no trees"
    assert ensemble.n_features == d, f"{where}: structure().n_features is {ensemble.n_features}, X has {d} columns"
    assert ensemble.n_outputs == k, f"{where}: structure().n_outputs is {ensemble.n_outputs}, expected {k}"
    base = ensemble.base_margin
    assert base.shape == (k,), f"{where}: base_margin has shape {base.shape}, expected ({k},)"
    assert np.isfinite(base).all(), f"{where}: base_margin is not finite"
    for index, tree in enumerate(ensemble.trees):
        label = f"{where}: tree {index}"
        assert tree.leaf_values.ndim == 1, f"{label}: leaf_values has shape {tree.leaf_values.shape}, not 1-D"
        assert tree.n_leaves >= 1, f"{label} has no leaves"
        assert np.isfinite(tree.leaf_values).all(), f"{label} has non-finite leaf values"
        splits = tree.split_features.shape
        assert splits == (tree.n_leaves - 1,), (
            f"{label}: a binary tree with {tree.n_leaves} leaves has {tree.n_leaves - 1} splits, got {splits}"
        )
        assert tree.split_gains.shape == splits, f"{label}: split_gains and split_features differ in length"
        assert np.isfinite(tree.split_gains).all(), f"{label} has non-finite split gains"
        if splits[0]:
            low, high = int(tree.split_features.min()), int(tree.split_features.max())
            assert low >= 0, f"{label} splits on column {low}"
            assert high < d, f"{label} splits on column {high}, X has {d} columns"
        assert 0 <= tree.output < k, f"{label} adds to output {tree.output}, expected 0..{k - 1}"
    again = teacher.structure()
    assert again.n_trees == ensemble.n_trees, f"{where}: structure() changed between two calls"
    return ensemble


def _check_leaves(teacher: Teacher, X: pd.DataFrame, ensemble: TreeEnsemble, where: str) -> np.ndarray:
    leaves = teacher.leaf_indices(X)
    shape = (len(X), ensemble.n_trees)
    assert isinstance(leaves, np.ndarray), f"{where}: leaf_indices returned {type(leaves).__name__}"
    assert leaves.shape == shape, f"{where}: leaf_indices has shape {leaves.shape}, expected (n_rows, n_trees) {shape}"
    assert np.issubdtype(leaves.dtype, np.integer), f"{where}: leaf_indices has dtype {leaves.dtype}, not integer"
    n_leaves = np.array([tree.n_leaves for tree in ensemble.trees])
    outside = (leaves < 0) | (leaves >= n_leaves[None, :])
    if outside.any():
        row, tree = np.argwhere(outside)[0]
        raise AssertionError(
            f"{where}: leaf_indices[{row}, {tree}] = {leaves[row, tree]}, but tree {tree} has {n_leaves[tree]} leaves"
        )
    return leaves


def _check_reconstruction(ensemble: TreeEnsemble, leaves: np.ndarray, margin: np.ndarray, where: str) -> None:
    k = ensemble.n_outputs
    total = np.tile(ensemble.base_margin, (len(leaves), 1))
    magnitude = np.tile(np.abs(ensemble.base_margin), (len(leaves), 1))
    for index, tree in enumerate(ensemble.trees):
        reached = tree.leaf_values[leaves[:, index]]
        total[:, tree.output] += reached
        magnitude[:, tree.output] += np.abs(reached)
    expected = margin.reshape(len(leaves), k)
    error = np.abs(total - expected)
    worst = np.unravel_index(np.argmax(error - RTOL * magnitude), error.shape)
    if error[worst] > RTOL * magnitude[worst] + 1e-12:
        raise AssertionError(
            f"{where}: base_margin + leaf values reached does not reproduce the margin: row {worst[0]} output "
            f"{worst[1]} sums to {total[worst]:.8g}, predict_margin says {expected[worst]:.8g} (check leaf "
            "numbering, tree order, Tree.output and base_margin)"
        )


def _check_shap(shap: TreeShap, margin: np.ndarray, n: int, d: int, k: int, where: str) -> None:
    assert isinstance(shap, TreeShap), f"{where}: shap_values returned {type(shap).__name__}, not TreeShap"
    shape = (n, d) if k == 1 else (n, k, d)
    assert shap.values.shape == shape, f"{where}: shap_values().values has shape {shap.values.shape}, expected {shape}"
    assert shap.expected_value.shape == (k,), (
        f"{where}: shap_values().expected_value has shape {shap.expected_value.shape}, expected ({k},)"
    )
    assert shap.method in ("path-dependent", "interventional"), f"{where}: unknown TreeSHAP method {shap.method!r}"
    assert np.isfinite(shap.values).all(), f"{where}: shap_values has NaN or infinite values"
    values = shap.values.reshape(n, k, d)
    total = values.sum(-1) + shap.expected_value
    magnitude = np.abs(values).sum(-1) + np.abs(shap.expected_value)
    error = np.abs(total - margin.reshape(n, k))
    if (error > RTOL * magnitude + 1e-12).any():
        row, output = np.unravel_index(np.argmax(error), error.shape)
        raise AssertionError(
            f"{where}: TreeSHAP values + expected_value do not sum to the margin: row {row} output {output} gives "
            f"{total[row, output]:.8g}, predict_margin says {margin.reshape(n, k)[row, output]:.8g}"
        )


def _check_determinism(
    teacher: Teacher, X: pd.DataFrame, y: np.ndarray, task: Task, margin: np.ndarray, fingerprint: str, where: str
) -> None:
    teacher.fit(X, y, task=task, seed=0)
    assert np.array_equal(teacher.predict_margin(X), margin), f"{where}: two fits with seed=0 predict differently"
    assert teacher.fingerprint() == fingerprint, f"{where}: two fits with seed=0 have different fingerprints"


def _check_changes(
    teacher: Teacher, X: pd.DataFrame, y: np.ndarray, task: Task, k: int, fingerprint: str, where: str
) -> None:
    keep = np.arange(len(X)) % 3 != 0
    if task != "regression" and len(np.unique(y[keep])) < len(np.unique(y)):
        return  # dropping rows would drop a class; nothing to compare
    teacher.fit(X[keep].reset_index(drop=True), y[keep], task=task, seed=0)
    assert teacher.fingerprint() != fingerprint, f"{where}: a model trained on other rows has the same fingerprint"


def _check_reload(
    teacher: Teacher,
    X: pd.DataFrame,
    y: np.ndarray,
    task: Task,
    margin: np.ndarray,
    leaves: np.ndarray,
    fingerprint: str,
    where: str,
) -> None:
    where = f"{where}, reloaded from its saved file"
    assert teacher.fit(X, y, task=task, seed=0) is teacher, f"{where}: fit must return the teacher itself"
    reloaded = teacher.predict_margin(X)
    if not np.array_equal(reloaded, margin):
        raise AssertionError(
            f"{where}: margins differ from the original by up to {np.abs(reloaded - margin).max():.3g} "
            "(save must keep the model exactly)"
        )
    assert np.array_equal(teacher.leaf_indices(X), leaves), f"{where}: leaf_indices differ from the original"
    assert teacher.fingerprint() == fingerprint, (
        f"{where}: the fingerprint differs from the original's, so cached explanations would not be reused"
    )
    if X.shape[1] >= 2:
        shuffled = X[list(X.columns[::-1])]
        for call in ("fit", "predict_margin"):
            try:
                teacher.fit(shuffled, y, task=task) if call == "fit" else teacher.predict_margin(shuffled)
            except DataError:
                continue
            raise AssertionError(f"{where}: {call} with the columns in reverse order must raise DataError")
    other: Task = "regression" if task != "regression" else "binary"
    try:
        teacher.fit(X, y, task=other)
    except ConfigError:
        return
    except DataError:
        return  # labels that cannot be read for the other task are refused first; also fine
    raise AssertionError(f"{where}: a {task} booster accepted task={other!r} (must raise ConfigError)")
