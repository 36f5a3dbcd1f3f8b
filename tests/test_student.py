"""The GBDT2NN student against independent references.

- the batched group MLP / network equals k separate ``torch.nn.Sequential`` networks (outputs and gradients);
- the leaf-embedding targets equal sums of LightGBM's own leaf values, and the embedding learns them;
- tree grouping and per-group feature selection match LightGBM's ``trees_to_dataframe``;
- the gradient attributors equal Captum on a trained student, and ``frozen_batchnorm`` gives per-row gradients.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
import torch
from captum.attr import InputXGradient, Saliency
from sklearn.metrics import r2_score
from torch import nn

from gbdt2nn_core.errors import ConfigError, Gbdt2nnError, NotFittedError
from gbdt2nn_core.host.interfaces import Tree, TreeEnsemble
from gbdt2nn_core.host.registry import Registry
from gbdt2nn_core.kit.alignment import column_attributions, frozen_batchnorm
from gbdt2nn_core.pipeline.distill import DistillRun
from gbdt2nn_core.student import GBDT2NNConfig, GBDT2NNModule, GBDT2NNStudent
from gbdt2nn_core.student._grouping import group_trees, select_group_features
from gbdt2nn_core.student._layers import GroupMLP
from gbdt2nn_core.student._leaf_embedding import LeafEmbedding, fit_leaf_embedding, group_leaf_sums

if TYPE_CHECKING:
    from conftest import TeacherOnRows

pytestmark = pytest.mark.usefixtures("single_thread_torch")


# ----------------------------------------------------------------------------------------------------------------
# batched group MLP == k separate torch.nn.Sequential networks
# ----------------------------------------------------------------------------------------------------------------
def _randomise(mlp: GroupMLP, generator: torch.Generator) -> None:
    """Give BatchNorm non-trivial affine parameters and running statistics, so eval mode tests something."""
    with torch.no_grad():
        for group_norm in mlp.norms:
            norm = group_norm.norm
            norm.weight.copy_(torch.rand(norm.weight.shape, generator=generator, dtype=norm.weight.dtype) + 0.5)
            norm.bias.copy_(torch.randn(norm.bias.shape, generator=generator, dtype=norm.bias.dtype))
            norm.running_mean.copy_(torch.randn(norm.running_mean.shape, generator=generator, dtype=torch.float64))
            norm.running_var.copy_(torch.rand(norm.running_var.shape, generator=generator, dtype=torch.float64) + 0.5)


def _reference_networks(mlp: GroupMLP) -> list[nn.Sequential]:
    """One ``Sequential(Linear, BatchNorm1d, ReLU, ..., Linear)`` per group, weights copied from the batched MLP."""
    networks = []
    for g in range(mlp.last.groups):
        layers: list[nn.Module] = []
        for linear, group_norm in zip(mlp.hidden, mlp.norms, strict=True):
            width = linear.out_features
            layer = nn.Linear(linear.in_features, width).double()
            norm = nn.BatchNorm1d(width).double()
            channels = slice(g * width, (g + 1) * width)
            with torch.no_grad():
                layer.weight.copy_(linear.weight[g].T)
                layer.bias.copy_(linear.bias[g])
                norm.weight.copy_(group_norm.norm.weight[channels])
                norm.bias.copy_(group_norm.norm.bias[channels])
                norm.running_mean.copy_(group_norm.norm.running_mean[channels])
                norm.running_var.copy_(group_norm.norm.running_var[channels])
            layers += [layer, norm, nn.ReLU()]
        last = nn.Linear(mlp.last.in_features, mlp.last.out_features).double()
        with torch.no_grad():
            last.weight.copy_(mlp.last.weight[g].T)
            last.bias.copy_(mlp.last.bias[g])
        networks.append(nn.Sequential(*layers, last))
    return networks


def _assert_parameter_grads_match(mlp: GroupMLP, networks: list[nn.Sequential]) -> None:
    for g, network in enumerate(networks):
        linears = [m for m in network if isinstance(m, nn.Linear)]
        norms = [m for m in network if isinstance(m, nn.BatchNorm1d)]
        for batched, single in zip([*mlp.hidden, mlp.last], linears, strict=True):
            torch.testing.assert_close(batched.weight.grad[g].T, single.weight.grad, atol=1e-10, rtol=0)
            torch.testing.assert_close(batched.bias.grad[g], single.bias.grad, atol=1e-10, rtol=0)
        for group_norm, single in zip(mlp.norms, norms, strict=True):
            width = single.num_features
            channels = slice(g * width, (g + 1) * width)
            torch.testing.assert_close(group_norm.norm.weight.grad[channels], single.weight.grad, atol=1e-10, rtol=0)
            torch.testing.assert_close(group_norm.norm.bias.grad[channels], single.bias.grad, atol=1e-10, rtol=0)


@pytest.mark.parametrize("training", [True, False], ids=["train-mode", "eval-mode"])
def test_group_mlp_equals_separate_sequential_networks(training: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    groups, width, hidden, out = 3, 5, (7, 6), 4
    mlp = GroupMLP(groups, width, hidden, out).double()
    _randomise(mlp, generator)
    networks = _reference_networks(mlp)
    mlp.train(training)
    for network in networks:
        network.train(training)

    x = torch.randn(16, groups, width, generator=generator, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    weights = torch.randn(16, groups, out, generator=generator, dtype=torch.float64)

    output = mlp(x)
    reference = torch.stack([network(x_ref[:, g]) for g, network in enumerate(networks)], dim=1)
    assert output.shape == (16, groups, out)
    torch.testing.assert_close(output, reference, atol=1e-10, rtol=0)

    (output * weights).sum().backward()
    (reference * weights).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, atol=1e-10, rtol=0)
    _assert_parameter_grads_match(mlp, networks)

    if training:  # the batch statistics were folded into the running statistics group by group
        for layer, group_norm in enumerate(mlp.norms):
            size = hidden[layer]
            for g, network in enumerate(networks):
                single = [m for m in network if isinstance(m, nn.BatchNorm1d)][layer]
                batched = group_norm.norm
                channels = slice(g * size, (g + 1) * size)
                torch.testing.assert_close(batched.running_mean[channels], single.running_mean, atol=1e-12, rtol=0)
                torch.testing.assert_close(batched.running_var[channels], single.running_var, atol=1e-12, rtol=0)


@pytest.fixture(params=["gather", "dense"])
def first_layer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with the per-group gather first layer, then with the dense-matmul one (forced by the ratio)."""
    import gbdt2nn_core.student.module as module_code

    monkeypatch.setattr(module_code, "DENSE_FIRST_LAYER_MAX_RATIO", 0.0 if request.param == "gather" else 1e9)
    return str(request.param)


