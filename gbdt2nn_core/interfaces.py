"""The contracts that plugin factories fulfil: :class:`Teacher`, :class:`Student`, :class:`Attributor` and
:class:`AlignmentLoss`, the optional :class:`TeacherExplainer` capability of an attributor, plus the records they
exchange (:class:`TreeEnsemble`, :class:`TreeShap`).

Conventions shared by every component:

- **Teacher data** is a :class:`pandas.DataFrame` whose numeric columns are ``float64`` (NaN = missing) and
  whose categorical columns have a :class:`pandas.CategoricalDtype` with fixed categories. The core prepares
  it (:class:`gbdt2nn_core.data.TabularSchema`); teachers never see strings.
- **Margins** are raw scores: log-odds for binary, the prediction for regression, one score per class for
  multiclass. Shape ``(n,)`` with one output, ``(n, k)`` with ``k`` outputs.
- **Explanations** live in margin space, one value per input column (per output for multiclass):
  shape ``(n, d)`` with one output, ``(n, k, d)`` with ``k``.
- **Student inputs** are the encoded, centred float matrix ``z`` of shape ``(n, D)`` built by the core's
  encoder; ``z = 0`` is the training mean. Attributors work on ``z`` and the core sums each column's block
  of encoded values back to the column, so plugins never deal with categorical encodings.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

import attrs
import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    import torch

__all__ = [
    "AlignmentLoss",
    "Attributor",
    "Reference",
    "Student",
    "Task",
    "Teacher",
    "TeacherExplainer",
    "Tree",
    "TreeEnsemble",
    "TreeShap",
]

Task = Literal["regression", "binary", "multiclass"]
TASKS: tuple[Task, ...] = ("regression", "binary", "multiclass")

#: Which difference an attribution explains: ``"local"`` (a gradient, no difference at all),
#: ``"baseline"`` (``f(x) - f(baseline)``) or ``"expectation"`` (``f(x) - E[f]``, like TreeSHAP).
Reference = Literal["local", "baseline", "expectation"]


# Named converters (not a converter factory) so that mypy's attrs plugin can type the records' __init__.
def _float64_array(value: Any) -> np.ndarray:
    """``value`` as a read-only float64 array."""
    array: np.ndarray = np.asarray(value, dtype=np.float64)
    array.setflags(write=False)
    return array


def _int64_array(value: Any) -> np.ndarray:
    """``value`` as a read-only int64 array."""
    array: np.ndarray = np.asarray(value, dtype=np.int64)
    array.setflags(write=False)
    return array


def _as_trees(trees: Iterable[Tree]) -> tuple[Tree, ...]:
    """Any iterable of trees (a list, a generator) as the tuple that :class:`TreeEnsemble` keeps."""
    return tuple(trees)


@attrs.frozen(kw_only=True)
class Tree:
    """One regression tree in normalised form, whatever the backend.

    ``leaf_values[i]`` is the value of the leaf that :meth:`Teacher.leaf_indices` calls ``i``;
    ``split_features`` / ``split_gains`` list every internal node's column index and split gain.
    """

    leaf_values: np.ndarray = attrs.field(converter=_float64_array, eq=False)
    split_features: np.ndarray = attrs.field(converter=_int64_array, eq=False)
    split_gains: np.ndarray = attrs.field(converter=_float64_array, eq=False)
    #: Threshold of each internal node's numeric split (NaN for categorical splits); see
    #: :attr:`TreeEnsemble.split_rule`. Empty when the backend does not report thresholds.
    split_thresholds: np.ndarray = attrs.field(converter=_float64_array, eq=False, factory=lambda: np.zeros(0))
    #: Which margin output this tree adds to (its class in a multiclass model; 0 otherwise).
    output: int = 0

    @property
    def n_leaves(self) -> int:
        return int(self.leaf_values.shape[0])


@attrs.frozen(kw_only=True)
class TreeEnsemble:
    """A whole boosted ensemble: ``margin[:, c] = base_margin[c] + sum of leaf values of trees with output c``."""

    trees: tuple[Tree, ...] = attrs.field(converter=_as_trees)
    n_features: int
    n_outputs: int = 1
    base_margin: np.ndarray = attrs.field(converter=_float64_array, eq=False, factory=lambda: np.zeros(1))
    #: How numeric thresholds split: ``"<="`` (``x <= t`` goes left, LightGBM) or ``"<"`` (``x < t``, XGBoost).
    split_rule: str = "<="

    @property
    def n_trees(self) -> int:
        return len(self.trees)

    @property
    def max_leaves(self) -> int:
        return max(tree.n_leaves for tree in self.trees)


@attrs.frozen(kw_only=True)
class TreeShap:
    """TreeSHAP values of a teacher on some rows, in margin space.

    Both methods add up: ``values.sum(-1) + expected_value == margin`` to float precision. For path-dependent
    TreeSHAP ``expected_value`` is the booster's own expectation (from the training cover of its nodes); for
    interventional TreeSHAP it is the teacher's mean margin on the background sample.
    """

    values: np.ndarray = attrs.field(converter=_float64_array, eq=False)
    expected_value: np.ndarray = attrs.field(converter=_float64_array, eq=False)
    #: ``"path-dependent"`` (native, the booster's cover statistics) or ``"interventional"`` (a background sample).
    method: str = "path-dependent"


class Teacher(abc.ABC):
    """A gradient-boosted tree ensemble: trained here, or an existing booster wrapped.

    Implementations must define every abstract method; a forgotten one fails when the class is instantiated.
    """

    @property
    @abc.abstractmethod
    def task(self) -> Task:
        """The task the booster solves (known after :meth:`fit`)."""

    @property
    @abc.abstractmethod
    def n_outputs(self) -> int:
        """Number of margin outputs: 1 for regression and binary, the number of classes for multiclass."""

    @property
    @abc.abstractmethod
    def feature_names(self) -> tuple[str, ...]:
        """The booster's input columns, in order."""

    @abc.abstractmethod
    def fit(self, X: pd.DataFrame, y: np.ndarray, *, task: Task, seed: int = 0) -> Teacher:
        """Train the booster on ``(X, y)``; a wrapped booster instead checks that ``X`` matches it. Returns self."""

    @abc.abstractmethod
    def predict_margin(self, X: pd.DataFrame) -> np.ndarray:
        """Raw scores, ``(n,)`` or ``(n, k)``."""

    @abc.abstractmethod
    def leaf_indices(self, X: pd.DataFrame) -> np.ndarray:
        """The leaf each row reaches in each tree: an ``(n, n_trees)`` ``int32`` array.

        Trees are in :meth:`structure` order, and leaves numbered ``0 .. n_leaves - 1`` as in that tree's
        :attr:`Tree.leaf_values`.
        """

    @abc.abstractmethod
    def structure(self) -> TreeEnsemble:
        """The ensemble in normalised form: leaf values, split features and gains per tree."""

    @abc.abstractmethod
    def shap_values(self, X: pd.DataFrame) -> TreeShap:
        """Path-dependent TreeSHAP values in margin space (``(n, d)`` or ``(n, k, d)``)."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A string that changes whenever the model changes (used as a cache key for explanations)."""

    @abc.abstractmethod
    def save(self, path: Path) -> None:
        """Write the booster to ``path`` in the backend's own (non-pickle) model format."""

    @property
    def native_model(self) -> Any:
        """Optional: the backend's own booster (``lightgbm.Booster``, ``xgboost.Booster``...), for tools that read it.

        Not abstract. A teacher with no such object keeps this default, which raises :class:`AttributeError`,
        so ``getattr(teacher, "native_model", None)`` is ``None`` for it. Callers must not train the booster
        further: the teacher's structure and fingerprint describe it as it is.
        """
        raise AttributeError(
            f"{type(self).__name__} has no native_model: it does not expose a booster of a tree library; "
            "use its structure(), leaf_indices() and shap_values() instead"
        )


