"""Multi-layer perceptrons for the encoder and decoder."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._registry import lookup

__all__ = ["ACTIVATIONS", "MLP"]

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


class MLP(nn.Module):
    """``in_dim -> hidden_dims... -> out_dim`` with an activation after every hidden layer.

    Input ``[..., in_dim]``, output ``[..., out_dim]``; any leading batch dimensions pass through,
    which is what lets a vectorized particle dimension ``[K, B, in_dim]`` flow through unchanged.
    """

    def __init__(
        self, in_dim: int, hidden_dims: Sequence[int], out_dim: int, activation: str = "relu"
    ) -> None:
        super().__init__()
        act = lookup("activation", activation, ACTIVATIONS)
        dims = [int(in_dim), *map(int, hidden_dims)]
        if any(d <= 0 for d in (*dims, out_dim)):
            raise ValueError(f"layer sizes must be positive, got {dims + [out_dim]}")
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), act()]
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(dims[-1], int(out_dim))
        self.feature_dim = dims[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer ``[..., hidden_dims[-1]]`` (context for conditional flows)."""
        return self.hidden(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x))
