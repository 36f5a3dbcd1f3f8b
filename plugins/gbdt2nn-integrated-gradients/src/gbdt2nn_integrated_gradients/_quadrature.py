"""Nodes and weights of the path integral over ``α ∈ [0, 1]``, with Captum's conventions for each method."""

from __future__ import annotations

import numpy as np

from gbdt2nn_core.errors import ConfigError

#: Method names as Captum spells them, so that the same ``(steps, method)`` gives the same attributions.
METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")


def check_method(method: object, steps: object, *, setting: str = "steps") -> None:
    """Raise :class:`ConfigError` unless ``method`` is known and ``steps`` (the option named ``setting``) suits it."""
    if method not in METHODS:
        raise ConfigError(setting="method", value=method, fix="use one of " + ", ".join(METHODS))
    smallest = 1 if method == "gausslegendre" else 2
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < smallest:
        raise ConfigError(setting=setting, value=steps, fix=f"use an integer >= {smallest} for method {method!r}")


def nodes_and_weights(method: str, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """``(alphas, weights)``, each ``(steps,)`` float64, so that ``∫₀¹ g ≈ Σ weights · g(alphas)``."""
    check_method(method, steps)
    if method == "gausslegendre":
        points, weights = np.polynomial.legendre.leggauss(steps)
        # Legendre nodes live on [-1, 1]; map them (and halve the weights) onto [0, 1].
        return 0.5 * (points + 1.0), 0.5 * weights
    weights = np.full(steps, 1.0 / steps)
    if method == "riemann_trapezoid":
        weights[[0, -1]] /= 2.0
        return np.linspace(0.0, 1.0, steps), weights
    if method == "riemann_left":
        return np.linspace(0.0, 1.0 - 1.0 / steps, steps), weights
    if method == "riemann_right":
        return np.linspace(1.0 / steps, 1.0, steps), weights
    return np.linspace(1.0 / (2 * steps), 1.0 - 1.0 / (2 * steps), steps), weights
