"""Every predict path of a GBDT2NN student serves through the lookup first layer, and equals the dense path.

The reference is the same student with the lookup off (``use_lookup(None)``), fed the encoder's dense encoding:
the one-hot blocks multiplied by the first layer's weights, as before the lookup existed. Rows hold missing numbers,
missing categories and categories never seen in training. While the lookup serves, ``InputEncoder.transform`` (the
only writer of the dense one-hot) is made to fail, so a passing test also shows that no dense encoding was built.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from gbdt2nn_core import GBDT2NNClassifier, GBDT2NNRegressor
from gbdt2nn_core.data import load_bundled
from gbdt2nn_core.data.encoding import InputEncoder
from gbdt2nn_core.host.interfaces import Student, StudentInputs
from gbdt2nn_core.host.registry import Registry
from gbdt2nn_core.pipeline.margins import enable_lookup, frame_margins
from gbdt2nn_core.pipeline.persistence import load_model

pytestmark = pytest.mark.usefixtures("single_thread_torch")

SMALL: dict[str, Any] = {
    "teacher_options": {"n_estimators": 10, "num_leaves": 15, "num_threads": 1},
    "student_options": {"n_groups": 4, "hidden": (16, 16), "batch_size": 128},
    "epochs": 2,
    "cache_dir": False,
}


def _rows(n: int, seed: int) -> pd.DataFrame:
    """Adult rows with missing ages and workclasses."""
    frame = load_bundled("adult").frame.sample(n, random_state=seed).reset_index(drop=True)
    rng = np.random.default_rng(seed)
    frame["age"] = frame["age"].astype(float).where(rng.random(n) > 0.1)
    frame["workclass"] = frame["workclass"].where(rng.random(n) > 0.1)
    return frame


def _with_unseen(frame: pd.DataFrame) -> pd.DataFrame:
    unseen = frame.copy()
    unseen.loc[::7, "workclass"] = "never-seen-in-training"
    return unseen


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    return _rows(1200, 0), _with_unseen(_rows(700, 1))


def _dense_margin(student: Student, encoder: InputEncoder, frame: pd.DataFrame) -> np.ndarray:
    """The reference: a copy of the student without the lookup, on the whole dense encoding in one batch."""
    dense = copy.deepcopy(student)
    assert dense.use_lookup(None) is False
    assert not dense.lookup_enabled
    return dense.predict_margin(encoder.transform(frame), batch_size=len(frame))


def _fitted(kind: str, frame: pd.DataFrame) -> GBDT2NNClassifier | GBDT2NNRegressor:
    X = frame.drop(columns="income_gt_50k")
    if kind == "regression":
        return GBDT2NNRegressor(**SMALL).fit(X.drop(columns="hours-per-week"), X["hours-per-week"])
    if kind == "multiclass":
        y = pd.Series(np.digitize(X["hours-per-week"], [35, 45]))
        return GBDT2NNClassifier(**SMALL).fit(X.drop(columns="hours-per-week"), y)
    return GBDT2NNClassifier(**SMALL).fit(X, frame["income_gt_50k"])


def _features(estimator: Any, frame: pd.DataFrame) -> pd.DataFrame:
    return frame[list(estimator.feature_names_)]


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_estimator_predictions_come_from_the_lookup_and_equal_the_dense_path(
    kind: str, data: tuple[pd.DataFrame, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    train, test = data
    estimator = _fitted(kind, train)
    X = _features(estimator, test)
    teacher_frame = estimator._teacher_frame(X)
    reference = _dense_margin(estimator.student_, estimator.encoder_, teacher_frame)
    assert estimator.student_.lookup_enabled
    with monkeypatch.context() as patch:
        patch.setattr(InputEncoder, "transform", _refuse)
        margin = estimator.predict_margin(X)
        outputs = {"predict": estimator.predict(X)}
        if kind != "regression":
            outputs["proba"] = estimator.predict_proba(X)
            outputs["decision"] = estimator.decision_function(X)
    np.testing.assert_allclose(margin, reference, atol=1e-5, rtol=1e-5)
    if kind == "regression":
        np.testing.assert_allclose(outputs["predict"], reference, atol=1e-5, rtol=1e-5)
        return
    np.testing.assert_allclose(outputs["decision"], reference, atol=1e-5, rtol=1e-5)
    logits = reference if reference.ndim == 2 else np.stack([np.zeros_like(reference), reference], axis=1)
    logits = logits / estimator.student_.temperature  # probabilities are calibrated (temperature scaling)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(outputs["proba"], expected, atol=1e-5)
    confident = np.abs(expected[:, :, None] - expected[:, None, :]).max(axis=(1, 2)) > 1e-4  # no near-ties
    chosen = np.asarray(estimator.classes_)[expected.argmax(axis=1)]
    np.testing.assert_array_equal(outputs["predict"][confident], chosen[confident])


def _refuse(self: InputEncoder, frame: pd.DataFrame) -> np.ndarray:
    raise AssertionError("the dense encoding was built on a lookup path")


def test_a_reloaded_run_folder_serves_through_the_lookup(
    data: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gbdt2nn_core.cli.predict_cmd import predictions

    train, test = data
    estimator = _fitted("binary", train)
    folder = estimator.save(tmp_path / "run")
    X = _features(estimator, test)
    reference = _dense_margin(estimator.student_, estimator.encoder_, estimator._teacher_frame(X))
    loaded = GBDT2NNClassifier.load(folder)
    model = load_model(folder)
    assert loaded.student_.lookup_enabled
    assert model.student.lookup_enabled
    with monkeypatch.context() as patch:
        patch.setattr(InputEncoder, "transform", _refuse)
        from_estimator = loaded.predict_margin(X)
        from_model = model.predict_margin(X)  # what `gbdt2nn predict` calls
        table = predictions(model, X)
    np.testing.assert_allclose(from_estimator, reference, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(from_model, reference, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(table["margin"], reference, atol=1e-5, rtol=1e-5)


def test_chunks_give_the_same_margins_as_one_batch(fitted_binary: GBDT2NNClassifier, test_rows: pd.DataFrame) -> None:
    frame = fitted_binary._teacher_frame(_features(fitted_binary, test_rows))
    student, encoder = fitted_binary.student_, fitted_binary.encoder_
    whole = frame_margins(student, encoder, frame, chunk_rows=len(frame))
    np.testing.assert_allclose(frame_margins(student, encoder, frame, chunk_rows=97), whole, atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(frame_margins(student, encoder, frame, chunk_rows=1), whole, atol=1e-6, rtol=1e-6)
    assert frame_margins(student, encoder, frame.iloc[:0]).shape == (0,)


def test_a_student_without_the_lookup_gets_the_dense_encoding(
    fitted_binary: GBDT2NNClassifier, test_rows: pd.DataFrame
) -> None:
    frame = fitted_binary._teacher_frame(_features(fitted_binary, test_rows))
    dense = copy.deepcopy(fitted_binary.student_)
    dense.use_lookup(None)
    calls: list[int] = []

    class DenseOnly(Student):  # the contract's defaults: no lookup capability
        fit = options = state = load_state = None  # type: ignore[assignment]
        module = dense.module  # type: ignore[assignment]
        n_outputs = 1  # type: ignore[assignment]
        history = {}  # type: ignore[assignment]  # noqa: RUF012

        def predict_margin(self, z: np.ndarray, batch_size: int = 2048) -> np.ndarray:
            calls.append(len(z))
            return super().predict_margin(z, batch_size)

    DenseOnly.__abstractmethods__ = frozenset()
    student = DenseOnly()
    assert enable_lookup(student, fitted_binary.encoder_) is False
    margin = frame_margins(student, fitted_binary.encoder_, frame, chunk_rows=256)
    assert calls == [256, 256, len(frame) - 512]
    np.testing.assert_allclose(margin, _dense_margin(fitted_binary.student_, fitted_binary.encoder_, frame), atol=1e-5)


@pytest.fixture(scope="module")
def fitted_binary(data: tuple[pd.DataFrame, pd.DataFrame]) -> GBDT2NNClassifier:
    estimator = _fitted("binary", data[0])
    assert isinstance(estimator, GBDT2NNClassifier)
    return estimator


@pytest.fixture(scope="module")
def test_rows(data: tuple[pd.DataFrame, pd.DataFrame]) -> pd.DataFrame:
    return data[1]


def _student_inputs(student_inputs: Any, frame: pd.DataFrame) -> tuple[StudentInputs, InputEncoder]:
    from gbdt2nn_core.data import TabularSchema, TargetEncoder
    from gbdt2nn_core.data.encoding import teacher_thresholds

    features = frame.drop(columns="income_gt_50k")
    schema = TabularSchema.infer(features)
    X = schema.to_frame(features)
    y = TargetEncoder.fit(frame["income_gt_50k"], "binary").transform(frame["income_gt_50k"])
    teacher = Registry().teacher("lightgbm", n_estimators=10, num_leaves=15, num_threads=1)
    teacher.fit(X, y, task="binary", seed=0)
    ensemble = teacher.structure()
    encoder = InputEncoder.fit(
        X, schema, thresholds=teacher_thresholds(ensemble, schema, 64), split_rule=ensemble.split_rule
    )
    inputs = student_inputs(
        teacher, encoder, X, np.asarray(y), "binary", margin=teacher.predict_margin(X), background_rows=100
    )
    return inputs, encoder


def test_training_with_the_lookup_gives_the_same_gradients_and_weights(
    student_inputs: Any, data: tuple[pd.DataFrame, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lookup in training's forward changes rounding only.

    Gradients of a training batch agree to 1e-5, and so do the margins after an epoch of AdamW. The weights agree
    to 1e-5 except where a weight's true gradient is zero and both paths compute rounding noise (~1e-10), which
    AdamW's normalisation turns into steps of up to the learning rate: the hidden layers' biases (the batch norm
    after each subtracts them again) and first-layer rows of a column constant within a batch (a category absent
    from it; under 1 % of the first layer, within 1e-4).
    """
    import torch

    from gbdt2nn_core.student import GBDT2NNModule

    inputs, encoder = _student_inputs(student_inputs, data[0])
    # the rate fixed: the noise steps below are bounded by it (an "auto" rate is 3e-3 at 128-row batches)
    options = {"seed": 0, "epochs": 1, "batch_size": 128, "lr": 1e-3, "n_groups": 4, "hidden": (16, 8)}
    dense: Any = Registry().student("gbdt2nn", **options)
    dense.fit(inputs)
    lookups: list[int] = []
    original = GBDT2NNModule.lookup_first_layer

    def counted(self: GBDT2NNModule, *args: Any, **kwargs: Any) -> Any:
        lookups.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GBDT2NNModule, "lookup_first_layer", counted)
    with_lookup: Any = Registry().student("gbdt2nn", **options)
    assert with_lookup.use_lookup(encoder.onehot_blocks()) is True
    with_lookup.fit(inputs)
    assert len(lookups) >= len(inputs.z) // 128  # every training batch's forward took the lookup

    # one training batch through the trained network, both ways
    module = copy.deepcopy(dense.module).train()
    z = torch.as_tensor(inputs.z[:128])
    gradients = []
    before = len(lookups)
    for blocks in (None, encoder.onehot_blocks()):
        module.use_lookup(blocks)
        module.zero_grad()
        (module(z) ** 2).mean().backward()
        gradients.append({name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None})
    assert len(lookups) == before + 1  # the second pass took the lookup
    assert gradients[1].keys() == gradients[0].keys()
    for name, gradient in gradients[0].items():
        np.testing.assert_allclose(gradients[1][name].numpy(), gradient.numpy(), atol=1e-5, rtol=1e-5, err_msg=name)

    dense_state, lookup_state = dense.module.state_dict(), with_lookup.module.state_dict()
    assert dense_state.keys() == lookup_state.keys()
    for name, tensor in dense_state.items():
        # a hidden layer's bias has no gradient at all (the batch norm after it subtracts it again), so both paths
        # take noise steps there, and the running means follow; the margins below show they cancel
        if (
            not (name.startswith("mlp.hidden.") and name.endswith(".bias"))
            and not name.endswith("running_mean")
            and name != "mlp.hidden.0.weight"
        ):
            np.testing.assert_allclose(lookup_state[name].numpy(), tensor.numpy(), atol=1e-5, rtol=1e-5, err_msg=name)
    first = np.abs(lookup_state["mlp.hidden.0.weight"].numpy() - dense_state["mlp.hidden.0.weight"].numpy())
    assert first.max() <= 1e-4
    assert (first > 1e-5).mean() < 0.01
    rows = inputs.z[-300:]
    # within what those noise steps and the first layer's 1e-4 allow: 2.8e-5 seen on one machine's kernels
    np.testing.assert_allclose(with_lookup.predict_margin(rows), dense.predict_margin(rows), atol=1e-4, rtol=1e-5)


