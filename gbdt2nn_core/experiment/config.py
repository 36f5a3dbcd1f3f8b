"""Settings of a joint-vs-plain experiment, from flags or a TOML file.

Every section and key is optional; command-line flags override the file. Unknown sections and keys are
one-line errors that list the allowed ones. Example (``gbdt2nn experiment --config adult.toml``)::

    [data]
    dataset = "adult"                # or: path = "data/churn.csv" and target = "churned"
    task = "binary"                  # default: inferred from the target

    [teacher]
    name = "lightgbm"
    options = { n_estimators = 100, num_leaves = 64, num_threads = 1 }

    [student]
    options = { epochs = 20, n_groups = 10 }

    [experiment]
    seeds = 3                        # seeds 0, 1, 2; or a list: [0, 7, 42]
    attributors = ["structure", "gradient-x-input", "integrated-gradients"]   # default: every installed one
    losses = ["mse", "cosine", "rank"]                                          # default: every installed one
    alignment_weight = 1.0           # λ of every joint configuration
    alignment_weights = { rank = 0.5 }   # λ per loss, overriding alignment_weight
    alignment_fraction = 1.0         # share of batches that carry the alignment term
    alignment_batches = "grouped"    # aligned rows in batches of their own ("mixed": spread over every batch)
    alignment_rows = 0.1             # share of training rows that carry it (only theirs get TreeSHAP)
    alignment_min_rows = 3000        # but at least this many (every row of a smaller set; 0 = no floor)
    independent = true               # also run independent imitation (an explanation network)
    monitor_rows = 512               # test rows on which agreement is measured after every epoch
    threads = 1                      # torch, teacher and TreeSHAP threads (default: each library's choice)
    out = "runs/experiment-adult"

    [attributor_options]
    integrated-gradients = { steps = 4 }

    [loss_options]
    rank = { temperature = 1.0 }

    [imitation]                      # the independent explanation network
    hidden = [256, 256]
    epochs = 20                      # default: the student's epochs
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from gbdt2nn_core.config_file import read_toml
from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.pipeline.config import DistillConfig, RunSettings
from gbdt2nn_core.validators import is_non_negative_number, is_positive_number, is_whole_number

__all__ = ["EXPERIMENT_KEYS", "ExperimentConfig", "ImitationConfig", "read_experiment_file"]

#: section -> keys it may hold (``*`` = any key whose value is a table of options)
EXPERIMENT_KEYS: dict[str, frozenset[str]] = {
    "data": frozenset({"path", "dataset", "target", "task"}),
    "teacher": frozenset({"name", "options"}),
    "student": frozenset({"name", "options"}),
    "experiment": frozenset(
        {
            "seeds",
            "attributors",
            "losses",
            "alignment_weight",
            "alignment_weights",
            "alignment_fraction",
            "alignment_batches",
            "alignment_rows",
            "alignment_min_rows",
            "independent",
            "monitor_rows",
            "threads",
            "out",
            "test_size",
            "threshold_bins",
            "merge_categories",
            "teacher_explanation",
            "background_rows",
            "cache_dir",
            "device",
        }
    ),
    "attributor_options": frozenset({"*"}),
    "loss_options": frozenset({"*"}),
    "imitation": frozenset({"hidden", "epochs", "lr", "batch_size", "weight_decay"}),
}


def _seeds(value: Any) -> tuple[int, ...]:
    if isinstance(value, bool):
        raise ConfigError(setting="seeds", value=value, fix="give a number of seeds (5) or a list of seeds ([0, 1])")
    if isinstance(value, int):
        if value < 1:
            raise ConfigError(setting="seeds", value=value, fix="run at least one seed")
        return tuple(range(value))
    if isinstance(value, Sequence) and not isinstance(value, str):
        seeds = tuple(value)
        if not seeds or not all(is_whole_number(s, 0) for s in seeds):
            raise ConfigError(setting="seeds", value=value, fix="list whole numbers of at least 0, e.g. [0, 1, 2]")
        if len(set(seeds)) != len(seeds):
            raise ConfigError(setting="seeds", value=value, fix="list each seed once")
        return seeds
    raise ConfigError(setting="seeds", value=value, fix="give a number of seeds (5) or a list of seeds ([0, 1])")


def _names(setting: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    names = tuple(value)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ConfigError(setting=setting, value=value, fix="name one or more plugins, e.g. structure,gradient")
    if len(set(names)) != len(names):
        raise ConfigError(setting=setting, value=value, fix="name each plugin once")
    return names


# Named converters (not a converter factory) so that mypy's attrs plugin can type the records' __init__.
def _attributor_names(value: Any) -> tuple[str, ...] | None:
    return _names("attributors", value)


def _loss_names(value: Any) -> tuple[str, ...] | None:
    return _names("losses", value)


def _options_table(setting: str, value: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    for name, options in dict(value or {}).items():
        if not isinstance(options, Mapping):
            raise ConfigError(
                setting=f"{setting}.{name}", value=options, fix="write the options as a table, e.g. { steps = 8 }"
            )
        result[str(name)] = dict(options)
    return result


def _attributor_options(value: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    return _options_table("attributor_options", value)


def _loss_options(value: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    return _options_table("loss_options", value)


def _weights(value: Mapping[str, Any] | None) -> dict[str, float]:
    result: dict[str, float] = {}
    for name, weight in dict(value or {}).items():
        _require_positive(f"alignment_weights.{name}", weight)
        result[str(name)] = float(weight)
    return result


def _require_positive(setting: str, value: Any) -> None:
    if not is_positive_number(value):
        raise ConfigError(setting=setting, value=value, fix="use a finite number greater than 0")


def _check_weight(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    _require_positive(attribute.name, value)


def _check_non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not is_non_negative_number(value):
        raise ConfigError(setting=attribute.name, value=value, fix="use a finite number of at least 0")


def _check_count(smallest: int, *, optional: bool = False) -> Any:
    def check(_: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
        if value is None and optional:
            return
        if not is_whole_number(value, smallest):
            raise ConfigError(setting=attribute.name, value=value, fix=f"use a whole number of at least {smallest}")

    return check


def _hidden(value: Any) -> tuple[int, ...]:
    sizes = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else (value,)
    if not all(is_whole_number(s, 1) for s in sizes):
        raise ConfigError(setting="imitation.hidden", value=value, fix="give positive layer widths, e.g. [256, 256]")
    return sizes


@attrs.frozen(kw_only=True)
class ImitationConfig:
    """The independent explanation network: an MLP from the encoded row to the teacher's TreeSHAP values.

    ``epochs`` / ``batch_size`` default to the student's, so both see the same number of passes over the data.
    """

    hidden: tuple[int, ...] = attrs.field(default=(256, 256), converter=_hidden)
    epochs: int | None = attrs.field(default=None, validator=_check_count(1, optional=True))
    batch_size: int | None = attrs.field(default=None, validator=_check_count(1, optional=True))
    lr: float = attrs.field(default=1e-3, validator=_check_weight)
    weight_decay: float = attrs.field(default=1e-6, validator=_check_non_negative)


def _imitation(value: ImitationConfig | Mapping[str, Any] | None) -> ImitationConfig:
    if isinstance(value, ImitationConfig):
        return value
    try:
        return ImitationConfig(**dict(value or {}))
    except TypeError as exc:
        known = ", ".join(f.name for f in attrs.fields(ImitationConfig))
        raise ConfigError(setting="imitation", value=dict(value or {}), fix=f"use the keys {known}") from exc


@attrs.frozen(kw_only=True)
class ExperimentConfig(RunSettings):
    """Everything an experiment needs besides the output folder. Components are plugin names.

    The settings it shares with a distillation (teacher, student, test size, teacher explanations...) come from
    :class:`~gbdt2nn_core.pipeline.config.RunSettings`; :meth:`distill_config` is one seed's pipeline config.
    ``attributors`` / ``losses`` of ``None`` mean every installed differentiable attributor / every installed
    alignment loss (resolved against the registry when the experiment starts).
    """

    dataset: str | None = None
    data: str | None = None
    target: str | None = None
    seeds: tuple[int, ...] = attrs.field(default=(0, 1, 2, 3, 4), converter=_seeds)
    attributors: tuple[str, ...] | None = attrs.field(default=None, converter=_attributor_names)
    losses: tuple[str, ...] | None = attrs.field(default=None, converter=_loss_names)
    attributor_options: dict[str, dict[str, Any]] = attrs.field(factory=dict, converter=_attributor_options)
    loss_options: dict[str, dict[str, Any]] = attrs.field(factory=dict, converter=_loss_options)
    #: λ of every joint configuration (> 0: λ = 0 is the plain configuration, which always runs).
    alignment_weight: float = attrs.field(default=1.0, validator=_check_weight)
    alignment_weights: dict[str, float] = attrs.field(factory=dict, converter=_weights)
    independent: bool = True
    imitation: ImitationConfig = attrs.field(factory=ImitationConfig, converter=_imitation)
    monitor_rows: int = attrs.field(default=512, validator=_check_count(0))

    def distill_config(self, seed: int) -> DistillConfig:
        """The pipeline settings of one seed (each configuration then sets the attributor, loss and λ)."""
        shared = {field.name: getattr(self, field.name) for field in attrs.fields(RunSettings)}
        return DistillConfig(**shared, seed=seed)

    def weight(self, loss: str) -> float:
        """λ of the joint configurations that use ``loss``."""
        return self.alignment_weights.get(loss, self.alignment_weight)

    def to_json(self) -> dict[str, Any]:
        settings: dict[str, Any] = json.loads(json.dumps(attrs.asdict(self), default=str))
        return settings

    def digest(self) -> str:
        """A hash of every setting that changes results (not the cache folder, the thread count or the device: an
        experiment may resume on another machine)."""
        settings = self.to_json()
        settings.pop("cache_dir", None)
        settings.pop("threads", None)
        settings.pop("device", None)
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def read_experiment_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Parse and check an experiment file; unknown sections or keys are one-line errors listing the allowed ones."""
    return read_toml(path, EXPERIMENT_KEYS)
