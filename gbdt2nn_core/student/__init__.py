"""The built-in GBDT2NN student (DeepGBM) and its batched network."""

from __future__ import annotations

from gbdt2nn_core.student.gbdt2nn import EpochRecord, GBDT2NNConfig, GBDT2NNStudent
from gbdt2nn_core.student.kit import recalibrate_batchnorm
from gbdt2nn_core.student.module import GBDT2NNModule

__all__ = ["EpochRecord", "GBDT2NNConfig", "GBDT2NNModule", "GBDT2NNStudent", "recalibrate_batchnorm"]