@pytest.mark.parametrize("n_outputs", [1, 2])
@pytest.mark.parametrize("training", [True, False], ids=["train-mode", "eval-mode"])
def test_gbdt2nn_module_equals_per_group_reference(n_outputs: int, training: bool, first_layer: str) -> None:
    generator = torch.Generator().manual_seed(1)
    n, d = 12, 7
    # group 0 sees columns 0, 2, 5; group 1 sees column 3 (padded with the constant-zero column d); group 2: 1, 4;
    # no group sees column 6
    index = torch.tensor([[0, 2, 5], [3, d, d], [1, 4, d]])
    outputs = torch.tensor([0, n_outputs - 1, 0])
    module = GBDT2NNModule(
        group_input_index=index, group_output=outputs, n_outputs=n_outputs, hidden=(8, 5), embedding_dim=4
    ).double()
    _randomise(module.mlp, generator)
    with torch.no_grad():
        module.head_weight.copy_(torch.randn(3, 4, generator=generator, dtype=torch.float64))
        module.head_bias.copy_(torch.randn(3, generator=generator, dtype=torch.float64))
    networks = _reference_networks(module.mlp)
    module.train(training)
    for network in networks:
        network.train(training)

    z = torch.randn(n, d, generator=generator, dtype=torch.float64, requires_grad=True)
    z_ref = z.detach().clone().requires_grad_(True)
    margin = module(z)

    padded = torch.cat([z_ref, torch.zeros(n, 1, dtype=torch.float64)], dim=1)
    reference = torch.zeros(n, n_outputs, dtype=torch.float64)
    for g, network in enumerate(networks):
        y_g = network(padded[:, index[g]]) @ module.head_weight[g] + module.head_bias[g]
        reference = reference + torch.nn.functional.one_hot(outputs[g], n_outputs).double() * y_g[:, None]
    if n_outputs == 1:
        reference = reference[:, 0]

    assert margin.shape == reference.shape
    torch.testing.assert_close(margin, reference, atol=1e-10, rtol=0)
    weights = torch.randn(reference.shape, generator=generator, dtype=torch.float64)
    (margin * weights).sum().backward()
    (reference * weights).sum().backward()
    torch.testing.assert_close(z.grad, z_ref.grad, atol=1e-10, rtol=0)
    _assert_parameter_grads_match(module.mlp, networks)
    # columns no group selects get no gradient at all
    assert torch.count_nonzero(z.grad[:, 6]) == 0
    assert torch.count_nonzero(z.grad[:, :6]) > 0


