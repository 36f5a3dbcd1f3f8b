"""Strict plugin loading, single-threaded tree libraries, and small slices of the bundled datasets as fixtures."""

from __future__ import annotations

from gbdt2nn_core.testing.fixtures import adult, california, datasets, wine

__all__ = ["adult", "california", "datasets", "wine"]
