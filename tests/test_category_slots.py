"""Categories the teacher never tells apart share one slot of the student's one-hot encoding.

The reference is the teacher itself: swapping a row's category for another category of the same slot never
changes the teacher's margin (the merge loses nothing it computes), for LightGBM and XGBoost teachers, whose
category sets are read from their own model dumps.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gbdt2nn_core.data import TabularSchema, TargetEncoder
from gbdt2nn_core.data.encoding import InputEncoder, teacher_category_slots
from gbdt2nn_core.host.interfaces import Tree, TreeEnsemble
from gbdt2nn_core.host.registry import Registry

TEACHERS = {
    "lightgbm": {"n_estimators": 30, "num_leaves": 15, "num_threads": 1, "min_data_per_group": 5, "cat_smooth": 1},
    "xgboost": {"n_estimators": 30, "max_depth": 4, "n_jobs": 1, "max_cat_to_onehot": 1},
}


@pytest.fixture(scope="module")
def wide_categories() -> tuple[pd.DataFrame, np.ndarray]:
    """3,000 rows with a 300-value categorical column whose effect comes in a few levels, plus noise columns."""
    rng = np.random.default_rng(0)
    n, k = 3000, 300
    codes = np.minimum(rng.zipf(1.3, n) - 1, k - 1)  # heavy-tailed: many rare categories
    level = np.sin(np.arange(k)) > 0.3
    frame = pd.DataFrame(
        {
            "shop": pd.Categorical([f"s{c}" for c in codes], categories=[f"s{c}" for c in range(k)]),
            "colour": rng.choice(["red", "green", "blue"], n),
            "size": rng.normal(size=n),
        }
    )
    logit = 1.5 * level[codes] + 0.8 * (frame["colour"] == "red") + frame["size"]
    y = (rng.random(n) < 1 / (1 + np.exp(-logit.to_numpy()))).astype(np.int64)
    return frame, y


def _fitted(name: str, frame: pd.DataFrame, y: np.ndarray) -> tuple[object, pd.DataFrame, TabularSchema]:
    schema = TabularSchema.infer(frame)
    X = schema.to_frame(frame)
    teacher = Registry().teacher(name, **TEACHERS[name])
    teacher.fit(X, TargetEncoder.fit(y, "binary").transform(y), task="binary", seed=0)
    return teacher, X, schema


@pytest.mark.parametrize("name", sorted(TEACHERS))
def test_categories_sharing_a_slot_are_the_same_to_the_teacher(
    name: str, wide_categories: tuple[pd.DataFrame, np.ndarray]
) -> None:
    frame, y = wide_categories
    teacher, X, schema = _fitted(name, frame, y)
    slots = teacher_category_slots(teacher.structure(), schema)
    assert slots is not None
    shop = slots["shop"]
    n_slots = len(np.unique(shop))
    assert 2 <= n_slots < 300 / 2, n_slots  # the teacher separates some categories and lumps most rare ones
    rows = X.sample(200, random_state=1).reset_index(drop=True)
    margin = teacher.predict_margin(rows)
    categories = X["shop"].cat.categories
    for slot in np.unique(shop):
        members = np.flatnonzero(shop == slot)
        for other in members[1:4]:  # every row moved to another category of its slot
            moved = rows.copy()
            on_slot = shop[moved["shop"].cat.codes.to_numpy()] == slot
            moved.loc[on_slot, "shop"] = categories[other]
            np.testing.assert_allclose(teacher.predict_margin(moved), margin, rtol=0, atol=1e-9)

    # and categories of different slots are told apart on some rows (else they would be one slot)
    def margin_as(category: str) -> np.ndarray:
        return teacher.predict_margin(rows.assign(shop=pd.Categorical([category] * len(rows), categories=categories)))

    firsts = [categories[np.flatnonzero(shop == slot)[0]] for slot in np.unique(shop)]
    base = margin_as(firsts[0])
    differs = sum(not np.allclose(margin_as(category), base, atol=1e-9) for category in firsts[1:])
    assert differs == len(firsts) - 1


def test_merged_encoding_is_the_one_hot_of_the_slot(wide_categories: tuple[pd.DataFrame, np.ndarray]) -> None:
    frame, y = wide_categories
    teacher, X, schema = _fitted("lightgbm", frame, y)
    slots = teacher_category_slots(teacher.structure(), schema)
    assert slots is not None
    merged = InputEncoder.fit(X, schema, category_slots=slots)
    separate = InputEncoder.fit(X, schema)
    shop = list(schema.names).index("shop")
    n_slots = int(slots["shop"].max()) + 1
    assert len(merged.encoded_indices(shop)) == n_slots
    assert len(separate.encoded_indices(shop)) == 300
    # the merged block = the separate block summed over each slot's categories (one-hot and centring alike)
    block = merged.transform(X)[:, merged.encoded_indices(shop)]
    wide = separate.transform(X)[:, separate.encoded_indices(shop)]
    summed = np.zeros((len(X), n_slots))
    np.add.at(summed.T, slots["shop"], wide.T)
    np.testing.assert_allclose(block, summed, atol=1e-5)
    np.testing.assert_allclose(block.mean(axis=0), 0.0, atol=1e-6)  # still centred on the training rows
    # the lookup path finds the same slot as the dense encoding
    active = merged.active_slots(X)[:, -1 if schema.columns[-1].name == "shop" else 0]
    np.testing.assert_array_equal(active, slots["shop"][X["shop"].cat.codes.to_numpy()])
    # unseen and missing categories still encode as the average category
    odd = X.head(2).copy()
    odd["shop"] = pd.Categorical([None, None], categories=X["shop"].cat.categories)
    assert not merged.transform(odd)[:, merged.encoded_indices(shop)].any()


def test_a_saved_encoder_without_slots_encodes_as_before(wide_categories: tuple[pd.DataFrame, np.ndarray]) -> None:
    frame, _ = wide_categories
    schema = TabularSchema.infer(frame)
    X = schema.to_frame(frame)
    encoder = InputEncoder.fit(X, schema)
    assert all("slot_of" not in entry for entry in encoder.to_json()["state"].values())
    np.testing.assert_array_equal(InputEncoder.from_json(encoder.to_json()).transform(X), encoder.transform(X))


def test_teacher_without_category_sets_keeps_categories_apart() -> None:
    schema = TabularSchema.infer(pd.DataFrame({"shop": ["a", "b", "c"], "size": [1.0, 2.0, 3.0]}))
    shop = list(schema.names).index("shop")
    unreported = Tree(leaf_values=[0.0, 1.0], split_features=[shop], split_gains=[1.0], split_thresholds=[np.nan])
    assert teacher_category_slots(TreeEnsemble(trees=[unreported], n_features=2), schema) is None
    reported = Tree(
        leaf_values=[0.0, 1.0],
        split_features=[shop],
        split_gains=[1.0],
        split_thresholds=[np.nan],
        split_categories=[[0, 2]],
    )
    slots = teacher_category_slots(TreeEnsemble(trees=[reported], n_features=2), schema)
    assert slots is not None
    np.testing.assert_array_equal(slots["shop"], [0, 1, 0])  # a and c go the same way in the only split
