"""Frozen records that plugins return from the ``gbdt2nn_register_*`` hooks.

A record names a component, says in one line what it is, and carries a *factory*: a callable that builds
the component when (and only when) it is asked for, so that heavy libraries are imported lazily.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import attrs

__all__ = [
    "AlignmentLossSpec",
    "AttributorSpec",
    "ComponentSpec",
    "StudentSpec",
    "TeacherSpec",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def _check_name(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not _NAME.match(value):
        raise ValueError(
            f"{attribute.name}={value!r} is not a valid component name: use lowercase letters, digits, "
            "'-' and '_', starting with a letter or digit (e.g. 'integrated-gradients')"
        )


def _check_summary(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip() or "\n" in value.strip():
        raise ValueError(f"{attribute.name} must be one non-empty line of text, got {value!r}")


def _strip_summary(value: str) -> str:
    """Strip surrounding whitespace from the summary (a non-string is passed on for the validator to reject)."""
    return value.strip() if isinstance(value, str) else value


def _check_factory(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not callable(value):
        raise TypeError(f"{attribute.name} must be callable (a class or function), got {type(value).__name__}")


@attrs.frozen(kw_only=True)
class ComponentSpec:
    """What every registered component has: a unique name, a factory and a one-line summary.

    ``factory(**options)`` builds the component; the options are those the user set for it
    (for example ``steps=32`` for integrated gradients).
    """

    name: str = attrs.field(validator=_check_name)
    factory: Callable[..., Any] = attrs.field(validator=_check_factory)
    summary: str = attrs.field(validator=_check_summary, converter=_strip_summary)

    #: Kind of component, used in messages ("teacher", "attributor", ...). Set by each subclass.
    kind: str = attrs.field(default="component", init=False)


@attrs.frozen(kw_only=True)
class TeacherSpec(ComponentSpec):
    """A gradient-boosted tree backend; ``factory(model=None, **params)`` returns a :class:`~gbdt2nn_core.Teacher`.

    With ``model=None`` the teacher trains a new booster on ``fit``; otherwise it wraps the given booster
    (or model file path) and ``fit`` only checks the data against it.
    """

    kind: str = attrs.field(default="teacher", init=False)


@attrs.frozen(kw_only=True)
class StudentSpec(ComponentSpec):
    """A network architecture; ``factory(**options)`` returns a :class:`~gbdt2nn_core.Student`."""

    kind: str = attrs.field(default="student", init=False)


@attrs.frozen(kw_only=True)
class AttributorSpec(ComponentSpec):
    """A student explainer; ``factory(**options)`` returns an :class:`~gbdt2nn_core.Attributor`."""

    kind: str = attrs.field(default="attributor", init=False)


@attrs.frozen(kw_only=True)
class AlignmentLossSpec(ComponentSpec):
    """An explanation-alignment loss; ``factory(**options)`` returns an :class:`~gbdt2nn_core.AlignmentLoss`."""

    kind: str = attrs.field(default="alignment loss", init=False)
