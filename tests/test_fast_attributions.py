"""The attributors' first-layer fast paths against the dense autograd computation they replace.

``column_attributions`` takes an attributor's column path when the model offers its first layer per column
(:class:`~gbdt2nn_core.host.attribution.FirstLayerModel`). The reference is the dense path: the attributor's
encoded attributions (autograd through the whole network, ``create_graph=True`` for training) summed over each
column's block. Both must give the same values and, for joint training, the same gradient of an alignment loss
with respect to every parameter. Students are trained for one epoch on adult rows with numeric intervals,
categories and missing values of both kinds, binary and 3-class, and attributed in training mode with BatchNorm
frozen on its running statistics, as alignment does; float64, so that 1e-5 measures the method, not rounding.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import numpy as np
import pytest
import torch

from gbdt2nn_core.data.encoding import InputEncoder
from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.host.attribution import ColumnAttributor, FirstLayerModel, column_attributions
from gbdt2nn_core.host.registry import Registry
from gbdt2nn_core.kit.alignment import frozen_batchnorm
from gbdt2nn_core.student import GBDT2NNModule

pytestmark = pytest.mark.usefixtures("single_thread_torch")

#: Attributors with a column path, as (registry name, options); EG draws the same baselines on both paths.
FAST = [
    ("gradient-x-input", {}),
    ("integrated-gradients", {"steps": 5}),
    ("integrated-gradients", {"steps": 4, "baseline": "background-mean", "internal_batch_size": 60}),
    ("shap", {"samples": 6}),
    ("shap", {"samples": 5, "internal_batch_size": 80}),
]
FAST_IDS = ["gxi", "ig", "ig-background-mean-chunked", "eg", "eg-chunked"]


class Trained:
    """A one-epoch student on adult rows, its encoder and some encoded rows (float64)."""

    def __init__(self, module: GBDT2NNModule, encoder: InputEncoder, z: np.ndarray) -> None:
        self.module, self.encoder = module, encoder
        self.z = torch.as_tensor(z, dtype=torch.float64)
        self.aggregation = torch.as_tensor(encoder.aggregation(), dtype=torch.float64)

    def fresh(self, *, lookup: bool) -> GBDT2NNModule:
        """A float64 copy in training mode (BatchNorm to be frozen by the caller), lookup on or off."""
        module = copy.deepcopy(self.module).double().train()
        module.use_lookup(self.encoder.onehot_blocks() if lookup else None)
        return module


def _student_on_adult(small_adult_student: Any, task: str) -> Trained:
    student, encoder, _, z = small_adult_student(task, rows=500, seed=5, missing=0.2, trees=10)
    return Trained(student.module, encoder, z)


@pytest.fixture(scope="module", params=["binary", "multiclass"])
def trained(request: pytest.FixtureRequest, small_adult_student: Any) -> Trained:
    return _student_on_adult(small_adult_student, request.param)


def _attributor(name: str, options: dict[str, Any], module: GBDT2NNModule, background: torch.Tensor) -> Any:
    attributor = Registry().attributor(name, **options)
    attributor.fit(module, background)
    return attributor


def _parameter_gradients(module: torch.nn.Module, loss: torch.Tensor) -> list[torch.Tensor]:
    parameters = [p for p in module.parameters() if p.requires_grad]
    return list(torch.autograd.grad(loss, parameters, allow_unused=True, materialize_grads=True))


# ----------------------------------------------------------------------------------------------------------------
# the capability
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lookup", [False, True], ids=["matmul", "lookup"])
def test_column_first_layer_is_the_first_layer_and_contracts_per_column(trained: Trained, lookup: bool) -> None:
    module = trained.fresh(lookup=lookup)
    z = trained.z[:80]
    layer = module.column_first_layer(z, trained.aggregation)
    assert (layer.slots is not None) == lookup  # type: ignore[attr-defined]
    # the lookup reads float32 centring constants, which z holds rounded from float64 ones: 1e-8 apart
    tolerance = 1e-7 if lookup else 1e-10
    torch.testing.assert_close(layer.first, module.dense_first_layer(z), atol=tolerance, rtol=0)
    with frozen_batchnorm(module):
        torch.testing.assert_close(module.after_first_layer(layer.first), module(z), atol=1e-6, rtol=0)
    # each column's share of the first layer, from the dense weight matrix and the column's block of z
    weight = module.dense_first_weight(z.shape[1])
    shares = torch.stack(
        [
            z[:, block] @ weight[block]
            for block in map(trained.encoder.encoded_indices, range(trained.encoder.n_columns))
        ],
        dim=1,
    ).reshape(80, -1, module.n_groups, module.hidden_sizes[0])  # (n, d, k, h)
    generator = torch.Generator().manual_seed(0)
    gradient = torch.randn(80, 2, module.n_groups, module.hidden_sizes[0], generator=generator, dtype=torch.float64)
    expected = torch.einsum("nojh,ncjh->noc", gradient, shares)
    torch.testing.assert_close(layer.contract(gradient), expected, atol=1e-6, rtol=1e-7)
    torch.testing.assert_close(layer.contract(gradient[:, 0]), expected[:, 0], atol=1e-6, rtol=1e-7)
    rows = torch.tensor([3, 3, 0, 79])
    picked = torch.einsum("ojh,rcjh->roc", gradient[0], shares[rows])
    torch.testing.assert_close(layer.contract(gradient[:1].expand(4, -1, -1, -1), rows), picked, atol=1e-6, rtol=1e-7)
    by_group = torch.einsum("njh,ncjh->njc", gradient[:, 0], shares)
    torch.testing.assert_close(layer.contract_groups(gradient[:, 0]), by_group, atol=1e-6, rtol=1e-7)


def test_column_first_layer_sums_a_column_that_a_group_lists_twice() -> None:
    torch.manual_seed(0)
    module = GBDT2NNModule(
        group_input_index=torch.tensor([[0, 1, 1], [2, 3, 4]]), group_output=torch.zeros(2), n_outputs=1, hidden=(5,)
    ).double()
    z = torch.randn(7, 4, dtype=torch.float64)
    aggregation = torch.tensor([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=torch.float64)
    layer = module.column_first_layer(z, aggregation)
    torch.testing.assert_close(layer.first, module.mlp.hidden[0](module.group_inputs(z)), atol=1e-12, rtol=0)


def test_a_bad_aggregation_is_a_one_line_config_error(trained: Trained) -> None:
    module = trained.fresh(lookup=False)
    doubled = trained.aggregation.clone()
    doubled[0] = 1.0  # the first encoded value in every column
    for aggregation in (doubled, trained.aggregation[:-1], 0.5 * trained.aggregation):
        with pytest.raises(ConfigError, match="aggregation") as error:
            module.column_first_layer(trained.z[:4], aggregation)
        assert "\n" not in str(error.value)


def test_students_and_attributors_offer_the_capabilities(trained: Trained) -> None:
    assert isinstance(trained.module, FirstLayerModel)
    registry = Registry()
    for name in ("structure", "gradient-x-input", "integrated-gradients", "shap"):
        assert isinstance(registry.attributor(name), ColumnAttributor), name
    assert not isinstance(registry.attributor("gradient"), ColumnAttributor)  # saliency stays dense


def test_column_attributions_takes_the_fast_path_only_when_both_sides_offer_it(trained: Trained) -> None:
    module = trained.fresh(lookup=False).eval()
    z = trained.z[:20]
    attributor = Registry().attributor("gradient-x-input")
    dense = attributor.attribute(module, z) @ trained.aggregation

    class NoEncoded(type(attributor)):  # type: ignore[misc]
        def attribute(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            raise AssertionError("the dense path ran")

    torch.testing.assert_close(
        column_attributions(NoEncoded(), module, z, trained.aggregation), dense, atol=1e-10, rtol=0
    )
    # a plain function is no FirstLayerModel, and a weighted aggregation is no partition: the dense path
    with pytest.raises(AssertionError, match="dense path ran"):
        column_attributions(NoEncoded(), lambda rows: module(rows), z, trained.aggregation)
    with pytest.raises(AssertionError, match="dense path ran"):
        column_attributions(NoEncoded(), module, z, 0.5 * trained.aggregation)


# ----------------------------------------------------------------------------------------------------------------
# values and alignment gradients: fast path == dense autograd path
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lookup", [False, True], ids=["matmul", "lookup"])
@pytest.mark.parametrize(("name", "options"), FAST, ids=FAST_IDS)
def test_fast_path_values_equal_the_dense_path(
    trained: Trained, name: str, options: dict[str, Any], lookup: bool
) -> None:
    module = trained.fresh(lookup=lookup)
    z, background = trained.z[:40], trained.z[200:264]
    fast_attributor = _attributor(name, options, module, background)
    dense_attributor = _attributor(name, options, module, background)
    with frozen_batchnorm(module):
        for _ in range(2):  # EG: both draw the same fresh baselines on every call
            fast = column_attributions(fast_attributor, module, z, trained.aggregation)
            dense = dense_attributor.attribute(module, z) @ trained.aggregation
            assert fast.shape == dense.shape
            assert not fast.requires_grad
            torch.testing.assert_close(fast, dense, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("loss_name", ["mse", "cosine"])
@pytest.mark.parametrize(("name", "options"), FAST, ids=FAST_IDS)
def test_fast_path_alignment_gradient_equals_double_backward(
    trained: Trained, name: str, options: dict[str, Any], loss_name: str
) -> None:
    module = trained.fresh(lookup=True)
    z, background = trained.z[:40], trained.z[200:264]
    loss = Registry().alignment_loss(loss_name)
    generator = torch.Generator().manual_seed(3)
    fast_attributor = _attributor(name, options, module, background)
    dense_attributor = _attributor(name, options, module, background)
    with frozen_batchnorm(module):
        fast = column_attributions(fast_attributor, module, z, trained.aggregation, create_graph=True)
        dense = dense_attributor.attribute(module, z, create_graph=True) @ trained.aggregation
        target = torch.randn(fast.shape, generator=generator, dtype=torch.float64)
        fast_grads = _parameter_gradients(module, loss(fast.reshape(-1, fast.shape[-1]), target.flatten(0, -2)))
        dense_grads = _parameter_gradients(module, loss(dense.reshape(-1, dense.shape[-1]), target.flatten(0, -2)))
    assert any(g.abs().max() > 0 for g in dense_grads)
    for (parameter, _), f, d in zip(module.named_parameters(), fast_grads, dense_grads, strict=True):
        torch.testing.assert_close(f, d, atol=1e-5, rtol=1e-5, msg=lambda text, p=parameter: f"{p}: {text}")


def test_mlp_student_offers_the_first_layer_too() -> None:
    from gbdt2nn_mlp.student import MLPModule

    torch.manual_seed(0)
    module = MLPModule(9, 2, (12, 6), dropout=0.0, batch_norm=True).double()
    module.train()
    module(torch.randn(64, 9, dtype=torch.float64))  # running statistics that are not the identity
    assert isinstance(module, FirstLayerModel)
    aggregation = torch.zeros(9, 4, dtype=torch.float64)
    aggregation[torch.arange(9), torch.tensor([0, 0, 0, 1, 2, 2, 3, 3, 3])] = 1.0
    z = torch.randn(15, 9, dtype=torch.float64)
    attributor = Registry().attributor("gradient-x-input")
    with frozen_batchnorm(module):
        fast = column_attributions(attributor, module, z, aggregation, create_graph=True)
        dense = attributor.attribute(module, z, create_graph=True) @ aggregation
        torch.testing.assert_close(fast, dense, atol=1e-10, rtol=0)
        fast_grads = _parameter_gradients(module, (fast**2).sum())
        dense_grads = _parameter_gradients(module, (dense**2).sum())
    for f, d in zip(fast_grads, dense_grads, strict=True):
        torch.testing.assert_close(f, d, atol=1e-10, rtol=1e-8)


# ----------------------------------------------------------------------------------------------------------------
# structure: the column definition, against a reference computed here through the per-group inputs
# ----------------------------------------------------------------------------------------------------------------
def _structure_reference(
    module: GBDT2NNModule, z: torch.Tensor, aggregation: torch.Tensor, background: torch.Tensor
) -> torch.Tensor:
    """Column structure attributions by autograd through every group's gathered inputs (one group at a time)."""
    columns = aggregation.shape[1]
    with torch.no_grad():
        expected = module.group_outputs(module.embeddings(background)).mean(dim=0)
    inputs = module.group_inputs(z).detach().requires_grad_(True)
    outputs = module.group_outputs(module.mlp(inputs))
    (gradient,) = torch.autograd.grad(outputs.sum(), inputs, create_graph=True)
    padded = torch.cat([aggregation, aggregation.new_zeros(1, columns)])  # the pad index D is in no column
    result = z.new_zeros(z.shape[0], module.n_outputs, columns)
    for group in range(module.n_groups):
        to_columns = padded[module.group_input_index[group]]  # (W, d)
        first_order = (gradient[:, group] * inputs[:, group]) @ to_columns  # (n, d)
        sees = to_columns.sum(dim=0) > 0
        residual = outputs[:, group] - expected[group] - first_order.sum(dim=1)
        size = first_order.abs()
        total = size.sum(dim=1, keepdim=True)
        share = torch.where(total > 1e-12, size / total.clamp_min(1e-12), sees / sees.sum())
        result[:, int(module.output_map[group].argmax())] += first_order + residual[:, None] * share
    return result[:, 0] if module.n_outputs == 1 else result