def test_slots_found_once_train_the_same_student_as_slots_checked_per_batch(
    student_inputs: Any, data: tuple[pd.DataFrame, pd.DataFrame], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fit finds its rows' lookup slots once; a fit that checks every batch instead (``rows_slots`` declining)
    computes the same forward passes, so it ends with the same weights to the last bit."""
    import torch

    from gbdt2nn_core.student import GBDT2NNModule

    inputs, encoder = _student_inputs(student_inputs, data[0])
    options = {"seed": 0, "epochs": 2, "batch_size": 128, "n_groups": 4, "hidden": (16, 8)}
    found: list[torch.Tensor | None] = []
    original = GBDT2NNModule.rows_slots

    def recorded(self: GBDT2NNModule, *args: Any, **kwargs: Any) -> Any:
        found.append(original(self, *args, **kwargs))
        return found[-1]

    monkeypatch.setattr(GBDT2NNModule, "rows_slots", recorded)
    once: Any = Registry().student("gbdt2nn", **options)
    assert once.use_lookup(encoder.onehot_blocks()) is True
    once.fit(inputs)
    assert found
    assert found[-1] is not None
    assert len(found[-1]) == len(inputs.z)
    monkeypatch.setattr(GBDT2NNModule, "rows_slots", lambda self, *args, **kwargs: None)
    per_batch: Any = Registry().student("gbdt2nn", **options)
    per_batch.use_lookup(encoder.onehot_blocks())
    per_batch.fit(inputs)
    for name, tensor in per_batch.module.state_dict().items():
        torch.testing.assert_close(once.module.state_dict()[name], tensor, atol=0, rtol=0, msg=name)


def test_serving_follows_weights_changed_after_a_prediction(
    fitted_binary: GBDT2NNClassifier, test_rows: pd.DataFrame
) -> None:
    """The lookup tables and folded layers are reused between chunks and calls, never after the weights change."""
    import torch

    estimator = copy.deepcopy(fitted_binary)
    frame = estimator._teacher_frame(_features(estimator, test_rows))
    student, encoder = estimator.student_, estimator.encoder_
    before = frame_margins(student, encoder, frame)
    module = student.module
    with torch.no_grad():
        module.mlp.hidden[0].weight.mul_(0.5)  # the first layer: the lookup table
        module.mlp.norms[1].norm.running_var.mul_(2.0)  # a folded batch norm
    changed = frame_margins(student, encoder, frame)
    assert np.abs(changed - before).max() > 1e-3
    np.testing.assert_allclose(changed, _dense_margin(student, encoder, frame), atol=1e-5, rtol=1e-5)
    estimator.partial_fit(_features(estimator, test_rows), test_rows["income_gt_50k"])  # an online update
    np.testing.assert_allclose(
        estimator.predict_margin(_features(estimator, test_rows)),
        _dense_margin(estimator.student_, encoder, frame),
        atol=1e-5,
        rtol=1e-5,
    )
