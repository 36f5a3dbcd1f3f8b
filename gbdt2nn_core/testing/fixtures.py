"""pytest fixtures for plugin tests: small slices of the datasets bundled with gbdt2nn, one per task.

Import them into your plugin's ``conftest.py`` (importing a fixture is what makes pytest see it)::

    from gbdt2nn_core.testing.fixtures import adult, california, datasets, wine

    __all__ = ["adult", "california", "datasets", "wine"]

The data come from the package (:func:`gbdt2nn_core.data.load_bundled`) and scikit-learn, so the tests run on
a clone of the repository alone. Importing this module also makes plugin loading strict
(``GBDT2NN_STRICT_PLUGINS=1``) and, unless already set, the tree libraries single-threaded: on a small shared
machine OpenMP threads spin against each other and training gets up to 100x slower with two.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from gbdt2nn_core.data import load_bundled

__all__ = ["adult", "bundled_slice", "california", "datasets", "wine"]

os.environ["GBDT2NN_STRICT_PLUGINS"] = "1"
os.environ.setdefault("OMP_NUM_THREADS", "1")


def bundled_slice(name: str, rows: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The first ``rows`` rows of a bundled dataset as a teacher takes them: float64 numeric columns, string
    columns as categoricals (categories sorted, from those rows), and the target as an array."""
    dataset = load_bundled(name)
    frame = dataset.frame.head(rows).copy()
    y = frame.pop(dataset.target).to_numpy()
    for column in frame.columns:
        if pd.api.types.is_numeric_dtype(frame[column]):
            frame[column] = frame[column].astype("float64")
        else:
            frame[column] = frame[column].astype(pd.CategoricalDtype(sorted(frame[column].dropna().unique())))
    return frame, y


@pytest.fixture(scope="session")
def adult() -> tuple[pd.DataFrame, np.ndarray]:
    """400 rows of UCI Adult: 6 float64 and 8 categorical columns, binary target ``income_gt_50k``."""
    return bundled_slice("adult", 400)


@pytest.fixture(scope="session")
def california() -> tuple[pd.DataFrame, np.ndarray]:
    """300 rows of California housing: 8 float64 columns, regression target ``MedHouseVal``."""
    return bundled_slice("california", 300)


@pytest.fixture(scope="session")
def wine() -> tuple[pd.DataFrame, np.ndarray]:
    """scikit-learn's bundled wine data: 178 rows, 13 float64 columns, 3 classes."""
    from sklearn.datasets import load_wine

    data = load_wine(as_frame=True)
    return data.data.astype("float64"), data.target.to_numpy()


@pytest.fixture(scope="session")
def datasets(
    adult: tuple[pd.DataFrame, np.ndarray],
    california: tuple[pd.DataFrame, np.ndarray],
    wine: tuple[pd.DataFrame, np.ndarray],
) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    """The three fixtures by task."""
    return {"binary": adult, "regression": california, "multiclass": wine}
