"""The contracts that plugin factories fulfil: :class:`Teacher`, :class:`Student`, :class:`Attributor` and
:class:`AlignmentLoss`, plus the records they exchange (:class:`TreeEnsemble`, :class:`TreeShap`).

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
from collections.abc import Callable
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
    "Tree",
    "TreeEnsemble",
    "TreeShap",
]

Task = Literal["regression", "binary", "multiclass"]
TASKS: tuple[Task, ...] = ("regression", "binary", "multiclass")

#: Which difference an attribution explains: ``"local"`` (a gradient, no difference at all),
#: ``"baseline"`` (``f(x) - f(baseline)``) or ``"expectation"`` (``f(x) - E[f]``, like TreeSHAP).
Reference = Literal["local", "baseline", "expectation"]


def _as_array(dtype: type) -> Callable[[Any], np.ndarray]:
    def convert(value: Any) -> np.ndarray:
        array = np.asarray(value, dtype=dtype)
        array.setflags(write=False)
        return array

    return convert


@attrs.frozen(kw_only=True)
class Tree:
    """One regression tree in normalised form, whatever the backend.

    ``leaf_values[i]`` is the value of the leaf that :meth:`Teacher.leaf_indices` calls ``i``;
    ``split_features`` / ``split_gains`` list every internal node's column index and split gain.
    """

    leaf_values: np.ndarray = attrs.field(converter=_as_array(np.float64), eq=False)
    split_features: np.ndarray = attrs.field(converter=_as_array(np.int64), eq=False)
    split_gains: np.ndarray = attrs.field(converter=_as_array(np.float64), eq=False)
    #: Which margin output this tree adds to (its class in a multiclass model; 0 otherwise).
    output: int = 0

    @property
    def n_leaves(self) -> int:
        return int(self.leaf_values.shape[0])


@attrs.frozen(kw_only=True)
class TreeEnsemble:
    """A whole boosted ensemble: ``margin[:, c] = base_margin[c] + sum of leaf values of trees with output c``."""

    trees: tuple[Tree, ...] = attrs.field(converter=tuple)
    n_features: int
    n_outputs: int = 1
    base_margin: np.ndarray = attrs.field(converter=_as_array(np.float64), eq=False, factory=lambda: np.zeros(1))

    @property
    def n_trees(self) -> int:
        return len(self.trees)

    @property
    def max_leaves(self) -> int:
        return max(tree.n_leaves for tree in self.trees)


@attrs.frozen(kw_only=True)
class TreeShap:
    """TreeSHAP values of a teacher on some rows, in margin space.

    ``values.sum(-1) + expected_value == margin`` (to float precision) for path-dependent TreeSHAP.
    """

    values: np.ndarray = attrs.field(converter=_as_array(np.float64), eq=False)
    expected_value: np.ndarray = attrs.field(converter=_as_array(np.float64), eq=False)
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
        """``(n, n_trees)`` integer array: the leaf each row reaches in each tree, numbered as in :meth:`structure`."""

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
class AlignmentLoss(Protocol):
    """Any callable ``(student_attr, teacher_attr) -> scalar tensor``, differentiable in ``student_attr``.

    Both tensors have shape ``(n, d)`` (rows by input columns); multi-output attributions are flattened to
    ``(n * k, d)`` by the core before the call.
    """

    def __call__(self, student_attr: torch.Tensor, teacher_attr: torch.Tensor, /) -> torch.Tensor: ...
