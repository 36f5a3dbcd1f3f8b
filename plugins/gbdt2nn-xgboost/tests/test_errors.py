"""One-line gbdt2nn errors for bad data, mismatched boosters and damaged model files."""

from __future__ import annotations

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
