"""Damaged LightGBM model files end in a one-line error or a working model, never in a native crash.

Each mutant is loaded in a subprocess (``gbdt2nn_core.testing.fuzz_model_file``), so an abort inside LightGBM
is caught as a signal instead of ending the test run.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

import pytest

from gbdt2nn_core.data import TabularSchema, load_bundled, split_features_target
from gbdt2nn_core.testing import byte_mutations, fuzz_model_file, list_mutation
from gbdt2nn_lightgbm.plugin import make_teacher

pytestmark = pytest.mark.slow

#: Small enough to load fast, with categorical splits so that cat_boundaries / cat_threshold exist.
PARAMS = {"n_estimators": 6, "num_leaves": 6, "num_threads": 1, "min_data_in_leaf": 3, "min_data_per_group": 3}

_TREE_KEYS = (
    "num_leaves",
    "num_cat",
    "split_feature",
    "split_gain",
    "threshold",
    "decision_type",
    "left_child",
    "right_child",
    "leaf_value",
    "leaf_weight",
    "leaf_count",
    "internal_value",
    "internal_weight",
    "internal_count",
    "cat_boundaries",
    "cat_threshold",
    "shrinkage",
)
_HEADER_KEYS = ("max_feature_idx", "num_class", "num_tree_per_iteration", "feature_names", "feature_infos")
_INTS = ("-7", "-1", "0", "14", "15", "255", "1000", "2147483647", "2147483648", "-2147483648", "99999999999")
_FLOATS = ("nan", "inf", "-inf", "1e308", "-1e308", "1e39", "x")


@pytest.fixture(scope="module")
def model_text(tmp_path_factory) -> str:
    bundled = load_bundled("adult")
    features, target = split_features_target(bundled.frame.head(200), bundled.target)
    X = TabularSchema.infer(features).to_frame(features)
    path = tmp_path_factory.mktemp("model") / "adult.txt"
    make_teacher(**PARAMS).fit(X, target.to_numpy(), task="binary").save(path)
    text = path.read_text()
    assert "cat_boundaries=" in text, "the fixture model should have categorical splits"
    return text


def _with_tree_sizes(text: str) -> str:
    """``text`` with its ``tree_sizes`` header recomputed, so that a mutant gets past LightGBM's size check."""
    start, end = text.find("\nTree=0\n") + 1, text.find("\nend of trees\n") + 1
    blocks = re.split(r"(?=^Tree=\d+\n)", text[start:end], flags=re.MULTILINE)
    sizes = " ".join(str(len(block.encode())) for block in blocks if block)
    return re.sub(r"^tree_sizes=.*$", f"tree_sizes={sizes}", text, count=1, flags=re.MULTILINE)


def structural_mutations(text: str, *, seed: int, count: int) -> Iterator[bytes]:
    """Mutants with one value list of one tree (or of the header) changed: ranges, counts, NaN/inf, garbage."""
    rng = random.Random(seed)
    lines = text.split("\n")
    tree_lines = {key: [i for i, line in enumerate(lines) if line.startswith(f"{key}=")] for key in _TREE_KEYS}
    header_lines = {key: [i for i, line in enumerate(lines) if line.startswith(f"{key}=")][:1] for key in _HEADER_KEYS}
    choices = [(key, i) for table in (tree_lines, header_lines) for key, found in table.items() for i in found]
    for index in range(count):
        key, line = rng.choice(choices)
        mutant = list(lines)
        values = mutant[line].split("=", 1)[1].split(" ")
        if key in ("max_feature_idx", "num_class", "num_tree_per_iteration") or rng.random() < 0.1:
            values = [rng.choice(_INTS)]
        else:
            values = list_mutation(values, rng, ints=_INTS, floats=_FLOATS, repeats=(0, 1, 3, 50))
        mutant[line] = f"{key}={' '.join(values)}"
        result = "\n".join(mutant)
        # Most mutants get a consistent size header, so that they reach LightGBM's own parser.
        yield (_with_tree_sizes(result) if index % 4 else result).encode()


def _all_mutants(text: str) -> list[bytes]:
    data = text.encode()
    same_length = []
    # The reported crash: split_feature values out of range with the byte length unchanged.
    for match in re.finditer(r"^split_feature=(.*)$", text, flags=re.MULTILINE):
        digits = match.group(1)
        replaced = re.sub(r"\d+", lambda m: "9" * len(m.group(0)), digits)
        same_length.append((text[: match.start(1)] + replaced + text[match.end(1) :]).encode())
    return [
        *same_length,
        *structural_mutations(text, seed=0, count=240),
        *byte_mutations(data, seed=1, count=60),
    ]


def test_damaged_model_files_never_crash(model_text, tmp_path) -> None:
    mutants = _all_mutants(model_text)
    report = fuzz_model_file("gbdt2nn_lightgbm.plugin:make_teacher", mutants, folder=tmp_path, suffix=".txt")
    assert report.bad == [], f"{len(report.bad)} of {len(mutants)} mutants broke the promise: {report.counts}"
    # Not vacuous: many mutants are refused, and some (a changed gain or count) still load.
    assert report.counts.get("error", 0) > len(mutants) // 3, report.counts
    assert report.counts.get("ok", 0) > 0, report.counts
