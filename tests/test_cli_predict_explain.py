"""``gbdt2nn predict`` and ``gbdt2nn explain`` on run folders: the numbers of the Python API, in a file.

References: the loaded student's own ``predict`` / ``predict_proba`` / ``predict_margin``, and for explanations
the structure attributor's exactness (each row's attributions add up to ``margin(x) − E[margin]`` over the
reference rows), which holds whatever the numbers inside are.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from gbdt2nn_core.cli import main
from gbdt2nn_core.distill import DistillConfig, DistillRun, distill
from gbdt2nn_core.persistence import DistilledModel, load_model
from gbdt2nn_core.runfolder import write_run

pytestmark = pytest.mark.usefixtures("single_thread_torch")

TARGET = "income_gt_50k"


@pytest.fixture(scope="module")
def runs(adult_run: DistillRun, tmp_path_factory: pytest.TempPathFactory, single_thread_torch: None) -> dict[str, Path]:
    """Run folders of a binary (adult), a 3-class (wine) and a regression (California housing) student."""
    from sklearn.datasets import load_wine

    from gbdt2nn_core.data import load_bundled

    root = tmp_path_factory.mktemp("runs")
    cache = str(root / "cache")
    tiny = {
        "teacher_options": {"n_estimators": 5, "num_leaves": 7, "min_child_samples": 5, "num_threads": 1},
        "student_options": {"epochs": 1, "n_groups": 3, "hidden": (16, 16), "batch_size": 64},
        "alignment_weight": 0.0,
        "cache_dir": cache,
    }
    wine = load_wine(as_frame=True).frame
    california = load_bundled("california").frame.sample(300, random_state=0).reset_index(drop=True)
    return {
        "binary": write_run(root / "adult", adult_run),
        "multiclass": write_run(root / "wine", distill(wine, "target", DistillConfig(**tiny))),
        "regression": write_run(root / "california", distill(california, "MedHouseVal", DistillConfig(**tiny))),
    }


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, adult_dataset: Any, runs: dict[str, Path]) -> Path:
    """The current folder: ``rows.csv`` (300 raw adult rows with an ``id`` column and the target)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GBDT2NN_DEBUG", raising=False)
    rows = adult_dataset.frame.sample(300, random_state=11).reset_index(drop=True)
    rows.insert(0, "id", np.arange(1000, 1300))
    rows.to_csv(tmp_path / "rows.csv", index=False)
    return tmp_path


