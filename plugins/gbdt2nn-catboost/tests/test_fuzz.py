"""Damaged ``.cbm`` files end in a one-line error or a working model, never in a native crash.

Each mutant is loaded in a subprocess (``gbdt2nn_core.testing.fuzz_model_file``), so an abort inside CatBoost
is caught as a signal instead of ending the test run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import pytest
from gbdt2nn_catboost._structure import model_json
from gbdt2nn_catboost.plugin import make_teacher

from gbdt2nn_core.data import TabularSchema, load_bundled, split_features_target
from gbdt2nn_core.testing import byte_mutations, fuzz_model_file

pytestmark = pytest.mark.slow

#: Small enough to load fast, with float, one-hot and CTR splits (adult's string columns).
PARAMS = {"n_estimators": 4, "depth": 3, "threads": 1}
_INTS = (-7, -1, 12, 13, 255, 1000, 2**31 - 1, -(2**31))
_FLOATS = (float("nan"), float("inf"), -float("inf"), 1e308, -1e308)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[bytes, dict]:
    bundled = load_bundled("adult")
    features, target = split_features_target(bundled.frame.head(200), bundled.target)
    X = TabularSchema.infer(features).to_frame(features)
    teacher = make_teacher(**PARAMS).fit(X, target.to_numpy(), task="binary")
    path = tmp_path_factory.mktemp("model") / "adult.cbm"
    teacher.save(path)
    return path.read_bytes(), model_json(teacher.native_model)


def _arrays(data: bytes, document: dict) -> list[tuple[int, str, int]]:
    """Where the model's arrays sit in the file: (offset, little-endian dtype, length)."""
    trees = document["oblivious_trees"]
    candidates = [
        np.asarray([v for tree in trees for v in tree["leaf_values"]], "<f8"),
        np.asarray([v for tree in trees for v in tree["leaf_weights"]], "<f8"),
        np.asarray([s["split_index"] for tree in trees for s in tree["splits"]], "<i4"),
        np.asarray([len(tree["splits"]) for tree in trees], "<i4"),
        *(np.asarray(f["borders"], "<f4") for f in document["features_info"]["float_features"] if f["borders"]),
    ]
    found = []
    for array in candidates:
        offset = data.find(array.tobytes())
        if offset >= 0:
            found.append((offset, array.dtype.str, len(array)))
    return found


def array_mutations(data: bytes, document: dict, *, seed: int, count: int) -> Iterator[bytes]:
    """Same-length mutants: one leaf value, leaf weight, split index, tree depth or border overwritten with an
    out-of-range index, NaN, infinity or a huge number."""
    rng = random.Random(seed)
    arrays = _arrays(data, document)
    assert len(arrays) >= 5, "the leaf values, weights, splits, depths and borders should be found in the file"
    for _ in range(count):
        offset, dtype, length = rng.choice(arrays)
        value = rng.choice(_FLOATS + _INTS) if "f" in dtype else rng.choice(_INTS)
        with np.errstate(over="ignore", invalid="ignore"):
            element = np.array(value).astype(dtype).tobytes()
        at = offset + rng.randrange(length) * len(element)
        yield data[:at] + element + data[at + len(element) :]


def test_damaged_model_files_never_crash(model, tmp_path) -> None:
    data, document = model
    # Each mutant costs a CatBoost child process (about a second): 40 keep the test well under a minute.
    mutants = [*array_mutations(data, document, seed=0, count=20), *byte_mutations(data, seed=1, count=20)]
    report = fuzz_model_file("gbdt2nn_catboost.plugin:make_teacher", mutants, folder=tmp_path, suffix=".cbm")
    assert report.bad == [], f"{len(report.bad)} of {len(mutants)} mutants broke the promise: {report.counts}"
    assert report.counts.get("error", 0) > len(mutants) // 3, report.counts
    assert report.counts.get("ok", 0) > 0, report.counts
