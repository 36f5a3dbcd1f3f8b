"""A student's margins for teacher-ready rows: the one way every predict path goes from a frame to margins.

Rows go through in chunks of :data:`SERVING_CHUNK`, so that what is built per row (encoded values, the network's
activations) is bounded by the chunk, not by the data. A student with the lookup capability
(:meth:`Student.use_lookup <gbdt2nn_core.Student.use_lookup>`, the core's GBDT2NN) takes each chunk as the encoder's
lookup inputs (the values outside the one-hot blocks and the active slot of each block): the dense one-hot, most of
the encoded width, is never written. Other students get the chunk's dense encoding.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gbdt2nn_core.data.encoding import InputEncoder
from gbdt2nn_core.host.interfaces import Student

__all__ = ["SERVING_CHUNK", "enable_lookup", "frame_margins"]

#: Rows per chunk: 2,048-row chunks stay in cache and ran 2.3x faster than one 10,000-row pass (BENCHMARKS.md).
SERVING_CHUNK = 2048


def enable_lookup(student: Student, encoder: InputEncoder) -> bool:
    """Tell ``student`` the one-hot layout of ``encoder`` (see :meth:`Student.use_lookup`); whether it uses it."""
    return student.use_lookup(encoder.onehot_blocks())


def frame_margins(
    student: Student, encoder: InputEncoder, frame: pd.DataFrame, chunk_rows: int = SERVING_CHUNK
) -> np.ndarray:
    """Margins (eval mode) of the teacher-ready rows ``frame``: ``(n,)`` or ``(n, k)``, chunk by chunk."""
    lookup = student.lookup_enabled
    pieces = []
    for start in range(0, max(len(frame), 1), chunk_rows):
        rows = frame.iloc[start : start + chunk_rows]
        if lookup:
            other, active = encoder.outside_blocks(rows), encoder.active_slots(rows)
            pieces.append(student.predict_margin_lookup(other, active, chunk_rows))
        else:
            pieces.append(student.predict_margin(encoder.transform(rows), chunk_rows))
    return np.concatenate(pieces)
