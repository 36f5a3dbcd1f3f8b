"""One-line gbdt2nn errors for bad data, mismatched boosters and damaged model files."""

from __future__ import annotations

import re
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from gbdt2nn_core.errors import ConfigError, DataError, ModelFileError
from gbdt2nn_lightgbm.plugin import make_teacher

FAST = {"n_estimators": 5, "num_leaves": 8, "num_threads": 1}


@pytest.fixture(scope="module")
def saved(adult, tmp_path_factory) -> tuple[Path, str]:
    """An adult model file written by LightGBM itself, and its text."""
    X, y = adult
    path = tmp_path_factory.mktemp("model") / "adult.txt"
    lgb.train({"objective": "binary", "verbose": -1, "num_threads": 1}, lgb.Dataset(X, y), 10).save_model(path)
    return path, path.read_text()


@pytest.fixture
def wrapped(saved):
    return make_teacher(model=saved[0])


def one_line(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text
    return text


# ---------------------------------------------------------------------------------------------- fit input
# Labels, frames and unfitted teachers are checked for every teacher by TeacherPluginTests (test_conformance.py).
def test_a_column_name_lightgbm_refuses_is_named(california) -> None:
    X, y = california
    with pytest.raises(DataError) as caught:
        make_teacher(**FAST).fit(X.rename(columns={"MedInc": "Med:Inc"}), y, task="regression")
    assert "Med:Inc" in one_line(caught.value)


@pytest.mark.parametrize(
    ("params", "task", "setting"),
    [
        ({}, "ranking", "task"),
        ({"seed": 1}, "regression", "seed"),
        ({"random_state": 1}, "regression", "random_state"),
        ({"objective": "binary"}, "regression", "objective"),
        ({"num_leaves": 8, "max_leaves": 4}, "regression", "max_leaves"),
        ({"num_class": 3}, "regression", "num_class"),
        ({"n_estimators": 0}, "regression", "n_estimators"),
        ({"num_leaves": -3}, "regression", "params"),
    ],
)
def test_bad_settings_raise_config_error(params, task, setting, california) -> None:
    X, y = california
    with pytest.raises(ConfigError) as caught:
        make_teacher(**{"num_threads": 1, **params}).fit(X, y, task=task)
    assert caught.value.setting == setting
    one_line(caught.value)


def test_save_into_a_missing_folder_raises_config_error(california, tmp_path) -> None:
    X, y = california
    teacher = make_teacher(**FAST).fit(X, y, task="regression")
    with pytest.raises(ConfigError, match="cannot write"):
        teacher.save(tmp_path / "no" / "such" / "m.txt")


# ---------------------------------------------------------------------------------------------- wrapping
def test_columns_that_do_not_match_are_named(adult, wrapped) -> None:
    X, y = adult
    with pytest.raises(DataError) as caught:
        wrapped.fit(X.drop(columns=["age"]).assign(height=1.0), y, task="binary")
    assert "missing ['age']" in caught.value.problem
    assert "unexpected ['height']" in caught.value.problem
    assert "teacher.feature_names" in caught.value.fix
    swapped = X[["workclass", "age", *X.columns[2:]]]
    with pytest.raises(DataError, match=r"reordered \(column 0 is 'workclass', the booster expects 'age'\)"):
        wrapped.fit(swapped, y, task="binary")


def test_predicting_on_reordered_columns_is_refused(adult, wrapped) -> None:
    # LightGBM itself predicts silently on columns in another order, with wrong results.
    X, y = adult
    wrapped.fit(X, y, task="binary")
    with pytest.raises(DataError, match="reordered"):
        wrapped.predict_margin(X[X.columns[::-1]])


def test_a_column_of_the_wrong_kind_is_named(adult, wrapped) -> None:
    X, y = adult
    codes = X.assign(workclass=X["workclass"].cat.codes.astype("float64"))
    with pytest.raises(DataError, match="'workclass' is numeric in X but categorical in the booster"):
        wrapped.fit(codes, y, task="binary")


@pytest.mark.parametrize("task", ["regression", "multiclass"])
def test_a_task_the_objective_does_not_solve_raises_config_error(task, adult, wrapped) -> None:
    X, y = adult
    with pytest.raises(ConfigError) as caught:
        wrapped.fit(X, y, task=task)
    assert caught.value.setting == "task"
    assert "binary" in caught.value.fix


def test_labels_outside_a_wrapped_models_classes(wine) -> None:
    X, y = wine
    model = lgb.LGBMClassifier(n_estimators=3, n_jobs=1, verbose=-1).fit(X, y)
    with pytest.raises(DataError, match="has 3 classes"):
        make_teacher(model=model).fit(X, np.where(y == 2, 5, y), task="multiclass")
    make_teacher(model=model).fit(X[y < 2], y[y < 2], task="multiclass")  # a sample without class 2 is fine


@pytest.mark.parametrize(
    ("model", "fix"),
    [
        (lgb.LGBMClassifier(), "fit the LightGBM model first"),
        (42, "pass a lightgbm.Booster"),
    ],
)
def test_unusable_models_raise_config_error(model, fix) -> None:
    with pytest.raises(ConfigError, match=fix):
        make_teacher(model=model)


def test_training_parameters_with_a_model_are_refused(saved) -> None:
    with pytest.raises(ConfigError, match="only apply with model=None"):
        make_teacher(model=saved[0], n_estimators=10)


def test_linear_trees_are_refused(california) -> None:
    X, y = california
    booster = lgb.train({"objective": "regression", "linear_tree": True, "verbose": -1}, lgb.Dataset(X, y), 3)
    with pytest.raises(ConfigError, match="linear_tree"):
        make_teacher(model=booster)


def test_ranking_boosters_are_refused(california) -> None:
    X, _ = california
    labels = np.arange(len(X)) % 3
    params = {"objective": "lambdarank", "verbose": -1, "min_data_in_leaf": 5}
    booster = lgb.train(params, lgb.Dataset(X, labels, group=[len(X) // 3] * 3), 3)
    with pytest.raises(ConfigError, match="ranking"):
        make_teacher(model=booster)


# ---------------------------------------------------------------------------------------------- model files
def test_missing_file(tmp_path) -> None:
    with pytest.raises(ModelFileError, match="no such file") as caught:
        make_teacher(model=tmp_path / "nope.txt")
    assert caught.value.path.endswith("nope.txt")


@pytest.mark.parametrize("fraction", [0.0, 0.02, 0.3, 0.6, 0.85, 0.93, 0.999])
def test_truncated_files_raise_model_file_error(fraction, saved, tmp_path) -> None:
    # LightGBM aborts the whole process on some of these cuts; the teacher must refuse them first.
    _, text = saved
    path = tmp_path / "cut.txt"
    path.write_text(text[: int(len(text) * fraction)])
    with pytest.raises(ModelFileError) as caught:
        make_teacher(model=path)
    assert one_line(caught.value).startswith(f"cannot load model from {path}")


@pytest.mark.parametrize(
    "content",
    [b"\x00\x01\x02binary", b"not a model\n", b'{"learner": {}}', b"tree\nversion=v4\nend of trees\n"],
)
def test_foreign_or_corrupt_files_raise_model_file_error(content, tmp_path) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(ModelFileError):
        make_teacher(model=path)


def test_a_damaged_tree_is_caught(saved, tmp_path) -> None:
    _, text = saved
    path = tmp_path / "damaged.txt"
    path.write_text(text.replace("\nTree=1\n", "\nTree=1\nleaf_value=1 2 3\n", 1))
    with pytest.raises(ModelFileError, match="corrupt"):
        make_teacher(model=path)


def test_a_directory_is_not_a_model(tmp_path) -> None:
    with pytest.raises(ModelFileError):
        make_teacher(model=tmp_path)


def test_a_saved_teacher_leaves_no_temporary_file(saved, adult, tmp_path) -> None:
    X, y = adult
    teacher = make_teacher(model=saved[0]).fit(X, y, task="binary")
    teacher.save(tmp_path / "copy.txt")
    teacher.save(tmp_path / "copy.txt")  # overwriting is atomic too
    assert [p.name for p in tmp_path.iterdir()] == ["copy.txt"]
    assert pd.Series(make_teacher(model=tmp_path / "copy.txt").predict_margin(X)).equals(
        pd.Series(teacher.predict_margin(X))
    )


@pytest.mark.parametrize(("misspelt", "meant"), [("num_leave", "num_leaves"), ("n_estimator", "n_estimators")])
def test_a_misspelt_option_is_an_error_with_a_suggestion(misspelt, meant) -> None:
    with pytest.raises(ConfigError) as caught:
        make_teacher(num_threads=1, **{misspelt: 4})
    message = one_line(caught.value)
    assert caught.value.setting == "teacher option"
    assert caught.value.value == misspelt
    assert f"did you mean {meant!r}?" in message
    assert "n_estimators, num_leaves, learning_rate" in message


def test_lightgbm_spellings_of_options_are_accepted(california) -> None:
    X, y = california
    # LightGBM's own parameters and aliases, beyond the few the teacher resolves itself.
    teacher = make_teacher(n_estimators=3, num_leaf=4, min_data_in_leaf=5, colsample_bytree=0.5, num_threads=1)
    booster = teacher.fit(X, y, task="regression").native_model
    dump = booster.dump_model()
    assert len(dump["tree_info"]) == 3
    assert max(tree["num_leaves"] for tree in dump["tree_info"]) <= 4
    assert booster.params["min_data_in_leaf"] == 5


# ---------------------------------------------------------------------------------------------- damaged trees
def _with_tree_sizes(text: str) -> str:
    """``text`` with its ``tree_sizes`` header recomputed, so that only the edited tree is wrong."""
    start, end = text.find("\nTree=0\n") + 1, text.find("\nend of trees\n") + 1
    blocks = re.split(r"(?=^Tree=\d+\n)", text[start:end], flags=re.MULTILINE)
    sizes = " ".join(str(len(block.encode())) for block in blocks if block)
    return re.sub(r"^tree_sizes=.*$", f"tree_sizes={sizes}", text, count=1, flags=re.MULTILINE)


def _edit_tree(text: str, key: str, edit) -> str:
    """Apply ``edit`` to the list of values of ``key`` in tree 1."""
    start = text.find("\nTree=1\n")
    line = re.compile(rf"^{key}=(.*)$", flags=re.MULTILINE).search(text, start)
    assert line, key
    values = edit(line.group(1).split(" "))
    return _with_tree_sizes(text[: line.start(1)] + " ".join(values) + text[line.end(1) :])


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        # The reported crash: feature indices past the last column, byte length unchanged (exit 134 before).
        (
            lambda t: re.sub(r"^split_feature=.*$", lambda m: re.sub(r"\d", "9", m.group(0)), t, flags=re.M),
            "split_feature",
        ),
        (lambda t: _edit_tree(t, "split_feature", lambda v: ["-1", *v[1:]]), "split_feature[0] is -1"),
        (lambda t: _edit_tree(t, "left_child", lambda v: ["4000", *v[1:]]), "left_child[0] is 4000"),
        (lambda t: _edit_tree(t, "right_child", lambda v: ["-1000", *v[1:]]), "right_child[0] is -1000"),
        (lambda t: _edit_tree(t, "left_child", lambda v: ["0", *v[1:]]), "reached twice"),
        (lambda t: _edit_tree(t, "threshold", lambda v: v[:-1]), "threshold has"),
        (lambda t: _edit_tree(t, "threshold", lambda v: ["nan", *v[1:]]), "threshold[0] is nan"),
        (lambda t: _edit_tree(t, "leaf_value", lambda v: ["inf", *v[1:]]), "leaf_value[0] is inf"),
        (lambda t: _edit_tree(t, "leaf_value", lambda v: [*v, "0.5"]), "leaf_value has"),
        (lambda t: _edit_tree(t, "num_leaves", lambda v: ["2147483648"]), "num_leaves"),
        (lambda t: _edit_tree(t, "decision_type", lambda v: ["12", *v[1:]]), "decision_type[0]"),
        (lambda t: _edit_tree(t, "decision_type", lambda v: [v[0], "1", *v[2:]]), "categorical split 1"),
        (lambda t: _edit_tree(t, "leaf_count", lambda v: ["0", *v[1:]]), "internal_count"),
        (lambda t: t.replace("\nnum_class=1\n", "\nnum_class=3\n", 1), "num_class=3"),
        (lambda t: t.replace("\nmax_feature_idx=13\n", "\nmax_feature_idx=99\n", 1), "feature_names lists 14"),
    ],
)
def test_a_damaged_tree_is_a_one_line_error_naming_the_file(damage, words, saved, tmp_path) -> None:
    _, text = saved
    path = tmp_path / "damaged.txt"
    path.write_text(damage(text))
    with pytest.raises(ModelFileError) as caught:
        make_teacher(model=path)
    message = one_line(caught.value)
    assert str(path) in message
    assert words in message


def test_inconsistent_categorical_sets_are_refused(adult, tmp_path) -> None:
    X, y = adult
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "min_data_per_group": 5, "cat_smooth": 1}
    text = lgb.train(params, lgb.Dataset(X, y), 10).model_to_string()
    assert "cat_boundaries=" in text
    damaged = re.sub(r"^cat_boundaries=0 ", "cat_boundaries=1 ", text, count=1, flags=re.MULTILINE)
    path = tmp_path / "damaged.txt"
    path.write_text(_with_tree_sizes(damaged))
    with pytest.raises(ModelFileError, match="cat_boundaries"):
        make_teacher(model=path)
