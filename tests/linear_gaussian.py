"""A linear-Gaussian VAE with closed forms: z ~ N(0, I_d), x | z ~ N(W z + b, s^2 I_D).

p(x)      = N(x; b, W W^T + s^2 I)
p(z | x)  = N(z; S W^T (x - b) / s^2, S),   S = (I + W^T W / s^2)^-1
"""

from __future__ import annotations

import pyro.distributions as dist
import torch

from pyro_vae import VAE, Guide


def linear_gaussian_vae(x_dim=5, z_dim=2, scale=0.7, seed=0, dtype=torch.float64) -> VAE:
    g = torch.Generator().manual_seed(seed)
    vae = VAE(x_dim, z_dim, hidden_dims=(), likelihood="gaussian", likelihood_scale=scale)
    lin = vae.decoder.out
    with torch.no_grad():
        lin.weight.copy_(torch.randn(x_dim, z_dim, generator=g))
        lin.bias.copy_(torch.randn(x_dim, generator=g))
    return vae.to(dtype)


def _wbs(vae):
    lin = vae.decoder.out
    return lin.weight, lin.bias, float(vae.likelihood.scale()[0])


def exact_log_marginal(vae, x):
    w, b, s = _wbs(vae)
    cov = w @ w.T + s**2 * torch.eye(len(b), dtype=w.dtype)
    return dist.MultivariateNormal(b, cov).log_prob(x)


def exact_posterior_params(vae, x):
    w, b, s = _wbs(vae)
    prec = torch.eye(w.shape[1], dtype=w.dtype) + w.T @ w / s**2
    cov = torch.linalg.inv(prec)
    loc = (x - b) @ w @ cov / s**2
    return loc, cov


class ExactPosterior(Guide):
    """q(z | x) = p(z | x), computed from the VAE's decoder weights (no parameters of its own)."""

    def __init__(self, vae, inflate: float = 1.0, diagonal: bool = False):
        super().__init__(vae.config.x_dim, vae.config.z_dim)
        self._vae = [vae]
        self.inflate, self.diagonal = inflate, diagonal

    def forward(self, x):
        loc, cov = exact_posterior_params(self._vae[0], x)
        if self.diagonal:
            return dist.Normal(loc, self.inflate * cov.diagonal().sqrt()).to_event(1)
        return dist.MultivariateNormal(loc, self.inflate**2 * cov)

    gaussian = forward


def with_guide(vae, guide):
    """``vae`` with its encoder replaced (the decoder stays shared)."""
    vae.encoder = guide
    return vae
