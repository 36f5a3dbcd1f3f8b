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
    "DEFAULT_FILE_SUFFIX",
    "SNIFF_BYTES",
    "AlignmentLossSpec",
    "AttributorSpec",
    "ComponentSpec",
    "StudentSpec",
    "TeacherSpec",
    "recognise_by_module",
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


def _check_suffix(_instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not re.fullmatch(r"\.[A-Za-z0-9][A-Za-z0-9_.-]*", value):
        raise ValueError(f"{attribute.name} must be a file suffix such as '.txt' or '.json', got {value!r}")


def _check_optional_callable(_instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{attribute.name} must be callable or None, got {type(value).__name__}")


#: The model-file suffix of a teacher that declares none.
DEFAULT_FILE_SUFFIX = ".model"


@attrs.frozen(kw_only=True)
class TeacherSpec(ComponentSpec):
    """A gradient-boosted tree backend; ``factory(model=None, **params)`` returns a :class:`~gbdt2nn_core.Teacher`.

    With ``model=None`` the teacher trains a new booster on ``fit``; otherwise it wraps the given booster
    (or model file path) and ``fit`` only checks the data against it.

    The other fields let the core save, reload and recognise this backend's models without naming it:
    ``file_suffix`` is the suffix of the model file ``Teacher.save`` writes in a run folder (``teacher.txt``);
    ``recognises(model)`` says whether an in-memory object is a model of this backend (a booster, a
    scikit-learn wrapper...), so that ``fit(teacher=model)`` picks this plugin; ``sniff(head)`` says whether
    the first bytes of a file (:data:`SNIFF_BYTES` of them, fewer for a short file) are this backend's model
    format. Both must be cheap and must not import the tree library (see :func:`recognise_by_module`).
    """

    kind: str = attrs.field(default="teacher", init=False)
    #: Suffix of the model file the teacher saves in a run folder (``".txt"`` makes ``teacher.txt``).
    file_suffix: str = attrs.field(default=DEFAULT_FILE_SUFFIX, validator=_check_suffix)
    #: ``recognises(model)``: whether an in-memory object is a model of this backend (``None``: never guessed).
    recognises: Callable[[object], bool] | None = attrs.field(default=None, validator=_check_optional_callable)
    #: ``sniff(head)``: whether a file's first bytes are this backend's model format (``None``: never guessed).
    sniff: Callable[[bytes], bool] | None = attrs.field(default=None, validator=_check_optional_callable)


#: How many leading bytes of a model file :attr:`TeacherSpec.sniff` is given.
SNIFF_BYTES = 64


def recognise_by_module(*roots: str) -> Callable[[object], bool]:
    """A :attr:`TeacherSpec.recognises` that accepts objects whose class (or a base class) comes from one of the
    top-level packages ``roots`` (``recognise_by_module("lightgbm")`` accepts ``Booster`` and ``LGBMClassifier``).

    It reads ``type(model).__mro__`` only, so it never imports the library.
    """
    wanted = frozenset(roots)

    def recognises(model: object) -> bool:
        return any(cls.__module__.split(".")[0] in wanted for cls in type(model).__mro__)

    recognises.__qualname__ = f"recognise_by_module({', '.join(map(repr, roots))})"
    return recognises


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
