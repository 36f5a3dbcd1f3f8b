"""The ``mlp`` student against the core alone: its options, training (plain and aligned), saving and its contract.

A LightGBM model trained here directly is the teacher: its margins are what the student distils, and its native
TreeSHAP (``pred_contrib``) is both the alignment target and the independent reference for agreement.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
import torch
from gbdt2nn_mlp import MLPConfig, MLPStudent
from sklearn import metrics as skm

from gbdt2nn_core import Attributor, Student, get_registry
from gbdt2nn_core.data import TabularSchema, TargetEncoder, load_bundled, split_features_target
from gbdt2nn_core.data.encoding import InputEncoder
from gbdt2nn_core.errors import ConfigError, NotFittedError
from gbdt2nn_core.host.attribution import MarginModel, check_encoded_rows, input_gradients
from gbdt2nn_core.host.interfaces import OnlineUpdate, StudentInputs
from gbdt2nn_core.kit.alignment import Alignment
from gbdt2nn_core.pipeline.metrics import agreement
from gbdt2nn_core.pipeline.persistence import DistilledModel, load_model, save_model

OPTIONS: dict[str, Any] = {"hidden": (32, 32), "epochs": 6, "batch_size": 128}


class _GradientXInput(Attributor):
    """``z ⊙ ∂f/∂z``, written here so that the test needs no attributor plugin."""

    def attribute(self, model: MarginModel, z: torch.Tensor, *, create_graph: bool = False) -> torch.Tensor:
        z = check_encoded_rows(z)
        grads = input_gradients(model, z, create_graph=create_graph)
        values = grads * (z if grads.ndim == 2 else z[:, None, :])
        return values if create_graph else values.detach()


class _Teacher:
    """The part of a teacher a student may rely on beyond its margins: a fingerprint (checkpoint keys)."""

    def fingerprint(self) -> str:
        return "lightgbm-test-teacher"


@attrs.frozen
class Data:
    inputs: StudentInputs
    z_test: np.ndarray
    y_test: np.ndarray
    shap_train: np.ndarray
    shap_test: np.ndarray
    teacher_auc: float
    encoder: InputEncoder
    target: TargetEncoder


@pytest.fixture(scope="module")
def data() -> Data:
    import lightgbm as lgb

    frame = load_bundled("adult").frame.sample(2400, random_state=0).reset_index(drop=True)
    features, labels = split_features_target(frame, "income_gt_50k")
    schema = TabularSchema.infer(features)
    rows = schema.to_frame(features)
    target = TargetEncoder.fit(labels, "binary")
    y = np.asarray(target.transform(labels))
    train, test = slice(0, 2000), slice(2000, None)
    booster = lgb.LGBMClassifier(n_estimators=20, num_leaves=15, num_threads=1, verbose=-1)
    booster.fit(rows[train], y[train])
    margin = booster.predict(rows, raw_score=True)
    shap = booster.predict(rows, pred_contrib=True)[:, :-1]  # LightGBM's own TreeSHAP, one column per feature
    encoder = InputEncoder.fit(rows[train], schema)
    z = encoder.transform(rows)
    inputs = StudentInputs(
        teacher=_Teacher(),  # type: ignore[arg-type]
        z=z[train],
        y=y[train],
        task="binary",
        leaves=np.zeros((2000, 0), dtype=np.int32),
        teacher_margin=margin[train],
        column_of=encoder.column_of,
        aggregation=encoder.aggregation(),
        background=z[train][:256],
    )
    return Data(
        inputs=inputs,
        z_test=z[test],
        y_test=y[test],
        shap_train=shap[train],
        shap_test=shap[test],
        teacher_auc=float(skm.roc_auc_score(y[test], margin[test])),
        encoder=encoder,
        target=target,
    )


def _aligned(data: Data, weight: float = 10.0) -> StudentInputs:
    alignment = Alignment(
        attributor=_GradientXInput(),
        loss=torch.nn.functional.mse_loss,
        teacher_attributions=data.shap_train,
        weight=weight,
    )
    return attrs.evolve(data.inputs, alignment=alignment)


@pytest.fixture(scope="module")
def plain(data: Data) -> MLPStudent:
    return MLPStudent(**OPTIONS).fit(data.inputs)


@pytest.fixture(scope="module")
def aligned(data: Data) -> MLPStudent:
    return MLPStudent(**OPTIONS).fit(_aligned(data))


def _explain(student: MLPStudent, data: Data) -> np.ndarray:
    attributor = _GradientXInput()
    return student.attributions(data.z_test, attributor, data.encoder.aggregation())


# ------------------------------------------------------------------------------------------------ options
def test_an_unknown_option_suggests_the_closest_name() -> None:
    with pytest.raises(ConfigError) as info:
        MLPStudent(hiden=(8,))
    assert info.value.setting == "student option"
    assert "did you mean 'hidden'?" in info.value.message()


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"hidden": (8, 0)}, "hidden"),
        ({"dropout": 1.0}, "dropout"),
        ({"batch_norm": "yes"}, "batch_norm"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": 1}, "batch_size"),  # BatchNorm cannot train on one row
        ({"lr": float("nan")}, "lr"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"teacher_weight": 1.5}, "teacher_weight"),
        ({"seed": -1}, "seed"),
    ],
)
def test_nonsense_options_name_the_setting(options: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        MLPStudent(**options)
    assert info.value.setting == setting


def test_the_registry_builds_it_by_name() -> None:
    student = get_registry().student("mlp", hidden=[16], seed=3)
    assert isinstance(student, MLPStudent)
    assert isinstance(student, Student)
    assert student.config == MLPConfig(hidden=(16,), seed=3)
    assert MLPStudent(**student.options()).config == student.config  # options() builds it again


# ------------------------------------------------------------------------------------------------ training
def test_plain_and_aligned_students_beat_a_constant_predictor(
    data: Data, plain: MLPStudent, aligned: MLPStudent
) -> None:
    constant = np.full(len(data.y_test), data.inputs.y.mean())
    constant_logloss = skm.log_loss(data.y_test, constant)
    for student in (plain, aligned):
        margin = student.predict_margin(data.z_test)
        assert margin.shape == (len(data.y_test),)
        assert skm.roc_auc_score(data.y_test, margin) > 0.8  # a constant is at 0.5; the teacher near 0.9
        assert skm.log_loss(data.y_test, 1 / (1 + np.exp(-margin))) < constant_logloss - 0.05
    assert data.teacher_auc > 0.85


def test_the_aligned_student_agrees_better_with_treeshap(data: Data, plain: MLPStudent, aligned: MLPStudent) -> None:
    before = agreement(_explain(plain, data), data.shap_test)
    after = agreement(_explain(aligned, data), data.shap_test)
    assert after["spearman"] > before["spearman"] + 0.05, (before, after)
    assert after["cosine"] > before["cosine"] + 0.05, (before, after)
    assert aligned.history["epochs"][0]["alignment_loss"] > 0
    assert plain.history["epochs"][0]["alignment_loss"] is None


def test_a_diverging_fit_stops_with_a_training_error(data: Data) -> None:
    from gbdt2nn_core.errors import TrainingError

    with pytest.raises(TrainingError, match="lower the learning rate"):
        MLPStudent(**{**OPTIONS, "lr": 1e308}).fit(data.inputs)


def test_fitting_twice_with_one_seed_gives_the_same_network(data: Data, plain: MLPStudent) -> None:
    again = MLPStudent(**OPTIONS).fit(data.inputs)
    np.testing.assert_array_equal(again.predict_margin(data.z_test), plain.predict_margin(data.z_test))


def test_an_interrupted_fit_resumes_from_its_checkpoint(data: Data, plain: MLPStudent, tmp_path: Path) -> None:
    class Killed(Exception):
        pass

    def kill(_student: Any, epoch: int) -> None:
        if epoch == 2:
            raise Killed

    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(Killed):
        MLPStudent(**OPTIONS).fit(attrs.evolve(data.inputs, on_epoch_end=kill, checkpoint=checkpoint))
    resumed = MLPStudent(**OPTIONS).fit(attrs.evolve(data.inputs, checkpoint=checkpoint))
    assert [r["epoch"] for r in resumed.history["epochs"]] == list(range(OPTIONS["epochs"]))
    np.testing.assert_array_equal(resumed.predict_margin(data.z_test), plain.predict_margin(data.z_test))


# ------------------------------------------------------------------------------------------------ contract
def test_save_then_load_gives_identical_margins(data: Data, aligned: MLPStudent, tmp_path: Path) -> None:
    model = DistilledModel(
        student=aligned, encoder=data.encoder, target=data.target, student_name="mlp", background=data.inputs.background
    )
    save_model(tmp_path, model)
    loaded = load_model(tmp_path)
    assert isinstance(loaded.student, MLPStudent)
    assert loaded.student.config == aligned.config
    np.testing.assert_array_equal(loaded.student.predict_margin(data.z_test), aligned.predict_margin(data.z_test))


def test_an_unfitted_student_says_so() -> None:
    with pytest.raises(NotFittedError):
        MLPStudent().predict_margin(np.zeros((2, 3), dtype=np.float32))


def test_online_updates_are_refused_with_a_clear_error(data: Data, plain: MLPStudent) -> None:
    assert not plain.supports_online
    optimizer = torch.optim.AdamW(plain.module.parameters())
    with pytest.raises(ConfigError, match="does not support online updates"):
        plain.partial_fit(OnlineUpdate(z=data.z_test, y=data.y_test, task="binary", optimizer=optimizer))


def test_a_multiclass_teacher_gives_one_output_per_class(data: Data) -> None:
    rng = np.random.default_rng(0)
    margin = rng.normal(size=(len(data.inputs.z), 3))
    inputs = attrs.evolve(data.inputs, task="multiclass", y=margin.argmax(axis=1), teacher_margin=margin)
    student = MLPStudent(hidden=(8,), epochs=1).fit(inputs)
    assert student.n_outputs == 3
    assert student.predict_margin(data.z_test).shape == (len(data.z_test), 3)


# ------------------------------------------------------------------------------------ the weights it serves
def test_it_serves_the_average_of_its_steps_and_clips_them_by_the_rule(data: Data) -> None:
    """Recomputed apart from the kit's classes: every step's weights and gradient norm (before and after the clip)
    recorded by global optimizer hooks, the average's documented recurrence and the clip's rule in float64."""
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    def norm(optimizer: torch.optim.Optimizer) -> float:
        grads = [p.grad.double() for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        return float(torch.sqrt(sum((g**2).sum() for g in grads)))

    weights: list[list[np.ndarray]] = []
    raw: list[float] = []
    applied: list[float] = []

    def before(optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        if not weights:
            weights.append([p.detach().numpy().copy() for g in optimizer.param_groups for p in g["params"]])
        raw.append(norm(optimizer))

    def after(optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        applied.append(norm(optimizer))
        weights.append([p.detach().numpy().copy() for g in optimizer.param_groups for p in g["params"]])

    handles = [register_optimizer_step_pre_hook(before), register_optimizer_step_post_hook(after)]
    try:
        student = MLPStudent(**{**OPTIONS, "clip_gradients": 0.5}).fit(data.inputs)  # no validation rows
    finally:
        for handle in handles:
            handle.remove()
    steps = len(raw)
    per_epoch = steps // OPTIONS["epochs"]
    assert steps == per_epoch * OPTIONS["epochs"] >= 60
    # the clip: min(raw, 0.5 × median of the raw norms of the steps before), from the 21st step on
    expected_norms = [
        r if t < 20 else min(r, 0.5 * float(np.median(raw[max(0, t - 1000) : t]))) for t, r in enumerate(raw)
    ]
    np.testing.assert_allclose(applied, expected_norms, rtol=1e-4)
    clipped = sum(a < r * (1 - 1e-4) for a, r in zip(applied, raw, strict=True))
    assert student.stopping_["gradient_clip"] == {"multiple": 0.5, "clipped_steps": clipped, "steps": steps}
    assert clipped > 0
    # the average: a ← d·a + (1 − d)·w, d = (1 + t) / (10 + t), capped after the first epoch at 1 − 1 / (0.5 · steps)
    decay_after = 1.0 - 1.0 / (0.5 * per_epoch)
    average = [w.astype(np.float64) for w in weights[0]]
    for t, step_weights in enumerate(weights[1:], start=1):
        warm = (1 + t) / (10 + t)
        d = warm if t <= per_epoch else min(decay_after, warm)
        average = [d * a + (1 - d) * w for a, w in zip(average, step_weights, strict=True)]
    served = [p.detach().numpy() for p in student.module.parameters()]
    for s, e in zip(served, average, strict=True):
        np.testing.assert_allclose(s, e, rtol=1e-4, atol=1e-6)
    assert not all(np.allclose(s, w) for s, w in zip(served, weights[-1], strict=True))  # not the last step's
