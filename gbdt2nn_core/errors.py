"""Exceptions raised for user mistakes and plugin problems.

Each exception carries its data as fields (so tests and callers can inspect them) and renders as one line
that says what is wrong and how to fix it. The CLI prints that line and exits non-zero, without a traceback.
"""

from __future__ import annotations

import difflib

import attrs

__all__ = [
    "ConfigError",
    "DataError",
    "DuplicatePluginError",
    "ExportError",
    "Gbdt2nnError",
    "Gbdt2nnWarning",
    "ModelFileError",
    "NotFittedError",
    "PluginLoadError",
    "TrainingError",
    "UnknownComponentError",
    "warn",
]


class Gbdt2nnError(Exception):
    """Base class of every error gbdt2nn raises on purpose (as opposed to a bug)."""

    def __str__(self) -> str:
        return self.message()

    def message(self) -> str:  # pragma: no cover - every subclass overrides it
        return super().__str__()


@attrs.define(auto_exc=True, kw_only=True)
class DataError(Gbdt2nnError):
    """The data given cannot be used as it is (missing file or column, wrong shape, NaN where not allowed...)."""

    problem: str
    fix: str

    def message(self) -> str:
        return f"{self.problem}; {self.fix}"


@attrs.define(auto_exc=True, kw_only=True)
class ConfigError(Gbdt2nnError):
    """A setting has a value that makes no sense (negative epochs, unknown task...)."""

    setting: str
    value: object
    fix: str

    def message(self) -> str:
        return f"invalid {self.setting}={self.value!r}: {self.fix}"


@attrs.define(auto_exc=True, kw_only=True)
class NotFittedError(ConfigError):
    """A component was used before :meth:`fit` (a teacher with no booster yet, a student with no network).

    A :class:`ConfigError` whose ``setting`` is ``"<component>.<method>"`` and whose ``value`` is
    ``"called before fit"``, so code that catches configuration errors catches it too.

    It does not subclass scikit-learn's ``NotFittedError``: importing ``sklearn.exceptions`` loads scikit-learn
    (about 0.7 s), and this module must stay cheap because every plugin entry point imports the core.
    """

    #: The class used too early, e.g. ``"LightGBMTeacher"``.
    component: str
    #: The method or property that was called, e.g. ``"predict_margin"``.
    method: str
    fix: str
    setting: str = attrs.field(init=False)
    value: object = attrs.field(init=False, default="called before fit")

    @setting.default
    def _setting(self) -> str:
        return f"{self.component}.{self.method}"

    def message(self) -> str:
        return f"{self.component}.{self.method} was called before fit; {self.fix}"


@attrs.define(auto_exc=True, kw_only=True)
class ModelFileError(Gbdt2nnError):
    """A saved model cannot be read: missing, corrupt, truncated or written by a newer version."""

    path: str
    problem: str
    fix: str

    def message(self) -> str:
        return f"cannot load model from {self.path}: {self.problem}; {self.fix}"


@attrs.define(auto_exc=True, kw_only=True)
class TrainingError(Gbdt2nnError):
    """Training diverged (a loss became infinite or NaN): a setting is too large for the data."""

    #: The step that diverged, e.g. ``"epoch 3 of the student training"``.
    stage: str
    #: Which loss went non-finite, e.g. ``"the alignment loss"``.
    loss: str
    fix: str

    def message(self) -> str:
        return f"training diverged in {self.stage}: {self.loss} became infinite or NaN; {self.fix}"


@attrs.define(auto_exc=True, kw_only=True)
class ExportError(Gbdt2nnError):
    """An exported model (TorchScript, ONNX) gives other margins than the PyTorch student it came from."""

    #: ``"torchscript"`` or ``"onnx"``.
    format: str
    #: Where the export was to be written (nothing is written when this error is raised).
    path: str
    #: Largest absolute difference of margins between the export and PyTorch over the checked rows.
    max_abs_diff: float
    tolerance: float
    rows: int
    fix: str

    def message(self) -> str:
        return (
            f"the {self.format} export does not match the PyTorch student: max |margin difference| "
            f"{self.max_abs_diff:.3g} > tolerance {self.tolerance:g} on {self.rows} rows, so {self.path} was not "
            f"written; {self.fix}"
        )


@attrs.define(auto_exc=True, kw_only=True)
class UnknownComponentError(Gbdt2nnError):
    """No installed plugin registers a component of this kind and name."""

    kind: str
    name: str
    available: tuple[str, ...]

    @property
    def suggestion(self) -> str | None:
        """The closest installed name, if one is close enough to be a likely typo."""
        close = difflib.get_close_matches(self.name, self.available, n=1, cutoff=0.6)
        return close[0] if close else None

    def message(self) -> str:
        text = f"No {self.kind} named {self.name!r}."
        if self.suggestion:
            text += f" Did you mean {self.suggestion!r}?"
        installed = ", ".join(self.available) if self.available else "none"
        plural = self.kind + ("es" if self.kind.endswith("s") else "s")
        text += f" Installed {plural}: {installed}."
        if not self.available or not self.suggestion:
            text += " Run 'gbdt2nn plugins' to see what is installed and what failed to load."
        return text


@attrs.define(auto_exc=True, kw_only=True)
class DuplicatePluginError(Gbdt2nnError):
    """Two plugins register a component of the same kind under the same name."""

    kind: str
    name: str
    plugins: tuple[str, ...]

    def message(self) -> str:
        return (
            f"{self.kind} {self.name!r} is registered by more than one plugin ({', '.join(self.plugins)}); "
            "uninstall all but one of them"
        )


@attrs.define(auto_exc=True, kw_only=True)
class PluginLoadError(Gbdt2nnError):
    """A plugin could not be loaded or returned something invalid (raised only in strict mode)."""

    plugin: str
    distribution: str
    version: str
    error: str
    fix: str

    def message(self) -> str:
        return (
            f"plugin {self.plugin!r} from {self.distribution} {self.version} failed to load: {self.error}; {self.fix}"
        )


class Gbdt2nnWarning(UserWarning):
    """Something the user should know that does not stop the run (a test set too small for its metrics...).

    The CLI prints it as one ``gbdt2nn: warning: ...`` line on stderr; in Python it is an ordinary warning.
    """


def warn(text: str) -> None:
    """Emit ``text`` as a :class:`Gbdt2nnWarning` (one line: what happened, and what to do about it)."""
    import warnings

    warnings.warn(text, Gbdt2nnWarning, stacklevel=3)
