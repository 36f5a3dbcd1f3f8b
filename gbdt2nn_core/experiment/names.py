"""Names shared by the experiment's runner, results, report and plots (kept apart so that none imports another)."""

from __future__ import annotations

__all__ = ["IMITATION", "INDEPENDENT", "PLAIN"]

#: The plain configuration: GBDT2NN distilled with λ = 0.
PLAIN = "plain"
#: Independent imitation: an explanation network that learns TreeSHAP on its own.
INDEPENDENT = "independent"
#: The key of the explanation network's attributions in ``metrics.json`` / ``attributions.npz``.
IMITATION = "imitation"