@pytest.mark.parametrize("lookup", [False, True], ids=["matmul", "lookup"])
def test_structure_columns_equal_the_reference_and_add_up(trained: Trained, lookup: bool) -> None:
    module = trained.fresh(lookup=lookup)
    z, background = trained.z[:40], trained.z[200:328]
    attributor = Registry().attributor("structure", background_rows=128).fit(module, background)
    with frozen_batchnorm(module):
        columns = column_attributions(attributor, module, z, trained.aggregation)
        reference = _structure_reference(module, z, trained.aggregation, background)
        torch.testing.assert_close(columns, reference.detach(), atol=1e-5, rtol=1e-5)
        deviation = module(z) - module(background).mean(dim=0)
    torch.testing.assert_close(columns.sum(dim=-1), deviation.detach(), atol=1e-8, rtol=0)


@pytest.mark.parametrize("loss_name", ["mse", "cosine"])
def test_structure_alignment_gradient_equals_the_references(trained: Trained, loss_name: str) -> None:
    module = trained.fresh(lookup=True)
    z, background = trained.z[:40], trained.z[200:328]
    attributor = Registry().attributor("structure", background_rows=128).fit(module, background)
    loss = Registry().alignment_loss(loss_name)
    with frozen_batchnorm(module):
        fast = column_attributions(attributor, module, z, trained.aggregation, create_graph=True)
        reference = _structure_reference(module, z, trained.aggregation, background)
        target = torch.randn(fast.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        fast_grads = _parameter_gradients(module, loss(fast.reshape(-1, fast.shape[-1]), target.flatten(0, -2)))
        reference_grads = _parameter_gradients(
            module, loss(reference.reshape(-1, reference.shape[-1]), target.flatten(0, -2))
        )
    for f, r in zip(fast_grads, reference_grads, strict=True):
        torch.testing.assert_close(f, r, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["structure", "gradient-x-input"])
@pytest.mark.parametrize("known_slots", [False, True], ids=["forward", "known-slots"])
def test_a_training_step_sharing_the_first_layer_has_the_reference_loss_and_gradients(
    trained: Trained, name: str, known_slots: bool
) -> None:
    # one joint step's forward passes: the batch in training mode (the lookup forward), then the aligned rows'
    # attributions with BatchNorm frozen; inside sharing_first_layer they reuse one set of lookup tables and
    # first-layer weights. With known slots, the training loop's own path: the batch through embeddings_of_slots
    # with the slots the fit found, every row of it aligned (the slots come back from the step). Reference: each
    # step on a fresh copy, no sharing, the attributions by the dense path (structure: autograd through every
    # group's gathered inputs; gradient x input: its encoded attributions)
    batch, background = trained.z[:64], trained.z[200:328]
    aligned = batch if known_slots else trained.z[:20]
    options = {"background_rows": 128} if name == "structure" else {}

    def step(shared: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        module = trained.fresh(lookup=True)
        attributor = _attributor(name, options, module, background)
        with module.sharing_first_layer() if shared else contextlib.nullcontext():
            if known_slots:
                slots = module.rows_slots(batch) if shared else None
                plain = module.embeddings_of_slots(batch, slots).square().mean()
            else:
                plain = module(batch).square().mean()
            with frozen_batchnorm(module):
                if not shared:
                    attributions = (
                        _structure_reference(module, aligned, trained.aggregation, background)
                        if name == "structure"
                        else attributor.attribute(module, aligned, create_graph=True) @ trained.aggregation
                    )
                else:
                    attributions = column_attributions(
                        attributor, module, aligned, trained.aggregation, create_graph=True
                    )
        target = torch.randn(attributions.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        loss = plain + (attributions - target).square().mean()
        return loss.detach(), _parameter_gradients(module, loss)

    shared_loss, shared_grads = step(shared=True)
    reference_loss, reference_grads = step(shared=False)
    torch.testing.assert_close(shared_loss, reference_loss, atol=1e-8, rtol=1e-8)
    assert any(g.abs().max() > 0 for g in reference_grads)
    for f, r in zip(shared_grads, reference_grads, strict=True):
        torch.testing.assert_close(f, r, atol=1e-5, rtol=1e-5)


def test_an_aligned_pass_over_the_batch_reads_the_slots_the_fit_found(trained: Trained) -> None:
    # a training step gives its batch's slots (found once at the fit) to embeddings_of_slots; inside
    # sharing_first_layer an attributor's pass over the same rows gets them back unchecked, and nothing else does
    module = trained.fresh(lookup=True)
    batch = trained.z[:64].clone()
    slots = module.rows_slots(batch)
    assert slots is not None
    with module.sharing_first_layer():
        module.embeddings_of_slots(batch, slots)
        assert module.active_slots(batch.detach()) is slots  # the same rows: the fit's slots
        copied = batch.clone()  # equal values in other memory: checked again, to the same slots
        found = module.active_slots(copied)
        assert found is not slots
        torch.testing.assert_close(found, slots, atol=0, rtol=0)
        batch[0] = trained.z[100]  # changed in place: checked again, to the new row's slot
        changed = module.active_slots(batch)
        assert changed is not None
        assert changed is not slots
        torch.testing.assert_close(changed[0], module.active_slots(trained.z[100:101])[0], atol=0, rtol=0)
    assert module.active_slots(batch) is not slots  # outside the block nothing is kept


def test_the_structure_background_slots_are_found_once_per_module_and_lookup(trained: Trained) -> None:
    import pickle

    module = trained.fresh(lookup=True)
    z, background = trained.z[:40], trained.z[200:328]
    attributor = _attributor("structure", {"background_rows": 128}, module, background)
    found: list[int] = []
    original = GBDT2NNModule.rows_slots

    def counting(self: GBDT2NNModule, rows: torch.Tensor, chunk_rows: int = 4096) -> torch.Tensor | None:
        found.append(len(rows))
        return original(self, rows, chunk_rows)

    GBDT2NNModule.rows_slots = counting  # type: ignore[method-assign]
    try:
        with frozen_batchnorm(module):
            reference = _structure_reference(module, z, trained.aggregation, background).detach()
            first = column_attributions(attributor, module, z, trained.aggregation)
            again = column_attributions(attributor, module, z, trained.aggregation)
            assert found == [128]  # the background's slots: once
            module.use_lookup(None)  # another lookup: the dense first layer, nothing cached is read
            dense = column_attributions(attributor, module, z, trained.aggregation)
            other = trained.fresh(lookup=True)  # another module: its own slots
        with frozen_batchnorm(other):
            others = column_attributions(attributor, other, z, trained.aggregation)
            other_reference = _structure_reference(other, z, trained.aggregation, background).detach()
            reloaded = pickle.loads(pickle.dumps(attributor))  # the cache is not pickled; found again
            from_reloaded = column_attributions(reloaded, other, z, trained.aggregation)
    finally:
        GBDT2NNModule.rows_slots = original  # type: ignore[method-assign]
    assert found == [128] * 4  # and once for each of: the dense lookup (none found), the other module, the reload
    for ours in (first, again, dense):
        torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(others, other_reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(from_reloaded, others, atol=0, rtol=0)


def test_sharing_the_first_layer_builds_its_tables_once_per_step(trained: Trained) -> None:
    module = trained.fresh(lookup=True)
    built: list[int] = []
    original = module.lookup_tables

    def counting(*args: Any) -> Any:
        built.append(1)
        return original(*args)

    module.lookup_tables = counting  # type: ignore[method-assign]
    attributor = _attributor("structure", {"background_rows": 64}, module, trained.z[200:264])
    with module.sharing_first_layer():
        module(trained.z[:64]).sum()
        with frozen_batchnorm(module):
            column_attributions(attributor, module, trained.z[:8], trained.aggregation, create_graph=True)
    assert len(built) == 1  # the batch, the background expectation and the aligned rows: one set of tables
    module(trained.z[:64])
    module(trained.z[:64])
    assert len(built) == 3  # outside the block nothing is kept: every forward builds its own


def _small_module(n_outputs: int) -> GBDT2NNModule:
    """Groups over 9 encoded values; values 7 and 8 (column 4) belong to no group."""
    torch.manual_seed(1)
    module = GBDT2NNModule(
        group_input_index=torch.tensor([[0, 1, 2, 9], [2, 3, 9, 9], [4, 5, 6, 0]]),
        group_output=torch.tensor([0, 0, 1]) if n_outputs == 2 else torch.zeros(3, dtype=torch.long),
        n_outputs=n_outputs,
        hidden=(8, 6),
        embedding_dim=4,
    )
    with torch.no_grad():
        module.head_weight.normal_()
        module.head_bias.normal_()
    module.train()
    for _ in range(3):
        module(torch.randn(64, 9))
    return module.double().eval()


@pytest.mark.parametrize("n_outputs", [1, 2])
def test_structure_columns_zero_for_unselected_and_identity_gives_the_encoded_attribution(n_outputs: int) -> None:
    module = _small_module(n_outputs)
    column_of = torch.tensor([0, 0, 1, 1, 2, 3, 3, 4, 4])
    aggregation = torch.nn.functional.one_hot(column_of, 5).double()
    background, z = torch.randn(100, 9, dtype=torch.float64), torch.randn(30, 9, dtype=torch.float64)
    attributor = Registry().attributor("structure", background_rows=100).fit(module, background)

    columns = column_attributions(attributor, module, z, aggregation)
    assert torch.count_nonzero(columns[..., 4]) == 0
    assert torch.count_nonzero(columns[..., :4]) > 0
    deviation = module(z) - module(background).mean(dim=0)
    torch.testing.assert_close(columns.sum(dim=-1), deviation.detach(), atol=1e-10, rtol=0)
    # with every encoded value its own column, the column definition is the encoded one
    identity = column_attributions(attributor, module, z, torch.eye(9, dtype=torch.float64))
    torch.testing.assert_close(identity, attributor.attribute(module, z), atol=1e-10, rtol=0)
