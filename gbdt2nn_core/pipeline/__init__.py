"""The one distillation pipeline: prepare (split, teacher, encoder, leaves, margins) → train → evaluate.

The CLI, the scikit-learn estimators and the experiment are thin adapters over :class:`Pipeline`.
"""

from __future__ import annotations

from gbdt2nn_core.pipeline.background import BACKGROUND_ROWS, background_index
from gbdt2nn_core.pipeline.config import DistillConfig
from gbdt2nn_core.pipeline.core import Pipeline, Prepared, Trained, check_explains
from gbdt2nn_core.pipeline.data import PreparedData, SplitData, encoder_for, fit_encoder, split_data
from gbdt2nn_core.pipeline.evaluate import evaluate_rows
from gbdt2nn_core.pipeline.explanations import (
    TeacherExplanations,
    find_teacher_explainer,
    teacher_explainer_names,
)
from gbdt2nn_core.pipeline.seeding import seeded

__all__ = [
    "BACKGROUND_ROWS",
    "DistillConfig",
    "Pipeline",
    "Prepared",
    "PreparedData",
    "SplitData",
    "TeacherExplanations",
    "Trained",
    "background_index",
    "check_explains",
    "encoder_for",
    "evaluate_rows",
    "find_teacher_explainer",
    "fit_encoder",
    "seeded",
    "split_data",
    "teacher_explainer_names",
]
