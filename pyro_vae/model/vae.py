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
from collections.abc import Mapping, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.util import ignore_jit_warnings
from torch import nn
from torch.distributions import kl_divergence

from .._registry import lookup
from ..data.checks import check_data
from .config import ModelConfig
from .guides import Guide, make_guide
from .likelihoods import Likelihood, make_likelihood
from .networks import (
    MLP,
    NETS,
    ConvDecoder,
    ConvEncoder,
    check_image_shape,
    dtype_device,
    probing,
)
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


def _log_normal_in_noise(eps: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log N(loc + scale * eps; loc, scale) summed over the last dim: the value of
    ``Normal(loc, scale).to_event(1).log_prob`` written in the noise, in fewer operations."""
    return -(0.5 * eps.pow(2) + scale.log()).sum(-1) - eps.shape[-1] * _HALF_LOG_2PI


def _log_q(z, gaussian, eps, pathwise: bool) -> torch.Tensor:
    """log N(z; loc, scale) ``[K, B]`` of the diagonal-Normal q ``gaussian = (loc, scale)`` at
    its own draw ``z = loc + scale * eps``; with ``pathwise`` the guide's parameters are held
    fixed, so the gradient flows through z only."""
    loc, s = gaussian
    if pathwise:
        loc, s = loc.detach(), s.detach()
        eps = (z - loc) / s
    return _log_normal_in_noise(eps, s)


def _check_decoder(decoder: nn.Module, z_dim: int, out_dim: int) -> torch.Tensor:
    """The decoder's output for ``z [2, z_dim]``, after checking that it maps ``[..., z_dim]`` to
    ``[..., out_dim]`` for leading dimensions ``[2]`` and ``[3, 2]`` (a particle dimension)."""
    kw = dtype_device(decoder)
    outputs = []
    for lead in ((2,), (3, 2)):
        y = decoder(torch.zeros(*lead, z_dim, **kw))
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != (*lead, out_dim):
            got = list(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(
                f"the decoder must map z [..., {z_dim}] with any leading dimensions to the "
                f"likelihood's parameters [..., {out_dim}] (num_params * x_dim); "
                f"{type(decoder).__name__} gave {got} for z {[*lead, z_dim]}. Reshape with "
                f"z.shape[:-1] rather than len(z) (see pyro_vae.networks.ConvDecoder)"
            )
        outputs.append(y)
    return outputs[0]


_instances = itertools.count()


def _subsample_scale(x: torch.Tensor, num_data: int | None) -> float:
    """The data plate's N / B (1 without subsampling), as the program's plate applies it."""
    return 1.0 if num_data is None or num_data == len(x) else num_data / len(x)


def _name_or_custom(obj) -> str:
    return obj if isinstance(obj, str) else f"custom:{type(obj).__name__}"


def _net_name(net):
    """A built-in network's name in its canonical spelling (``"Conv"`` -> ``"conv"``); a module
    as it is."""
    return lookup("net", net, {n: n for n in NETS}) if isinstance(net, str) else net


def _image_shape(image_shape, x_dim: int, encoder, decoder) -> tuple[int, ...]:
    if not image_shape:
        if "conv" in (encoder, decoder):
            raise ValueError(
                f"the conv nets need the images' shape: pass image_shape=(C, H, W) with "
                f"C*H*W = x_dim = {x_dim}, e.g. image_shape=(1, 28, 28) for MNIST"
            )
        return ()
    return check_image_shape(image_shape, int(x_dim))


def _check_conv_sizes(hidden_dims: tuple, encoder, decoder) -> None:
    if "conv" in (encoder, decoder) and not hidden_dims:
        raise ValueError(
            "the conv nets' dense layer has hidden_dims[-1] units: give hidden_dims at least "
            "one size, e.g. hidden_dims=(256,)"
        )


class VAE(nn.Module):
    """A VAE with swappable prior, likelihood, guide and networks (one stochastic layer ``z``).

    Args:
        x_dim: data dimension D (e.g. 784 for 28x28 images); data are flattened ``[B, D]``.
        z_dim: latent dimension.
        hidden_dims: the MLP encoder's hidden sizes (the decoder mirrors them); for the conv
            nets, ``hidden_dims[-1]`` is the size of their dense layer.
        activation: ``relu``, ``tanh``, ``elu``, ``softplus``, ``leaky_relu``, ``gelu``, ``silu``.
        prior: a name (``normal``, ``learned_normal``, ``mixture``, ``vamp``) or a
            :class:`~pyro_vae.priors.Prior`-like module whose ``forward()`` returns a distribution
            with event shape ``[z_dim]``.
        likelihood: a name (``bernoulli``, ``gaussian``, ``learned_gaussian``,
            ``continuous_bernoulli``, ``laplace``) or a :class:`~pyro_vae.likelihoods.Likelihood`.
        guide: a name (``normal``, ``iaf``: a head on the encoder trunk) or a whole
            :class:`~pyro_vae.guides.Guide` (then ``encoder`` is not used).
        net: the built-in networks, ``mlp`` or ``conv`` (needs ``image_shape``), for the encoder
            and the decoder unless given.
        encoder: a trunk ``x [B, x_dim] -> features [B, F]`` under the guide's head: ``mlp``,
            ``conv`` or any module (its ``feature_dim`` attribute, or found by one dummy pass).
        decoder: ``mlp``, ``conv`` or any module mapping ``z [..., z_dim]`` (any leading dims)
            to the likelihood's parameters ``[..., num_params * x_dim]``.
        image_shape: ``(C, H, W)`` or ``(H, W)`` of the data, for the conv nets.
    """

    #: the latent sites, bottom (nearest x) first
    _latent_sites: tuple[str, ...] = ("z",)
    #: ModelConfig fields this class does not take
    _unused_config: tuple[str, ...] = ("z2_dim", "hidden2_dims")

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
        *,
        net: str = "mlp",
        encoder: str | nn.Module | None = None,
        decoder: str | nn.Module | None = None,
        image_shape: Sequence[int] = (),
        conv_channels: Sequence[int] = (32, 64),
    ) -> None:
        super().__init__()
        net = _net_name(net)
        encoder = net if encoder is None else _net_name(encoder)
        decoder = net if decoder is None else _net_name(decoder)
        if not isinstance(guide, str) and encoder != net:
            raise ValueError(
                "pass either a whole guide or an encoder trunk, not both: a user-written guide "
                "holds its own encoder (give it the trunk instead)"
            )
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
            encoder=_name_or_custom(encoder) if isinstance(guide, str) else "mlp",
            decoder=_name_or_custom(decoder),
            image_shape=_image_shape(image_shape, x_dim, encoder, decoder),
            conv_channels=tuple(int(c) for c in conv_channels),
            **self._top_config(),
        )
        cfg = self.config
        _check_conv_sizes(cfg.hidden_dims, encoder, decoder)
        self.likelihood = (
            make_likelihood(likelihood, x_dim, likelihood_scale)
            if isinstance(likelihood, str)
            else likelihood
        )
        self.encoder = (
            make_guide(
                guide,
                x_dim,
                z_dim,
                cfg.hidden_dims,
                activation,
                num_flows,
                trunk=self._trunk(encoder),
            )
            if isinstance(guide, str)
            else guide
        )
        self.decoder = self._decoder(decoder)
        self._build_top()
        self.prior = self._make_prior(prior)
        if hasattr(self.prior, "bind"):
            self.prior.bind(getattr(self.encoder, "gaussian", self.encoder))
        # One param-store name per instance: two VAEs in a process must not share parameters.
        self._pyro_name = f"vae{next(_instances)}"
        self._check_components()

    # Hooks of a deeper hierarchy (TwoLayerVAE): its config fields, its extra networks, and the
    # dimension of the latent the prior is over.
    def _top_config(self) -> dict:
        return {}

    def _build_top(self) -> None:
        pass

    def _prior_dim(self) -> int:
        return self.config.z_dim

    def _make_prior(self, prior) -> nn.Module:
        c = self.config
        if isinstance(prior, str):
            return make_prior(prior, self._prior_dim(), c.x_dim, c.num_components)
        return prior

    def _trunk(self, encoder) -> nn.Module | None:
        """The encoder trunk for a built-in guide's head: None for the guide's own MLP."""
        c = self.config
        if not isinstance(encoder, str):
            return encoder
        if encoder == "mlp":
            return None
        return ConvEncoder(c.image_shape, c.conv_channels, c.hidden_dims[-1], c.activation)

    def _decoder(self, decoder) -> nn.Module:
        c = self.config
        num_params = getattr(self.likelihood, "num_params", 1)
        if not isinstance(decoder, str):
            return decoder
        if decoder == "mlp":
            return MLP(c.z_dim, tuple(reversed(c.hidden_dims)), num_params * c.x_dim, c.activation)
        channels = tuple(reversed(c.conv_channels))
        return ConvDecoder(
            c.z_dim, c.image_shape, channels, c.hidden_dims[-1], c.activation, num_params
        )

    def _check_components(self) -> None:
        """Each component returns what the program needs: checked once, on a dummy batch of 2,
        so that a user-written one fails here with its name rather than deep inside Pyro."""
        with probing(self):
            self._check_each(self.config.x_dim, self.config.z_dim)

    def _check_each(self, x_dim: int, z_dim: int) -> None:
        top = self._prior_dim()
        _expect("prior", self.prior(), (), (top,), f"a distribution over the top latent: [{top}]")
        q = self.encoder(torch.zeros(2, x_dim, **dtype_device(self.encoder)))
        _expect("guide", q, (2,), (z_dim,), "q(z | x) for x [B, x_dim]: batch [B], event [z_dim]")
        num_params = getattr(self.likelihood, "num_params", 1)
        params = _check_decoder(self.decoder, z_dim, num_params * x_dim)
        contract = "p(x | z) for z [B, z_dim]: batch [B], event [x_dim]"
        _expect("likelihood", self.likelihood(params), (2,), (x_dim,), contract)

    @classmethod
    def from_config(cls, config: ModelConfig, **objects) -> VAE:
        """Rebuild from a :class:`ModelConfig`; pass user-written prior/likelihood/guide objects
        by keyword when the config records them as ``custom:...``."""
        kwargs = config.to_dict()
        layers = kwargs.pop("latent_layers")
        if layers != len(cls._latent_sites):
            raise ValueError(
                f"this config describes {layers} stochastic layers, which {cls.__name__} does not "
                f"build; use pyro_vae.build_model(config) (or TwoLayerVAE.from_config)"
            )
        for key in cls._unused_config:
            kwargs.pop(key)
        for key in ("prior", "likelihood", "guide", "encoder", "decoder"):
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
        posterior = self._posterior(x)
        scale = _subsample_scale(x, num_data)
        return self._draw_log_weights(posterior, x, scale, num_samples, pathwise, analytic_kl)

    def importance_sampler(self, x: torch.Tensor):
        """The encoder run once on ``x [B, x_dim]``; returns ``draw(k) -> log w [k, B]``, the log
        weights of ``k`` fresh draws from q(z | x): the values and random draws of
        ``log_weights(x, num_samples=k).log_w``, so that :func:`pyro_vae.log_likelihood` can
        take K samples in cache-sized tiles without running the encoder once per tile. None
        where the model has no own log weights (``log_weights = None``)."""
        if self.log_weights is None:
            return None
        posterior = self._posterior(x)
        return lambda k: self._draw_log_weights(posterior, x, 1.0, k, False, False).log_w

    def log_joint(
        self,
        x: torch.Tensor,
        latents: Mapping[str, torch.Tensor],
        num_data: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """:meth:`model`'s log density at given latents, in plain torch (no Pyro tracing):
        ``(log p(x, z), log p(x | z))``, each ``[C, B]``, for ``x [B, x_dim]`` and ``latents``
        ``{site: [C, B, ...]}`` (``{"z": [C, B, z_dim]}`` here), differentiable in the latents.

        The values of :func:`pyro_vae.infer.log_weights.log_joint` of the program at the same
        latents (``tests/test_vae.py`` checks values and gradients in float64), unscaled by
        ``num_data`` as those are; what :func:`~pyro_vae.ais_log_likelihood` evaluates at every
        leapfrog step. None where the model has no own log weights (``log_weights = None``, a
        subclass that changed the program): the Pyro program is then used.
        """
        if self.log_weights is None:
            return None
        names = set(self._latent_sites)
        if set(latents) != names:
            raise ValueError(
                f"{type(self).__name__}.log_joint needs the values of the latent sites "
                f"{sorted(names)}, got {sorted(latents)}"
            )
        return self._log_model(x, latents)

    def _log_model(self, x: torch.Tensor, latents: Mapping[str, torch.Tensor]):
        """``(log p(x, z), log p(x | z))`` of :meth:`model` at ``latents`` (:meth:`log_joint`)."""
        z = latents["z"]
        log_lik = self._log_lik(self.decoder(z), x)
        return log_lik + self._log_prior(z), log_lik

    def _draw_log_weights(self, posterior, x, scale, num_samples, pathwise, analytic_kl):
        """:meth:`log_weights` given the guide's ``posterior`` (:meth:`_posterior` of ``x``)."""
        q, gaussian = posterior
        if pathwise and gaussian is None:
            # A flow's log q at its own draw goes through its cached input, not z: the path
            # derivative needs the leaves of pyro_vae.log_weights (the Pyro program).
            raise ValueError(
                f"VAE.log_weights(pathwise=True) has a closed form for a diagonal-Normal guide "
                f"only, not {type(q).__name__}; the Pyro program handles this guide"
            )
        eps, one = None, num_samples == 1
        if gaussian is not None:
            loc, s = gaussian
            # The very draw torch's Normal.rsample makes ([K, B, z_dim]; for one particle the
            # same numbers as [B, z_dim], on which everything below runs without a leading 1).
            shape = loc.shape if one else (num_samples, *loc.shape)
            eps = torch.randn(shape, dtype=loc.dtype, device=loc.device)
            z = loc + eps * s
        else:
            drawn = q.rsample((num_samples,))
            z = drawn[0] if one else drawn
        log_lik = self._log_lik(self.decoder(z), x)  # [K, B], or [B] for one particle
        kl = self._analytic_kl(q, gaussian) if analytic_kl else None
        if kl is not None:
            log_p, log_q = log_lik, log_lik.new_zeros(()).expand(log_lik.shape)
        else:
            log_p = log_lik + self._log_prior(z)
            if gaussian is not None:
                log_q = _log_q(z, gaussian, eps, pathwise)
            else:
                # At the draw itself, which a flow knows from its cached input; at a copy such
                # as drawn[0] it would run its inverse (z_dim passes of an autoregressive net).
                log_q = q.log_prob(drawn)
                log_q = log_q[0] if one else log_q
        analytic = ("z",) if kl is not None else ()
        if one:
            # [1, B]. The latent is a view of the draw: a gradient hook on it (DReG's) does not
            # fire, which is exact here, DReG's weight being w~ = 1 for one particle.
            log_p, log_q, log_lik, z = (t.unsqueeze(0) for t in (log_p, log_q, log_lik, z))
        if kl is not None:
            kl = kl.expand(log_p.shape)
        # site_kl None: one latent site, whose KL term free bits take from the totals
        return LogWeights(log_p, log_q, kl, scale, (z,), None, log_lik, analytic)

    def _log_lik(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | params) ``[...]``: the likelihood's own ``log_prob(params, x)`` (no
        distribution object) where it has one, as a :class:`Likelihood` does."""
        own = getattr(self.likelihood, "log_prob", None)
        return own(params, x) if callable(own) else self.likelihood(params).log_prob(x)

    def _posterior(self, x: torch.Tensor):
        """``(q, (loc, scale))`` for a diagonal-Normal guide (``q`` None when its ``loc_scale``
        gives them without a distribution object), ``(q, None)`` for any other guide."""
        loc_scale = getattr(self.encoder, "loc_scale", None)
        if callable(loc_scale):
            return None, loc_scale(x)
        q = self.encoder(x)
        if q.batch_shape != x.shape[:1] or not q.has_rsample:
            raise ValueError(
                f"VAE.log_weights needs one reparameterized q(z | x_n) per datapoint, got a "
                f"{type(q).__name__} with batch shape {tuple(q.batch_shape)} for {len(x)} rows "
                f"(has_rsample={q.has_rsample}); the Pyro program handles this guide"
            )
        return q, _diagonal_normal(q)

    def _standard_prior(self) -> bool:
        # Exactly the built-in N(0, I): a subclass may change forward().
        return type(self.prior) is StandardNormalPrior

    def _analytic_kl(self, q, gaussian) -> torch.Tensor | None:
        """KL(q(z | x_n) || p(z)) ``[B]``, or None where Pyro registers no closed form."""
        if gaussian is not None and self._standard_prior():
            loc, s = gaussian  # the closed form written out: fewer operations, same values
            return (0.5 * (s.pow(2) + loc.pow(2) - 1.0) - s.log()).sum(-1)
        if q is None:
            q = dist.Normal(*gaussian).to_event(1)
        try:
            return kl_divergence(q, self.prior().expand(q.batch_shape))
        except NotImplementedError:  # e.g. a mixture prior: Monte Carlo, as Pyro does
            return None

    def _log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) ``[K, B]`` for ``z [K, B, z_dim]``."""
        if self._standard_prior():
            return -0.5 * z.pow(2).sum(-1) - z.shape[-1] * _HALF_LOG_2PI
        return self.prior().log_prob(z)

    #: the submodules of q (the rest are the model's)
    _guide_modules: tuple[str, ...] = ("encoder",)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"inference": q's parameters, "generative": the rest}`` (for the gradient SNR)."""
        inference = [p for name in self._guide_modules for p in getattr(self, name).parameters()]
        taken = {id(p) for p in inference}
        return {
            "inference": inference,
            "generative": [p for p in self.parameters() if id(p) not in taken],
        }

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
        p = self.decode(self._draw_bottom(n))
        return p.mean if mean else p.sample()

    def _draw_bottom(self, n: int) -> torch.Tensor:
        """``n`` draws of the latent the decoder reads, ``[n, z_dim]``, from the top down."""
        return self.prior().sample((n,))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """The likelihood's mean at the posterior mean: ``[B, x_dim]``."""
        return self.decode(self.posterior_mean(x)).mean
