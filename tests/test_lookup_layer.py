"""The lookup first layer of the GBDT2NN module against the dense matmul it replaces.

The reference is the module's training-time composition with the lookup off (``use_lookup(None)``): its first layer
is ``z @ W`` over the whole encoding, then batch norm, ReLU, ..., the head, as in training. The inference path
(eval mode, no gradients: batch norm and the head folded into the linear maps) and the lookup must both equal it.
Students are trained for one epoch on adult rows (numeric intervals, categories, missing numbers and categories),
binary and 3-class, so the weights are a real student's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from gbdt2nn_core.data.encoding import InputEncoder
from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.student import GBDT2NNModule

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def _student_on_adult(small_adult_student: Any, task: str) -> tuple[GBDT2NNModule, InputEncoder, pd.DataFrame]:
    student, encoder, X, _ = small_adult_student(task, rows=600, seed=3, missing=0.15, trees=12)
    assert X.select_dtypes("category").isna().any().any()
    return student.module, encoder, X


@pytest.fixture(scope="module", params=["binary", "multiclass"])
def trained(
    request: pytest.FixtureRequest, small_adult_student: Any
) -> tuple[GBDT2NNModule, InputEncoder, pd.DataFrame]:
    return _student_on_adult(small_adult_student, request.param)


def _dense_reference(module: GBDT2NNModule, z: torch.Tensor) -> torch.Tensor:
    module.use_lookup(None)
    first = module.dense_first_layer(z)
    return module.combine(module.group_outputs(module.mlp.after_first_linear(first)))  # type: ignore[no-any-return]


def test_eval_margins_equal_the_dense_matmul(trained: tuple[GBDT2NNModule, InputEncoder, pd.DataFrame]) -> None:
    module, encoder, X = trained
    z = torch.as_tensor(encoder.transform(X))
    module.eval()
    with torch.no_grad():
        reference = _dense_reference(module, z)
        module.use_lookup(encoder.onehot_blocks())
        assert module.active_slots(z) is not None  # every row is read as an encoding: the lookup runs
        looked_up = module(z)
        module.use_lookup(None)
        folded_only = module(z)  # the inference path without the lookup
    assert looked_up.shape == reference.shape
    torch.testing.assert_close(looked_up, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(folded_only, reference, atol=1e-5, rtol=0)


def test_margins_from_the_frame_equal_the_dense_matmul_of_the_encoding(
    trained: tuple[GBDT2NNModule, InputEncoder, pd.DataFrame],
) -> None:
    module, encoder, X = trained
    module.eval()
    other = torch.as_tensor(encoder.outside_blocks(X))
    active = torch.as_tensor(encoder.active_slots(X))
    with torch.no_grad():
        reference = _dense_reference(module, torch.as_tensor(encoder.transform(X)))
        module.use_lookup(encoder.onehot_blocks())
        from_frame = module.forward_lookup(other, active)
    torch.testing.assert_close(from_frame, reference, atol=1e-5, rtol=0)
    module.use_lookup(None)
    with pytest.raises(ConfigError, match="use_lookup"):
        module.forward_lookup(other, active)
    module.use_lookup(encoder.onehot_blocks())
    # with gradients recorded (no folding), the same margins
    module.use_lookup(encoder.onehot_blocks())
    torch.testing.assert_close(module.forward_lookup(other, active).detach(), reference, atol=1e-5, rtol=0)


def test_active_slots_from_z_are_the_encoders_from_the_frame(
    trained: tuple[GBDT2NNModule, InputEncoder, pd.DataFrame],
) -> None:
    module, encoder, X = trained
    blocks = encoder.onehot_blocks()
    module.use_lookup(blocks)
    slots = module.active_slots(torch.as_tensor(encoder.transform(X)))
    assert slots is not None
    active = encoder.active_slots(X)
    offsets = np.concatenate([[0], np.cumsum(blocks.widths)[:-1]])
    expected = np.where(active >= 0, active + offsets, int(blocks.widths.sum()))
    np.testing.assert_array_equal(slots.numpy(), expected)
    assert (active < 0).any()  # missing values reach the zero row
    # the frame path alone (no one-hot written) gives the dense first layer
    other = torch.as_tensor(encoder.outside_blocks(X))
    np.testing.assert_array_equal(other.numpy(), encoder.transform(X)[:, blocks.other_positions])
    with torch.no_grad():
        from_frame = module.lookup_first_layer(other, torch.as_tensor(expected))
        dense = module.dense_first_layer(torch.as_tensor(encoder.transform(X)))
    torch.testing.assert_close(from_frame, dense, atol=1e-5, rtol=0)


def test_training_forward_uses_the_lookup_with_the_same_parameter_gradients(
    trained: tuple[GBDT2NNModule, InputEncoder, pd.DataFrame],
) -> None:
    module, encoder, X = trained
    z = torch.as_tensor(encoder.transform(X))[:256]
    module.train()
    state = {k: v.clone() for k, v in module.state_dict().items()}  # batch-norm statistics move in train mode

    def loss_and_grads(lookup: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        module.load_state_dict(state)
        module.use_lookup(encoder.onehot_blocks() if lookup else None)
        module.zero_grad()
        loss = (module(z) ** 2).sum()
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in module.parameters() if p.grad is not None]

    dense_loss, dense_grads = loss_and_grads(lookup=False)
    lookup_loss, lookup_grads = loss_and_grads(lookup=True)
    assert module._lookup_applies(z)
    torch.testing.assert_close(lookup_loss, dense_loss, rtol=1e-5, atol=1e-5)
    assert len(lookup_grads) == len(dense_grads)
    # float32 sums in another order; the first layer's bias gradient is zero up to rounding (batch norm removes
    # it), so the tolerance is relative to the largest gradient
    scale = max(float(g.abs().max()) for g in dense_grads)
    for ours, reference in zip(lookup_grads, dense_grads, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5 * scale)
    module.eval()


def test_gradients_with_respect_to_z_come_from_the_dense_form(
    trained: tuple[GBDT2NNModule, InputEncoder, pd.DataFrame],
) -> None:
    module, encoder, X = trained
    module.eval()

    def input_gradient(lookup: bool) -> torch.Tensor:
        module.use_lookup(encoder.onehot_blocks() if lookup else None)
        z = torch.as_tensor(encoder.transform(X))[:64].requires_grad_(True)
        (gradient,) = torch.autograd.grad(module(z).sum(), z)
        return gradient

    with_lookup = input_gradient(lookup=True)
    torch.testing.assert_close(with_lookup, input_gradient(lookup=False), atol=0, rtol=0)
    assert bool((with_lookup != 0).any())


def test_points_that_are_not_encodings_take_the_dense_form(
    trained: tuple[GBDT2NNModule, InputEncoder, pd.DataFrame],
) -> None:
    module, encoder, X = trained
    module.eval()
    scaled = 0.5 * torch.as_tensor(encoder.transform(X))  # a point on an integrated-gradients path
    with torch.no_grad():
        module.use_lookup(None)
        reference = module(scaled)  # the same inference path, with the dense first layer
        module.use_lookup(encoder.onehot_blocks())
        assert module.active_slots(scaled) is None
        ours = module(scaled)
    torch.testing.assert_close(ours, reference, atol=0, rtol=0)


def test_slots_found_once_for_every_row_are_each_batchs_own(
    trained: tuple[GBDT2NNModule, InputEncoder, pd.DataFrame],
) -> None:
    """Training finds the lookup slots of its rows once (``rows_slots``, a chunk at a time) and reads a batch's from
    them: the same slots as checking the batch itself, and the embeddings of the dense first layer."""
    module, encoder, X = trained
    module.use_lookup(encoder.onehot_blocks())
    module.train()
    z = torch.as_tensor(encoder.transform(X))
    slots = module.rows_slots(z, chunk_rows=97)  # chunks that do not divide the rows
    assert slots is not None
    torch.testing.assert_close(slots, module.active_slots(z), atol=0, rtol=0)
    state = {k: v.clone() for k, v in module.state_dict().items()}  # batch-norm statistics move in train mode
    batch = torch.arange(40, 240)
    with torch.no_grad():
        ours = module.embeddings_of_slots(z[batch], slots[batch])
        module.load_state_dict(state)
        checked = module.embeddings(z[batch])
        module.load_state_dict(state)
        module.use_lookup(None)
        dense = module.mlp.after_first_linear(module.dense_first_layer(z[batch]))
    torch.testing.assert_close(ours, checked, atol=0, rtol=0)
    torch.testing.assert_close(ours, dense, atol=1e-5, rtol=1e-5)
    module.load_state_dict(state)
    module.eval()


def test_rows_that_are_not_all_encodings_get_no_slots(
    trained: tuple[GBDT2NNModule, InputEncoder, pd.DataFrame],
) -> None:
    module, encoder, X = trained
    module.use_lookup(encoder.onehot_blocks())
    z = torch.as_tensor(encoder.transform(X))
    z[len(z) - 1] *= 0.5  # one row in the last chunk is a point between a row and the baseline
    assert module.rows_slots(z, chunk_rows=128) is None
    module.use_lookup(None)
    assert module.rows_slots(torch.as_tensor(encoder.transform(X))) is None  # no lookup, no slots


def test_slots_shared_for_a_matrix_are_read_by_its_runs_of_rows_while_it_is_unchanged(
    trained: tuple[GBDT2NNModule, InputEncoder, pd.DataFrame],
) -> None:
    """``share_rows_slots`` hands ``active_slots`` of any ``z[a:b]`` the rows ``a:b`` of the shared slots without
    checking them (shown with deliberately wrong slots), and only while ``z`` is unchanged and the view reads whole
    rows of it; anything else is checked as before."""
    module, encoder, X = trained
    module.use_lookup(encoder.onehot_blocks())
    z = torch.as_tensor(encoder.transform(X))
    true = module.active_slots(z)
    assert true is not None
    marked = true.flip(0)  # other rows' slots: visible if they are returned
    unshared = module.active_slots(z.view(-1)[3 : 3 + 10 * z.shape[1]].view(10, z.shape[1]))
    assert not torch.equal(marked, true)
    with module.sharing_first_layer():
        module.share_rows_slots(z, marked)
        for start, stop in [(0, len(z)), (37, 301), (len(z) - 1, len(z))]:
            torch.testing.assert_close(module.active_slots(z[start:stop]), marked[start:stop], atol=0, rtol=0)
        # a copy of the rows, or a view of other than whole rows: checked, not read
        torch.testing.assert_close(module.active_slots(z[37:301].clone()), true[37:301], atol=0, rtol=0)
        shifted = z.view(-1)[3 : 3 + 10 * z.shape[1]].view(10, z.shape[1])  # the same shape, across rows
        found = module.active_slots(shifted)
        assert (found is None and unshared is None) or torch.equal(found, unshared)  # type: ignore[arg-type]
        z[3, 0] = z[3, 0].item()  # written in place (same value): the version moves, nothing is trusted
        torch.testing.assert_close(module.active_slots(z[37:301]), true[37:301], atol=0, rtol=0)
    torch.testing.assert_close(module.active_slots(z[37:301]), true[37:301], atol=0, rtol=0)  # outside the block
    with pytest.raises(RuntimeError, match="sharing_first_layer"):
        module.share_rows_slots(z, true)
    with module.sharing_first_layer(), pytest.raises(ValueError, match="slots of 2 rows"):
        module.share_rows_slots(z, true[:2])


def test_the_validation_loss_with_shared_slots_is_the_same_to_the_bit(
    trained: tuple[GBDT2NNModule, InputEncoder, pd.DataFrame],
) -> None:
    """What the student's monitor does after every epoch (the BatchNorm pass on training rows, then the loss of the
    validation rows, both in batches), with the slots of both found once: the same loss as finding them in each
    batch."""
    from gbdt2nn_core.host.interfaces import Task
    from gbdt2nn_core.student.kit import validation_loss

    module, encoder, X = trained
    module.use_lookup(encoder.onehot_blocks())
    z = torch.as_tensor(encoder.transform(X))
    train_rows, held_out = z[:400].contiguous(), z[400:].contiguous()
    task: Task = "multiclass" if module.n_outputs > 1 else "binary"
    y = torch.zeros(len(held_out), dtype=torch.long) if module.n_outputs > 1 else torch.zeros(len(held_out))
    state = {k: v.clone() for k, v in module.state_dict().items()}

    def loss(share: bool) -> float:
        module.load_state_dict(state)
        with module.sharing_first_layer():
            if share:
                for rows in (train_rows, held_out):
                    slots = module.rows_slots(rows)
                    assert slots is not None
                    module.share_rows_slots(rows, slots)
            return validation_loss(task, module, held_out, y, batchnorm_rows=train_rows, batch_size=64)

    assert loss(True) == loss(False)
    module.load_state_dict(state)
