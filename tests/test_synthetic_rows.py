"""Teacher-labelled synthetic rows (MUNGE) for the student (issue 12: the student learns the teacher's function).

References are independent of the code under test: the nearest neighbour by brute force (scipy), the teacher's
labels by its native booster (LightGBM ``predict``), the encoded rows by the encoder applied to the rows again.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from scipy.spatial.distance import cdist

from gbdt2nn_core.data import load_bundled
from gbdt2nn_core.data.rowfile import RowFolder
from gbdt2nn_core.pipeline import DistillConfig, Pipeline
from gbdt2nn_core.pipeline.config import AUTO_SYNTHETIC_ROWS, AUTO_SYNTHETIC_ROWS_TOTAL
from gbdt2nn_core.pipeline.distill import run_student
from gbdt2nn_core.pipeline.synthetic import SyntheticRows, munge, teacher_labels

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def _frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n) * 10
    u = rng.uniform(size=n)
    u[::17] = np.nan  # missing values
    colour = pd.Categorical(rng.choice(["red", "green", "blue"], size=n), categories=["blue", "green", "red"])
    # a column of unique categories (more than the search takes): with every column taken from the neighbour, it
    # names the neighbour each synthetic row was made with
    ident = pd.Categorical([f"row{i}" for i in range(n)], categories=[f"row{i}" for i in range(n)])
    return pd.DataFrame({"x": x, "u": u, "colour": colour, "id": ident})


def test_rows_are_their_sources_without_swaps_and_keep_columns_and_dtypes() -> None:
    frame = _frame()
    synthetic = munge(frame, 3, seed=1, swap_probability=0.0)
    assert len(synthetic) == 3 * len(frame)
    assert list(synthetic.columns) == list(frame.columns)
    assert (synthetic.dtypes == frame.dtypes).all()
    expected = pd.concat([frame] * 3, ignore_index=True)
    pd.testing.assert_frame_equal(synthetic, expected)


def test_a_swapped_row_takes_its_nearest_neighbours_values() -> None:
    frame = _frame()
    synthetic = munge(frame, 1, seed=2, swap_probability=1.0)
    partner = synthetic["id"].cat.codes.to_numpy()
    assert (partner != np.arange(len(frame))).all()  # never the row itself
    # the brute-force nearest neighbour in the search space: standardised x and u (missing at the mean), colour
    # one-hot 1 apart; the id column is left out (more categories than the search takes)
    x = (frame["x"] - frame["x"].mean()) / frame["x"].std(ddof=0)
    u = frame["u"].to_numpy()
    u = np.nan_to_num((u - np.nanmean(u)) / np.nanstd(u))
    colour = pd.get_dummies(frame["colour"]).to_numpy(float) / np.sqrt(2.0)
    points = np.column_stack([x, u, colour])
    distances = cdist(points, points)
    np.fill_diagonal(distances, np.inf)
    np.testing.assert_array_equal(partner, distances.argmin(axis=1))
    # categories come from the neighbour; a numeric value is drawn around the neighbour's, missing stays missing
    np.testing.assert_array_equal(synthetic["colour"].to_numpy(), frame["colour"].to_numpy()[partner])
    own, near = frame["u"].to_numpy(), frame["u"].to_numpy()[partner]
    either_missing = np.isnan(own) | np.isnan(near)
    np.testing.assert_array_equal(np.isnan(synthetic["u"].to_numpy()[either_missing]), np.isnan(near[either_missing]))
    spread = np.abs(frame["x"].to_numpy() - frame["x"].to_numpy()[partner])
    moved = np.abs(synthetic["x"].to_numpy() - frame["x"].to_numpy()[partner])
    assert np.mean(moved <= 3 * spread + 1e-12) > 0.98  # a normal draw with that spread


def test_munge_is_seeded_and_searches_large_data_in_blocks() -> None:
    frame = _frame(n=1000)
    first = munge(frame, 2, seed=5, block_rows=128)
    pd.testing.assert_frame_equal(first, munge(frame, 2, seed=5, block_rows=128))
    assert not first.equals(munge(frame, 2, seed=6, block_rows=128))
    partner = munge(frame, 1, seed=5, swap_probability=1.0, block_rows=128)["id"].cat.codes.to_numpy()
    assert (partner != np.arange(len(frame))).all()


def test_teacher_labels_follow_the_tasks_coding() -> None:
    np.testing.assert_array_equal(teacher_labels(np.array([-0.5, 0.2]), "binary"), [0, 1])
    np.testing.assert_array_equal(teacher_labels(np.array([[0.1, 0.5, -1.0], [2.0, 0.0, 0.0]]), "multiclass"), [1, 0])
    np.testing.assert_array_equal(teacher_labels(np.array([[3.5], [-1.0]]), "regression"), [3.5, -1.0])


def test_a_shards_synthetic_rows_are_those_made_from_its_own_rows() -> None:
    rows = SyntheticRows(
        copies=2,
        chosen="configured",
        z=np.zeros((10, 1)),
        y=np.zeros(10),
        leaves=np.zeros((10, 1)),
        teacher_margin=np.zeros(10),
    )
    np.testing.assert_array_equal(rows.positions(5, np.array([1, 3])), [1, 3, 6, 8])
    np.testing.assert_array_equal(rows.positions(5, None), np.arange(10))


@pytest.mark.parametrize("spill_bytes", [None, 0], ids=["in-memory", "on-disk"])
@pytest.mark.parametrize("alignment_rows", [0.1, 1.0], ids=["tenth-aligned", "all-aligned"])
def test_the_student_trains_on_its_rows_and_the_teachers_labelled_synthetic_ones(
    tmp_path: object, spill_bytes: int | None, alignment_rows: float
) -> None:
    dataset = load_bundled("adult")
    frame = dataset.frame.head(1500)
    config = DistillConfig(
        seed=3,
        synthetic_rows=2,
        alignment_rows=alignment_rows,
        alignment_min_rows=0,
        student_options={"epochs": 1, "n_groups": 2, "hidden": (16,)},
        teacher_options={"num_threads": 1, "n_estimators": 8, "num_leaves": 8},
        cache=False,
        cache_dir=str(tmp_path),
        **({} if spill_bytes is None else {"spill_bytes": spill_bytes}),
    )
    pipeline = Pipeline(config)
    pipeline.check()
    prepared = pipeline.prepare(frame, dataset.target)
    fit = prepared.validation.fit
    n = len(fit)
    inputs = prepared.student_inputs()
    assert len(inputs.z) == len(inputs.y) == len(inputs.leaves) == len(inputs.teacher_margin) == 3 * n
    assert RowFolder.holds(inputs.z) == (spill_bytes == 0)  # the stacked rows stay on disk when the rows are there
    # the fitting rows first, unchanged
    np.testing.assert_array_equal(np.asarray(inputs.z[:n]), np.asarray(prepared.data.z_train)[fit])
    np.testing.assert_array_equal(inputs.y[:n], prepared.data.y_train[fit])
    # then the synthetic rows, made again here from the same fitting rows and seed
    synthetic = munge(prepared.data.train_frame.iloc[fit].reset_index(drop=True), 2, seed=3)
    np.testing.assert_allclose(np.asarray(inputs.z[n:]), prepared.data.encoder.transform(synthetic), atol=1e-6)
    booster = prepared.teacher.native_model
    assert isinstance(booster, lgb.Booster)
    np.testing.assert_array_equal(inputs.y[n:], (booster.predict(synthetic) > 0.5).astype(int))
    np.testing.assert_array_equal(np.asarray(inputs.leaves[n:]), booster.predict(synthetic, pred_leaf=True))
    np.testing.assert_allclose(inputs.teacher_margin[n:], booster.predict(synthetic, raw_score=True), atol=1e-9)
    run = run_student(pipeline, prepared, 1.0)
    assert np.isfinite(run.record.student.test["auc"])
    assert run.record.student.agreement["spearman"] > 0


def test_auto_keeps_a_large_training_set_within_its_total_of_synthetic_rows() -> None:
    auto, configured = DistillConfig(), DistillConfig(synthetic_rows=4)
    assert AUTO_SYNTHETIC_ROWS_TOTAL == 200_000
    # 4 per fitting row up to 50,000 fitting rows, then fewer (rounded down), none from 200,001 on
    per_row = {n: auto.synthetic_rows_for("regression", n) for n in (16_512, 50_000, 50_001, 100_000, 200_000, 200_001)}
    assert per_row == {16_512: 4, 50_000: 4, 50_001: 3, 100_000: 2, 200_000: 1, 200_001: 0}
    assert all(copies * n <= AUTO_SYNTHETIC_ROWS_TOTAL for n, copies in per_row.items())
    # a count the user chose is kept whatever the data's size
    assert configured.synthetic_rows_for("regression", 1_000_000) == 4
    assert configured.synthetic_rows_rule() == "configured"


def test_the_pipeline_counts_the_total_on_the_fitting_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    # 480 training rows of which 432 fit (48 validate): a total of 900 allows 2 per fitting row, 1 per training row
    monkeypatch.setattr("gbdt2nn_core.pipeline.config.AUTO_SYNTHETIC_ROWS_TOTAL", 900)
    dataset = load_bundled("california")
    pipeline = Pipeline(DistillConfig(teacher_options={"num_threads": 1, "n_estimators": 5}, cache=False))
    prepared = pipeline.prepare(dataset.frame.head(600), dataset.target)
    assert (len(prepared.data.y_train), len(prepared.validation.fit)) == (480, 432)
    assert prepared.synthetic is not None
    described = prepared.synthetic.describe()
    assert (described["per_fitting_row"], described["synthetic_rows"]) == (2, 864)
    assert described["chosen"] == "auto (regression: 4 per fitting row, at most 900 in all)"


def test_auto_gives_regression_students_synthetic_rows_and_classifiers_none() -> None:
    config = DistillConfig()
    assert config.synthetic_rows == "auto"
    assert config.synthetic_rows_for("regression", 1_000) == AUTO_SYNTHETIC_ROWS == 4
    assert config.synthetic_rows_for("binary", 1_000) == config.synthetic_rows_for("multiclass", 1_000) == 0
    assert DistillConfig(synthetic_rows=1).synthetic_rows_for("binary", 1_000) == 1
    dataset = load_bundled("california")
    pipeline = Pipeline(DistillConfig(teacher_options={"num_threads": 1, "n_estimators": 5}, cache=False))
    prepared = pipeline.prepare(dataset.frame.head(600), dataset.target)
    assert prepared.synthetic is not None
    assert prepared.synthetic.describe() == {
        "synthetic_rows": 4 * len(prepared.validation.fit),
        "per_fitting_row": 4,
        "chosen": "auto (regression: 4 per fitting row, at most 200,000 in all)",
        "labels": "the teacher's",
    }
    # regression labels are the teacher's predictions (LightGBM's own predict)
    synthetic = munge(prepared.data.train_frame.iloc[prepared.validation.fit].reset_index(drop=True), 4, seed=0)
    np.testing.assert_allclose(prepared.synthetic.y, prepared.teacher.native_model.predict(synthetic), rtol=1e-12)
    adult = load_bundled("adult")
    classifier = Pipeline(DistillConfig(teacher_options={"num_threads": 1, "n_estimators": 5}, cache=False))
    assert classifier.prepare(adult.frame.head(600), adult.target).synthetic is None
