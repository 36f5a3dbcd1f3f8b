"""Entry point of the gbdt2nn-cosine plugin: registers the ``cosine`` alignment loss.

Kept light (no torch import): the loss class loads only when a user asks for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gbdt2nn_core import AlignmentLossSpec, hookimpl


def _make_cosine(**options: Any) -> Callable[..., Any]:
    from gbdt2nn_cosine.loss import CosineDistance

    return CosineDistance(**options)


@hookimpl
def gbdt2nn_register_alignment_losses() -> list[AlignmentLossSpec]:
    """Cosine distance (option: eps)."""
    return [
        AlignmentLossSpec(
            name="cosine",
            factory=_make_cosine,
            summary="1 - cosine similarity per row: agreement of direction, whatever the scale",
        )
    ]
