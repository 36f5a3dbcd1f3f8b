"""Strict plugin loading, single-threaded tree libraries, and small slices of real datasets as fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ["GBDT2NN_STRICT_PLUGINS"] = "1"
# On a small shared machine OpenMP threads spin against each other: LightGBM trains 100x slower with two.
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: The shared data folder: ``<repo>/../shared/data`` (the repository root is three levels above this folder).
DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def _read(name: str, target: str, rows: int) -> tuple[pd.DataFrame, np.ndarray]:
    path = DATA / name
    if not path.is_file():
        pytest.fail(f"test data {path} is missing: the suite needs the shared datasets at {DATA}")
    frame = pd.read_csv(path, nrows=rows)
    y = frame.pop(target).to_numpy()
    for column in frame.columns:
        if pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = frame[column].astype("float64")
        else:
            frame[column] = frame[column].astype(pd.CategoricalDtype(sorted(frame[column].dropna().unique())))
    return frame, y


@pytest.fixture(scope="session")
def adult() -> tuple[pd.DataFrame, np.ndarray]:
    """400 rows of UCI Adult: 6 float64 and 8 categorical columns, binary target ``income_gt_50k``."""
    return _read("adult.csv.gz", "income_gt_50k", 400)


@pytest.fixture(scope="session")
def california() -> tuple[pd.DataFrame, np.ndarray]:
    """300 rows of California housing: 8 float64 columns, regression target ``MedHouseVal``."""
    return _read("california_housing.csv.gz", "MedHouseVal", 300)


@pytest.fixture(scope="session")
def wine() -> tuple[pd.DataFrame, np.ndarray]:
    """scikit-learn's bundled wine data: 178 rows, 13 float64 columns, 3 classes."""
    from sklearn.datasets import load_wine

    data = load_wine(as_frame=True)
    return data.data.astype("float64"), data.target.to_numpy()


@pytest.fixture(scope="session")
def datasets(adult, california, wine) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    """The three fixtures by task."""
    return {"binary": adult, "regression": california, "multiclass": wine}