def _random_module(index: torch.Tensor, generator: torch.Generator) -> GBDT2NNModule:
    module = GBDT2NNModule(
        group_input_index=index, group_output=torch.zeros(len(index), dtype=torch.long), n_outputs=1, hidden=(6, 5)
    ).double()
    _randomise(module.mlp, generator)
    with torch.no_grad():
        module.head_weight.copy_(torch.randn(module.head_weight.shape, generator=generator, dtype=torch.float64))
    return module.eval()


def test_dense_first_layer_equals_the_gather_and_is_used_when_groups_see_most_columns() -> None:
    generator = torch.Generator().manual_seed(3)
    d = 6
    index = torch.tensor([[0, 1, 2, 3, 4], [5, 3, 1, 0, d], [2, 4, d, d, d]])  # D = 6 <= 1.5 * W = 7.5
    module = _random_module(index, generator)
    z = torch.randn(9, d, generator=generator, dtype=torch.float64)
    assert module._dense_first_layer_applies(z)
    gathered = module.mlp.hidden[0](module.group_inputs(z))
    torch.testing.assert_close(module.dense_first_layer(z), gathered, atol=1e-12, rtol=0)

    # second order too: the alignment loss back-propagates through input gradients (create_graph=True)
    def second_order(dense: bool) -> list[torch.Tensor]:
        module.zero_grad()
        x = z.clone().requires_grad_(True)
        first = module.dense_first_layer(x) if dense else module.mlp.hidden[0](module.group_inputs(x))
        out = module.combine(module.group_outputs(module.mlp.after_first_linear(first)))
        (gradient,) = torch.autograd.grad(out.sum(), x, create_graph=True)
        (gradient * x).pow(2).sum().backward()
        # biases of the last layer do not move input gradients: no gradient at all, in both paths
        return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in module.mlp.parameters()]

    for dense, gather in zip(second_order(True), second_order(False), strict=True):
        torch.testing.assert_close(dense, gather, atol=1e-10, rtol=0)


def test_dense_first_layer_is_skipped_where_it_would_be_wrong_or_slow() -> None:
    generator = torch.Generator().manual_seed(4)
    wide = _random_module(torch.tensor([[0, 1], [2, 3]]), generator)
    assert not wide._dense_first_layer_applies(torch.zeros(1, 10, dtype=torch.float64))  # D = 10 > 1.5 * W = 3

    # a column listed twice in one group (not the pad) cannot move to a single dense row
    twice = _random_module(torch.tensor([[0, 0, 1], [1, 2, 0]]), generator)
    z = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    assert not twice._dense_first_layer_applies(z)
    reference = twice.combine(twice.group_outputs(twice.mlp(twice.group_inputs(z))))
    torch.testing.assert_close(twice(z), reference, atol=1e-12, rtol=0)

    # the largest index repeats: it is the pad column when it equals D, a real (repeated) column when D is larger
    padded = _random_module(torch.tensor([[0, 1, 3], [2, 3, 3]]), generator)
    assert padded._dense_first_layer_applies(torch.zeros(1, 3, dtype=torch.float64))
    assert not padded._dense_first_layer_applies(torch.zeros(1, 4, dtype=torch.float64))


