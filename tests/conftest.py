"""Shared fixtures. Plugin problems are errors in the test suite (strict mode)."""

from __future__ import annotations

import os

os.environ.setdefault("GBDT2NN_STRICT_PLUGINS", "1")
