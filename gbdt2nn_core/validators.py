"""attrs validators shared by every settings record (run settings, student configs, plugins' configs).

Each raises a :class:`~gbdt2nn_core.errors.ConfigError` that names the setting, the value and the fix, so a bad
value is one line wherever it was given (CLI flag, run file, estimator argument, student option). Light on
purpose (attrs and the error classes only): the CLI validates settings before importing torch.
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard

import attrs

from gbdt2nn_core.errors import ConfigError

__all__ = [
    "batch_size",
    "batch_size_or_auto",
    "boolean",
    "count_or_auto",
    "is_non_negative_number",
    "is_positive_number",
    "is_whole_number",
    "non_negative_float",
    "non_negative_int",
    "positive_float",
    "positive_float_or_auto",
    "positive_int",
    "unit_interval",
    "unit_interval_or_auto",
]


def is_whole_number(value: object, smallest: int) -> TypeGuard[int]:
    """Whether ``value`` is an ``int`` of at least ``smallest`` (``True`` is not a number here, though Python's
    ``bool`` is an ``int``: a flag given where a count belongs is a mistake to name, not 1)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= smallest


def is_positive_number(value: object) -> TypeGuard[float]:
    """Whether ``value`` is a finite ``int`` or ``float`` greater than 0 (not a ``bool``)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def is_non_negative_number(value: object) -> TypeGuard[float]:
    """Whether ``value`` is a finite ``int`` or ``float`` of at least 0 (not a ``bool``)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def positive_int(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    """attrs validator: a whole number ≥ 1 (``True`` is not a number here)."""
    if not is_whole_number(value, 1):
        raise ConfigError(setting=attribute.name, value=value, fix="use a whole number of at least 1")


def non_negative_int(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    """attrs validator: a whole number ≥ 0."""
    if not is_whole_number(value, 0):
        raise ConfigError(setting=attribute.name, value=value, fix="use a whole number of at least 0")


def positive_float(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    """attrs validator: a finite number > 0."""
    if not is_positive_number(value):
        raise ConfigError(setting=attribute.name, value=value, fix="use a finite number greater than 0")


def positive_float_or_auto(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """attrs validator: ``"auto"`` (chosen from the data) or a finite number > 0."""
    if value == "auto":
        return
    if not is_positive_number(value):
        raise ConfigError(setting=attribute.name, value=value, fix="use auto (chosen from the data) or a number > 0")


def unit_interval(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    """attrs validator: a number in [0, 1]."""
    if not (is_non_negative_number(value) and value <= 1.0):
        raise ConfigError(setting=attribute.name, value=value, fix="use a number between 0 and 1")


def unit_interval_or_auto(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """attrs validator: ``"auto"`` (chosen from the task) or a number in [0, 1]."""
    if value == "auto":
        return
    if not (is_non_negative_number(value) and value <= 1.0):
        raise ConfigError(
            setting=attribute.name, value=value, fix="use auto (chosen from the task) or a number between 0 and 1"
        )


def non_negative_float(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    """attrs validator: a finite number ≥ 0."""
    if not is_non_negative_number(value):
        raise ConfigError(setting=attribute.name, value=value, fix="use a finite number of at least 0")


def boolean(_: object, attribute: attrs.Attribute[bool], value: bool) -> None:
    """attrs validator: ``True`` or ``False`` (not 0/1 or a string)."""
    if not isinstance(value, bool):
        raise ConfigError(setting=attribute.name, value=value, fix="use true or false")


def batch_size(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    """attrs validator: a batch size that can train (BatchNorm needs two rows per batch)."""
    if not is_whole_number(value, 2):
        raise ConfigError(
            setting=attribute.name,
            value=value,
            fix="use a whole number of at least 2 (BatchNorm needs two rows per batch)",
        )


def count_or_auto(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """attrs validator: ``"auto"`` (chosen from the data) or a whole number of at least 0."""
    if value == "auto":
        return
    if not is_whole_number(value, 0):
        raise ConfigError(
            setting=attribute.name, value=value, fix="use auto (chosen from the task) or a whole number of at least 0"
        )


def batch_size_or_auto(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """attrs validator: ``"auto"`` (the student chooses from the number of training rows) or a batch size that can
    train."""
    if value == "auto":
        return
    if not is_whole_number(value, 2):
        raise ConfigError(
            setting=attribute.name,
            value=value,
            fix="use auto (from the number of training rows) or a whole number of at least 2 (BatchNorm needs two "
            "rows per batch)",
        )


def learning_rate_schedule(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    """attrs validator: a students' learning-rate schedule, ``"constant"`` or ``"cosine"``."""
    if value not in ("constant", "cosine"):
        raise ConfigError(
            setting=attribute.name,
            value=value,
            fix="use constant (the default) or cosine (annealed towards 0 over the epoch budget)",
        )
