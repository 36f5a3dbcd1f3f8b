"""Batched building blocks: one tensor operation serves every tree group at once (no Python loop over groups)."""

from __future__ import annotations

import itertools
import math

import torch
from torch import nn


class GroupLinear(nn.Module):
    """``k`` independent linear maps applied in one ``einsum``: ``(n, k, i) -> (n, k, o)``.

    Initialised like ``k`` separate :class:`torch.nn.Linear` layers, so a batched network starts from the same
    distribution as DeepGBM's per-group networks.
    """

    def __init__(self, groups: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.groups, self.in_features, self.out_features = groups, in_features, out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(groups, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(groups, out_features).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("nki,kio->nko", x, self.weight) + self.bias

    def extra_repr(self) -> str:
        return f"groups={self.groups}, in_features={self.in_features}, out_features={self.out_features}"


class GroupBatchNorm(nn.Module):
    """BatchNorm over ``(n, k, c)`` with separate statistics for each group and channel."""

    def __init__(self, groups: int, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(groups * channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, k, c = x.shape
        normed: torch.Tensor = self.norm(x.reshape(n, k * c))
        return normed.reshape(n, k, c)


class GroupMLP(nn.Module):
    """``k`` MLPs ``in -> hidden... -> out`` with BatchNorm + ReLU on hidden layers and a linear last layer.

    At least one hidden layer: :meth:`after_first_linear` lets a caller compute the first linear map its own way.
    """

    def __init__(self, groups: int, in_features: int, hidden: tuple[int, ...], out_features: int) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("GroupMLP needs at least one hidden layer")
        sizes = (in_features, *hidden)
        self.hidden = nn.ModuleList(GroupLinear(groups, a, b) for a, b in itertools.pairwise(sizes))
        self.norms = nn.ModuleList(GroupBatchNorm(groups, b) for b in hidden)
        self.last = GroupLinear(groups, sizes[-1], out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after_first_linear(self.hidden[0](x))

    def first_linear_parameters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(weight (k, in, h), bias (k, h))`` of the first linear map."""
        layer = self.hidden[0]
        return layer.weight, layer.bias  # type: ignore[return-value]

    def after_first_linear(self, x: torch.Tensor) -> torch.Tensor:
        """The rest of the network, from the output ``(n, k, hidden[0])`` of the first linear map."""
        first = True
        for linear, norm in zip(self.hidden, self.norms, strict=False):
            if not first:
                x = linear(x)
            x = torch.relu(norm(x))
            first = False
        return self.last(x)  # type: ignore[no-any-return]