def _ok(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[str, list[str]]:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Traceback" not in captured.err
    notes = captured.err.splitlines()
    assert all(line.startswith("gbdt2nn: note: ") for line in notes), captured.err
    return captured.out, notes


# ------------------------------------------------------------------------------------------- predict
def test_predict_binary_writes_labels_probabilities_and_margins(
    work: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out, notes = _ok(capsys, ["predict", "--model", str(runs["binary"]), "--data", "rows.csv", "--out", "p.csv"])
    assert out.strip() == "wrote 300 predictions (binary) to p.csv"
    assert "gbdt2nn: note: rows.csv: ignoring 2 column(s) the model does not use: 'id', 'income_gt_50k'" in notes

    table = pd.read_csv("p.csv")
    assert list(table.columns) == ["prediction", "probability_0", "probability_1", "margin"]
    model = load_model(runs["binary"])
    raw = pd.read_csv("rows.csv")
    np.testing.assert_allclose(table["margin"], model.predict_margin(raw), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(table[["probability_0", "probability_1"]], model.predict_proba(raw), atol=1e-6)
    np.testing.assert_array_equal(table["prediction"], model.predict(raw).astype(int))


def test_predict_parquet_keeps_id_columns_in_row_order(
    work: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _ok(capsys, ["predict", "--model", str(runs["binary"]), "--data", "rows.csv", "--out", "p.parquet", "--keep", "id"])
    table = pd.read_parquet("p.parquet")
    assert list(table.columns) == ["id", "prediction", "probability_0", "probability_1", "margin"]
    np.testing.assert_array_equal(table["id"], np.arange(1000, 1300))
    _ok(capsys, ["predict", "--model", str(runs["binary"]), "--data", "rows.csv", "--out", "p.csv.gz"])
    pd.testing.assert_frame_equal(pd.read_csv("p.csv.gz"), table.drop(columns=["id"]), check_dtype=False)


def test_predict_multiclass_has_a_probability_and_a_margin_per_class(
    work: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from sklearn.datasets import load_wine

    load_wine(as_frame=True).frame.to_csv("wine.csv", index=False)
    _ok(capsys, ["predict", "--model", str(runs["multiclass"]), "--data", "wine.csv", "--out", "p.csv"])
    table = pd.read_csv("p.csv")
    classes = ["0", "1", "2"]
    assert list(table.columns) == [
        "prediction",
        *(f"probability_{c}" for c in classes),
        *(f"margin_{c}" for c in classes),
    ]
    model = load_model(runs["multiclass"])
    raw = pd.read_csv("wine.csv")
    np.testing.assert_allclose(table[[f"margin_{c}" for c in classes]], model.predict_margin(raw), atol=1e-6)
    np.testing.assert_allclose(table[[f"probability_{c}" for c in classes]].sum(axis=1), 1.0, atol=1e-9)
    np.testing.assert_array_equal(table["prediction"], model.predict(raw).astype(int))


def test_predict_regression_writes_the_value(
    work: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture[str], california_small: pd.DataFrame
) -> None:
    california_small.head(100).to_csv("houses.csv", index=False)
    _ok(capsys, ["predict", "--model", str(runs["regression"]), "--data", "houses.csv", "--out", "p.csv"])
    table = pd.read_csv("p.csv")
    assert list(table.columns) == ["prediction", "margin"]
    expected = load_model(runs["regression"]).predict(california_small.head(100))
    np.testing.assert_allclose(table["prediction"], expected, rtol=1e-6, atol=1e-6)


def test_unseen_categories_predict_like_missing_values_with_a_note(
    work: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    raw = pd.read_csv("rows.csv").drop(columns=["id", TARGET])
    model = load_model(runs["binary"])
    known = {c.name: set(c.categories) for c in model.encoder.schema.columns if c.kind == "categorical"}
    raw = raw[raw[list(known)].apply(lambda r: all(pd.isna(v) or v in known[k] for k, v in r.items()), axis=1)]
    raw = raw.head(20).reset_index(drop=True)
    unseen = raw.assign(occupation=["Astronaut"] * 5 + list(raw["occupation"][5:]))
    unseen.to_csv("unseen.csv", index=False)
    _, notes = _ok(capsys, ["predict", "--model", str(runs["binary"]), "--data", "unseen.csv", "--out", "p.csv"])
    assert notes == [
        "gbdt2nn: note: unseen.csv: categories not seen in training are treated as missing (the average "
        "category): 'occupation' (5 rows, e.g. 'Astronaut')"
    ]
    missing = raw.assign(occupation=[None] * 5 + list(raw["occupation"][5:]))
    np.testing.assert_allclose(pd.read_csv("p.csv")["margin"], model.predict_margin(missing), atol=1e-6)


def test_column_order_and_extra_columns_do_not_matter(
    work: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    raw = pd.read_csv("rows.csv")
    raw[raw.columns[::-1]].assign(comment="x").to_csv("shuffled.csv", index=False)
    _ok(capsys, ["predict", "--model", str(runs["binary"]), "--data", "rows.csv", "--out", "a.csv"])
    _ok(capsys, ["predict", "--model", str(runs["binary"]), "--data", "shuffled.csv", "--out", "b.csv"])
    pd.testing.assert_frame_equal(pd.read_csv("a.csv"), pd.read_csv("b.csv"))


# ------------------------------------------------------------------------------------------- explain
def _reference_margin(model: DistilledModel, background: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.student.module.eval()(torch.as_tensor(background)).numpy().mean(axis=0)  # type: ignore[no-any-return]


def test_explain_wide_adds_up_to_the_margin_minus_the_background_mean(
    work: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out, _ = _ok(capsys, ["explain", "--model", str(runs["binary"]), "--data", "rows.csv", "--out", "e.csv"])
    assert out.strip() == "wrote structure attributions of 300 rows (wide layout, margin space) to e.csv"
    table = pd.read_csv("e.csv")
    model = load_model(runs["binary"])
    assert list(table.columns) == list(model.encoder.schema.names)
    raw = pd.read_csv("rows.csv")
    # a run folder keeps the attributors' background sample (the one training used), so explain measures against it
    assert model.background is not None
    expected = model.predict_margin(raw) - _reference_margin(model, model.background)
    np.testing.assert_allclose(table.sum(axis=1), expected, atol=1e-4)
    # columns that no group of the student reads get exactly zero, as in TreeSHAP
    used = set(np.asarray(model.student.group_columns_).ravel().tolist()) - {-1}
    for index, name in enumerate(model.encoder.schema.names):
        if index not in used:
            assert (table[name] == 0).all(), name


def test_explain_with_a_background_file_explains_margin_minus_its_mean(
    work: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture[str], adult_dataset: Any
) -> None:
    adult_dataset.frame.sample(100, random_state=12).to_csv("background.csv", index=False)
    argv = ["explain", "--model", str(runs["binary"]), "--data", "rows.csv", "--out", "e.csv"]
    _ok(capsys, [*argv, "--background", "background.csv"])
    model = load_model(runs["binary"])
    reference = _reference_margin(model, model.encode(pd.read_csv("background.csv")))
    expected = model.predict_margin(pd.read_csv("rows.csv")) - reference
    np.testing.assert_allclose(pd.read_csv("e.csv").sum(axis=1), expected, atol=1e-4)


def test_explain_long_layout_is_the_wide_table_melted(
    work: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["explain", "--model", str(runs["binary"]), "--data", "rows.csv"]
    _ok(capsys, [*base, "--out", "wide.csv"])
    _ok(capsys, [*base, "--out", "long.parquet", "--layout", "long", "--keep", "id"])
    wide, long = pd.read_csv("wide.csv"), pd.read_parquet("long.parquet")
    assert list(long.columns) == ["id", "row", "feature", "attribution"]
    assert len(long) == wide.size
    pivot = long.pivot(index="row", columns="feature", values="attribution")[list(wide.columns)]
    np.testing.assert_allclose(pivot.to_numpy(), wide.to_numpy(), atol=1e-6)
    np.testing.assert_array_equal(long.groupby("row")["id"].first(), np.arange(1000, 1300))


def test_explain_multiclass_has_one_column_per_class_and_feature(
    work: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True).frame
    wine.to_csv("wine.csv", index=False)
    _ok(capsys, ["explain", "--model", str(runs["multiclass"]), "--data", "wine.csv", "--out", "e.csv"])
    table = pd.read_csv("e.csv")
    model = load_model(runs["multiclass"])
    names = list(model.encoder.schema.names)
    assert list(table.columns) == [f"{n}[{c}]" for c in (0, 1, 2) for n in names]
    margins = model.predict_margin(wine)
    assert model.background is not None
    reference = _reference_margin(model, model.background)
    for c in range(3):
        per_class = table[[f"{n}[{c}]" for n in names]].sum(axis=1)
        np.testing.assert_allclose(per_class, margins[:, c] - reference[c], atol=1e-4)
    _ok(
        capsys,
        ["explain", "--model", str(runs["multiclass"]), "--data", "wine.csv", "--out", "l.csv", "--layout", "long"],
    )
    long = pd.read_csv("l.csv")
    assert list(long.columns) == ["row", "class", "feature", "attribution"]
    first = long[(long["row"] == 7) & (long["class"] == 2)].set_index("feature")["attribution"]
    np.testing.assert_allclose(first[names], table.loc[7, [f"{n}[2]" for n in names]], atol=1e-6)


def test_explain_uses_the_attributor_the_run_was_trained_with(
    work: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    from gbdt2nn_core.registry import get_registry

    folder = Path("run")
    shutil.copytree(runs["binary"], folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(attributor="integrated-gradients", attributor_options={"steps": 8})
    (folder / "config.json").write_text(json.dumps(config))
    out, _ = _ok(capsys, ["explain", "--model", "run", "--data", "rows.csv", "--out", "e.csv"])
    assert out.startswith("wrote integrated-gradients attributions of 300 rows")

    model = load_model(folder)
    attributor = get_registry().attributor("integrated-gradients", steps=8)
    attributor.fit(model.student.module, torch.zeros(1, model.encoder.n_encoded))
    z = model.encode(pd.read_csv("rows.csv"))
    expected = model.student.attributions(z, attributor, model.encoder.aggregation())
    np.testing.assert_allclose(pd.read_csv("e.csv").to_numpy(), expected, atol=1e-5)

    # --attributor overrides it, without the run's options
    out, _ = _ok(
        capsys, ["explain", "--model", "run", "--data", "rows.csv", "--out", "g.csv", "--attributor", "gradient"]
    )
    assert out.startswith("wrote gradient attributions")


def test_explain_overwrite_replaces_and_refuses_otherwise(
    work: Path, runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["explain", "--model", str(runs["binary"]), "--data", "rows.csv", "--out", "e.csv"]
    Path("e.csv").write_text("old")
    assert main(argv) == 2
    assert Path("e.csv").read_text() == "old"
    assert capsys.readouterr().err.startswith("gbdt2nn: error: --out 'e.csv' already exists")
    _ok(capsys, [*argv, "--overwrite"])
    assert len(pd.read_csv("e.csv")) == 300
    assert sorted(p.name for p in work.iterdir()) == ["e.csv", "rows.csv"]  # no temporary file left
