"""Tabular data in, teacher-ready frames out: loading files, the bundled datasets, column schemas, targets.

Re-exports :mod:`gbdt2nn_core.data.tabular`, so ``from gbdt2nn_core.data import ...`` works as it did before the
move.
"""

from __future__ import annotations

from gbdt2nn_core.data.tabular import (
    BUNDLED_DATASETS,
    ColumnSchema,
    Dataset,
    TabularSchema,
    TargetEncoder,
    check_finite_margins,
    infer_task,
    load_bundled,
    read_table,
    split_features_target,
    warn_if_few_test_rows,
)

__all__ = [
    "BUNDLED_DATASETS",
    "ColumnSchema",
    "Dataset",
    "TabularSchema",
    "TargetEncoder",
    "check_finite_margins",
    "infer_task",
    "load_bundled",
    "read_table",
    "split_features_target",
    "warn_if_few_test_rows",
]
