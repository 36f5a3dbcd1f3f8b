"""The GBDT2NN network itself (DeepGBM step 5), as one batched computation over all tree groups."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from gbdt2nn_core.errors import ConfigError
from gbdt2nn_core.student._layers import GroupBatchNorm, GroupLinear, GroupMLP
from gbdt2nn_core.student.frozen_chain import outputs as frozen_chain_outputs
from gbdt2nn_core.student.frozen_chain import outputs_and_input_gradient

if TYPE_CHECKING:
    from gbdt2nn_core.data.encoding import OneHotBlocks
    from gbdt2nn_core.student.columns import GroupColumns

__all__ = ["GBDT2NNModule"]

#: module -> (key, lookup tables, folded layers) of :meth:`GBDT2NNModule._serving_weights`; outside the module so
#: that TorchScript, deepcopy and state dicts never see it.
_SERVING_CACHE: weakref.WeakKeyDictionary[GBDT2NNModule, Any] = weakref.WeakKeyDictionary()

#: module -> {what: (tensor, built with autograd on)} of :meth:`GBDT2NNModule.sharing_first_layer`: tensors made from
#: the first layer's weights, shared by the forward passes of one training step; and {("slots", data pointer): (slots,
#: (rows, their in-place version))}: the lookup slots of the step's batch, known from the fit (the rows are held so
#: that no other tensor can take their memory within the step); and {("rows", data pointer): the same}: the slots of
#: every row of a matrix whose runs of rows (its batches, its chunks) go through the module within the block.
_STEP_CACHE: weakref.WeakKeyDictionary[GBDT2NNModule, dict[Any, tuple[torch.Tensor, Any]]] = weakref.WeakKeyDictionary()

#: The first layer runs as one dense matmul over all encoded columns when the encoded width ``D`` is at most this
#: multiple of the group width ``W`` (it does ``D / W`` times the work of the per-group gather, but skips copying
#: an ``(n, k, W)`` tensor: about 1.3x faster on one CPU core, and on an H200 from 100k rows up, at adult's shapes,
#: where ``D = W``; BENCHMARKS.md).
DENSE_FIRST_LAYER_MAX_RATIO = 1.5

#: How far an encoded one-hot value may be from ``onehot - centre`` and still be read as that one-hot (float32
#: rounds ``1 - centre`` and ``-centre`` separately: about 1e-7 apart).
LOOKUP_TOLERANCE = 1e-6


class GBDT2NNModule(nn.Module):
    """Maps encoded rows ``z`` (``(n, D)``) to margins (``(n,)``, or ``(n, c)`` with ``c`` outputs).

    Group ``j`` sees only the encoded values of its selected columns ``I_j`` (gathered through
    ``group_input_index``; index ``D`` is a constant-zero pad column), runs its MLP ``N_j`` to a 20-dim
    embedding, and maps it with the frozen leaf-embedding head: ``y_j = w_j · N_j(z[I_j]) + b_j``. The margin
    of output ``c`` is the sum of ``y_j`` over the groups that belong to ``c``.
    """

    if TYPE_CHECKING:
        # The buffers registered in __init__, typed for mypy (nn.Module.__getattr__ says `Tensor | Module`). Only
        # for the checker: TorchScript reads class annotations and cannot resolve postponed (string) ones.
        group_input_index: torch.Tensor
        output_map: torch.Tensor
        head_weight: torch.Tensor
        head_bias: torch.Tensor
        lookup_slot_columns: torch.Tensor
        lookup_slot_block: torch.Tensor
        lookup_block_slots: torch.Tensor
        lookup_block_offsets: torch.Tensor
        lookup_centres: torch.Tensor
        lookup_other_columns: torch.Tensor
        lookup_weight_rows: torch.Tensor
        lookup_row_block: torch.Tensor
        lookup_row_centres: torch.Tensor

    def __init__(
        self,
        *,
        group_input_index: torch.Tensor,
        group_output: torch.Tensor,
        n_outputs: int,
        hidden: tuple[int, ...] = (100, 100, 100, 50),
        embedding_dim: int = 20,
    ) -> None:
        super().__init__()
        groups, width = group_input_index.shape
        self.n_outputs = n_outputs
        self.hidden_sizes = tuple(hidden)
        self.embedding_dim = embedding_dim
        self.register_buffer("group_input_index", group_input_index.long().clone())
        self.register_buffer("output_map", nn.functional.one_hot(group_output.long(), n_outputs).float())
        # the frozen 20 -> 1 head from the leaf embedding (DeepGBM freezes it after step 4)
        self.register_buffer("head_weight", torch.zeros(groups, embedding_dim))
        self.register_buffer("head_bias", torch.zeros(groups))
        self.mlp = GroupMLP(groups, width, self.hidden_sizes, embedding_dim)
        # the dense first layer maps each encoded column to its slot in every group; that needs each group to list a
        # column once (only the pad column, the largest index, may repeat, and only when it really is the pad)
        index = self.group_input_index
        self.largest_index = int(index.max()) if index.numel() else 0
        rows = [[value for value in row if value != self.largest_index] for row in index.tolist()]
        self.columns_distinct = all(len(row) == len(set(row)) for row in rows)
        self.largest_index_repeats = any(len(row) < width - 1 for row in rows)
        self.dense_max_ratio = float(DENSE_FIRST_LAYER_MAX_RATIO)  # an attribute: TorchScript reads no globals
        self.lookup_tolerance = float(LOOKUP_TOLERANCE)
        # the lookup first layer is off until use_lookup() tells the module the encoder's one-hot layout; its
        # buffers are not persistent, so saved weights and their format do not change
        self.lookup_enabled = False
        self.lookup_n_encoded = 0
        self._lookup_generation = 0  # counts use_lookup calls: part of the serving cache's key
        for name in ("lookup_slot_columns", "lookup_slot_block", "lookup_block_slots", "lookup_block_offsets"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.long), persistent=False)
        for name in ("lookup_other_columns", "lookup_weight_rows", "lookup_row_block"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.long), persistent=False)
        for name in ("lookup_centres", "lookup_row_centres"):
            self.register_buffer(name, torch.zeros(0), persistent=False)

    @property
    def n_groups(self) -> int:
        return int(self.group_input_index.shape[0])

    def group_inputs(self, z: torch.Tensor) -> torch.Tensor:
        """``(n, k, W)``: each group's slice of ``z``, zero-padded to the widest group."""
        padded = nn.functional.pad(z, (0, 1))
        return padded[:, self.group_input_index]

    def use_lookup(self, blocks: OneHotBlocks | None) -> None:
        """Compute the first layer as a row lookup over the encoder's one-hot ``blocks`` where that is exact.

        ``blocks`` is :meth:`InputEncoder.onehot_blocks` of the encoder that makes this module's inputs; ``None``
        turns the lookup off. With it on, :meth:`embeddings` (and so ``forward``) reads the active slot of every
        block from ``z`` and sums rows of the first layer's weights instead of multiplying by the whole one-hot,
        unless gradients with respect to ``z`` are being recorded (attributors: the dense form stays the
        reference there) or ``z`` is not exactly an encoding (e.g. a point between a row and the baseline).
        The lookup needs each group to list a column once; otherwise it stays off.
        """
        self._lookup_generation += 1
        if blocks is None or not self.columns_distinct or len(blocks.widths) == 0:
            self.lookup_enabled = False
            return
        device = self.group_input_index.device
        widths = np.asarray(blocks.widths, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(widths)[:-1]])
        slot_block = np.repeat(np.arange(len(widths)), widths)
        width = int(widths.max())
        # (B, widest) slot numbers of each block; a short block repeats the pad slot S (one past the last)
        block_slots = np.full((len(widths), width), int(widths.sum()), dtype=np.int64)
        for b, (offset, size) in enumerate(zip(offsets, widths, strict=True)):
            block_slots[b, :size] = np.arange(offset, offset + size)

        def long(values: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(np.asarray(values, dtype=np.int64), device=device)

        self.lookup_slot_columns = long(blocks.slot_positions)
        self.lookup_slot_block = long(slot_block)
        self.lookup_block_slots = long(block_slots)
        self.lookup_block_offsets = long(offsets)
        self.lookup_other_columns = long(blocks.other_positions)
        self.lookup_centres = torch.as_tensor(np.asarray(blocks.centres), dtype=torch.float32, device=device)
        self.lookup_n_encoded = int(blocks.n_encoded)
        self._index_lookup_rows(len(widths))
        self.lookup_enabled = True

    def _index_lookup_rows(self, n_blocks: int) -> None:
        """What :meth:`lookup_tables` reads, fixed by the grouping and the blocks: for every slot, the missing row and
        every column outside the blocks, the row of each group's first-layer weight it takes (one past the last:
        a zero row, where the group does not see the column), and the block and centre of each table row."""
        groups, width = self.group_input_index.shape
        index = self.group_input_index
        columns = max(self.lookup_n_encoded, int(index.max()) if index.numel() else 0) + 1
        zero_row = groups * width
        # flat row of group j's weight for encoded column c (the pad column and unseen columns: the zero row)
        flat = torch.full((groups, columns), zero_row, dtype=torch.long, device=index.device)
        own = torch.arange(width, device=index.device) + width * torch.arange(groups, device=index.device)[:, None]
        flat = flat.scatter(1, index, own)[:, : self.lookup_n_encoded]
        missing = torch.full((groups, 1), zero_row, dtype=torch.long, device=index.device)
        rows = torch.cat([flat[:, self.lookup_slot_columns], missing, flat[:, self.lookup_other_columns]], dim=1)
        self.lookup_weight_rows = rows.t().reshape(-1)  # row-major (table row, group): a table row is k·h wide
        # the missing row belongs to an extra block with no centre, so its constant is zero
        self.lookup_row_block = torch.cat([self.lookup_slot_block, self.lookup_slot_block.new_full((1,), n_blocks)])
        self.lookup_row_centres = torch.cat([self.lookup_centres, self.lookup_centres.new_zeros(1)])

    def lookup_slots(self, active: torch.Tensor) -> torch.Tensor:
        """Slot numbers for :meth:`lookup_first_layer` from :meth:`InputEncoder.active_slots` (``(n, B)``, the slot
        within each block, ``-1`` for a missing value)."""
        slots_total = int(self.lookup_centres.shape[0])
        return torch.where(active >= 0, active + self.lookup_block_offsets, torch.full_like(active, slots_total))

    def forward_lookup(self, other: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Margins from the encoder's lookup inputs, without the one-hot blocks ever being written.

        ``other`` is :meth:`InputEncoder.outside_blocks` and ``active`` :meth:`InputEncoder.active_slots` of the
        same rows (the encoder given to :meth:`use_lookup`); equal to ``forward(encoder.transform(rows))``.
        """
        if not self.lookup_enabled:
            raise ConfigError(
                setting="lookup", value="off", fix="call module.use_lookup(encoder.onehot_blocks()) first"
            )
        slots = self.lookup_slots(active)
        if self._inference_applies():
            tables, rest = self._serving_weights()
            return self._inference_margin(self.lookup_first_layer(other, slots, tables=tables), rest)
        first = self.lookup_first_layer(other, slots)
        return self.combine(self.group_outputs(self.mlp.after_first_linear(first)))

    def first_layer(
        self, z: torch.Tensor, first_weight: torch.Tensor | None = None, first_bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The first linear map of every group, ``(n, k, h)``, with the group MLP's weights or the ones given,
        the cheapest exact way: the lookup (see :meth:`use_lookup`), one dense matmul, or the per-group gather."""
        own = first_weight is None or first_bias is None
        if first_weight is None or first_bias is None:
            first_weight, first_bias = self.mlp.first_linear_parameters()
        if not torch.jit.is_scripting() and self._lookup_applies(z):  # type: ignore[attr-defined]
            slots = self.active_slots(z)
            if slots is not None:
                other = z.index_select(1, self.lookup_other_columns)
                if own:  # the module's own weights: the step's shared tables, if any (see sharing_first_layer)
                    return self.lookup_first_layer(other, slots)
                return self.lookup_first_layer(other, slots, first_weight, first_bias)
        if self._dense_first_layer_applies(z):
            n, columns = z.shape
            groups, out = first_bias.shape
            weight = self.dense_first_weight(columns, first_weight)
            return (z @ weight).reshape(n, groups, out) + first_bias
        return torch.einsum("nki,kio->nko", self.group_inputs(z), first_weight) + first_bias

    def embeddings(self, z: torch.Tensor) -> torch.Tensor:
        """``N_j(z[I_j])`` for every group: ``(n, k, embedding_dim)``."""
        return self.mlp.after_first_linear(self.first_layer(z))  # type: ignore[no-any-return]

    @torch.jit.unused
    def rows_slots(self, z: torch.Tensor, chunk_rows: int = 4096) -> torch.Tensor | None:
        """:meth:`active_slots` of every row of ``z``, a chunk of rows at a time (the check's intermediates are
        ``(n, S)``); ``None`` when the lookup does not apply to ``z`` or some row is not exactly an encoding.

        Training reads the same rows every epoch: their slots, found once, spare every batch the check
        (:meth:`embeddings_of_slots`).
        """
        if not self._lookup_applies(z):
            return None
        found = []
        for start in range(0, len(z), chunk_rows):
            slots = self.active_slots(z[start : start + chunk_rows])
            if slots is None:
                return None
            found.append(slots)
        return torch.cat(found) if found else None

    @torch.jit.unused
    def embeddings_of_slots(self, z: torch.Tensor, slots: torch.Tensor | None) -> torch.Tensor:
        """:meth:`embeddings` of rows ``z`` whose :meth:`active_slots` are ``slots`` (from :meth:`rows_slots`, or
        ``None``: found here), with the module's own weights: the same values without checking ``z`` again."""
        if slots is None or not self._lookup_applies(z):
            return self.embeddings(z)
        cache = _STEP_CACHE.get(self)
        if cache is not None:  # an attributor's pass over the same rows in this step need not check them again
            cache[("slots", z.data_ptr())] = (slots, (z, z._version))
        other = z.index_select(1, self.lookup_other_columns)
        return self.mlp.after_first_linear(self.lookup_first_layer(other, slots))  # type: ignore[no-any-return]

    def _dense_first_layer_applies(self, z: torch.Tensor) -> bool:
        width = self.group_input_index.shape[1]
        if not self.columns_distinct or z.shape[1] > self.dense_max_ratio * width:
            return False
        # a repeated largest index is the pad column only if it equals D
        return not self.largest_index_repeats or z.shape[1] == self.largest_index

    def _lookup_applies(self, z: torch.Tensor) -> bool:
        if not self.lookup_enabled or z.dim() != 2 or z.shape[1] != self.lookup_n_encoded:
            return False
        return not (torch.is_grad_enabled() and z.requires_grad)

    @torch.jit.unused
    def active_slots(self, z: torch.Tensor) -> torch.Tensor | None:
        """``(n, B)`` slot numbers (into the lookup's ``S`` slots) active in each block of ``z``, ``S`` for an all-zero
        block; ``None`` when some row of ``z`` is not exactly a one-hot-minus-centre encoding (use the dense form).
        """
        # an exported graph (ONNX, a TorchScript trace) must hold for any input, and the lookup depends on z's values
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():  # type: ignore[attr-defined,no-untyped-call]
            return None
        cache = _STEP_CACHE.get(self, {})
        known = cache.get(("slots", z.data_ptr()))
        if known is not None:
            held, version = known[1]
            if _same_values(held, version, z):
                return known[0]
        for slots, (held, version) in (v for k, v in cache.items() if isinstance(k, tuple) and k[0] == "rows"):
            run = _rows_within(held, version, z)
            if run is not None:
                return slots[run[0] : run[1]]
        slots_total = int(self.lookup_centres.shape[0])
        values = z.index_select(1, self.lookup_slot_columns)  # (n, S)
        # the active slot is the only positive value of its block (1 - centre > 0; the others are -centre <= 0); a
        # missing value has none (a centre of 1 encodes as zeros too, and its lookup row is zero)
        hot = values > 0
        rows, columns = hot.nonzero(as_tuple=True)
        slots = torch.full(
            (z.shape[0], self.lookup_block_offsets.shape[0]), slots_total, dtype=torch.long, device=z.device
        )
        slots = slots.index_put((rows, self.lookup_slot_block.index_select(0, columns)), columns)
        filled = slots != slots_total
        if int(filled.sum()) != int(rows.shape[0]):  # two positive values in one block: not an encoding
            return None
        observed = filled.index_select(1, self.lookup_slot_block)  # (n, S)
        # what z would hold with these active slots: one-hot minus centre, or zeros for a missing value
        expected = (hot.to(z.dtype) - self.lookup_centres.to(z.dtype)) * observed.to(z.dtype)
        if not bool(((values - expected).abs() <= self.lookup_tolerance).all()):
            return None
        return slots

    @torch.jit.unused
    @contextlib.contextmanager
    def sharing_first_layer(self) -> Iterator[None]:
        """Within the block, what is made from the first layer's weights — the lookup tables, the ``(D, k·h)``
        weight — is made once and shared by every forward pass: a training step's forward of its batch, the
        structure attributor's background expectation and the aligned rows' attributions each built them again
        (with autograd, so their backward ran more than once too). The same tensors, so the same values and
        gradients; the parameters must not change inside the block (a training step enters it for its forward
        passes, before ``optimizer.step()``). The lookup slots given to :meth:`embeddings_of_slots` are kept too:
        :meth:`active_slots` of the same rows (an attributor's pass over the batch) returns them unchecked.
        """
        _STEP_CACHE[self] = {}
        try:
            yield
        finally:
            _STEP_CACHE.pop(self, None)

    @torch.jit.unused
    def share_rows_slots(self, z: torch.Tensor, slots: torch.Tensor) -> None:
        """Within :meth:`sharing_first_layer`, :meth:`active_slots` of ``z`` or of any run of its rows (``z[a:b]``, as
        batches and chunks are cut) returns those rows of ``slots`` (:meth:`rows_slots` of ``z``) unchecked, while
        ``z`` is unchanged: a validation pass after every epoch reads the same rows, whose slots are found once."""
        cache = _STEP_CACHE.get(self)
        if cache is None:
            raise RuntimeError("share_rows_slots is for the inside of a sharing_first_layer() block")
        if z.dim() != 2 or not z.is_contiguous() or slots.shape[0] != z.shape[0]:
            raise ValueError(f"slots of {slots.shape[0]} rows for a matrix of shape {tuple(z.shape)}")
        cache[("rows", z.data_ptr())] = (slots, (z, z._version))

    @torch.jit.unused
    def _shared(self, key: Any, make: Callable[[], Any]) -> Any:
        """``make()``, or inside :meth:`sharing_first_layer` what it made before for ``key`` (made again where autograd
        is on and the earlier one was made without it, so that gradients reach the weights)."""
        cache = _STEP_CACHE.get(self)
        if cache is None:
            return make()
        recording = torch.is_grad_enabled()
        if key in cache:
            value, with_graph = cache[key]
            if with_graph or not recording:
                return value
        value = make()
        cache[key] = (value, recording)
        return value

    @torch.jit.unused
    def _serving_weights(
        self,
    ) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
        """The folded inference layers with the first one as lookup tables, computed once per state of the weights.

        Serving calls :meth:`forward_lookup` once per 2,048-row chunk; rebuilding the tables and the folded layers
        for each chunk cost about 5 % of the time. The key changes whenever a parameter or buffer is replaced or
        changed in place (``_version``: optimizer steps, ``load_state_dict``, batch-norm statistics) or
        :meth:`use_lookup` is called again.
        """
        tensors = [*self.parameters(), *self.buffers()]
        key = (self._lookup_generation, *((t.data_ptr(), t._version) for t in tensors))
        cached = _SERVING_CACHE.get(self)
        if cached is not None and cached[0] == key:
            return cached[1], cached[2]
        first_weight, first_bias, rest = self._folded_layers()
        tables = self.lookup_tables(first_weight, first_bias)
        _SERVING_CACHE[self] = (key, tables, rest)
        return tables, rest

    @torch.jit.unused
    def lookup_tables(
        self, first_weight: torch.Tensor, first_bias: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What :meth:`lookup_first_layer` multiplies with for first-layer weights ``(k, W, h)`` and bias ``(k, h)``:
        the slot table ``(S + 1, k·h)`` (row ``S`` zero, for a missing value), the weights of the columns outside the
        blocks ``(D - S, k·h)`` and the bias ``(1, k·h)``."""
        groups, width, out = first_weight.shape
        # every weight row the tables hold in one selection from the group-major weights (row k·W: zeros), instead
        # of the (D, k·h) dense weight and selections from it: the same values, a third of the first layer's cost
        padded = torch.cat([first_weight.reshape(groups * width, out), first_weight.new_zeros(1, out)])
        rows = padded.index_select(0, self.lookup_weight_rows).view(-1, groups * out)  # (S + 1 + D - S, k·h)
        slots_total = int(self.lookup_centres.shape[0])
        raw, other_weight = rows[: slots_total + 1], rows[slots_total + 1 :]
        centred = self.lookup_row_centres.to(raw.dtype).unsqueeze(1) * raw
        constant = raw.new_zeros(self.lookup_block_offsets.shape[0] + 1, raw.shape[1]).index_add(
            0, self.lookup_row_block, centred
        )  # (B + 1, k·h); the last, the missing row's block, zero
        table = raw - constant.index_select(0, self.lookup_row_block)  # row S: a missing value adds nothing
        return table, other_weight, first_bias.reshape(1, -1)

    @torch.jit.unused
    def own_lookup_tables(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`lookup_tables` of the module's own first layer (the step's shared ones inside
        :meth:`sharing_first_layer`)."""
        tables: tuple[torch.Tensor, torch.Tensor, torch.Tensor] = self._shared(
            "lookup_tables", lambda: self.lookup_tables(*self.mlp.first_linear_parameters())
        )
        return tables

    @torch.jit.unused
    def group_lookup_tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The module's own slot table group-major, ``(k, S + 1, h)`` (row ``S`` zero), and the weights of the columns
        outside the blocks ``(D - S, k·h)``: what a per-group contraction reads (each group's table contiguous);
        shared within :meth:`sharing_first_layer` like the tables they come from."""

        def make() -> tuple[torch.Tensor, torch.Tensor]:
            table, other_weight, _ = self.own_lookup_tables()
            return table.view(table.shape[0], self.n_groups, -1).transpose(0, 1).contiguous(), other_weight

        tables: tuple[torch.Tensor, torch.Tensor] = self._shared("group_lookup_tables", make)
        return tables

    @torch.jit.unused
    def lookup_first_layer(
        self,
        other: torch.Tensor,
        slots: torch.Tensor,
        first_weight: torch.Tensor | None = None,
        first_bias: torch.Tensor | None = None,
        tables: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The first linear map of every group from the encoded values outside the one-hot blocks (``other``,
        ``(n, D - S)``) and the active slot of each block (``slots``, ``(n, B)``, ``S`` for a missing value).

        Equal to :meth:`dense_first_layer` of the full encoding: a block contributes ``W[a] - Σ_s centre_s W[s]``
        when slot ``a`` is active and nothing when the value is missing, so one table row per slot (and a zero row
        for missing) summed by ``embedding_bag`` replaces the block's ``S_b × k·h`` multiply-accumulates.
        """
        if tables is None:
            if first_weight is None or first_bias is None:
                tables = self.own_lookup_tables()
            else:
                tables = self.lookup_tables(first_weight, first_bias)
        table, other_weight, bias = tables
        looked_up = nn.functional.embedding_bag(slots, table, mode="sum")  # (n, k·h)
        # bias and the columns outside the blocks in one fused call, then added in place to the lookup
        rest = torch.addmm(bias, other.to(table.dtype), other_weight)
        return looked_up.add_(rest).reshape(-1, self.n_groups, table.shape[1] // self.n_groups)

    def dense_first_weight(self, columns: int, first_weight: torch.Tensor | None = None) -> torch.Tensor:
        """``(D, k·h)`` with ``D = columns``: group ``j``'s first-layer weight row for slot ``i`` at encoded column
        ``I_j[i]`` (block ``j`` of the output), zero where the group does not see a column."""
        if first_weight is None:
            first_weight, _ = self.mlp.first_linear_parameters()
        groups, width, out = first_weight.shape
        slots = torch.arange(width, device=first_weight.device).expand(groups, width)
        # slot of encoded column c in group j, or `width` (a zero row appended below) where the group lacks c
        slot_of = torch.full((groups, columns + 1), width, dtype=torch.long, device=first_weight.device)
        slot_of = slot_of.scatter(1, self.group_input_index, slots)[:, :columns]
        padded = torch.cat([first_weight, first_weight.new_zeros(groups, 1, out)], dim=1)
        dense = padded.gather(1, slot_of.unsqueeze(-1).expand(groups, columns, out))  # (k, D, h)
        return dense.permute(1, 0, 2).reshape(columns, groups * out)

    def dense_first_layer(self, z: torch.Tensor) -> torch.Tensor:
        """The first linear map of every group as one ``(n, D) @ (D, k·h)`` matmul: ``(n, k, h)``.

        Equal to ``mlp.hidden[0](group_inputs(z))``: group ``j``'s weight row for slot ``i`` moves to encoded column
        ``I_j[i]``; columns the group does not see get zero weights.
        """
        _, first_bias = self.mlp.first_linear_parameters()
        n, columns = z.shape
        groups, out = first_bias.shape
        return (z @ self.dense_first_weight(columns)).reshape(n, groups, out) + first_bias

    # ------------------------------------------------------------------ first layer per input column (attributors)
    @torch.jit.unused
    def column_first_layer(self, z: torch.Tensor, aggregation: torch.Tensor) -> GroupColumns:
        """The first linear map of rows ``z`` known per input column (``aggregation``: the encoder's ``(D, d)`` 0/1
        matrix): the :class:`~gbdt2nn_core.host.attribution.FirstLayerModel` capability that attributors' fast paths
        use; see :class:`~gbdt2nn_core.student.columns.GroupColumns`."""
        from gbdt2nn_core.student.columns import GroupColumns

        return GroupColumns(self, z, aggregation)

    @torch.jit.unused
    def after_first_layer(self, first: torch.Tensor) -> torch.Tensor:
        """Margins from the first linear map's output ``(n, k, h)``: the rest of the network (layers 2..L, heads)."""
        return self.combine(self.group_outputs_after_first_layer(first))

    @torch.jit.unused
    def group_outputs_after_first_layer(self, first: torch.Tensor) -> torch.Tensor:
        """``y_j`` for every group, ``(n, k)``, from the first linear map's output ``(n, k, h)``.

        With every BatchNorm on its running statistics (attribution, and alignment's frozen BatchNorm) each one is an
        affine map per channel, folded into the next linear map; the layers then run group-major, one ``baddbmm``
        each, with the frozen head folded into the last: the same values (to rounding) for a fraction of the
        element-wise work, which a double backward through 16 integrated-gradient steps multiplies.
        """
        chain = self._frozen_chain()
        if chain is None:
            return self.group_outputs(self.mlp.after_first_linear(first))
        return frozen_chain_outputs(first, *chain)

    @torch.jit.unused
    def group_outputs_and_gradient(
        self, first: torch.Tensor, *, create_graph: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``y_j`` ``(n, k)`` and each group's gradient ``∂y_j/∂first`` ``(n, k, h)`` from the first linear map's
        output ``(n, k, h)`` (group ``j`` reads only ``first[:, j]``).

        With ``create_graph`` both stay differentiable in the parameters — with BatchNorm frozen through
        :mod:`~gbdt2nn_core.student.frozen_chain`'s exact tangent pass instead of a double backward; otherwise both
        are detached.
        """
        chain = self._frozen_chain()
        if chain is not None:
            with torch.set_grad_enabled(create_graph):
                outputs, gradient = outputs_and_input_gradient(first if create_graph else first.detach(), *chain)
        else:
            with torch.enable_grad():
                inputs = first if first.requires_grad else first.detach().requires_grad_(True)
                outputs = self.group_outputs_after_first_layer(inputs)
                (gradient,) = torch.autograd.grad(outputs.sum(), inputs, create_graph=create_graph)
        return (outputs, gradient) if create_graph else (outputs.detach(), gradient.detach())

    @torch.jit.unused
    def after_first_layer_gradients(self, first: torch.Tensor, *, create_graph: bool = False) -> torch.Tensor:
        """``∂margin/∂first`` from the first linear map's output ``(n, k, h)``: ``(n, k, h)`` for one output,
        ``(n, c, k, h)`` for ``c`` (the :class:`~gbdt2nn_core.host.attribution.FirstLayerGradients` capability).
        Each group belongs to one output, so one pass yields every output's gradient."""
        _, gradient = self.group_outputs_and_gradient(first, create_graph=create_graph)
        if self.n_outputs == 1:
            return gradient
        # output c's gradient: its own groups' rows, zero elsewhere
        return gradient.unsqueeze(1) * self.output_map.t().to(gradient.dtype)[None, :, :, None]

    @torch.jit.unused
    def _frozen_chain(
        self,
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor] | None:
        """The layers after the first as the chain of :mod:`~gbdt2nn_core.student.frozen_chain`, differentiable in
        the parameters (BatchNorm folded into each group linear map, the head into the last): ``None`` unless every
        BatchNorm uses its running statistics."""
        affine = self._frozen_norm_affine()
        if affine is None:
            return None
        scale, shift = affine[0]
        layers = []
        for linear, (norm_scale, norm_shift) in zip(list(self.mlp.hidden)[1:], affine[1:], strict=True):
            assert isinstance(linear, GroupLinear)
            layers.append((linear.weight * norm_scale.unsqueeze(1), linear.bias * norm_scale + norm_shift))
        last = self.mlp.last
        assert isinstance(last, GroupLinear)
        head = (last.weight * self.head_weight.unsqueeze(1)).sum(-1, keepdim=True)  # (k, i, 1)
        head_bias = (last.bias * self.head_weight).sum(-1, keepdim=True) + self.head_bias.unsqueeze(1)  # (k, 1)
        return scale, shift, layers, head, head_bias

    @torch.jit.unused
    def _frozen_norm_affine(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """Every BatchNorm as ``x * scale + shift`` (``(k, h)`` each) when all use running statistics; else ``None``."""
        affine = []
        for group_norm in self.mlp.norms:
            assert isinstance(group_norm, GroupBatchNorm)
            norm = group_norm.norm
            mean, var = norm.running_mean, norm.running_var
            if norm.training or mean is None or var is None:
                return None
            scale = torch.rsqrt(var + norm.eps)
            shift = -mean * scale
            if norm.weight is not None and norm.bias is not None:
                shift = shift * norm.weight + norm.bias
                scale = scale * norm.weight
            affine.append((scale.reshape(self.n_groups, -1), shift.reshape(self.n_groups, -1)))
        return affine

    @torch.jit.unused
    def summed_first_weight(self, columns: int, first_weight: torch.Tensor | None = None) -> torch.Tensor:
        """``(D, k·h)`` like :meth:`dense_first_weight`, but a column a group lists twice gets the sum of its rows (the
        per-group gather's meaning), so ``z @ W`` is the first layer for every grouping; the pad index ``D`` drops."""
        if first_weight is None:
            own, _ = self.mlp.first_linear_parameters()
            shared: torch.Tensor = self._shared(
                ("summed_first_weight", columns), lambda: self.summed_first_weight(columns, own)
            )
            return shared
        groups, width, out = first_weight.shape
        index = self.group_input_index.unsqueeze(-1).expand(groups, width, out)
        summed = first_weight.new_zeros(groups, columns + 1, out).scatter_add(1, index, first_weight)
        return summed[:, :columns].permute(1, 0, 2).reshape(columns, groups * out)

    # ------------------------------------------------------------------ inference (eval mode, no gradients)
    def _inference_applies(self) -> bool:
        if self.training or torch.is_grad_enabled():
            return False
        # batch norm folds into the linear maps only where it uses running statistics
        for group_norm in self.mlp.norms:
            norm = group_norm.norm
            if norm.training or norm.running_mean is None:  # type: ignore[union-attr]
                return False
        return True

    def _folded_layers(self) -> tuple[torch.Tensor, torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        """The network at inference as plain group-linear maps: each hidden layer with its batch norm folded in
        (``W·s``, ``(b - mean)·s + beta`` with ``s = gamma / sqrt(var + eps)``), then the last layer with the frozen
        head folded in (``k`` maps to one output). Returns the first layer's ``(weight, bias)`` and the rest's."""
        folded: list[tuple[torch.Tensor, torch.Tensor]] = []
        # mypy reads submodule attributes as `Tensor | Module`; TorchScript accepts only one-code or bare ignores
        for linear, group_norm in zip(self.mlp.hidden, self.mlp.norms, strict=False):
            norm = group_norm.norm
            weight, bias = linear.weight, linear.bias
            groups, out = bias.shape  # type: ignore[misc]
            mean, var = norm.running_mean, norm.running_var  # type: ignore[union-attr]
            assert mean is not None
            assert var is not None
            scale = torch.rsqrt(var + norm.eps)  # type: ignore
            shift = -mean * scale  # type: ignore[operator]
            gamma, beta = norm.weight, norm.bias  # type: ignore[union-attr]
            if gamma is not None and beta is not None:
                shift = shift * gamma + beta  # type: ignore[operator]
                scale = scale * gamma  # type: ignore[operator]
            scale, shift = scale.reshape(groups, out), shift.reshape(groups, out)
            folded.append((weight * scale.unsqueeze(1), bias * scale + shift))  # type: ignore[operator]
        last = self.mlp.last
        head = (last.weight * self.head_weight.unsqueeze(1)).sum(-1, keepdim=True)  # (k, i, 1)
        head_bias = (last.bias * self.head_weight).sum(-1, keepdim=True) + self.head_bias.unsqueeze(1)  # (k, 1)
        folded.append((head, head_bias))
        return folded[0][0], folded[0][1], folded[1:]

    def _inference_margin(self, first: torch.Tensor, rest: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """Margins from the folded first layer's output ``(n, k, h)``: batched matmuls in group-major layout, each
        with its bias added in the same call (``baddbmm``) and ReLU in place; no batch norm, no head left."""
        # (k, n, h) as a strided view: baddbmm reads each group's (n, h) rows with stride k·h, no copy (8 % faster
        # per 2,048-row chunk than making it contiguous first; same values)
        x = first.transpose(0, 1).relu_()
        for weight, bias in rest[:-1]:
            x = torch.baddbmm(bias.unsqueeze(1), x, weight).relu_()
        weight, bias = rest[-1]
        group_outputs = torch.baddbmm(bias.unsqueeze(1), x, weight).squeeze(-1).transpose(0, 1)  # (n, k)
        return self.combine(group_outputs)

    def group_outputs(self, embeddings: torch.Tensor) -> torch.Tensor:
        """``y_j`` for every group: ``(n, k)``."""
        return (embeddings * self.head_weight).sum(-1) + self.head_bias

    def combine(self, group_outputs: torch.Tensor) -> torch.Tensor:
        """Sum group outputs into margins ``(n,)`` or ``(n, c)``."""
        margin = group_outputs @ self.output_map
        return margin[:, 0] if self.n_outputs == 1 else margin

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self._inference_applies():
            first_weight, first_bias, rest = self._folded_layers()
            return self._inference_margin(self.first_layer(z, first_weight, first_bias), rest)
        return self.combine(self.group_outputs(self.embeddings(z)))


def _rows_within(held: torch.Tensor, version: int, z: torch.Tensor) -> tuple[int, int] | None:
    """The rows ``[a, b)`` of the contiguous matrix ``held`` that ``z`` reads (``z`` a view of them, as ``held[a:b]``
    is), unchanged since ``held`` was at in-place ``version``; ``None`` for any other ``z``."""
    if (
        z.dim() != 2
        or z.shape[1] != held.shape[1]
        or z.stride() != held.stride()
        or z.dtype != held.dtype
        or z.device != held.device
        or z._version != version
        or z.untyped_storage().data_ptr() != held.untyped_storage().data_ptr()
    ):
        return None
    offset, row = z.storage_offset() - held.storage_offset(), held.stride(0)
    if row <= 0 or offset % row:
        return None
    start = offset // row
    if start < 0 or start + z.shape[0] > held.shape[0]:
        return None
    return start, start + z.shape[0]


def _same_values(held: torch.Tensor, version: int, z: torch.Tensor) -> bool:
    """Whether ``z`` reads the memory of ``held`` (alive, so not reused) as the same matrix, unchanged since ``held``
    was at in-place ``version``: ``z`` is ``held`` or a detached view of it (they share the version counter)."""
    return (
        z.data_ptr() == held.data_ptr()
        and z.shape == held.shape
        and z.stride() == held.stride()
        and z.dtype == held.dtype
        and z.device == held.device
        and z._version == version
    )
