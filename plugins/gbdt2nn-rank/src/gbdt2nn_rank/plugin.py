"""Entry point of the gbdt2nn-rank plugin: registers the ``rank`` alignment loss.

Kept light (no torch import): the loss class loads only when a user asks for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gbdt2nn_core import AlignmentLossSpec, hookimpl


def _make_rank(**options: Any) -> Callable[..., Any]:
    from gbdt2nn_rank.loss import PairwiseRankLoss

    return PairwiseRankLoss(**options)


@hookimpl
def gbdt2nn_register_alignment_losses() -> list[AlignmentLossSpec]:
    """Pairwise rank loss (options: temperature, tie_tolerance, eps, pairs_at_once)."""
    return [
        AlignmentLossSpec(
            name="rank",
            factory=_make_rank,
            summary="pairwise logistic loss on feature pairs the teacher orders: learns the order, not the scale",
        )
    ]
