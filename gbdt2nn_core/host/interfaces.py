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

from gbdt2nn_core.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from gbdt2nn_core.progress import Progress

__all__ = [
    "Alignment",
    "AlignmentBatches",
    "AlignmentLoss",
    "Attributor",
    "OnlineUpdate",
    "Reference",
    "Student",
    "StudentInputs",
    "Task",
    "Teacher",
    "TeacherExplainer",
    "Tree",
    "TreeEnsemble",
    "TreeShap",
    "ValidationRows",
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


def _category_sets(value: Iterable[Iterable[int]]) -> tuple[frozenset[int], ...]:
    """Per internal node, the category codes its split lists (any iterables of ints) as frozensets."""
    return tuple(frozenset(int(code) for code in codes) for codes in value)


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
    #: Per internal node, the category codes (the column's ``cat.codes`` in the teacher-ready frame) that its
    #: categorical split lists — the set sent one way, whichever way the backend names; empty for numeric
    #: splits. An empty tuple when the backend does not report category sets. Categories that no split tells
    #: apart are one category to the teacher (see :func:`gbdt2nn_core.data.encoding.teacher_category_slots`).
    split_categories: tuple[frozenset[int], ...] = attrs.field(converter=_category_sets, eq=False, factory=tuple)
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

    def shap_values_on(self, X: pd.DataFrame, device: str) -> TreeShap:
        """Optional: :meth:`shap_values` computed on the run's torch ``device`` (``"cpu"``, ``"cuda:0"``...) where the
        backend can (XGBoost: GPUTreeShap on a CUDA device). The default computes on the CPU, whatever ``device``
        says; the values are the same either way (to float32 rounding)."""
        return self.shap_values(X)

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


#: How an epoch's batches hold the aligned rows (:attr:`Alignment.batches`).
AlignmentBatches = Literal["grouped", "mixed"]
ALIGNMENT_BATCHES: tuple[AlignmentBatches, ...] = ("grouped", "mixed")


def check_alignment_batches(_: object, __: object, value: str) -> None:
    """attrs validator of the batch layout (:attr:`Alignment.batches`, ``DistillConfig.alignment_batches``)."""
    if value not in ALIGNMENT_BATCHES:
        raise ConfigError(setting="alignment_batches", value=value, fix="use 'grouped' or 'mixed'")


@attrs.frozen(kw_only=True)
class Alignment:
    """``λ · loss(column_attributions(student), teacher_attributions)``, added to the distillation loss.

    ``teacher_attributions`` holds the teacher's attributions of the aligned training rows: ``(m, d)``, or
    ``(m, c, d)`` for ``c`` outputs. ``rows`` are the positions of those ``m`` rows among the training rows
    (sorted, distinct); ``None`` means every training row, in order (``m = n``). A batch's term is the loss over
    its rows that are among ``rows`` (a batch with none carries no term): only the aligned rows need the
    teacher's TreeSHAP. ``fraction`` is the share of batches that carry the term (the rest train on the
    distillation loss only).

    ``batches`` says how the aligned rows meet the others in an epoch's batches. ``"grouped"`` (the default): when
    only some rows are aligned, they train in batches of their own, a share of the steps about their share of the
    rows, and the term of such a step is weighted by ``steps / aligned steps``, so that an epoch pushes toward the
    teacher's explanations as hard as when every batch carries a few (lazy regularisation: the attribution's double
    backward and its fixed per-step work run on a tenth of the steps at the default ``alignment_rows``).
    ``"mixed"``: every batch is a random draw of all rows and carries the term over its aligned ones.
    """

    attributor: Attributor
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    teacher_attributions: np.ndarray = attrs.field(eq=False, repr=False)
    weight: float = 1.0
    fraction: float = 1.0
    rows: np.ndarray | None = attrs.field(default=None, eq=False, repr=False)
    batches: AlignmentBatches = attrs.field(default="grouped", validator=check_alignment_batches)

    def __attrs_post_init__(self) -> None:
        if self.rows is None:
            return
        rows = np.asarray(self.rows)
        if (
            rows.ndim != 1
            or rows.dtype.kind not in "iu"
            or len(rows) != len(self.teacher_attributions)
            or (len(rows) and rows[0] < 0)
            or np.any(np.diff(rows) <= 0)
        ):
            raise ConfigError(
                setting="Alignment.rows",
                value=rows.shape,
                fix="give the sorted, distinct training-row positions of teacher_attributions, one per row",
            )

    def training_rows(self, n_rows: int) -> np.ndarray:
        """The positions of the aligned rows among ``n_rows`` training rows (all of them when ``rows`` is ``None``)."""
        return np.arange(n_rows) if self.rows is None else np.asarray(self.rows, dtype=np.int64)


@attrs.frozen(kw_only=True)
class StudentInputs:
    """Everything a :class:`Student` may learn from, prepared once by the pipeline.

    A student uses what its architecture needs and ignores the rest (an MLP needs no ``leaves``).
    """

    #: The fitted teacher (its structure, for students built from the trees).
    teacher: Teacher = attrs.field(repr=False)
    #: Encoded, centred training rows ``(n, D)``.
    z: np.ndarray = attrs.field(eq=False, repr=False)
    #: Training targets: floats for regression, class indices otherwise.
    y: np.ndarray = attrs.field(eq=False, repr=False)
    task: Task
    #: The teacher's leaf index of every training row in every tree, ``(n, n_trees)``.
    leaves: np.ndarray = attrs.field(eq=False, repr=False)
    #: The teacher's margins of the training rows, ``(n,)`` or ``(n, k)``.
    teacher_margin: np.ndarray = attrs.field(eq=False, repr=False)
    #: The input column of each encoded position ``(D,)`` (see :class:`~gbdt2nn_core.data.encoding.InputEncoder`).
    column_of: np.ndarray = attrs.field(eq=False, repr=False)
    #: ``(D, d)`` matrix that sums each column's encoded block back to the column.
    aggregation: np.ndarray = attrs.field(eq=False, repr=False)
    #: Encoded training rows that attributors take as their background sample (one policy: the pipeline's).
    background: np.ndarray = attrs.field(eq=False, repr=False)
    #: The alignment term (``None``: plain distillation).
    alignment: Alignment | None = attrs.field(default=None, repr=False)
    progress: Progress | None = attrs.field(default=None, repr=False)
    #: ``on_epoch_end(student, epoch)`` after every epoch; what it returns is stored in the epoch's record.
    on_epoch_end: Callable[[Any, int], dict[str, float] | None] | None = attrs.field(default=None, repr=False)
    #: Where to save a per-epoch checkpoint and resume a matching one from (``None``: no checkpoints).
    checkpoint: Path | None = None
    #: Rows held out of ``z``/``y`` (by the pipeline, from the training rows) that early stopping monitors the task
    #: loss on; ``None``: no validation rows, the student trains its whole epoch budget.
    validation: ValidationRows | None = attrs.field(default=None, repr=False)
    #: The torch device to train on, resolved by the pipeline (:func:`~gbdt2nn_core.host.device.resolve_device`):
    #: the network, its training rows and every tensor a step touches go there; the fitted network stays there.
    device: torch.device | str = attrs.field(default="cpu", repr=str)


@attrs.frozen(kw_only=True)
class ValidationRows:
    """Training rows a student does not train on: it measures its task loss on them to stop early (see
    :class:`~gbdt2nn_core.student.kit.EarlyStopping`)."""

    #: Encoded, centred rows ``(m, D)``, encoded like :attr:`StudentInputs.z`.
    z: np.ndarray = attrs.field(eq=False, repr=False)
    #: Their targets, like :attr:`StudentInputs.y`.
    y: np.ndarray = attrs.field(eq=False, repr=False)


@attrs.frozen(kw_only=True)
class OnlineUpdate:
    """New labelled rows for :meth:`Student.partial_fit`: no trees, only the network trains.

    ``optimizer`` is built over the student's ``module.parameters()`` and may be reused across updates (a
    stream); ``alignment`` (with the teacher's attributions of these rows) and the encoder's ``aggregation``
    keep the alignment term.
    """

    z: np.ndarray = attrs.field(eq=False, repr=False)
    y: np.ndarray = attrs.field(eq=False, repr=False)
    task: Task
    optimizer: torch.optim.Optimizer = attrs.field(repr=False)
    epochs: int = 1
    generator: torch.Generator | None = attrs.field(default=None, repr=False)
    alignment: Alignment | None = attrs.field(default=None, repr=False)
    aggregation: np.ndarray | None = attrs.field(default=None, eq=False, repr=False)


class Student(abc.ABC):
    """A network that learns to imitate a teacher. The core's GBDT2NN is one; plugins may add others.

    The pipeline uses a student for everything through this interface: :meth:`fit` (plain or aligned),
    :meth:`predict_margin` and :meth:`attributions` (shared implementations over :attr:`module`), saving and
    loading through :meth:`state` / :meth:`load_state` (JSON + tensors; the run folder records the student's
    registry name, so a loader builds it through the registry with :meth:`options`), and online updates where
    :attr:`supports_online` is true.
    """

    #: Whether :meth:`partial_fit` can update the fitted network on new rows.
    supports_online: ClassVar[bool] = False
    #: Whether :meth:`fit` trains data-parallel when several processes run it (``gbdt2nn distill --nproc``,
    #: torchrun; see :mod:`gbdt2nn_core.student.distributed`): each process then gets its own shard of the rows.
    supports_data_parallel: ClassVar[bool] = False
    #: Temperature that a classifier's margins are divided by before the sigmoid / softmax of its probabilities
    #: (fitted on the validation rows, saved in :meth:`state`; see :mod:`gbdt2nn_core.student.calibration`).
    #: 1 = uncalibrated. Margins, alignment and explanations never use it.
    temperature: float = 1.0

    @abc.abstractmethod
    def fit(self, inputs: StudentInputs) -> Student:
        """Distil the teacher into the network from ``inputs``; aligned when ``inputs.alignment`` is set.

        An aligned batch adds ``λ ·`` the alignment loss over its rows among ``alignment.rows`` (a share
        ``alignment.fraction`` of batches, none without such rows): ``gbdt2nn_core.student.kit.AlignmentTargets``
        computes that term from a batch's training-row positions.
        """

    @property
    @abc.abstractmethod
    def module(self) -> torch.nn.Module:
        """The fitted network: ``module(z)`` gives the margins of encoded rows ``z``."""

    @property
    @abc.abstractmethod
    def n_outputs(self) -> int:
        """Margin outputs of the fitted network: 1 for regression and binary, the number of classes otherwise."""

    @property
    @abc.abstractmethod
    def history(self) -> dict[str, Any]:
        """The training history, JSON-ready: ``{"epochs": [one record per epoch, with "epoch" and "seconds"]}``
        plus whatever else the student records (GBDT2NN: ``"leaf_embedding"`` losses)."""

    @abc.abstractmethod
    def options(self) -> dict[str, Any]:
        """The JSON-ready options that build this student again through the registry."""

    @abc.abstractmethod
    def state(self) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """What :meth:`load_state` needs: a JSON-ready description (architecture) and named tensors."""

    @abc.abstractmethod
    def load_state(self, description: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Student:
        """Rebuild the fitted network from :meth:`state`'s output (raise ``KeyError``/``ValueError`` on a mismatch)."""

    def margin(self, z: torch.Tensor) -> torch.Tensor:
        """Differentiable raw scores for encoded inputs ``z`` (``(n,)`` or ``(n, k)``)."""
        return self.module(z)  # type: ignore[no-any-return]

    def move_to(self, device: torch.device | str) -> Student:
        """Move the fitted network to ``device`` (a name :func:`~gbdt2nn_core.host.device.resolve_device` accepts);
        predictions, explanations and online updates then run there. Returns ``self``."""
        from gbdt2nn_core.host.device import resolve_device

        self.module.to(resolve_device(device))
        return self

    def predict_margin(self, z: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """Margins of encoded rows (eval mode), ``(n,)`` or ``(n, k)``, on the network's device.

        Rows go through in chunks of ``batch_size`` on the CPU: 2,048-row chunks stay in cache and ran 2.3× faster
        than one 10,000-row pass in BENCHMARKS.md's inference measurement. On an accelerator a chunk is at least
        :data:`~gbdt2nn_core.host.device.INFERENCE_CHUNK_ROWS` rows (one host→device copy each).
        """
        import torch

        from gbdt2nn_core.host.device import in_chunks, inference_chunk_rows, module_device

        module = self.module.eval()
        device = module_device(module)
        z_t = torch.as_tensor(z, dtype=torch.float32)
        with torch.no_grad():
            return in_chunks(module, z_t, inference_chunk_rows(device, batch_size), device, to_cpu=True).numpy()

    # ---- optional capability: margins from the encoder's lookup inputs, without the dense one-hot
    def use_lookup(self, blocks: Any) -> bool:
        """Optional: take rows as lookup inputs of the encoder whose one-hot layout is ``blocks``.

        ``blocks`` is :meth:`InputEncoder.onehot_blocks() <gbdt2nn_core.data.encoding.InputEncoder.onehot_blocks>`
        of the encoder that makes this student's inputs (``None`` turns it off). The pipeline calls it before
        :meth:`fit` and after :meth:`load_state`. A student that can use the layout (the core's GBDT2NN computes
        its first layer as a row lookup, exactly) keeps it, also for the networks it builds later, and returns
        ``True``; then :meth:`predict_margin_lookup` serves rows and :attr:`lookup_enabled` is true. The default
        returns ``False``: the pipeline gives the student dense encoded rows (:meth:`predict_margin`).
        """
        return False

    @property
    def lookup_enabled(self) -> bool:
        """Whether :meth:`predict_margin_lookup` can serve rows now (see :meth:`use_lookup`)."""
        return False

    def predict_margin_lookup(self, other: np.ndarray, active: np.ndarray, batch_size: int = 2048) -> np.ndarray:
        """Margins (eval mode) of rows given as :meth:`InputEncoder.outside_blocks` (``other``, float32) and
        :meth:`InputEncoder.active_slots` (``active``, int64); equal to ``predict_margin(encoder.transform(rows))``
        to float tolerance. Only where :attr:`lookup_enabled`."""
        from gbdt2nn_core.errors import ConfigError

        raise ConfigError(
            setting="lookup",
            value="off",
            fix="call student.use_lookup(encoder.onehot_blocks()) first, or use predict_margin on encoded rows",
        )

    def attributions(
        self, z: np.ndarray, attributor: Attributor, aggregation: np.ndarray, batch_size: int = 2048
    ) -> np.ndarray:
        """Per-column attributions of encoded rows (eval mode): ``(n, d)`` or ``(n, c, d)``."""
        import torch

        from gbdt2nn_core.host.attribution import column_attributions
        from gbdt2nn_core.host.device import in_chunks, inference_chunk_rows, module_device

        module = self.module.eval()
        device = module_device(module)
        z_t = torch.as_tensor(z, dtype=torch.float32)
        aggregation_t = torch.as_tensor(aggregation, dtype=torch.float32, device=device)

        def explain(rows: torch.Tensor) -> torch.Tensor:
            return column_attributions(attributor, module, rows, aggregation_t)

        return in_chunks(explain, z_t, inference_chunk_rows(device, batch_size), device, to_cpu=True).numpy()

    def learning_rate(self) -> float:
        """The base learning rate the network trained with: where online updates start (the estimator's
        ``online_lr`` overrides it). The default reads the ``lr`` option (1e-3 where the student has none); a student
        whose ``lr`` can be ``"auto"`` returns what it resolved to."""
        return float(self.options().get("lr", 1e-3))

    def partial_fit(self, update: OnlineUpdate) -> list[dict[str, Any]]:
        """Update the fitted network on new rows (only where :attr:`supports_online`); one record per pass."""
        from gbdt2nn_core.errors import ConfigError

        raise ConfigError(
            setting="student",
            value=type(self).__name__,
            fix="this student does not support online updates (partial_fit); use a student that does, e.g. gbdt2nn",
        )


class Attributor(abc.ABC):
    """Explains a differentiable model's margin feature by feature, in the encoded input space.

    ``attribute(model, z)`` returns a tensor shaped like ``z`` (``(n, D)``) for one output, or ``(n, k, D)``
    for ``k`` outputs. With ``create_graph=True`` the result must stay differentiable with respect to the
    model's parameters, so that an alignment loss can be back-propagated through it.
    :mod:`gbdt2nn_core.host.attribution` has the input checks and batched input gradients that attributors share.

    An attributor whose reference needs a matching teacher explanation (``"expectation"`` over its own
    background sample) may also implement :class:`TeacherExplainer`.
    """

    #: Whether :meth:`attribute` supports ``create_graph=True`` (needed for joint training).
    differentiable: ClassVar[bool] = True
    #: Which difference the attributions explain; see :data:`Reference`.
    reference: ClassVar[Reference] = "local"
    #: The students (registry names) it can explain; ``None``: any differentiable network. The pipeline refuses
    #: an attributor for another student before anything trains, and the experiment leaves it out by default.
    students: ClassVar[tuple[str, ...] | None] = None
    #: Whether every differentiable call is a fresh, independent Monte Carlo estimate whose expectation is the
    #: attribution (expected gradients). A joint step then takes two such estimates of its aligned rows; with a
    #: :attr:`AlignmentLoss.quadratic` loss it subtracts their own noise from the loss, which would otherwise
    #: penalise the student for the estimator's variance (see :func:`gbdt2nn_core.student.kit.alignment_loss`).
    monte_carlo: ClassVar[bool] = False

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

    A loss may declare the class attribute ``quadratic = True`` when it is a weighted mean of squares of
    ``student_attr − teacher_attr`` whose weights depend on the teacher only (``mse``). The core then trains
    :attr:`Attributor.monte_carlo` attributors with the unbiased cross term of two independent estimates
    (:func:`gbdt2nn_core.testing.check_alignment_loss` checks the parallelogram law such a loss obeys).
    """

    def __call__(self, student_attr: torch.Tensor, teacher_attr: torch.Tensor, /) -> torch.Tensor: ...
