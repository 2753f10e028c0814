"""The variational autoencoder as a Pyro model/guide pair.

Model (generative story), for each datapoint n in the data plate::

    z_n ~ p(z)                      # the prior, N(0, I) by default
    x_n ~ p(x | decoder(z_n))       # the likelihood, Bernoulli on logits by default

Guide (amortized inference)::

    z_n ~ q(z | x_n) = encoder(x_n)

Both live in ``pyro.plate("data", dim=-1)`` over the batch, so every per-datapoint quantity keeps
its datapoint index; this is the convention that :func:`pyro_vae.log_likelihood` and the
estimators rely on.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.util import ignore_jit_warnings
from torch import nn
from torch.distributions import kl_divergence

from ..data.checks import check_data
from .config import ModelConfig
from .guides import Guide, make_guide
from .likelihoods import Likelihood, make_likelihood
from .networks import MLP
from .priors import Prior, StandardNormalPrior, make_prior
from .protocol import LogWeights

__all__ = ["VAE"]

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _diagonal_normal(q) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(loc, scale)`` if ``q`` is exactly ``Normal(loc, scale).to_event(1)``, else None."""
    if isinstance(q, torch.distributions.Independent) and q.reinterpreted_batch_ndims == 1:
        base = q.base_dist
        if type(base) in (dist.Normal, torch.distributions.Normal):
            return base.loc, base.scale
    return None


def _dtype_device(module: nn.Module) -> dict:
    """The dtype and device of ``module``'s first floating parameter or buffer (the default
    dtype on the CPU when it has none)."""
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return {"dtype": t.dtype, "device": t.device}
    return {}


def _expect(component: str, d, batch: tuple, event: tuple, contract: str) -> None:
    if not isinstance(d, torch.distributions.Distribution):
        raise TypeError(
            f"the {component} returned a {type(d).__name__}, not a distribution; it must return "
            f"{contract}, e.g. dist.Normal(loc, scale).to_event(1)"
        )
    try:
        torch.broadcast_shapes(tuple(d.batch_shape), batch)
        broadcasts = len(d.batch_shape) <= len(batch)
    except RuntimeError:
        broadcasts = False
    if tuple(d.event_shape) != event or not broadcasts:
        raise ValueError(
            f"the {component} returned a distribution with batch shape {list(d.batch_shape)} and "
            f"event shape {list(d.event_shape)}; it must return {contract} (expected event shape "
            f"{list(event)}: declare event dims with .to_event(1))"
        )


def _log_q(q, z, gaussian, eps, pathwise: bool) -> torch.Tensor:
    """log q(z | x) ``[K, B]`` at q's own draw ``z``; with ``pathwise`` (diagonal Normal only)
    the guide's parameters are held fixed, so the gradient flows through z only."""
    if gaussian is not None:
        loc, s = gaussian
        if pathwise:
            loc, s = loc.detach(), s.detach()
            eps = (z - loc) / s
        # Written in the noise: the same value as Normal.log_prob, in fewer operations.
        return -(0.5 * eps.pow(2) + s.log()).sum(-1) - z.shape[-1] * _HALF_LOG_2PI
    return q.log_prob(z)


_instances = itertools.count()


def _name_or_custom(obj) -> str:
    return obj if isinstance(obj, str) else f"custom:{type(obj).__name__}"


