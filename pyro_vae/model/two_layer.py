"""A VAE with two stochastic layers (Burda, Grosse & Salakhutdinov 2015, section 5).

Model, for each datapoint n in the data plate::

    z2_n ~ p(z2)                    # the prior, N(0, I) by default
    z1_n ~ N(mu(z2_n), sigma(z2_n)) # p(z1 | z2), a diagonal Normal
    x_n  ~ p(x | decoder(z1_n))     # any likelihood

Guide::

    z1_n ~ q(z1 | x_n)              # the encoder (Normal or IAF head on any trunk)
    z2_n ~ N(mu(z1_n), sigma(z1_n)) # q(z2 | z1), a diagonal Normal

Burda et al.'s architecture is the default: x -> 200 -> 200 -> z1 (100) -> 100 -> 100 -> z2 (50),
tanh, and the generative networks mirror it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import torch

from .guides import Guide, NormalGuide
from .likelihoods import Likelihood
from .priors import Prior
from .protocol import LogWeights
from .vae import VAE, _log_normal_in_noise

__all__ = ["TwoLayerVAE"]


class TwoLayerVAE(VAE):
    """Two stochastic layers: ``z_dim`` is z1's size (next to x), ``z2_dim`` the top layer's.

    Every other argument is :class:`~pyro_vae.VAE`'s; ``prior`` is p(z2) (``vamp`` is not
    available here: it mixes q(z1 | u), not a distribution over z2). ``hidden2_dims``: the hidden
    sizes of q(z2 | z1); p(z1 | z2) mirrors them.
    """

    _latent_sites = ("z1", "z2")
    _unused_config = ()
    _guide_modules = ("encoder", "q_z2")

    def __init__(
        self,
        x_dim: int,
        z_dim: int = 100,
        hidden_dims: Sequence[int] = (200, 200),
        activation: str = "tanh",
        prior: str | Prior = "normal",
        likelihood: str | Likelihood = "bernoulli",
        guide: str | Guide = "normal",
        num_components: int = 10,
        num_flows: int = 2,
        likelihood_scale: float = 1.0,
        *,
        z2_dim: int = 50,
        hidden2_dims: Sequence[int] = (100, 100),
        **nets,
    ) -> None:
        if isinstance(prior, str) and prior.strip().lower() == "vamp":
            raise ValueError(
                "the VampPrior mixes the encoder's q(z1 | u), so it is a prior over z1, not over "
                "the top layer z2 of a TwoLayerVAE; use normal, learned_normal or mixture"
            )
        # Read by _top_config during VAE.__init__, before any submodule exists.
        self._top_sizes = (int(z2_dim), tuple(int(h) for h in hidden2_dims))
        super().__init__(
            x_dim,
            z_dim,
            hidden_dims,
            activation,
            prior,
            likelihood,
            guide,
            num_components,
            num_flows,
            likelihood_scale,
            **nets,
        )

    def _top_config(self) -> dict:
        z2_dim, hidden2 = self._top_sizes
        return {"latent_layers": 2, "z2_dim": z2_dim, "hidden2_dims": hidden2}

    def _build_top(self) -> None:
        c = self.config
        # Both are conditional diagonal Normals: an MLP to (loc, softplus scale).
        self.q_z2 = NormalGuide(c.z_dim, c.z2_dim, c.hidden2_dims, c.activation)
        self.p_z1 = NormalGuide(c.z2_dim, c.z_dim, tuple(reversed(c.hidden2_dims)), c.activation)

    def _prior_dim(self) -> int:
        return self.config.z2_dim

    # -- the Pyro program ---------------------------------------------------------------------
    def model(self, x: torch.Tensor, num_data: int | None = None) -> torch.Tensor:
        """p(x, z1, z2). ``x [B, x_dim]``; ``num_data`` = data-set size N scales by N/B."""
        pyro.module(self._pyro_name, self)
        with self._data_plate(x, num_data):
            z2 = pyro.sample("z2", self.prior())
            z1 = pyro.sample("z1", self.p_z1(z2))
            return pyro.sample("x", self.likelihood(self.decoder(z1)), obs=x)

    def guide(self, x: torch.Tensor, num_data: int | None = None) -> torch.Tensor:
        """q(z1, z2 | x) = q(z1 | x) q(z2 | z1); returns ``z1 [B, z_dim]``."""
        pyro.module(self._pyro_name, self)
        with self._data_plate(x, num_data):
            z1 = pyro.sample("z1", self.encoder(x))
            pyro.sample("z2", self.q_z2(z1))
            return z1

    def _draw_log_weights(self, posterior, x, scale, num_samples, pathwise, analytic_kl):
        """:meth:`model`/:meth:`guide`'s log weights in plain torch, on the program's draws
        (z1 then z2), for a diagonal-Normal q(z1 | x) (what :meth:`log_weights` and
        :meth:`importance_sampler` run). Path derivatives and analytic KLs of a hierarchy are
        left to the Pyro program (a ValueError, raised before any draw)."""
        if pathwise or analytic_kl:
            raise ValueError(
                "TwoLayerVAE.log_weights computes neither path derivatives nor analytic KLs; "
                "the Pyro program handles these estimators"
            )
        _, gaussian = posterior
        if gaussian is None:
            raise ValueError("TwoLayerVAE.log_weights needs a diagonal-Normal q(z1 | x)")
        loc1, s1 = gaussian
        eps1 = torch.randn((num_samples, *loc1.shape), dtype=loc1.dtype, device=loc1.device)
        z1 = loc1 + eps1 * s1
        loc2, s2 = self.q_z2.loc_scale(z1)
        eps2 = torch.randn_like(loc2)
        z2 = loc2 + eps2 * s2
        log_q1, log_q2 = _log_normal_in_noise(eps1, s1), _log_normal_in_noise(eps2, s2)
        log_lik, log_p1, log_p2 = self._model_terms(x, z1, z2)
        log_p = log_lik + log_p1 + log_p2
        site_kl = {"z1": log_q1 - log_p1, "z2": log_q2 - log_p2}
        return LogWeights(
            log_p, log_q1 + log_q2, None, scale, (z1, z2), None, log_lik, (), (), site_kl
        )

    def _model_terms(self, x, z1, z2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`model`'s terms at ``z1 [..., B, z_dim]``, ``z2 [..., B, z2_dim]``:
        ``(log p(x | z1), log p(z1 | z2), log p(z2))``, each ``[..., B]`` (shared by
        :meth:`log_weights` and :meth:`log_joint`)."""
        ploc, pscale = self.p_z1.loc_scale(z2)
        log_p1 = _log_normal_in_noise((z1 - ploc) / pscale, pscale)
        return self._log_lik(self.decoder(z1), x), log_p1, self._log_prior(z2)

    def _log_model(self, x, latents):
        """``(log p(x, z1, z2), log p(x | z1))`` of :meth:`model` at ``latents``
        (:meth:`~pyro_vae.VAE.log_joint`)."""
        log_lik, log_p1, log_p2 = self._model_terms(x, latents["z1"], latents["z2"])
        return log_lik + log_p1 + log_p2, log_lik

    # -- conveniences -------------------------------------------------------------------------
    def _draw_bottom(self, n: int) -> torch.Tensor:
        z2 = self.prior().sample((n,))
        return self.p_z1(z2).sample()
