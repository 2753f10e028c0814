"""Amortized guides q(z | x): an encoder network maps each datapoint to its posterior.

A guide is an ``nn.Module`` whose ``forward(x [B, x_dim])`` returns a distribution with batch shape
``[B]`` and event shape ``[z_dim]``; the built-in ones are a head on an encoder trunk
``x -> features`` (an MLP, a conv net, or any module): a diagonal Normal, or a diagonal Normal
pushed through a normalizing flow conditioned on the features (:mod:`pyro_vae.model.flows`:
``iaf``, ``planar``, ``radial``, ``householder``, ``sylvester``, ``naf``, ``spline``). Their
``gaussian(x)`` returns the diagonal-Normal stage (what the VampPrior mixes). Posterior means
(:meth:`pyro_vae.VAE.posterior_mean`) use the full q's ``mean`` where it has one and a Monte Carlo
mean otherwise (a flow).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro.distributions as dist
import torch
from torch import nn
from torch.nn.functional import softplus

from .._registry import lookup
from .flows import FLOWS, build_flows
from .networks import MLP, Trunk

__all__ = [
    "Guide",
    "NormalGuide",
    "FlowGuide",
    "IAFGuide",
    "PlanarGuide",
    "RadialGuide",
    "HouseholderGuide",
    "SylvesterGuide",
    "NAFGuide",
    "SplineGuide",
    "FLOW_GUIDES",
    "GUIDES",
    "make_guide",
]


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


class FlowGuide(_GaussianEncoder):
    """A diagonal Normal ``N(mu(h), sigma(h))`` on the encoder's features ``h = h(x)``, pushed
    through ``num_flows`` layers of the normalizing flow named by ``flow`` (see
    :mod:`pyro_vae.model.flows`), each layer's parameters a network of ``h``: an amortized
    posterior. Sampling is one pass, and so is log q of the guide's own draw (Pyro caches each
    layer's input). ``invertible``: whether log q can be evaluated at any z, which the STL, DReG
    and score estimators need; a flow without an inverse raises
    :class:`~pyro_vae.model.flows.FlowNotInvertible` there.
    """

    #: the flow's name in :data:`pyro_vae.model.flows.FLOWS`
    flow = ""

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        hidden_dims: Sequence[int] = (400,),
        activation: str = "relu",
        num_flows: int = 2,
        trunk: nn.Module | None = None,
    ) -> None:
        if not self.flow:
            raise TypeError(
                "FlowGuide is the base of the flow guides; build one by name, e.g. "
                "make_guide('planar', x_dim, z_dim), or use PlanarGuide, IAFGuide, ..."
            )
        super().__init__(x_dim, z_dim, hidden_dims, activation, trunk)
        if num_flows < 1:
            raise ValueError(f"num_flows must be >= 1, got {num_flows}")
        self.num_flows = int(num_flows)
        self.flows = build_flows(self.flow, z_dim, self.net.feature_dim, num_flows)

    @property
    def invertible(self) -> bool:
        return FLOWS[self.flow].invertible

    def forward(self, x: torch.Tensor) -> dist.Distribution:
        h = self.net.features(x)
        base = dist.Normal(*self._loc_scale(h)).to_event(1)
        return dist.TransformedDistribution(base, [f.condition(h) for f in self.flows])


class IAFGuide(FlowGuide):
    """Inverse autoregressive flows (Kingma et al. 2016): Pyro's
    ``conditional_affine_autoregressive``, each layer conditioned on ``h(x)`` (amortized).
    Invertible: log q at any z costs ``z_dim`` passes of the autoregressive network."""

    flow = "iaf"


class PlanarGuide(FlowGuide):
    """Planar flows (Rezende & Mohamed 2015), ``z + u tanh(w^T z + b)``: Pyro's
    ``ConditionalPlanar``, with ``(u, w, b)`` a network of ``h(x)`` (amortized). **No inverse**:
    log q is known at the guide's own draws only, so STL, DReG and score cannot use it."""

    flow = "planar"


class RadialGuide(FlowGuide):
    """Radial flows (Rezende & Mohamed 2015), ``z + beta h(alpha, r) (z - z0)``: Pyro's
    ``ConditionalRadial``, with ``(z0, alpha, beta)`` a network of ``h(x)`` (amortized). **No
    inverse**: log q is known at the guide's own draws only, so STL, DReG and score cannot use
    it."""

    flow = "radial"


class HouseholderGuide(FlowGuide):
    """Householder flows (Tomczak & Welling 2016): ``num_flows`` reflections ``I - 2 u u^T``
    after the diagonal Normal, a full-covariance Gaussian q; Pyro's ``ConditionalHouseholder``
    with each ``u`` a network of ``h(x)`` (amortized). Volume preserving and invertible in closed
    form (cheap): every estimator works."""

    flow = "householder"


class SylvesterGuide(FlowGuide):
    """Householder-Sylvester flows (van den Berg et al. 2018), ``z + Q R tanh(S Q^T z + b)``.
    Pyro has no conditional Sylvester (its ``Sylvester`` is one global transform for all x, and
    its log-determinant is exact only for Q = I), so this uses
    :class:`~pyro_vae.model.flows.ConditionalSylvester`, written here on Pyro's
    ``ConditionalTransformModule`` pattern: ``R``, ``S``, ``b`` and the reflections of ``Q``
    are a network of ``h(x)`` (amortized, as in the paper). **No inverse**: STL, DReG and score
    cannot use it."""

    flow = "sylvester"


class NAFGuide(FlowGuide):
    """Neural autoregressive flows (Huang et al. 2018, deep sigmoidal flow, IAF flavour): Pyro's
    ``ConditionalNeuralAutoregressive``, its autoregressive network fed ``h(x)`` (amortized).
    **No inverse** (Pyro leaves it unimplemented): STL, DReG and score cannot use it."""

    flow = "naf"


class SplineGuide(FlowGuide):
    """Neural spline flows (Durkan et al. 2019, rational-linear splines, Dolatabadi et al. 2020):
    Pyro's ``ConditionalSplineAutoregressive`` (8 bins on [-3, 3], identity outside), its
    autoregressive network fed ``h(x)`` (amortized). The autoregressive form rather than Pyro's
    element-wise ``conditional_spline``, which would leave q factorized across dimensions.
    Invertible: log q at any z costs ``z_dim`` network passes."""

    flow = "spline"


#: the flow guides by name; each class takes the registry's arguments as they come
FLOW_GUIDES = {
    cls.flow: cls
    for cls in (
        IAFGuide,
        PlanarGuide,
        RadialGuide,
        HouseholderGuide,
        SylvesterGuide,
        NAFGuide,
        SplineGuide,
    )
}

GUIDES = {
    "normal": lambda x_dim, z_dim, hidden, act, num_flows, trunk: NormalGuide(
        x_dim, z_dim, hidden, act, trunk
    ),
    **FLOW_GUIDES,
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
    """Build a guide by name (``normal``, or a flow: ``iaf``, ``planar``, ``radial``,
    ``householder``, ``sylvester``, ``naf``, ``spline``): its head on ``trunk`` (``x [B, x_dim] ->
    features [B, F]``), or on an MLP of ``hidden_dims`` when none is given."""
    return lookup("guide", name, GUIDES)(x_dim, z_dim, hidden_dims, activation, num_flows, trunk)