# ----------------------------------------------------------------------------------------------------------------
# leaf embedding: group leaf sums from LightGBM's own leaves, and the embedding learns them
# ----------------------------------------------------------------------------------------------------------------
def _lightgbm_leaf_values(booster: object) -> dict[tuple[int, int], float]:
    """``(tree, leaf) -> value`` read from ``Booster.trees_to_dataframe`` (node ids like ``'3-L7'``)."""
    frame = booster.trees_to_dataframe()  # type: ignore[attr-defined]
    values = {}
    for node, value in zip(frame["node_index"], frame["value"], strict=True):
        match = re.fullmatch(r"(\d+)-L(\d+)", str(node))
        if match:
            values[(int(match.group(1)), int(match.group(2)))] = float(value)
    return values


def test_group_leaf_sums_equal_lightgbm_leaf_values(adult_teacher: TeacherOnRows) -> None:
    teacher, X = adult_teacher.teacher, adult_teacher.X
    booster = teacher.native_model
    ensemble = teacher.structure()
    groups, _ = group_trees(ensemble, 4, seed=3)

    sums = group_leaf_sums(ensemble, teacher.leaf_indices(X), groups)

    leaves = booster.predict(X, pred_leaf=True)
    values = _lightgbm_leaf_values(booster)
    per_tree = np.array([[values[(t, int(leaf))] for t, leaf in enumerate(row)] for row in leaves])
    expected = np.stack([per_tree[:, list(trees)].sum(axis=1) for trees in groups], axis=1)
    assert sums.shape == (len(X), 4)
    np.testing.assert_allclose(sums, expected, rtol=0, atol=1e-9)
    # together the groups are the whole ensemble: the teacher's raw margin (LightGBM's base margin is 0)
    raw = booster.predict(X, raw_score=True)
    np.testing.assert_allclose(sums.sum(axis=1) + ensemble.base_margin[0], raw, rtol=0, atol=1e-9)


def test_leaf_embedding_learns_the_group_leaf_sums(adult_teacher: TeacherOnRows) -> None:
    teacher, X = adult_teacher.teacher, adult_teacher.X
    ensemble = teacher.structure()
    groups, _ = group_trees(ensemble, 4, seed=0)
    leaves = torch.as_tensor(teacher.leaf_indices(X), dtype=torch.long)
    sums = group_leaf_sums(ensemble, teacher.leaf_indices(X), groups)
    torch.manual_seed(0)
    embedding = LeafEmbedding(ensemble, groups, embedding_dim=20, dropout=0.5, bias=sums.mean(axis=0))

    def head_of_embedding() -> np.ndarray:
        embedding.eval()
        with torch.no_grad():
            # head(G): the frozen 20 -> 1 map applied to the post-BatchNorm embedding, eval mode
            return ((embedding.embed(leaves) * embedding.weight).sum(-1) + embedding.bias).numpy()

    before = head_of_embedding()
    assert max(r2_score(sums[:, g], before[:, g]) for g in range(4)) < 0.5  # an untrained head does not fit

    history = fit_leaf_embedding(
        embedding,
        leaves,
        torch.as_tensor(sums, dtype=torch.float32),
        epochs=100,
        batch_size=128,
        lr=1e-2,
        weight_decay=1e-6,
        generator=torch.Generator().manual_seed(0),
    )
    assert not embedding.training  # fit leaves the module in eval mode
    assert len(history) == 100
    assert history[-1] < history[0]
    after = head_of_embedding()
    np.testing.assert_allclose(after, embedding(leaves).detach().numpy(), rtol=0, atol=1e-5)  # forward == head(G)
    for g in range(4):
        assert r2_score(sums[:, g], after[:, g]) > 0.9, f"group {g}"


