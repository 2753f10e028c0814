"""Amortized guides q(z | x): an encoder network maps each datapoint to its posterior.

A guide is an ``nn.Module`` whose ``forward(x [B, x_dim])`` returns a distribution with batch shape
``[B]`` and event shape ``[z_dim]``, and whose ``gaussian(x)`` returns its diagonal-Normal stage
(what the VampPrior mixes). Posterior means (:meth:`pyro_vae.VAE.posterior_mean`) use the full
q's ``mean`` where it has one and a Monte Carlo mean otherwise (an IAF).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import conditional_affine_autoregressive
from torch import nn
from torch.nn.functional import softplus

from .._registry import lookup
from .networks import MLP

__all__ = ["Guide", "NormalGuide", "IAFGuide", "GUIDES", "make_guide"]


class Guide(nn.Module):
    """Base class for amortized guides."""

    def __init__(self, x_dim: int, z_dim: int) -> None:
        super().__init__()
        self.x_dim, self.z_dim = int(x_dim), int(z_dim)

    def forward(self, x: torch.Tensor) -> dist.Distribution:  # pragma: no cover - abstract
        raise NotImplementedError

    def gaussian(self, x: torch.Tensor) -> dist.Distribution:  # pragma: no cover - abstract
        raise NotImplementedError


class NormalGuide(Guide):
    """q(z | x) = N(mu(x), diag(sigma(x)^2)), the encoder of Kingma & Welling (2014)."""

    def __init__(
        self, x_dim: int, z_dim: int, hidden_dims: Sequence[int] = (400,), activation: str = "relu"
    ) -> None:
        super().__init__(x_dim, z_dim)
        self.net = MLP(x_dim, hidden_dims, 2 * z_dim, activation)

    def _loc_scale(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.net.out(h).chunk(2, dim=-1)
        # softplus rather than exp: no overflow for large pre-activations early in training.
        return loc, softplus(raw) + 1e-5

    def gaussian(self, x: torch.Tensor) -> dist.Distribution:
        loc, scale = self._loc_scale(self.net.features(x))
        return dist.Normal(loc, scale).to_event(1)

    def forward(self, x: torch.Tensor) -> dist.Distribution:
        return self.gaussian(x)


class IAFGuide(NormalGuide):
    """A diagonal Normal pushed through conditional inverse autoregressive flows (Kingma et al.
    2016). Each flow is conditioned on the encoder's last hidden layer ``h(x)``, so the whole
    posterior is amortized. Sampling and the log density of a sample are one pass each (IAF).
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        hidden_dims: Sequence[int] = (400,),
        activation: str = "relu",
        num_flows: int = 2,
    ) -> None:
        super().__init__(x_dim, z_dim, hidden_dims, activation)
        if num_flows < 1:
            raise ValueError(f"num_flows must be >= 1, got {num_flows}")
        context = self.net.feature_dim
        self.flows = nn.ModuleList(
            conditional_affine_autoregressive(z_dim, context, hidden_dims=[max(2 * z_dim, 32)])
            for _ in range(num_flows)
        )

    def forward(self, x: torch.Tensor) -> dist.Distribution:
        h = self.net.features(x)
        loc, scale = self._loc_scale(h)
        base = dist.Normal(loc, scale).to_event(1)
        return dist.TransformedDistribution(base, [f.condition(h) for f in self.flows])


GUIDES = {
    "normal": lambda x_dim, z_dim, hidden, act, num_flows: NormalGuide(x_dim, z_dim, hidden, act),
    "iaf": lambda x_dim, z_dim, hidden, act, num_flows: IAFGuide(
        x_dim, z_dim, hidden, act, num_flows
    ),
}


def make_guide(
    name: str,
    x_dim: int,
    z_dim: int,
    hidden_dims: Sequence[int] = (400,),
    activation: str = "relu",
    num_flows: int = 2,
) -> Guide:
    """Build a guide by name (``normal`` or ``iaf``)."""
    return lookup("guide", name, GUIDES)(x_dim, z_dim, hidden_dims, activation, num_flows)
