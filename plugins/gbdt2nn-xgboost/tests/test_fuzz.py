"""Damaged XGBoost model files (JSON and UBJSON) end in a one-line error or a working model, never a crash.

Each mutant is loaded in a subprocess (``gbdt2nn_core.testing.fuzz_model_file``), so an abort inside XGBoost
is caught as a signal instead of ending the test run.
"""

from __future__ import annotations

import copy
import functools
import json
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from gbdt2nn_core.data import TabularSchema, load_bundled, split_features_target
from gbdt2nn_core.testing import byte_mutations, fuzz_model_file, list_mutation
from gbdt2nn_xgboost.plugin import make_teacher

pytestmark = pytest.mark.slow

#: Small enough to load fast, with categorical splits (adult's string columns).
PARAMS = {"n_estimators": 4, "max_depth": 3, "nthread": 1}
FACTORY = "gbdt2nn_xgboost.plugin:make_teacher"

_TREE_KEYS = (
    "left_children",
    "right_children",
    "parents",
    "split_indices",
    "split_conditions",
    "default_left",
    "split_type",
    "loss_changes",
    "sum_hessian",
    "base_weights",
    "categories",
    "categories_nodes",
    "categories_segments",
    "categories_sizes",
)
_INTS = (-7, -2, -1, 0, 13, 14, 15, 255, 1000, 2**31 - 1, 2**31, -(2**31))
_FLOATS = (float("nan"), float("inf"), -float("inf"), 1e308, -1e308, 1e39)
_mutated_list = functools.partial(list_mutation, ints=_INTS, floats=_FLOATS, repeats=(0, 1, 50))


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, bytes]:
    bundled = load_bundled("adult")
    features, target = split_features_target(bundled.frame.head(200), bundled.target)
    X = TabularSchema.infer(features).to_frame(features)
    teacher = make_teacher(**PARAMS).fit(X, target.to_numpy(), task="binary")
    folder = tmp_path_factory.mktemp("model")
    files = {}
    for suffix in (".json", ".ubj"):
        teacher.save(folder / f"adult{suffix}")
        files[suffix] = (folder / f"adult{suffix}").read_bytes()
    trees = json.loads(files[".json"])["learner"]["gradient_booster"]["model"]["trees"]
    assert any(tree["categories_nodes"] for tree in trees), "the fixture model should have categorical splits"
    return files


def _header_mutation(document: dict[str, Any], rng: random.Random) -> None:
    learner = document["learner"]
    model = learner["gradient_booster"]["model"]
    field = rng.randrange(7)
    if field == 0:
        learner["learner_model_param"]["num_feature"] = str(rng.choice(_INTS))
    elif field == 1:
        learner["learner_model_param"]["num_class"] = str(rng.choice(_INTS))
    elif field == 2:
        learner["learner_model_param"]["base_score"] = rng.choice(("[nan]", "[inf]", "[1e400]", "[x]", "[0.5,0.5]"))
    elif field == 3:
        model["gbtree_model_param"]["num_trees"] = str(rng.choice(_INTS))
    elif field == 4:
        model["tree_info"] = _mutated_list(model["tree_info"], rng)
    elif field == 5:
        model["iteration_indptr"] = _mutated_list(model["iteration_indptr"], rng)
    else:
        encodings = [e for e in model.get("cats", {}).get("enc", []) if e.get("offsets")]
        if encodings:
            encoding = rng.choice(encodings)
            encoding["offsets"] = _mutated_list(encoding["offsets"], rng)


def json_mutations(text: bytes, *, seed: int, count: int) -> Iterator[bytes]:
    """Mutants with one list of one tree (or one header field) changed: ranges, lengths, NaN/inf."""
    rng = random.Random(seed)
    original = json.loads(text)
    for _ in range(count):
        document = copy.deepcopy(original)
        if rng.random() < 0.25:
            _header_mutation(document, rng)
        else:
            tree = rng.choice(document["learner"]["gradient_booster"]["model"]["trees"])
            if rng.random() < 0.1:
                tree["tree_param"]["num_nodes"] = str(rng.choice(_INTS))
            else:
                key = rng.choice(_TREE_KEYS)
                tree[key] = _mutated_list(tree[key], rng)
        # XGBoost writes NaN and infinity in JSON as bare NaN / Infinity; json.dumps does the same.
        yield json.dumps(document).encode()


def ubj_array_mutations(data: bytes, *, seed: int, count: int) -> Iterator[bytes]:
    """Same-length mutants of UBJSON: one element of a typed per-node array (or its count) overwritten."""
    rng = random.Random(seed)
    sizes = {b"i": 1, b"U": 1, b"I": 2, b"l": 4, b"L": 8, b"d": 4, b"D": 8}
    formats = {b"i": ">i1", b"U": ">u1", b"I": ">i2", b"l": ">i4", b"L": ">i8", b"d": ">f4", b"D": ">f8"}
    arrays = []  # (offset of the count, count-size, offset of the data, element marker, count)
    for key in _TREE_KEYS:
        name = key.encode()
        start = data.find(name)
        while start >= 0:
            at = start + len(name)
            if data[at : at + 2] == b"[$" and data[at + 3 : at + 4] == b"#":
                kind, count_kind = data[at + 2 : at + 3], data[at + 4 : at + 5]
                count_at = at + 5
                count_size = sizes[count_kind]
                n = int(np.frombuffer(data[count_at : count_at + count_size], dtype=formats[count_kind])[0])
                arrays.append((count_at, count_kind, count_at + count_size, kind, n))
            start = data.find(name, start + 1)
    for _ in range(count):
        mutant = bytearray(data)
        count_at, count_kind, data_at, kind, n = rng.choice(arrays)
        if n == 0 or rng.random() < 0.2:
            new = np.array(max(n + rng.choice((-1, 1, 1000, 2**30)), 0), dtype=formats[count_kind]).tobytes()
            mutant[count_at : count_at + len(new)] = new
        else:
            value = rng.choice(_INTS + _FLOATS) if kind in (b"d", b"D") else rng.choice(_INTS)
            with np.errstate(over="ignore", invalid="ignore"):
                element = np.array(value).astype(formats[kind]).tobytes()
            at = data_at + rng.randrange(n) * sizes[kind]
            mutant[at : at + len(element)] = element
        yield bytes(mutant)


@pytest.mark.parametrize("suffix", [".json", ".ubj"])
def test_damaged_model_files_never_crash(suffix, model_files, tmp_path) -> None:
    data = model_files[suffix]
    mutate = json_mutations if suffix == ".json" else ubj_array_mutations
    structural = mutate(data, seed=0, count=120)
    mutants = [*structural, *byte_mutations(data, seed=1, count=40)]
    report = fuzz_model_file(FACTORY, mutants, folder=tmp_path, suffix=suffix)
    assert report.bad == [], f"{len(report.bad)} of {len(mutants)} mutants broke the promise: {report.counts}"
    assert report.counts.get("error", 0) > len(mutants) // 3, report.counts
    assert report.counts.get("ok", 0) > 0, report.counts
