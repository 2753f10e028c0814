"""A linear-Gaussian VAE with closed forms: z ~ N(0, I_d), x | z ~ N(W z + b, s^2 I_D).

p(x)      = N(x; b, W W^T + s^2 I)
p(z | x)  = N(z; S W^T (x - b) / s^2, S),   S = (I + W^T W / s^2)^-1
"""

from __future__ import annotations

import pyro
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


# -- a two-layer hierarchy, written as a plain nn.Module (not a VAE) ---------------------------
#
#   z2 ~ N(0, I),  z1 | z2 ~ N(A z2 + a, s1^2 I),  x | z1 ~ N(W z1 + b, s^2 I)
#
# p(z1) = N(a, C1), C1 = A A^T + s1^2 I;  p(x) = N(W a + b, W C1 W^T + s^2 I)
# p(z1 | x) = N(m1, S1), S1 = (C1^-1 + W^T W / s^2)^-1, m1 = S1 (C1^-1 a + W^T (x - b) / s^2)
# p(z2 | z1, x) = p(z2 | z1) = N(M (z1 - a), S2), S2 = (I + A^T A / s1^2)^-1, M = S2 A^T / s1^2


class LinearGaussianHierarchy(torch.nn.Module):
    """The model above with learnable A, a, W, b and a guide q(z1 | x) q(z2 | z1) that is the
    exact posterior (``guide_kind="exact"``) or a learnable mean-field diagonal Normal
    (``"meanfield"``: affine maps to loc, log-scale). Obeys the protocol: ``model(x,
    num_data=None)``, ``guide(x, num_data=None)``, per-datapoint sites in a plate at dim -1."""

    def __init__(self, x_dim=4, z1=3, z2=2, s1=0.8, s=0.6, guide_kind="exact", seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A = torch.nn.Parameter(torch.randn(z1, z2, generator=g, dtype=torch.float64))
        self.a = torch.nn.Parameter(0.3 * torch.randn(z1, generator=g, dtype=torch.float64))
        self.W = torch.nn.Parameter(torch.randn(x_dim, z1, generator=g, dtype=torch.float64))
        self.b = torch.nn.Parameter(0.3 * torch.randn(x_dim, generator=g, dtype=torch.float64))
        self.s1, self.s = s1, s
        self.guide_kind = guide_kind
        if guide_kind == "meanfield":
            self.q1 = torch.nn.Linear(x_dim, 2 * z1).double()
            self.q2 = torch.nn.Linear(z1, 2 * z2).double()
            with torch.no_grad():  # start near N(0, I): finite log weights for large x
                for lin in (self.q1, self.q2):
                    lin.weight.mul_(0.2)
                    lin.bias.zero_()

    def _plate(self, x, num_data):
        if num_data is None or num_data == len(x):
            return pyro.plate("data", len(x), dim=-1)
        return pyro.plate("data", num_data, subsample=torch.arange(len(x)), dim=-1)

    def model(self, x, num_data=None):
        pyro.module("lgh", self)
        z2_dim = self.A.shape[1]
        with self._plate(x, num_data):
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(z2_dim), x.new_ones(z2_dim)).to_event(1))
            z1 = pyro.sample("z1", dist.Normal(z2 @ self.A.T + self.a, self.s1).to_event(1))
            pyro.sample("x", dist.Normal(z1 @ self.W.T + self.b, self.s).to_event(1), obs=x)

    def guide(self, x, num_data=None):
        pyro.module("lgh", self)
        with self._plate(x, num_data):
            if self.guide_kind == "exact":
                m1, s1_cov, m, s2_cov = self.exact_posterior(x)
                z1 = pyro.sample("z1", dist.MultivariateNormal(m1, s1_cov))
                pyro.sample("z2", dist.MultivariateNormal((z1 - self.a) @ m.T, s2_cov))
            else:
                loc1, log1 = self.q1(x).chunk(2, -1)
                z1 = pyro.sample("z1", dist.Normal(loc1, log1.exp()).to_event(1))
                loc2, log2 = self.q2(z1).chunk(2, -1)
                pyro.sample("z2", dist.Normal(loc2, log2.exp()).to_event(1))

    # -- closed forms ----------------------------------------------------------------------
    def _c1(self):
        eye = torch.eye(self.A.shape[0], dtype=self.A.dtype)
        return self.A @ self.A.T + self.s1**2 * eye

    def exact_log_marginal(self, x):
        """log p(x) ``[N]``."""
        cov = self.W @ self._c1() @ self.W.T + self.s**2 * torch.eye(len(self.b), dtype=x.dtype)
        return dist.MultivariateNormal(self.W @ self.a + self.b, cov).log_prob(x)

    def exact_posterior(self, x):
        """``(m1 [N, z1], S1, M, S2)`` of p(z1 | x) = N(m1, S1), p(z2 | z1) = N(M (z1 - a), S2)."""
        c1_inv = torch.linalg.inv(self._c1())
        s1_cov = torch.linalg.inv(c1_inv + self.W.T @ self.W / self.s**2)
        m1 = (self.a @ c1_inv + (x - self.b) @ self.W / self.s**2) @ s1_cov
        eye2 = torch.eye(self.A.shape[1], dtype=x.dtype)
        s2_cov = torch.linalg.inv(eye2 + self.A.T @ self.A / self.s1**2)
        m = s2_cov @ self.A.T / self.s1**2
        return m1, s1_cov, m, s2_cov

    def exact_kl(self, x):
        """KL(p(z1, z2 | x) || p(z1, z2)) ``[N]``, the joint posterior against the joint prior."""
        m1, s1_cov, m, s2_cov = self.exact_posterior(x)
        d1 = self.A.shape[0]
        # joint posterior of (z1, z2): z2 = M (z1 - a) + noise
        mean = torch.cat([m1, (m1 - self.a) @ m.T], -1)
        cov = torch.cat(
            [
                torch.cat([s1_cov, s1_cov @ m.T], -1),
                torch.cat([m @ s1_cov, m @ s1_cov @ m.T + s2_cov], -1),
            ],
            0,
        )
        prior_mean = torch.cat([self.a, self.a.new_zeros(self.A.shape[1])])
        eye2 = torch.eye(self.A.shape[1], dtype=x.dtype)
        prior_cov = torch.cat(
            [torch.cat([self._c1(), self.A], -1), torch.cat([self.A.T, eye2], -1)], 0
        )
        post = dist.MultivariateNormal(mean, cov.expand(len(x), d1 + len(eye2), -1))
        return torch.distributions.kl_divergence(
            post, dist.MultivariateNormal(prior_mean, prior_cov)
        )
