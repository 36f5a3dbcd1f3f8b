"""The one background policy: which training rows attributors and interventional TreeSHAP measure against.

Training (the alignment target and the training attributor), explaining and evaluating all draw their background
rows here, with the run's seed, so that a student is trained and judged against the same reference.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BACKGROUND_ROWS", "background_index"]

#: Encoded training rows an attributor sees as its background sample (``E[f]``, baselines).
BACKGROUND_ROWS = 256


def background_index(n_rows: int, rows: int, seed: int) -> np.ndarray:
    """Sorted positions of ``min(rows, n_rows)`` training rows drawn without replacement with ``seed``."""
    return np.sort(np.random.default_rng(seed).permutation(n_rows)[:rows])
