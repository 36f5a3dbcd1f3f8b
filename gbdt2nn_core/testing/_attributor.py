"""Conformance check for attributors: :func:`check_attributor`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, get_args

from gbdt2nn_core.errors import Gbdt2nnError
from gbdt2nn_core.host.interfaces import Attributor, Reference
from gbdt2nn_core.host.specs import AttributorSpec

__all__ = ["check_attributor"]

#: What an attributor may raise for input it cannot use (a one-line message is required either way).
_INPUT_ERRORS = (ValueError, TypeError, Gbdt2nnError)


def check_attributor(
    spec: AttributorSpec,
    *,
    options: Mapping[str, Any] | None = None,
    n_features: int = 7,
    n_outputs: int = 3,
    n_rows: int = 9,
    seed: int = 0,
) -> None:
    """Check that the attributor built by ``spec.factory(**options)`` keeps the :class:`Attributor` contract.

    It is fitted on a background sample and run on a small random MLP with BatchNorm, once with one output
    (attributions ``(n, D)``) and once with ``n_outputs`` outputs (``(n, k, D)``). Checked: the class
    attributes, shapes, dtype and device, finite and non-trivial values, that ``z`` is left untouched,
    determinism (two instances built and fitted alike give the same result), detached results without
    ``create_graph``, a working call under ``torch.no_grad()``, gradients that reach the model's parameters
    with ``create_graph=True`` (when ``differentiable``), and one-line errors for unusable ``z``.

    Raises ``AssertionError`` naming the broken promise.
    """
    import torch

    options = dict(options or {})
    where = f"attributor {spec.name!r}"
    allowed: tuple[str, ...] = get_args(Reference)

    def build() -> Attributor:
        attributor = spec.factory(**options)
        assert isinstance(attributor, Attributor), f"{where}: factory returned {type(attributor).__name__}"
        return attributor

    probe = build()
    assert probe.reference in allowed, f"{where}: reference={probe.reference!r} is not one of {allowed}"
    assert isinstance(probe.differentiable, bool), f"{where}: differentiable must be a bool"

    generator = torch.Generator().manual_seed(seed)
    background = torch.randn(4 * n_rows, n_features, generator=generator)
    z = torch.randn(n_rows, n_features, generator=generator)

    for k in sorted({1, n_outputs}):
        model, parameters = _random_mlp(n_features, k, seed=seed)
        shape = (n_rows, n_features) if k == 1 else (n_rows, k, n_features)
        label = f"{where} with {k} output{'s' if k > 1 else ''}"

        first = build()
        fitted = first.fit(model, background)
        assert fitted is first, f"{label}: fit must return the attributor itself"
        before = z.clone()
        attributions = first.attribute(model, z)
        assert isinstance(attributions, torch.Tensor), f"{label}: attribute returned {type(attributions).__name__}"
        assert tuple(attributions.shape) == shape, f"{label}: shape {tuple(attributions.shape)}, expected {shape}"
        assert attributions.dtype == z.dtype, f"{label}: dtype {attributions.dtype}, expected z's {z.dtype}"
        assert attributions.device == z.device, f"{label}: result on {attributions.device}, z on {z.device}"
        assert torch.isfinite(attributions).all(), f"{label}: attributions contain NaN or inf"
        assert attributions.abs().sum() > 0, f"{label}: attributions are all zero for a random network"
        assert torch.equal(z, before), f"{label}: attribute modified z in place"
        assert not z.requires_grad, f"{label}: attribute switched on requires_grad of z"
        # Without create_graph a result must not hold the model's graph alive (evaluation runs on many rows).
        assert not attributions.requires_grad, f"{label}: result requires grad although create_graph=False"

        again = build().fit(model, background).attribute(model, z)
        assert torch.allclose(attributions, again, rtol=1e-6, atol=1e-7), (
            f"{label}: not deterministic (two instances built with the same options differ by "
            f"{(attributions - again).abs().max().item():.3g})"
        )
        # The core evaluates under torch.no_grad(); an attributor must switch gradients back on for itself.
        try:
            with torch.no_grad():
                quiet = build().fit(model, background).attribute(model, z)
        except Exception as exc:  # any failure here is the finding
            raise AssertionError(
                f"{label}: fails under torch.no_grad() ({type(exc).__name__}); wrap the work in torch.enable_grad()"
            ) from exc
        assert torch.allclose(attributions, quiet, rtol=1e-6, atol=1e-7), f"{label}: differs under torch.no_grad()"

        if probe.differentiable:
            _check_differentiable(build().fit(model, background), model, parameters, z, label)

    model = _random_mlp(n_features, 1, seed=seed)[0]
    _check_input_errors(build().fit(model, background), model, n_features, where)


def _random_mlp(n_features: int, n_outputs: int, *, seed: int) -> tuple[Callable[[Any], Any], list[Any]]:
    """A ``D → 16 → k`` MLP with BatchNorm, running statistics warmed up, in eval mode."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(n_features, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, n_outputs))
    with torch.no_grad():
        # Non-trivial running statistics, so that eval-mode BatchNorm is not the identity.
        for _ in range(3):
            net(2.0 * torch.randn(64, n_features) + 0.5)
    net.eval()

    def model(z: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = net(z)
        return out[:, 0] if n_outputs == 1 else out

    model.net = net  # type: ignore[attr-defined]
    return model, list(net.parameters())


def _check_differentiable(
    attributor: Attributor, model: Callable[[Any], Any], parameters: list[Any], z: Any, label: str
) -> None:
    import torch

    net = model.net  # type: ignore[attr-defined]
    # Joint training runs the student in train mode; batch statistics must not break double back-prop.
    for training in (False, True):
        net.train(training)
        try:
            attributions = attributor.attribute(model, z, create_graph=True)
        finally:
            net.eval()
        mode = "train" if training else "eval"
        assert attributions.requires_grad, f"{label} ({mode} mode): create_graph=True gave a result without a graph"
        grads = torch.autograd.grad(attributions.pow(2).sum(), parameters, allow_unused=True)
        present = [g for g in grads if g is not None]
        assert present, f"{label} ({mode} mode): attributions do not depend on any model parameter"
        assert all(torch.isfinite(g).all() for g in present), f"{label} ({mode} mode): parameter gradients not finite"
        assert any(g.abs().sum() > 0 for g in present), f"{label} ({mode} mode): parameter gradients are all zero"


def _check_input_errors(attributor: Attributor, model: Callable[[Any], Any], n_features: int, where: str) -> None:
    import torch

    nan_rows = torch.randn(4, n_features)
    nan_rows[1, 2] = float("nan")
    bad = {
        "a 1-D z": torch.randn(n_features),
        "a 3-D z": torch.randn(2, 4, n_features),
        "an integer z": torch.ones(4, n_features, dtype=torch.int64),
        "a z with NaN": nan_rows,
    }
    for what, z in bad.items():
        try:
            attributor.attribute(model, z)
        except _INPUT_ERRORS as exc:
            text = str(exc).strip()
            assert text, f"{where}: the error for {what} has no message"
            assert "\n" not in text, f"{where}: the error for {what} is not one line: {text!r}"
        except Exception as exc:  # whatever leaked out of torch is the finding
            raise AssertionError(
                f"{where}: {what} raised {type(exc).__name__} from deep inside; validate z and raise a DataError"
            ) from exc
        else:
            raise AssertionError(f"{where}: {what} was accepted; validate z (2-D, floating point, finite)")