class VAE(nn.Module):
    """A VAE with swappable prior, likelihood and guide.

    Args:
        x_dim: data dimension D (e.g. 784 for 28x28 images).
        z_dim: latent dimension.
        hidden_dims: encoder hidden sizes; the decoder mirrors them.
        activation: ``relu``, ``tanh``, ``elu``, ``softplus``, ``leaky_relu``, ``gelu``, ``silu``.
        prior: a name (``normal``, ``learned_normal``, ``mixture``, ``vamp``) or a
            :class:`~pyro_vae.priors.Prior`-like module whose ``forward()`` returns a distribution
            with event shape ``[z_dim]``.
        likelihood: a name (``bernoulli``, ``gaussian``, ``learned_gaussian``,
            ``continuous_bernoulli``, ``laplace``) or a :class:`~pyro_vae.likelihoods.Likelihood`.
        guide: a name (``normal``, ``iaf``) or a :class:`~pyro_vae.guides.Guide`.
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int = 20,
        hidden_dims: Sequence[int] = (400,),
        activation: str = "relu",
        prior: str | Prior = "normal",
        likelihood: str | Likelihood = "bernoulli",
        guide: str | Guide = "normal",
        num_components: int = 10,
        num_flows: int = 2,
        likelihood_scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.config = ModelConfig(
            x_dim=int(x_dim),
            z_dim=int(z_dim),
            hidden_dims=tuple(int(h) for h in hidden_dims),
            activation=activation,
            prior=_name_or_custom(prior),
            likelihood=_name_or_custom(likelihood),
            guide=_name_or_custom(guide),
            num_components=int(num_components),
            num_flows=int(num_flows),
            likelihood_scale=float(likelihood_scale),
        )
        hidden = self.config.hidden_dims
        self.encoder = (
            make_guide(guide, x_dim, z_dim, hidden, activation, num_flows)
            if isinstance(guide, str)
            else guide
        )
        self.likelihood = (
            make_likelihood(likelihood, x_dim, likelihood_scale)
            if isinstance(likelihood, str)
            else likelihood
        )
        self.prior = (
            make_prior(prior, z_dim, x_dim, num_components) if isinstance(prior, str) else prior
        )
        if hasattr(self.prior, "bind"):
            self.prior.bind(self.encoder.gaussian)
        num_params = getattr(self.likelihood, "num_params", 1)
        self.decoder = MLP(z_dim, tuple(reversed(hidden)), num_params * x_dim, activation)
        # One param-store name per instance: two VAEs in a process must not share parameters.
        self._pyro_name = f"vae{next(_instances)}"
        self._check_components()

    def _check_components(self) -> None:
        """Each component returns what the program needs: checked once, on a dummy batch of 2,
        so that a user-written one fails here with its name rather than deep inside Pyro."""
        x_dim, z_dim = self.config.x_dim, self.config.z_dim
        modes = [(m, m.training) for m in self.modules()]
        self.eval()  # no batch-norm statistics from a dummy batch
        try:
            with torch.no_grad():
                self._check_each(x_dim, z_dim)
        finally:
            for m, mode in modes:
                m.training = mode

    def _check_each(self, x_dim: int, z_dim: int) -> None:
        _expect("prior", self.prior(), (), (z_dim,), "a distribution over z: [z_dim]")
        q = self.encoder(torch.zeros(2, x_dim, **_dtype_device(self.encoder)))
        _expect("guide", q, (2,), (z_dim,), "q(z | x) for x [B, x_dim]: batch [B], event [z_dim]")
        p = self.likelihood(self.decoder(torch.zeros(2, z_dim, **_dtype_device(self.decoder))))
        contract = "p(x | z) for z [B, z_dim]: batch [B], event [x_dim]"
        _expect("likelihood", p, (2,), (x_dim,), contract)

    @classmethod
    def from_config(cls, config: ModelConfig, **objects) -> VAE:
        """Rebuild from a :class:`ModelConfig`; pass user-written prior/likelihood/guide objects
        by keyword when the config records them as ``custom:...``."""
        kwargs = config.to_dict()
        for key in ("prior", "likelihood", "guide"):
            if key in objects:
                kwargs[key] = objects.pop(key)
            elif str(kwargs[key]).startswith("custom:"):
                raise ValueError(
                    f"this model was built with a user-written {key} ({kwargs[key]}); pass it "
                    f"again, e.g. load_model(path, {key}=My{key.capitalize()}(...))"
                )
        if objects:
            raise TypeError(f"unexpected keyword arguments {sorted(objects)}")
        return cls(**kwargs)

    # -- shapes and support -------------------------------------------------------------------
    def check_data(self, x: torch.Tensor, what: str = "data") -> None:
        """Raise a clear error unless ``x [N, x_dim]`` is finite and in the likelihood's support.

        A user-written likelihood without a ``check`` method gets the shape and NaN checks only.
        """
        check_data(x, self.config.x_dim, what)
        check = getattr(self.likelihood, "check", None)
        if check is not None:
            check(x, what)

    def _check_x(self, x: torch.Tensor) -> int:
        # Shapes are traced tensors under --jit; their comparison is static for a fixed batch.
        with ignore_jit_warnings():
            if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[-1] != self.config.x_dim:
                shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(
                    f"VAE expects x of shape [batch, {self.config.x_dim}], got {shape}; "
                    f"flatten images with x.reshape(len(x), -1)"
                )
            return x.shape[0]

    def _data_plate(self, x: torch.Tensor, num_data: int | None):
        batch = self._check_x(x)
        with ignore_jit_warnings():
            full = num_data is None or bool(num_data == batch)
        if full:
            return pyro.plate("data", batch, dim=-1)
        # Passing the subsample explicitly scales log densities by num_data / batch without
        # drawing a random permutation of num_data indices at every step.
        index = torch.arange(batch, device=x.device)
        return pyro.plate("data", size=num_data, subsample=index, dim=-1)

    # -- the Pyro program ---------------------------------------------------------------------
    def model(self, x: torch.Tensor, num_data: int | None = None) -> torch.Tensor:
        """p(x, z). ``x [B, x_dim]``; ``num_data`` = data-set size N scales the minibatch by N/B."""
        pyro.module(self._pyro_name, self)
        with self._data_plate(x, num_data):
            z = pyro.sample("z", self.prior())
            return pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def guide(self, x: torch.Tensor, num_data: int | None = None) -> torch.Tensor:
        """q(z | x). ``x [B, x_dim]``; returns ``z [B, z_dim]`` (``[K, B, z_dim]`` under a
        vectorized particle plate)."""
        pyro.module(self._pyro_name, self)
        with self._data_plate(x, num_data):
            return pyro.sample("z", self.encoder(x))

    def log_weights(
        self,
        x: torch.Tensor,
        num_data: int | None = None,
        *,
        num_samples: int = 1,
        pathwise: bool = False,
        analytic_kl: bool = False,
    ) -> LogWeights:
        """The log weights of :meth:`model` and :meth:`guide` in plain torch (no Pyro tracing).

        The same modules, the same single reparameterized draw ``z [K, B, z_dim]`` from the
        guide and the same values as :func:`pyro_vae.log_weights` of the Pyro program, whose
        meaning and arguments it shares (``tests/test_vae.py`` checks values, gradients and the
        random stream in float64; training checks the values on every validated step).
        """
        batch = x.shape[0]
        scale = 1.0 if num_data is None or num_data == batch else num_data / batch
        q = self.encoder(x)
        if q.batch_shape != x.shape[:1] or not q.has_rsample:
            raise ValueError(
                f"VAE.log_weights needs one reparameterized q(z | x_n) per datapoint, got a "
                f"{type(q).__name__} with batch shape {tuple(q.batch_shape)} for {batch} rows "
                f"(has_rsample={q.has_rsample}); the Pyro program handles this guide"
            )
        gaussian = _diagonal_normal(q)
        if pathwise and gaussian is None:
            # A flow's log q at its own draw goes through its cached input, not z: the path
            # derivative needs the leaves of pyro_vae.log_weights (the Pyro program).
            raise ValueError(
                f"VAE.log_weights(pathwise=True) has a closed form for a diagonal-Normal guide "
                f"only, not {type(q).__name__}; the Pyro program handles this guide"
            )
        if gaussian is not None:
            loc, s = gaussian
            # The very draw torch's Normal.rsample makes; eps gives log q(z) below.
            eps = torch.randn((num_samples, *loc.shape), dtype=loc.dtype, device=loc.device)
            z = loc + eps * s
        else:
            z = q.rsample((num_samples,))
        log_lik = self.likelihood(self.decoder(z)).log_prob(x)  # [K, B]
        kl = self._analytic_kl(q, gaussian) if analytic_kl else None
        if kl is not None:
            kl = kl.expand(log_lik.shape)
            log_p, log_q = log_lik, torch.zeros_like(log_lik)
        else:
            log_p = log_lik + self._log_prior(z)
            log_q = _log_q(q, z, gaussian, eps if gaussian is not None else None, pathwise)
        analytic = ("z",) if kl is not None else ()
        return LogWeights(log_p, log_q, kl, scale, (z,), None, log_lik, analytic)

    def _standard_prior(self) -> bool:
        # Exactly the built-in N(0, I): a subclass may change forward().
        return type(self.prior) is StandardNormalPrior

    def _analytic_kl(self, q, gaussian) -> torch.Tensor | None:
        """KL(q(z | x_n) || p(z)) ``[B]``, or None where Pyro registers no closed form."""
        if gaussian is not None and self._standard_prior():
            loc, s = gaussian  # the closed form written out: fewer operations, same values
            return (0.5 * (s.pow(2) + loc.pow(2) - 1.0) - s.log()).sum(-1)
        try:
            return kl_divergence(q, self.prior().expand(q.batch_shape))
        except NotImplementedError:  # e.g. a mixture prior: Monte Carlo, as Pyro does
            return None

    def _log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) ``[K, B]`` for ``z [K, B, z_dim]``."""
        if self._standard_prior():
            return -0.5 * z.pow(2).sum(-1) - z.shape[-1] * _HALF_LOG_2PI
        return self.prior().log_prob(z)

    # -- conveniences -------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> dist.Distribution:
        """q(z | x) for ``x [B, x_dim]``: batch ``[B]``, event ``[z_dim]``."""
        self._check_x(x)
        return self.encoder(x)

    def posterior_mean(self, x: torch.Tensor, num_samples: int = 64) -> torch.Tensor:
        """E_q[z | x] ``[B, z_dim]``: exact for Gaussian guides, a Monte Carlo mean otherwise."""
        q = self.encode(x)
        try:
            return q.mean
        except NotImplementedError:
            return q.sample((num_samples,)).mean(0)

    def decode(self, z: torch.Tensor) -> dist.Distribution:
        """p(x | z) for ``z [..., z_dim]``: batch ``[...]``, event ``[x_dim]``."""
        return self.likelihood(self.decoder(z))

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True) -> torch.Tensor:
        """``n`` new datapoints ``[n, x_dim]`` from the prior: the likelihood's mean (``mean=True``,
        what figures show) or a draw from it."""
        z = self.prior().sample((n,))
        p = self.decode(z)
        return p.mean if mean else p.sample()

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The likelihood's mean at the posterior mean: ``[B, x_dim]``."""
        return self.decode(self.posterior_mean(x)).mean
