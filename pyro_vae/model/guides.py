"""Amortized guides q(z | x): an encoder network maps each datapoint to its posterior.

A guide is an ``nn.Module`` whose ``forward(x [B, x_dim])`` returns a distribution with batch shape
``[B]`` and event shape ``[z_dim]``; the built-in ones are a head (Normal, or Normal + IAF) on an
encoder trunk ``x -> features`` (an MLP, a conv net, or any module), and their ``gaussian(x)``
returns the diagonal-Normal stage (what the VampPrior mixes). Posterior means
(:meth:`pyro_vae.VAE.posterior_mean`) use the full q's ``mean`` where it has one and a Monte Carlo
mean otherwise (an IAF).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from pyro.distributions.transforms import conditional_affine_autoregressive
from torch import nn
from torch.nn.functional import softplus

from .._registry import lookup
from .networks import MLP, Trunk

__all__ = ["Guide", "NormalGuide", "IAFGuide", "GUIDES", "make_guide"]


class Guide(nn.Module):
    """Base class for amortized guides. A guide may also define ``gaussian(x)``, a diagonal-
    Normal stage of q (the VampPrior mixes it; without one the VampPrior mixes q itself)."""

    def __init__(self, x_dim: int, z_dim: int) -> None:
        super().__init__()
        self.x_dim, self.z_dim = int(x_dim), int(z_dim)

    def forward(self, x: torch.Tensor) -> dist.Distribution:  # pragma: no cover - abstract
        raise NotImplementedError


class _GaussianEncoder(Guide):
    """An encoder network ``x -> (loc, scale)`` of a diagonal Normal: a trunk ``x [B, ...] ->
    features [B, F]`` (an MLP by default, or any module) under a linear head ``F -> 2 z_dim``."""

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        hidden_dims: Sequence[int] = (400,),
        activation: str = "relu",
        trunk: nn.Module | None = None,
    ) -> None:
        super().__init__(x_dim, z_dim)
        self.net = (
            MLP(x_dim, hidden_dims, 2 * z_dim, activation)
            if trunk is None
            else Trunk(trunk, x_dim, 2 * z_dim)
        )

    def _loc_scale(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, raw = self.net.out(h).chunk(2, dim=-1)
        # softplus rather than exp: no overflow for large pre-activations early in training.
        return loc, softplus(raw) + 1e-5

    def gaussian(self, x: torch.Tensor) -> dist.Distribution:
        """The diagonal-Normal stage ``N(loc(x), scale(x))``: batch ``[B]``, event ``[z_dim]``."""
        return dist.Normal(*self._loc_scale(self.net.features(x))).to_event(1)


class NormalGuide(_GaussianEncoder):
    """q(z | x) = N(mu(x), diag(sigma(x)^2)), the encoder of Kingma & Welling (2014).

    ``loc_scale(x)`` defines q (``forward`` is built from it): it is what
    :meth:`pyro_vae.VAE.log_weights` reads, without building a distribution object. A subclass
    changes ``loc_scale`` (or passes a ``trunk``); one that changes ``forward`` into anything
    but ``Normal(*loc_scale(x)).to_event(1)`` sets ``loc_scale = None``.
    """

    def loc_scale(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)``, each ``[B, z_dim]``, for ``x [B, x_dim]``."""
        return self._loc_scale(self.net.features(x))

    def forward(self, x: torch.Tensor) -> dist.Distribution:
        return dist.Normal(*self.loc_scale(x)).to_event(1)


class IAFGuide(_GaussianEncoder):
    """A diagonal Normal pushed through conditional inverse autoregressive flows (Kingma et al.
    2016). Each flow is conditioned on the encoder's features ``h(x)``, so the whole
    posterior is amortized. Sampling and the log density of a sample are one pass each (IAF).
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        hidden_dims: Sequence[int] = (400,),
        activation: str = "relu",
        num_flows: int = 2,
        trunk: nn.Module | None = None,
    ) -> None:
        super().__init__(x_dim, z_dim, hidden_dims, activation, trunk)
        if num_flows < 1:
            raise ValueError(f"num_flows must be >= 1, got {num_flows}")
        context = self.net.feature_dim
        self.flows = nn.ModuleList(
            conditional_affine_autoregressive(z_dim, context, hidden_dims=[max(2 * z_dim, 32)])
            for _ in range(num_flows)
        )

    def forward(self, x: torch.Tensor) -> dist.Distribution:
        h = self.net.features(x)
        base = dist.Normal(*self._loc_scale(h)).to_event(1)
        return dist.TransformedDistribution(base, [f.condition(h) for f in self.flows])


GUIDES = {
    "normal": lambda x_dim, z_dim, hidden, act, num_flows, trunk: NormalGuide(
        x_dim, z_dim, hidden, act, trunk
    ),
    "iaf": lambda x_dim, z_dim, hidden, act, num_flows, trunk: IAFGuide(
        x_dim, z_dim, hidden, act, num_flows, trunk
    ),
}


def make_guide(
    name: str,
    x_dim: int,
    z_dim: int,
    hidden_dims: Sequence[int] = (400,),
    activation: str = "relu",
    num_flows: int = 2,
    *,
    trunk: nn.Module | None = None,
) -> Guide:
    """Build a guide by name (``normal`` or ``iaf``): its head on ``trunk`` (``x [B, x_dim] ->
    features [B, F]``), or on an MLP of ``hidden_dims`` when none is given."""
    return lookup("guide", name, GUIDES)(x_dim, z_dim, hidden_dims, activation, num_flows, trunk)
