"""Saving and loading students: identical predictions on raw rows, one-line errors for broken files, no pickle."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from gbdt2nn_core.errors import ModelFileError
from gbdt2nn_core.pipeline.distill import DistillRun
from gbdt2nn_core.pipeline.persistence import FORMAT_VERSION, DistilledModel, load_model, save_model

TARGET = "income_gt_50k"


@pytest.fixture
def model(adult_run: DistillRun) -> DistilledModel:
    """The session's trained student wrapped with its encoder and labels."""
    return DistilledModel(
        student=adult_run.student,
        encoder=adult_run.data.encoder,
        target=adult_run.data.target,
        metadata={"teacher": "lightgbm"},
    )


@pytest.fixture
def saved(model: DistilledModel, tmp_path: Path) -> Path:
    """A folder holding the saved student."""
    folder = tmp_path / "model"
    folder.mkdir()
    save_model(folder, model)
    return folder


@pytest.fixture
def raw_rows(adult_small: pd.DataFrame) -> pd.DataFrame:
    """300 raw adult rows as a user has them (strings and integers), without the target."""
    return adult_small.drop(columns=[TARGET]).head(300)


def test_save_writes_two_files(saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == ["student.json", "student.safetensors"]
    metadata = json.loads((saved / "student.json").read_text())
    assert metadata["format_version"] == FORMAT_VERSION
    assert metadata["task"] == "binary"


def test_loaded_model_gives_identical_margins_on_raw_rows(
    adult_run: DistillRun, saved: Path, raw_rows: pd.DataFrame
) -> None:
    loaded = load_model(saved)

    data = adult_run.data
    expected = adult_run.student.predict_margin(data.encoder.transform(data.schema.to_frame(raw_rows)))
    np.testing.assert_array_equal(loaded.predict_margin(raw_rows), expected)
    np.testing.assert_array_equal(
        loaded.student.predict_margin(data.z_test), adult_run.student.predict_margin(data.z_test)
    )
    assert loaded.task == "binary"
    assert loaded.metadata["teacher"] == "lightgbm"


def test_loaded_model_predicts_labels_and_probabilities(saved: Path, raw_rows: pd.DataFrame) -> None:
    loaded = load_model(str(saved))  # a str path works as well
    margin = loaded.predict_margin(raw_rows)
    probability = loaded.predict_proba(raw_rows)
    assert probability.shape == (300, 2)
    # calibrated: the margins divided by the temperature saved in student.json
    temperature = json.loads((Path(saved) / "student.json").read_text())["student_state"]["calibration"]["temperature"]
    assert temperature > 0
    np.testing.assert_allclose(probability[:, 1], 1 / (1 + np.exp(-margin.astype(np.float64) / temperature)), rtol=1e-6)
    np.testing.assert_allclose(probability.sum(axis=1), 1.0, rtol=1e-6)
    labels = loaded.predict(raw_rows)
    assert set(labels.tolist()) <= {0, 1}
    np.testing.assert_array_equal(labels, (margin >= 0).astype(int))


def test_raw_rows_in_another_column_order_or_as_an_array(saved: Path, raw_rows: pd.DataFrame) -> None:
    loaded = load_model(saved)
    expected = loaded.predict_margin(raw_rows)
    np.testing.assert_array_equal(loaded.predict_margin(raw_rows[raw_rows.columns[::-1]]), expected)
    np.testing.assert_array_equal(loaded.predict_margin(raw_rows.to_numpy(dtype=object)), expected)


def test_loading_uses_no_pickle(saved: Path, raw_rows: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = load_model(saved).predict_margin(raw_rows)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle was used to load a model")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    monkeypatch.setattr(np, "load", forbidden)
    np.testing.assert_array_equal(load_model(saved).predict_margin(raw_rows), expected)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _edit_json(change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    """Damage ``student.json`` by changing its parsed content in place."""

    def apply(folder: Path) -> None:
        metadata = json.loads((folder / "student.json").read_text())
        change(metadata)
        (folder / "student.json").write_text(json.dumps(metadata))

    return apply


def _newer(metadata: dict[str, Any]) -> None:
    metadata["format_version"] = FORMAT_VERSION + 1


def _no_format(metadata: dict[str, Any]) -> None:
    del metadata["format_version"]


def _other_hidden_sizes(metadata: dict[str, Any]) -> None:
    metadata["student_state"]["architecture"]["hidden"] = [3, 3]


def _config_as_list(metadata: dict[str, Any]) -> None:
    metadata["student_options"] = []


def _no_config(metadata: dict[str, Any]) -> None:
    del metadata["student_options"]


def _json_list(folder: Path) -> None:
    metadata = json.loads((folder / "student.json").read_text())
    (folder / "student.json").write_text(json.dumps([metadata]))


BREAKAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated-weights": (lambda f: _truncate(f / "student.safetensors"), "corrupt or truncated"),
    "garbage-weights": (lambda f: (f / "student.safetensors").write_bytes(b"\x00" * 5), "corrupt or truncated"),
    "empty-weights": (lambda f: (f / "student.safetensors").write_bytes(b""), "corrupt or truncated"),
    "truncated-json": (lambda f: _truncate(f / "student.json"), "corrupt"),
    "binary-json": (lambda f: (f / "student.json").write_bytes(b"\xff\xfe\x00\x01"), "corrupt"),
    "missing-weights": (lambda f: (f / "student.safetensors").unlink(), "missing"),
    "missing-json": (lambda f: (f / "student.json").unlink(), "missing"),
    "newer-format": (_edit_json(_newer), "newer than this gbdt2nn"),
    "no-format": (_edit_json(_no_format), "no format version"),
    "json-not-an-object": (_json_list, "no format version"),
    "wrong-architecture": (_edit_json(_other_hidden_sizes), "do not fit together"),
    "wrong-config-type": (_edit_json(_config_as_list), "do not fit together"),
    "config-missing": (_edit_json(_no_config), "do not fit together"),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_model_files_give_one_line_errors(saved: Path, breakage: str) -> None:
    damage, problem = BREAKAGES[breakage]
    damage(saved)
    with pytest.raises(ModelFileError) as info:
        load_model(saved)
    message = str(info.value)
    assert "\n" not in message
    assert problem in message
    assert info.value.path == str(saved)
    assert message.startswith(f"cannot load model from {saved}")


def test_weights_of_another_model_are_refused(saved: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"mlp.last.weight": torch.zeros(2, 2)}, str(saved / "student.safetensors"))
    with pytest.raises(ModelFileError, match="do not fit together"):
        load_model(saved)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match="missing"):
        load_model(tmp_path / "nowhere")
