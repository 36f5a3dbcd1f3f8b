"""One-line gbdt2nn errors for bad data, mismatched boosters and damaged model files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from gbdt2nn_core.errors import ConfigError, DataError, ModelFileError
from gbdt2nn_xgboost.plugin import make_teacher

FAST = {"n_estimators": 5, "max_leaves": 8, "nthread": 1}


@pytest.fixture(scope="module")
def saved(adult, tmp_path_factory) -> dict[str, tuple[Path, bytes]]:
    """An adult model written by XGBoost itself, as JSON and as UBJSON."""
    X, y = adult
    booster = xgb.train({"objective": "binary:logistic", "nthread": 1}, xgb.DMatrix(X, y, enable_categorical=True), 10)
    folder = tmp_path_factory.mktemp("model")
    files = {}
    for kind in ("json", "ubj"):
        path = folder / f"adult.{kind}"
        booster.save_model(path)
        files[kind] = (path, path.read_bytes())
    return files


@pytest.fixture
def wrapped(saved):
    return make_teacher(model=saved["json"][0])


def one_line(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text
    return text


# ---------------------------------------------------------------------------------------------- fit input
# Labels, frames and unfitted teachers are checked for every teacher by TeacherPluginTests (test_conformance.py).
def test_a_column_name_xgboost_refuses_is_named(california) -> None:
    X, y = california
    with pytest.raises(DataError) as caught:
        make_teacher(**FAST).fit(X.rename(columns={"MedInc": "MedInc[2020]"}), y, task="regression")
    assert "MedInc[2020]" in one_line(caught.value)


@pytest.mark.parametrize(
    ("params", "task", "setting"),
    [
        ({}, "classification", "task"),
        ({"random_state": 1}, "regression", "random_state"),
        ({"objective": "binary:logistic"}, "regression", "objective"),
        ({"eta": 0.1, "learning_rate": 0.2}, "regression", "eta"),
        ({"n_estimators": 0}, "regression", "n_estimators"),
        ({"max_depth": -4}, "regression", "params"),
    ],
)
def test_bad_settings_raise_config_error(params, task, setting, california) -> None:
    X, y = california
    with pytest.raises(ConfigError) as caught:
        make_teacher(**{"nthread": 1, **params}).fit(X, y, task=task)
    assert caught.value.setting == setting
    one_line(caught.value)


# ---------------------------------------------------------------------------------------------- wrapping
def test_columns_that_do_not_match_are_named(adult, wrapped) -> None:
    X, y = adult
    with pytest.raises(DataError) as caught:
        wrapped.fit(X.drop(columns=["gender"]), y, task="binary")
    assert caught.value.problem.endswith("missing ['gender']")
    with pytest.raises(DataError, match=r"reordered \(column 0 is 'fnlwgt', the booster expects 'age'\)"):
        wrapped.fit(X[["fnlwgt", *X.columns.drop("fnlwgt")]], y, task="binary")
    with pytest.raises(DataError, match="unexpected \\['AGE'\\]"):
        wrapped.predict_margin(X.rename(columns={"age": "AGE"}))


def test_a_column_of_the_wrong_kind_is_named(adult, wrapped) -> None:
    X, y = adult
    with pytest.raises(DataError, match="'age' is categorical in X but numeric in the booster"):
        wrapped.fit(X.assign(age=X["age"].astype("category")), y, task="binary")


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_a_task_the_objective_does_not_solve_raises_config_error(task, adult, wrapped) -> None:
    X, y = adult
    with pytest.raises(ConfigError, match="binary:logistic") as caught:
        wrapped.fit(X, y, task=task)
    assert caught.value.setting == "task"


@pytest.mark.parametrize(
    ("params", "setting"),
    [
        ({"booster": "gblinear"}, "model"),
        ({"objective": "rank:pairwise"}, "objective"),
        ({"objective": "multi:softprob", "num_class": 3, "multi_strategy": "multi_output_tree"}, "multi_strategy"),
        ({"objective": "reg:squarederror", "two_targets": True}, "num_target"),
    ],
)
def test_unsupported_boosters_are_refused(params, setting, wine) -> None:
    X, y = wine
    params = {"nthread": 1, **params}
    if params.pop("two_targets", False):
        y = np.stack([y, -y], axis=1)
    booster = xgb.train(params, xgb.DMatrix(X, y), 2)
    with pytest.raises(ConfigError) as caught:
        make_teacher(model=booster)
    assert caught.value.setting == setting


@pytest.mark.parametrize(
    ("model", "fix"),
    [(xgb.XGBClassifier(), "fit the XGBoost model first"), (object(), "pass an xgboost.Booster")],
)
def test_unusable_models_raise_config_error(model, fix) -> None:
    with pytest.raises(ConfigError, match=fix):
        make_teacher(model=model)


def test_training_parameters_with_a_model_are_refused(saved) -> None:
    with pytest.raises(ConfigError, match="only apply with model=None"):
        make_teacher(model=saved["ubj"][0], max_leaves=8)


# ---------------------------------------------------------------------------------------------- model files
def test_missing_file(tmp_path) -> None:
    with pytest.raises(ModelFileError, match="no such file"):
        make_teacher(model=tmp_path / "nope.json")


@pytest.mark.parametrize("kind", ["json", "ubj"])
@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.9, 0.999])
def test_truncated_files_raise_model_file_error(kind, fraction, saved, tmp_path) -> None:
    _, data = saved[kind]
    path = tmp_path / f"cut.{kind}"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ModelFileError) as caught:
        make_teacher(model=path)
    assert one_line(caught.value).startswith(f"cannot load model from {path}")
    assert "/workspace/" not in str(caught.value)  # XGBoost's C++ source location is stripped


@pytest.mark.parametrize("content", [b"\x00\x01\x02binary", b'{"hello": 1}', b"tree\nversion=v4\n"])
def test_foreign_or_corrupt_files_raise_model_file_error(content, tmp_path) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ModelFileError):
        make_teacher(model=path)


def test_save_into_a_missing_folder_raises_config_error(wrapped, tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot write"):
        wrapped.save(tmp_path / "missing" / "m.json")


def test_an_unknown_training_parameter_is_an_error_not_a_warning(california) -> None:
    X, y = california
    with pytest.raises(ConfigError, match="colsample_by_leaf") as info:
        make_teacher(**FAST, colsample_by_leaf=0.5).fit(X, y, task="regression")
    assert "XGBoost does not know it" in str(info.value)


def test_lightgbm_and_sklearn_names_are_translated(california) -> None:
    X, y = california
    # untranslated, XGBoost would not know num_leaves / num_threads and fit would raise (see the test above)
    teacher = make_teacher(n_estimators=3, num_leaves=4, num_threads=1).fit(X, y, task="regression")
    assert max(tree.n_leaves for tree in teacher.structure().trees) <= 4


def test_a_misspelt_option_is_an_error_with_a_suggestion(california) -> None:
    X, y = california
    with pytest.raises(ConfigError) as caught:
        make_teacher(**FAST, max_leave=4).fit(X, y, task="regression")
    message = one_line(caught.value)
    assert (caught.value.setting, caught.value.value) == ("teacher option", "max_leave")
    assert "did you mean 'max_leaves'?" in message


# ---------------------------------------------------------------------------------------------- damaged trees
def _tree(document: dict, number: int = 1) -> dict:
    return document["learner"]["gradient_booster"]["model"]["trees"][number]


def _set(path: tuple, value):
    """An edit of the parsed JSON model: ``value(old)`` stored at ``path`` below ``learner``."""

    def edit(document: dict) -> None:
        node = document["learner"]
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value(node[path[-1]])

    return edit


_MODEL = ("gradient_booster", "model")


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda d: _tree(d)["split_indices"].__setitem__(0, 14), "split_indices holds values outside 0..13"),
        (lambda d: _tree(d)["split_indices"].__setitem__(0, -1), "split_indices"),
        (lambda d: _tree(d)["left_children"].__setitem__(0, 10**6), "left_children holds values outside"),
        (lambda d: _tree(d)["right_children"].__setitem__(0, 0), "reached twice"),
        (lambda d: _tree(d)["parents"].__setitem__(1, 5), "names node 5 as its parent"),
        (lambda d: _tree(d)["base_weights"].pop(), "base_weights has"),
        (lambda d: _tree(d)["split_conditions"].__setitem__(0, float("nan")), "split_conditions holds NaN"),
        (lambda d: _tree(d)["tree_param"].__setitem__("num_nodes", "1000"), "left_children has"),
        (lambda d: _tree(d)["categories_sizes"].__setitem__(0, 10**6), "categories"),
        (_set((*_MODEL, "gbtree_model_param", "num_trees"), lambda old: "11"), "num_trees says 11 trees"),
        (_set((*_MODEL, "tree_info"), lambda old: [*old[:-1], 3]), "tree_info holds values outside 0..0"),
        (_set(("learner_model_param", "base_score"), lambda old: "[NaN]"), "base_score"),
        (_set(("learner_model_param", "num_feature"), lambda old: "20"), "feature_names does not list"),
        (_set(("learner_model_param", "num_class"), lambda old: "2147483647"), "outputs (num_class / num_target)"),
        (lambda d: _tree(d)["sum_hessian"].__setitem__(0, 0.0), "sum_hessian"),
        (lambda d: _tree(d)["split_conditions"].__setitem__(0, 1e39), "too large for XGBoost's float32"),
        (
            _set((*_MODEL, "cats", "enc"), lambda old: [{**e, "offsets": [5, *e["offsets"][1:]]} for e in old]),
            "category offsets of column",
        ),
        (_set((*_MODEL, "cats", "sorted_idx"), lambda old: [7, *old[1:]]), "sorted_idx of column"),
    ],
)
def test_a_damaged_json_tree_is_a_one_line_error_naming_the_file(edit, words, saved, tmp_path) -> None:
    document = json.loads(saved["json"][1])
    edit(document)
    path = tmp_path / "damaged.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ModelFileError) as caught:
        make_teacher(model=path)
    message = one_line(caught.value)
    assert str(path) in message
    assert words in message


def _typed_array(data: bytes, key: bytes) -> tuple[int, str, int]:
    """Offset, dtype and length of the first strongly typed array stored under ``key`` in UBJSON."""
    at = data.find(key) + len(key)
    assert data[at : at + 2] == b"[$"
    assert data[at + 3 : at + 5] == b"#L"
    dtype = {b"l": ">i4", b"d": ">f4", b"U": ">u1"}[data[at + 2 : at + 3]]
    return at + 13, dtype, int(np.frombuffer(data[at + 5 : at + 13], ">i8")[0])


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        (b"split_indices", 99, "split_indices"),
        (b"left_children", 10**6, "left_children"),
        (b"split_conditions", np.inf, "split_conditions"),
    ],
)
def test_a_damaged_ubjson_tree_is_a_one_line_error(key, value, words, saved, tmp_path) -> None:
    data = saved["ubj"][1]
    offset, dtype, length = _typed_array(data, key)
    assert length > 0
    element = np.array(value).astype(dtype).tobytes()
    path = tmp_path / "damaged.ubj"
    path.write_bytes(data[:offset] + element + data[offset + len(element) :])  # same length: only the value is wrong
    with pytest.raises(ModelFileError) as caught:
        make_teacher(model=path)
    assert words in one_line(caught.value)


def test_a_ubjson_count_past_the_end_is_refused_before_allocating(saved, tmp_path) -> None:
    data = saved["ubj"][1]
    at = data.find(b"split_conditions") + len(b"split_conditions")
    path = tmp_path / "damaged.ubj"
    path.write_bytes(data[: at + 5] + np.array(2**40, ">i8").tobytes() + data[at + 13 :])
    with pytest.raises(ModelFileError, match="longer than the file"):
        make_teacher(model=path)
