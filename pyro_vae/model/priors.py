"""Priors p(z).

A prior is an ``nn.Module`` whose ``forward()`` returns a Pyro distribution with
``event_shape == [z_dim]`` and empty batch shape; the model's data plate broadcasts it over the
batch. Tensors are parameters or registered buffers, so every prior follows ``.to(device)``.
A user-written prior is any such module (see README).
"""

from __future__ import annotations

from collections.abc import Callable

import pyro.distributions as dist
import torch
from torch import nn

from .._registry import lookup

__all__ = [
    "Prior",
    "StandardNormalPrior",
    "LearnedNormalPrior",
    "MixturePrior",
    "VampPrior",
    "PRIORS",
    "make_prior",
]


class Prior(nn.Module):
    """Base class: subclasses implement ``forward() -> Distribution`` over ``[z_dim]``."""

    def __init__(self, z_dim: int) -> None:
        super().__init__()
        self.z_dim = int(z_dim)

    def forward(self) -> dist.Distribution:  # pragma: no cover - abstract
        raise NotImplementedError


class StandardNormalPrior(Prior):
    """p(z) = N(0, I)."""

    def __init__(self, z_dim: int) -> None:
        super().__init__(z_dim)
        # Buffers (not constants) so the prior moves with .to(device), as in Pyro's svi_torch.py.
        self.register_buffer("loc", torch.zeros(z_dim))
        self.register_buffer("scale", torch.ones(z_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.scale).to_event(1)


class LearnedNormalPrior(Prior):
    """p(z) = N(mu, diag(sigma^2)) with learnable mu and sigma, initialised at N(0, I)."""

    def __init__(self, z_dim: int) -> None:
        super().__init__(z_dim)
        self.loc = nn.Parameter(torch.zeros(z_dim))
        self.log_scale = nn.Parameter(torch.zeros(z_dim))

    def forward(self) -> dist.Distribution:
        return dist.Normal(self.loc, self.log_scale.exp()).to_event(1)


class MixturePrior(Prior):
    """p(z) = sum_c pi_c N(z; mu_c, diag(sigma_c^2)) with learnable weights, means and scales.

    No KL to a Normal guide is registered for a mixture, so ``meanfield`` falls back to a
    Monte Carlo KL for this prior.
    """

    def __init__(self, z_dim: int, num_components: int = 10) -> None:
        super().__init__(z_dim)
        if num_components < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components}")
        self.logits = nn.Parameter(torch.zeros(num_components))
        # Spread the initial means so that the components are not identical (symmetry breaking).
        self.locs = nn.Parameter(torch.randn(num_components, z_dim))
        self.log_scales = nn.Parameter(torch.zeros(num_components, z_dim))

    def forward(self) -> dist.Distribution:
        components = dist.Normal(self.locs, self.log_scales.exp()).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.logits), components)


class VampPrior(Prior):
    """VampPrior (Tomczak & Welling 2018): p(z) = (1/C) sum_c q(z | u_c), pseudo-inputs u_c learned.

    ``q`` is the encoder's Gaussian stage, bound by the VAE with :meth:`bind`; the binding is a
    plain attribute, not a submodule, so the encoder's parameters are owned (and saved) once.
    """

    def __init__(self, z_dim: int, x_dim: int, num_components: int = 500) -> None:
        super().__init__(z_dim)
        if num_components < 1:
            raise ValueError(f"num_components must be >= 1, got {num_components}")
        # Tomczak & Welling initialise pseudo-inputs near 0.05 with a small spread.
        self.pseudo_inputs = nn.Parameter(0.05 + 0.01 * torch.randn(num_components, x_dim))
        self._posterior: list[Callable] = []

    def bind(self, posterior: Callable[[torch.Tensor], dist.Distribution]) -> None:
        """Set the map ``u [C, x_dim] -> q(z | u)`` (batch ``[C]``, event ``[z_dim]``)."""
        self._posterior[:] = [posterior]

    def forward(self) -> dist.Distribution:
        if not self._posterior:
            raise RuntimeError(
                "VampPrior is not bound to an encoder: build it through VAE(prior='vamp') or "
                "call prior.bind(encoder.gaussian) first"
            )
        q = self._posterior[0](self.pseudo_inputs)
        mix = dist.Categorical(logits=self.pseudo_inputs.new_zeros(self.pseudo_inputs.shape[0]))
        return dist.MixtureSameFamily(mix, q)


PRIORS = {
    "normal": lambda z_dim, x_dim, num_components: StandardNormalPrior(z_dim),
    "standard_normal": lambda z_dim, x_dim, num_components: StandardNormalPrior(z_dim),
    "learned_normal": lambda z_dim, x_dim, num_components: LearnedNormalPrior(z_dim),
    "mixture": lambda z_dim, x_dim, num_components: MixturePrior(z_dim, num_components),
    "vamp": lambda z_dim, x_dim, num_components: VampPrior(z_dim, x_dim, num_components),
}


def make_prior(name: str, z_dim: int, x_dim: int, num_components: int = 10) -> Prior:
    """Build a prior by name (``normal``, ``learned_normal``, ``mixture``, ``vamp``)."""
    return lookup("prior", name, PRIORS)(z_dim, x_dim, num_components)
