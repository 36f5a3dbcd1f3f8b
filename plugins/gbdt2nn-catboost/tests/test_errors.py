"""One-line gbdt2nn errors for damaged or foreign model files, unusable models and mismatched data.

(Bad labels, bad frames, unknown tasks and unfitted teachers are checked by ``TeacherPluginTests``.)
"""

from __future__ import annotations

from pathlib import Path

import catboost as cb
import numpy as np
import pandas as pd
import pytest
from gbdt2nn_catboost.plugin import make_teacher, sniff

from gbdt2nn_core.errors import ConfigError, DataError, ModelFileError

FAST = {"n_estimators": 5, "depth": 3, "threads": 1}
FIX = "save the model again (CatBoost.save_model or teacher.save), or pass model=None to train a new one"


@pytest.fixture(scope="module")
def saved(adult, tmp_path_factory) -> tuple[Path, bytes]:
    """An adult model file written by the teacher, and its bytes."""
    X, y = adult
    path = tmp_path_factory.mktemp("model") / "adult.cbm"
    make_teacher(**FAST).fit(X, y, task="binary").save(path)
    return path, path.read_bytes()


def one_line(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text
    return text


def _load(data: bytes, tmp_path: Path) -> ModelFileError:
    path = tmp_path / "bad.cbm"
    path.write_bytes(data)
    with pytest.raises(ModelFileError) as caught:
        make_teacher(model=path)
    message = one_line(caught.value)
    assert message.startswith(f"cannot load model from {path}: ")
    assert message.endswith(FIX)
    return caught.value


# ---------------------------------------------------------------------------------------------- model files
def test_missing_file(tmp_path) -> None:
    with pytest.raises(ModelFileError, match="no such file"):
        make_teacher(model=tmp_path / "nowhere.cbm")


@pytest.mark.parametrize(("content", "words"), [(b"", "empty"), (b"tree\nversion=v4\n", "start with 'CBM1'")])
def test_foreign_files_are_refused_before_catboost_sees_them(content, words, tmp_path) -> None:
    assert words in _load(content, tmp_path).problem


@pytest.mark.parametrize("fraction", [0.01, 0.3, 0.7, 0.99])
def test_truncated_files_raise_model_file_error(fraction, saved, tmp_path) -> None:
    _, data = saved
    # A file cut just before its end makes CatBoost itself segfault (in the child process, reported as such).
    assert "CatBoost" in _load(data[: int(len(data) * fraction)], tmp_path).problem


def test_a_nan_leaf_value_is_refused(saved, tmp_path) -> None:
    path, data = saved
    leaf = np.asarray(make_teacher(model=path).native_model.get_leaf_values()[:1], "<f8").tobytes()
    assert leaf in data
    error = _load(data.replace(leaf, np.array(np.nan, "<f8").tobytes(), 1), tmp_path)
    assert "not a readable CatBoost model" in error.problem


def test_a_file_that_crashes_catboost_is_refused_without_crashing(saved, tmp_path) -> None:
    # Depths of 64 levels in every tree: CatBoost reads far past its arrays. The child process takes the hit.
    _, data = saved
    depths = np.full(FAST["n_estimators"], FAST["depth"], "<i4").tobytes()
    assert depths in data
    error = _load(data.replace(depths, np.full(FAST["n_estimators"], 64, "<i4").tobytes(), 1), tmp_path)
    assert error.problem.startswith(("corrupt", "not a readable CatBoost model"))


def test_sniff_knows_cbm_files(saved) -> None:
    _, data = saved
    assert sniff(data[:16])
    assert not sniff(b"tree\nversion=v4\n")
    assert not sniff(b'{"learner": {}}')


# ---------------------------------------------------------------------------------------------- models
def test_an_unfitted_model_is_refused() -> None:
    with pytest.raises(ConfigError, match="fit the CatBoost model first"):
        make_teacher(model=cb.CatBoostClassifier())


def test_an_unsupported_loss_is_refused(california) -> None:
    X, y = california
    model = cb.CatBoostRegressor(
        iterations=3, loss_function="RMSEWithUncertainty", thread_count=1, verbose=False, allow_writing_files=False
    ).fit(X, y)
    with pytest.raises(ConfigError, match="RMSEWithUncertainty") as caught:
        make_teacher(model=model)
    one_line(caught.value)


def test_a_task_the_loss_does_not_solve_is_refused(saved, adult) -> None:
    X, y = adult
    with pytest.raises(ConfigError, match="solves binary"):
        make_teacher(model=saved[0]).fit(X, y, task="regression")


def test_training_options_with_a_model_are_refused(saved) -> None:
    with pytest.raises(ConfigError):
        make_teacher(model=saved[0], depth=4)


def test_a_column_of_the_wrong_kind_is_named(saved, adult) -> None:
    X, y = adult
    numeric = X.assign(workclass=X["workclass"].cat.codes.astype("float64"))
    with pytest.raises(DataError, match="workclass") as caught:
        make_teacher(model=saved[0]).fit(numeric, y, task="binary")
    one_line(caught.value)


def test_columns_that_do_not_match_are_named(saved, adult) -> None:
    X, y = adult
    with pytest.raises(DataError, match="years"):
        make_teacher(model=saved[0]).fit(X.rename(columns={"age": "years"}), y, task="binary")


def test_a_wrong_loss_for_the_task_is_refused(adult) -> None:
    X, y = adult
    with pytest.raises(ConfigError, match="choose a binary loss"):
        make_teacher(loss_function="MultiClass", **FAST).fit(X, y, task="binary")


def test_options_catboost_refuses_are_one_line_errors(adult) -> None:
    X, y = adult
    with pytest.raises(ConfigError, match="CatBoost refused them") as caught:
        make_teacher(n_estimators=3, depth=40, threads=1).fit(X, y, task="binary")
    one_line(caught.value)


def test_unseen_categories_predict_like_catboost(saved, adult) -> None:
    X, y = adult
    teacher = make_teacher(model=saved[0]).fit(X, y, task="binary")
    unseen = X.head(5).copy()
    unseen["workclass"] = pd.Categorical(["Astronaut"] * 5)
    margins = teacher.predict_margin(unseen)
    assert np.isfinite(margins).all()