# ----------------------------------------------------------------------------------------------------------------
# tree grouping and feature selection
# ----------------------------------------------------------------------------------------------------------------
def _synthetic_ensemble(n_trees: int, n_outputs: int = 1) -> TreeEnsemble:
    trees = [
        Tree(leaf_values=[0.1, -0.1], split_features=[t % 5], split_gains=[1.0], output=t % n_outputs)
        for t in range(n_trees)
    ]
    return TreeEnsemble(trees=trees, n_features=5, n_outputs=n_outputs, base_margin=np.zeros(n_outputs))


@pytest.mark.parametrize(("n_trees", "n_groups"), [(23, 5), (20, 20), (7, 10), (100, 1)])
def test_group_trees_deals_every_tree_once_in_almost_equal_groups(n_trees: int, n_groups: int) -> None:
    groups, outputs = group_trees(_synthetic_ensemble(n_trees), n_groups, seed=0)
    dealt = np.concatenate(groups)
    assert sorted(dealt.tolist()) == list(range(n_trees))  # every tree exactly once
    assert len(groups) == min(n_groups, n_trees)
    sizes = [len(g) for g in groups]
    assert max(sizes) - min(sizes) <= 1
    assert outputs.tolist() == [0] * len(groups)


def test_group_trees_shuffles_with_the_seed() -> None:
    ensemble = _synthetic_ensemble(40)
    first, _ = group_trees(ensemble, 4, seed=0)
    again, _ = group_trees(ensemble, 4, seed=0)
    other, _ = group_trees(ensemble, 4, seed=1)
    assert [g.tolist() for g in first] == [g.tolist() for g in again]
    assert [g.tolist() for g in first] != [g.tolist() for g in other]
    assert [g.tolist() for g in first] != [list(range(i * 10, i * 10 + 10)) for i in range(4)]  # not in order


def test_group_trees_groups_multiclass_trees_per_class() -> None:
    # 3 classes x 8 rounds; LightGBM orders trees round by round, class by class
    ensemble = _synthetic_ensemble(24, n_outputs=3)
    groups, outputs = group_trees(ensemble, 7, seed=0)
    assert len(groups) == 6  # 7 // 3 = 2 groups per class
    tree_output = np.arange(24) % 3
    for trees, output in zip(groups, outputs, strict=True):
        assert set(tree_output[trees].tolist()) == {output}  # a group only holds its own class's trees
    for c in range(3):
        dealt = np.concatenate([g for g, o in zip(groups, outputs, strict=True) if o == c])
        assert sorted(dealt.tolist()) == np.flatnonzero(tree_output == c).tolist()
        sizes = [len(g) for g, o in zip(groups, outputs, strict=True) if o == c]
        assert max(sizes) - min(sizes) <= 1


def test_select_group_features_picks_top_columns_by_summed_split_gain(adult_teacher: TeacherOnRows) -> None:
    booster = adult_teacher.teacher.native_model
    ensemble = adult_teacher.teacher.structure()
    names = booster.feature_name()
    frame = booster.trees_to_dataframe()
    splits = frame[frame["split_feature"].notna()]
    groups, _ = group_trees(ensemble, 4, seed=0)
    k_f = 4

    selected = select_group_features(ensemble, groups, k_f)

    assert selected.shape == (4, k_f)
    for g, trees in enumerate(groups):
        gain = splits[splits["tree_index"].isin(trees)].groupby("split_feature")["split_gain"].sum()
        gain = gain.sort_values(ascending=False)
        assert gain.iloc[k_f - 1] > gain.iloc[k_f] * (1 + 1e-9), "a tie at the cut-off would make the test ambiguous"
        expected = sorted(names.index(name) for name in gain.index[:k_f])
        assert sorted(selected[g].tolist()) == expected, f"group {g}"


def test_select_group_features_pads_with_minus_one_and_never_adds_unused_columns(adult_teacher: TeacherOnRows) -> None:
    booster = adult_teacher.teacher.native_model
    ensemble = adult_teacher.teacher.structure()
    frame = booster.trees_to_dataframe()
    groups, _ = group_trees(ensemble, 10, seed=0)  # two trees per group: few distinct split columns

    selected = select_group_features(ensemble, groups, 64)  # more than the 14 columns: capped at 14

    assert selected.shape == (10, 14)
    names = booster.feature_name()
    for g, trees in enumerate(groups):
        used = frame[frame["tree_index"].isin(trees) & frame["split_feature"].notna()]["split_feature"].unique()
        expected = sorted(names.index(name) for name in used)
        row = selected[g]
        assert sorted(row[row >= 0].tolist()) == expected
        assert (row[len(expected) :] == -1).all()