class Student(abc.ABC):
    """A network that learns to imitate a teacher. The core's GBDT2NN is one; plugins may add others."""

    @abc.abstractmethod
    def margin(self, z: torch.Tensor) -> torch.Tensor:
        """Differentiable raw scores for encoded inputs ``z`` (``(n,)`` or ``(n, k)``)."""


class Attributor(abc.ABC):
    """Explains a differentiable model's margin feature by feature, in the encoded input space.

    ``attribute(model, z)`` returns a tensor shaped like ``z`` (``(n, D)``) for one output, or ``(n, k, D)``
    for ``k`` outputs. With ``create_graph=True`` the result must stay differentiable with respect to the
    model's parameters, so that an alignment loss can be back-propagated through it.
    :mod:`gbdt2nn_core.attribution` has the input checks and batched input gradients that attributors share.

    An attributor whose reference needs a matching teacher explanation (``"expectation"`` over its own
    background sample) may also implement :class:`TeacherExplainer`.
    """

    #: Whether :meth:`attribute` supports ``create_graph=True`` (needed for joint training).
    differentiable: ClassVar[bool] = True
    #: Which difference the attributions explain; see :data:`Reference`.
    reference: ClassVar[Reference] = "local"

    def fit(self, model: Callable[[torch.Tensor], torch.Tensor], background: torch.Tensor) -> Attributor:
        """Look at a background sample of encoded training rows (for baselines); the default does nothing."""
        return self

    @abc.abstractmethod
    def attribute(
        self, model: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, *, create_graph: bool = False
    ) -> torch.Tensor:
        """Attributions for rows ``z`` of shape ``(n, D)``."""


@runtime_checkable
class TeacherExplainer(Protocol):
    """Optional capability of an :class:`Attributor`: it explains the teacher the way it explains the student.

    ``explain_teacher(teacher, X, background)`` returns a :class:`TreeShap` of ``teacher`` on rows ``X`` whose
    reference matches the attributor's, e.g. interventional TreeSHAP against ``background`` (teacher-space
    rows, not encoded ``z``) for expected gradients, which also explain ``f(x) - E[f]`` over a background
    sample. Check for it with ``isinstance(attributor, TeacherExplainer)``. The teacher's own path-dependent
    :meth:`Teacher.shap_values` stays the default target of alignment; this is the way to ask for a matching one.
    """

    def explain_teacher(
        self, teacher: Teacher, X: pd.DataFrame | np.ndarray, background: pd.DataFrame | np.ndarray
    ) -> TreeShap: ...


@runtime_checkable
class AlignmentLoss(Protocol):
    """Any callable ``(student_attr, teacher_attr) -> scalar tensor``, differentiable in ``student_attr``.

    Both tensors have shape ``(n, d)`` (rows by input columns); multi-output attributions are flattened to
    ``(n * k, d)`` by the core before the call.
    """

    def __call__(self, student_attr: torch.Tensor, teacher_attr: torch.Tensor, /) -> torch.Tensor: ...