# ----------------------------------------------------------------------------------------------------------------
# attributions of a trained student: Captum, column sums, frozen BatchNorm
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture
def trained_module(adult_run: DistillRun) -> GBDT2NNModule:
    """A float64 copy of the session's trained student network, in eval mode."""
    return copy.deepcopy(adult_run.student.module).double().eval()


@pytest.fixture
def test_rows(adult_run: DistillRun) -> torch.Tensor:
    """64 encoded test rows of the session's run, as float64."""
    return torch.as_tensor(adult_run.data.z_test[:64], dtype=torch.float64)


@pytest.mark.parametrize(
    ("name", "captum"),
    [
        ("gradient", lambda m, z: Saliency(m).attribute(z.clone().requires_grad_(True), abs=False)),
        ("gradient-x-input", lambda m, z: InputXGradient(m).attribute(z.clone().requires_grad_(True))),
    ],
)
def test_gradient_attributors_equal_captum_on_a_trained_student(
    trained_module: GBDT2NNModule,
    test_rows: torch.Tensor,
    name: str,
    captum: Callable[[nn.Module, torch.Tensor], torch.Tensor],
) -> None:
    attributor = Registry().attributor(name)
    ours = attributor.attribute(trained_module, test_rows)
    reference = captum(trained_module, test_rows)
    assert ours.shape == test_rows.shape
    assert torch.count_nonzero(reference) > 0
    torch.testing.assert_close(ours, reference, atol=1e-10, rtol=0)
    # the differentiable path computes the same numbers and stays attached to the parameters
    differentiable = attributor.attribute(trained_module, test_rows, create_graph=True)
    assert differentiable.requires_grad
    torch.testing.assert_close(differentiable.detach(), reference, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", ["gradient", "gradient-x-input"])
def test_gradient_attributors_equal_captum_per_output_for_multiclass(name: str) -> None:
    generator = torch.Generator().manual_seed(5)
    module = GBDT2NNModule(
        group_input_index=torch.tensor([[0, 1, 2], [2, 3, 6], [4, 5, 6]]),
        group_output=torch.tensor([0, 1, 2]),
        n_outputs=3,
        hidden=(8,),
        embedding_dim=4,
    ).double()
    with torch.no_grad():
        module.head_weight.copy_(torch.randn(3, 4, generator=generator, dtype=torch.float64))
    module.eval()
    z = torch.randn(10, 6, generator=generator, dtype=torch.float64, requires_grad=True)

    ours = Registry().attributor(name).attribute(module, z)

    assert ours.shape == (10, 3, 6)
    method = Saliency(module) if name == "gradient" else InputXGradient(module)
    for c in range(3):
        options = {"abs": False} if name == "gradient" else {}
        torch.testing.assert_close(ours[:, c], method.attribute(z, target=c, **options), atol=1e-10, rtol=0)


def test_column_attributions_sum_each_columns_encoded_block(
    adult_run: DistillRun, trained_module: GBDT2NNModule, test_rows: torch.Tensor
) -> None:
    encoder = adult_run.data.encoder
    attributor = Registry().attributor("gradient-x-input")
    encoded = attributor.attribute(trained_module, test_rows)

    columns = column_attributions(
        attributor, trained_module, test_rows, torch.as_tensor(encoder.aggregation(), dtype=torch.float64)
    )

    assert columns.shape == (64, encoder.n_columns)
    # the column path reads a one-hot block's share from the lookup table, whose centring constants z holds rounded
    # to float32 (its encoding): equal to that rounding, not to float64's
    assert trained_module.lookup_enabled
    for j in range(encoder.n_columns):
        block = encoder.encoded_indices(j)
        assert len(block) >= 1
        torch.testing.assert_close(columns[:, j], encoded[:, block].sum(dim=1), atol=1e-8, rtol=1e-6)


def _batchnorm_modes(module: nn.Module) -> list[bool]:
    return [m.training for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_frozen_batchnorm_gives_per_row_gradients_in_train_mode(
    trained_module: GBDT2NNModule, test_rows: torch.Tensor
) -> None:
    gradient = Registry().attributor("gradient")
    z = test_rows[:32]
    eval_grads = gradient.attribute(trained_module, z)
    # eval mode is per row: each row's gradient is the same as when it is alone in its batch
    alone = torch.cat([gradient.attribute(trained_module, z[i : i + 1]) for i in range(len(z))])
    torch.testing.assert_close(eval_grads, alone, atol=1e-10, rtol=0)

    trained_module.train()
    running = [m.running_mean.clone() for m in trained_module.modules() if isinstance(m, nn.BatchNorm1d)]
    with frozen_batchnorm(trained_module):
        assert not any(_batchnorm_modes(trained_module))
        frozen_grads = gradient.attribute(trained_module, z)
    assert all(_batchnorm_modes(trained_module))  # training mode is restored afterwards
    after = [m.running_mean for m in trained_module.modules() if isinstance(m, nn.BatchNorm1d)]
    assert all(torch.equal(a, b) for a, b in zip(running, after, strict=True))  # statistics untouched
    torch.testing.assert_close(frozen_grads, eval_grads, atol=1e-10, rtol=0)

    # without it, batch statistics couple the rows: the "per-row" gradients are something else
    batch_grads = gradient.attribute(trained_module, z)
    assert (batch_grads - eval_grads).abs().max() > 1e-3


def test_frozen_batchnorm_leaves_an_eval_module_in_eval_mode(trained_module: GBDT2NNModule) -> None:
    with frozen_batchnorm(trained_module):
        pass
    assert not any(_batchnorm_modes(trained_module))


def test_frozen_batchnorm_restores_train_mode_after_an_error(trained_module: GBDT2NNModule) -> None:
    trained_module.train()
    with pytest.raises(RuntimeError, match="boom"), frozen_batchnorm(trained_module):
        raise RuntimeError("boom")
    assert all(_batchnorm_modes(trained_module))


# ----------------------------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------------------------
def test_beta_schedule_follows_deepgbm() -> None:
    config = GBDT2NNConfig(beta0=1.0, beta_decay=0.7, beta_step=2, beta_floor=0.3)
    expected = [1.0, 1.0, 0.7, 0.7, 0.49, 0.49, 0.343, 0.343, 0.3, 0.3, 0.3]
    np.testing.assert_allclose([config.beta(e) for e in range(11)], expected, rtol=1e-12)


@pytest.mark.parametrize(
    ("options", "setting"),
    [
        ({"n_groups": 0}, "n_groups"),
        ({"epochs": -1}, "epochs"),
        ({"lr": float("nan")}, "lr"),
        ({"hidden": ()}, "hidden"),
        ({"leaf_dropout": 1.5}, "leaf_dropout"),
        ({"n_group": 3}, "student option"),
    ],
)
def test_student_rejects_bad_options(options: dict[str, object], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        GBDT2NNStudent(**options)
    assert info.value.setting == setting
    assert "\n" not in str(info.value)


def test_unknown_student_option_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="n_groups") as info:
        GBDT2NNStudent(n_group=3)
    assert info.value.value == "n_group"


def test_unfitted_student_says_so() -> None:
    with pytest.raises(NotFittedError, match="before fit") as info:
        GBDT2NNStudent().predict_margin(np.zeros((2, 3), dtype=np.float32))
    assert isinstance(info.value, Gbdt2nnError)
    assert info.value.component == "GBDT2NNStudent"


def test_student_margins_are_float32_and_batch_independent(adult_run: DistillRun) -> None:
    z = adult_run.data.z_test
    whole = adult_run.student.predict_margin(z)
    pieces = adult_run.student.predict_margin(z, batch_size=7)
    assert whole.shape == (len(z),)
    assert whole.dtype == np.float32
    np.testing.assert_allclose(whole, pieces, rtol=0, atol=1e-6)
    assert pd.Series(whole).nunique() > 10  # a trained student does not predict a constant
