"""The inference gap and its two parts (Cremer, Li & Duvenaud 2018, "Inference Suboptimality in
Variational Autoencoders")::

    log p(x) - ELBO(q_amort) = [log p(x) - ELBO(q*_local)] + [ELBO(q*_local) - ELBO(q_amort)]
    inference gap              approximation gap             amortization gap

q*_local is the best distribution of the guide's family fitted to each datapoint on its own: here
a diagonal Normal per datapoint and latent site (in the site's unconstrained space,
``biject_to(support)``, for a constrained latent), optimized by stochastic variational inference
with the model held fixed. The approximation gap is what the family costs; the amortization gap
is what sharing one encoder across the data costs. log p(x) is the best estimate at hand: AIS
(:func:`~pyro_vae.ais_log_likelihood`, the default) or importance sampling with many samples,
or one already computed on the same data (``log_likelihood=``).

**Flexible local posteriors** (``local_flows=F``, as Cremer et al. fit for their flow
encoders): each site's local q is that diagonal Normal pushed through F planar flows
(Rezende & Mohamed 2015), ``y = x + u^ tanh(w^T x + b)``, whose parameters are free per
datapoint (not amortized) and optimized jointly with the Normal's. They are written as a standard
Normal through the F flows and then the diagonal affine map ``loc + scale * (.)``: the same
family (a diagonal affine map A conjugates a planar flow into another, A P A^-1 being planar with
u' = A u, w' = A^-1 w and the same w^T u), but with the flows acting on unit-scale noise whatever
the posterior's scale. Each flow is Pyro's :class:`~pyro.distributions.transforms.ConditionalPlanar`
conditioned on per-datapoint parameters (bias ``[..., B, 1]``, u and w ``[..., B, D]``, D the
site's size, a site of any event shape flattened to ``[D]``); it enforces invertibility by
replacing u with u^ = u + (softplus(w^T u) - 1 - w^T u) w / |w|^2, so that w^T u^ > -1. Each flow
starts as the identity (u^ = 0, w a random unit vector, its hyperplane through the Normal's
mean), so the fit starts where the diagonal fit does. With a diagonal-Normal guide the local
family is then richer than the guide's: the approximation gap is the flows' (smaller), and the
amortization gap includes what the richer family gains.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.distributions.transforms import ConditionalPlanar
from pyro.infer.util import is_validation_enabled
from torch.distributions.transforms import AffineTransform, ReshapeTransform

from .ais import ais_log_likelihood
from .batching import MIN_CHUNK, chunks, tile_elements
from .evaluate import log_likelihood as is_log_likelihood
from .inputs import check_owner_data
from .log_weights import latent_sites, log_weights
from .unconstrained import support_transform

__all__ = ["inference_gaps", "LOG_LIKELIHOOD_METHODS"]

#: the estimates of log p(x) that ``inference_gaps`` offers
LOG_LIKELIHOOD_METHODS = ("ais", "is")
#: the smallest scale the local Normal starts from (the amortized guide's spread may be ~0)
MIN_INIT_SCALE = 1e-3
#: w^T u at which a planar flow is the identity: softplus(a) - 1 = 0 makes u^ = 0
_PLANAR_IDENTITY = math.log(math.e - 1.0)


class _LocalSite:
    """One latent site's local diagonal Normal over ``u = biject_to(support)^-1(z)``: ``loc``
    and ``log_scale`` of shape ``[..., B, *u_event]`` (the site's batch dims without the
    particle dim), and with ``num_flows`` each planar flow's ``(bias [..., B, 1], u [..., B, D],
    w [..., B, D])`` (see the module docstring), all leaves that require grad (``params``)."""

    def __init__(self, site: dict, model_site: dict, num_dims: int, num_flows: int = 0):
        self.name = site["name"]
        self.transform = support_transform(model_site["fn"])
        value = site["value"].detach()  # [K, ..., B, *event]
        u = value if self.transform is None else self.transform.inv(value)
        self.event_dims = u.dim() - num_dims
        self.scale = site["scale"]
        loc, std = u.mean(0), u.std(0)
        self.loc = loc.clone().requires_grad_(True)
        self.log_scale = std.clamp(min=MIN_INIT_SCALE).log().requires_grad_(True)
        split = loc.dim() - self.event_dims
        self.event_shape = tuple(loc.shape[split:])
        self.flat_shape = (*loc.shape[:split], math.prod(self.event_shape))
        self.flow_params = [self._identity_planar() for _ in range(num_flows)]
        self.flows = [ConditionalPlanar(_returns(p)) for p in self.flow_params]
        self.params = [self.loc, self.log_scale, *(t for p in self.flow_params for t in p)]

    def _identity_planar(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(bias, u, w)`` of a planar flow that is the identity (u^ = 0): w a random unit
        vector, u = a w with softplus(a) = 1, bias 0 (the hyperplane through the mean). A unit
        w, not a small one: u^ = u + (softplus(w^T u) - 1 - w^T u) w / |w|^2 grows as 1 / |w|
        once w^T u leaves a, and a flow that starts near w = 0 throws its first draws far."""
        w = torch.randn(self.flat_shape, dtype=self.loc.dtype, device=self.loc.device)
        w = w / w.norm(dim=-1, keepdim=True)
        u = _PLANAR_IDENTITY * w
        bias = w.new_zeros((*self.flat_shape[:-1], 1))
        return tuple(t.requires_grad_(True) for t in (bias, u, w))

    def distribution(self):
        scale = self.log_scale.exp()
        if not self.flows:
            base = dist.Normal(self.loc, scale).to_event(self.event_dims)
            transforms = []
        else:
            base = dist.Normal(
                self.loc.new_zeros(self.flat_shape), self.loc.new_ones(self.flat_shape)
            ).to_event(1)
            # conditioned afresh at every draw: each caches its own draw's input and log det
            transforms = [f.condition(None) for f in self.flows]
            loc, scale = self.loc.reshape(self.flat_shape), scale.reshape(self.flat_shape)
            # every map after the flows caches its input: log q of the draw then inverts
            # nothing (a planar flow has no inverse; it knows its own draw only)
            transforms.append(AffineTransform(loc, scale, event_dim=1, cache_size=1))
            if self.event_shape != self.flat_shape[-1:]:
                transforms.append(
                    ReshapeTransform(self.flat_shape[-1:], self.event_shape, cache_size=1)
                )
        if self.transform is not None:
            transforms.append(self.transform.with_cache(1) if self.flows else self.transform)
        return dist.TransformedDistribution(base, transforms) if transforms else base


def _returns(params):
    """The ``nn`` of a :class:`ConditionalPlanar` whose parameters are the free tensors
    ``params`` themselves: it ignores the context."""
    return lambda context: params


def _local_guide(sites: list[_LocalSite], batch: int):
    """A Pyro program with the model's latent sites, each its local q (scaled like
    the amortized guide's sites, so that the data plate's N/B scale agrees with the model's)."""

    def guide(*args, **kwargs):
        with pyro.plate("data", batch, dim=-1):
            for s in sites:
                with poutine.scale(scale=s.scale) if s.scale != 1.0 else contextlib.nullcontext():
                    pyro.sample(s.name, s.distribution())

    return guide


def _elbo(model, guide, x, num_samples, chunk, nesting, kwargs) -> torch.Tensor:
    """E_q[log p(x, z) - log q(z | x)] ``[B]``, the mean of ``num_samples`` log weights."""
    total = 0.0
    with torch.no_grad():
        for _, k in chunks(num_samples, chunk):
            lw = log_weights(model, guide, x, num_samples=k, max_plate_nesting=nesting, **kwargs)
            total = total + lw.log_w.sum(0)
    return total / num_samples


@dataclass(frozen=True)
class _LocalFit:
    """How each datapoint's local q is fitted: Adam ``steps`` from learning rate ``lr`` (cosine
    decay to 0), ``samples`` reparameterized draws a step, ``flows`` planar flows, started from
    ``init_samples`` draws of the amortized guide (the arguments ``local_*`` and
    ``init_samples`` of :func:`inference_gaps`)."""

    steps: int
    lr: float
    samples: int
    flows: int
    init_samples: int

    def __post_init__(self) -> None:
        for name, v in (("local_steps", self.steps), ("local_samples", self.samples)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        flows = self.flows
        if not isinstance(flows, int) or isinstance(flows, bool) or flows < 0:
            raise ValueError(
                f"local_flows must be an integer >= 0 (planar flows on the local Normal), got "
                f"{flows!r}"
            )
        if not isinstance(self.init_samples, int) or self.init_samples < 2:
            raise ValueError(
                f"init_samples must be an integer >= 2 (a spread), got {self.init_samples!r}"
            )

    def settings(self) -> dict:
        return {
            "local_steps": self.steps,
            "local_lr": self.lr,
            "local_samples": self.samples,
            "local_flows": self.flows,
        }


def _fit_local(model, guide, x, fit: _LocalFit, nesting, kwargs) -> list[_LocalSite]:
    """The local diagonal Normals (and their flows) of one batch, initialized at the amortized
    guide's mean and spread (the flows at the identity) and optimized with Adam on the
    reparameterized ELBO. The gradient is taken with respect to the local parameters alone
    (``torch.autograd.grad``): the model's and the guide's parameters get no gradient and their
    ``requires_grad`` is never touched."""
    with torch.no_grad():
        lw = log_weights(
            model, guide, x, num_samples=fit.init_samples, max_plate_nesting=nesting, **kwargs
        )
    model_trace, guide_trace = lw.traces
    num_dims = nesting + 1
    sites = [
        _LocalSite(s, model_trace.nodes[s["name"]], num_dims, fit.flows)
        for s in latent_sites(guide_trace)
    ]
    local = _local_guide(sites, len(x))
    params = [p for s in sites for p in s.params]
    optim = torch.optim.Adam(params, lr=fit.lr)
    for step in range(fit.steps):
        # cosine decay to 0: the last steps average out the gradient noise near the optimum
        for group in optim.param_groups:
            group["lr"] = fit.lr * 0.5 * (1 + math.cos(math.pi * step / fit.steps))
        validate = pyro.validation_enabled(step == 0 and is_validation_enabled())
        with torch.enable_grad(), validate:
            elbo = log_weights(
                model, local, x, num_samples=fit.samples, max_plate_nesting=nesting, **kwargs
            ).log_w.mean(0)
            # datapoints are independent: the sum's gradient is each datapoint's own
            grads = torch.autograd.grad(-elbo.sum(), params)
        for p, g in zip(params, grads):
            p.grad = g
        optim.step()
    return sites


def _elbos(
    model, guide, data, fit: _LocalFit, elbo_samples, batch_size, max_elements, nesting, kwargs
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ELBO(q*_local), ELBO(q_amort))``, each ``[N]``, in batches of ``batch_size``
    datapoints (default: as many as keep one ``[samples, batch, D]`` tensor of the widest
    step under ``max_elements``)."""
    n, d = len(data), max(1, data[0].numel())
    widest = max(fit.samples, fit.init_samples, min(elbo_samples, MIN_CHUNK))
    if batch_size is None:
        batch_size = max(1, min(n, max_elements // (d * widest)))
    local, amortized = [], []
    for start, b in chunks(n, batch_size):
        x = data[start : start + b]
        chunk = max(1, min(elbo_samples, max_elements // (b * d)))
        local_guide = _local_guide(_fit_local(model, guide, x, fit, nesting, kwargs), b)
        local.append(_elbo(model, local_guide, x, elbo_samples, chunk, nesting, kwargs))
        amortized.append(_elbo(model, guide, x, elbo_samples, chunk, nesting, kwargs))
    return torch.cat(local), torch.cat(amortized)


@dataclass(frozen=True)
class _LogPx:
    """How log p(x) is estimated, or was for a precomputed one: ``method`` ``"ais"`` with
    ``num_steps``, ``num_chains`` and ``ais_options``, or ``"is"`` with ``is_samples``."""

    method: str
    num_steps: int
    num_chains: int
    is_samples: int
    ais_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in LOG_LIKELIHOOD_METHODS:
            raise ValueError(
                f"unknown method {self.method!r} for log p(x); choose 'ais' (annealed "
                f"importance sampling, the default) or 'is' (importance sampling with is_samples)"
            )

    def given_or_estimate(self, given, model, guide, data, nesting, kwargs) -> torch.Tensor:
        """``[N]``: the ``given`` log p(x) (checked, see :func:`_precomputed`) where there is
        one, else :meth:`estimate`."""
        if given is not None:
            return _precomputed(given, len(data))
        return self.estimate(model, guide, data, nesting, kwargs)

    def estimate(self, model, guide, data, nesting, kwargs) -> torch.Tensor:
        """``[N]``: log p(x) of every datapoint by this method."""
        if self.method == "ais":
            return ais_log_likelihood(
                model,
                guide,
                data,
                self.num_steps,
                self.num_chains,
                max_plate_nesting=nesting,
                check_data=False,
                **self.ais_options,
                **kwargs,
            )
        return is_log_likelihood(
            model,
            guide,
            data,
            self.is_samples,
            max_plate_nesting=nesting,
            check_data=False,
            **kwargs,
        )

    def settings(self) -> dict:
        if self.method == "ais":
            return {"num_steps": self.num_steps, "num_chains": self.num_chains, **self.ais_options}
        return {"num_samples": self.is_samples}


def _precomputed(log_likelihood, n: int) -> torch.Tensor:
    """The caller's log p(x) ``[N]``, checked for its shape, detached."""
    if isinstance(log_likelihood, str):
        raise ValueError(
            f"log_likelihood={log_likelihood!r}: the estimate is named by method= (e.g. "
            f"method={log_likelihood!r}); log_likelihood= takes a precomputed [N] tensor"
        )
    if not isinstance(log_likelihood, torch.Tensor) or not log_likelihood.is_floating_point():
        raise ValueError(
            f"log_likelihood must be a float tensor [N] of log p(x) per datapoint, got "
            f"{type(log_likelihood).__name__}"
        )
    if log_likelihood.shape != (n,):
        raise ValueError(
            f"log_likelihood has shape {list(log_likelihood.shape)}; it must be [N] = [{n}], "
            f"one log p(x) per datapoint of data"
        )
    return log_likelihood.detach()


def _gaps(log_p: torch.Tensor, local: torch.Tensor, amortized: torch.Tensor) -> dict:
    """The five per-datapoint numbers ``[N]`` (in log p(x)'s dtype)."""
    per = {
        "log_likelihood": log_p,
        "elbo_local": local.to(log_p.dtype),
        "elbo_amortized": amortized.to(log_p.dtype),
    }
    per["approximation_gap"] = per["log_likelihood"] - per["elbo_local"]
    per["amortization_gap"] = per["elbo_local"] - per["elbo_amortized"]
    per["inference_gap"] = per["log_likelihood"] - per["elbo_amortized"]
    return per


def _means(per: dict[str, torch.Tensor]) -> dict[str, float]:
    """Each number's mean over the data, and its standard error (``*_stderr``)."""
    out: dict = {}
    for key, v in per.items():
        n = len(v)
        out[key] = float(v.mean())
        out[f"{key}_stderr"] = float(v.std() / math.sqrt(n)) if n > 1 else 0.0
    return out


def _settings(log_px: _LogPx, precomputed: bool, fit: _LocalFit, elbo_samples: int) -> dict:
    """What :func:`inference_gaps` records of how its numbers were computed."""
    given = {"precomputed": True} if precomputed else {}
    return {
        "log_likelihood": {**log_px.settings(), **given},
        **fit.settings(),
        "elbo_samples": elbo_samples,
    }


def inference_gaps(
    model: Callable,
    guide: Callable,
    data: torch.Tensor,
    *,
    method: str = "ais",
    log_likelihood: torch.Tensor | None = None,
    num_steps: int = 1000,
    num_chains: int = 16,
    ais_options: Mapping | None = None,
    is_samples: int = 5000,
    local_steps: int = 500,
    local_lr: float = 0.1,
    local_samples: int = 16,
    local_flows: int = 0,
    init_samples: int = 100,
    elbo_samples: int = 2000,
    return_per_datapoint: bool = False,
    batch_size: int | None = None,
    max_elements: int | None = None,
    max_plate_nesting: int = 1,
    check_data: bool = True,
    **kwargs,
) -> dict:
    """The approximation and amortization gaps of ``guide`` for ``model`` on ``data``.

    Args:
        model, guide: Pyro programs ``model(x, **kwargs)``, ``guide(x, **kwargs)`` with
            continuous per-datapoint latent sites in a ``pyro.plate`` at dim -1.
        data: ``[N, ...]``.
        method: how log p(x) is estimated: ``"ais"`` (:func:`~pyro_vae.ais_log_likelihood`
            with ``num_steps``, ``num_chains`` and ``ais_options``, a dict of its other
            keywords) or ``"is"`` (:func:`~pyro_vae.log_likelihood` with ``is_samples``
            samples from the guide); with ``log_likelihood``, how that was computed.
        log_likelihood: a precomputed log p(x) per datapoint ``[N]`` of ``data`` (e.g. AIS
            already run on them), used as it is instead of computing one.
        local_steps, local_lr, local_samples: Adam steps, its initial learning rate (cosine
            decay to 0) and the reparameterized samples per step of each datapoint's local q.
        local_flows: F planar flows on each site's local diagonal Normal, their parameters free
            per datapoint and fitted with it (see the module docstring); 0 (the default): the
            diagonal Normal alone. The local q is independent across latent sites: for a
            hierarchy whose guide is structured (q(z2 | z1) in :class:`~pyro_vae.TwoLayerVAE`)
            the local family is not a superset of the encoder's, so its amortization gap can
            come out negative (per-site flows do not change that).
        init_samples: draws of the amortized guide whose mean and standard deviation (per
            coordinate, unconstrained) start the local q.
        elbo_samples: samples of each final ELBO (local and amortized), so that their Monte
            Carlo error is small beside the gaps.
        return_per_datapoint: add ``per_datapoint``, ``{key: [N]}`` of the five numbers.
        max_elements: of one ``[samples, batch, D]`` tensor; default
            :func:`~pyro_vae.infer.batching.tile_elements` with ``keeps_graph=True``.
        **kwargs: passed to model and guide (e.g. ``num_data``).
    Returns:
        a dict of means over the data, in nats: ``log_likelihood`` (with
        ``log_likelihood_method``), ``elbo_local``, ``elbo_amortized``, ``approximation_gap``
        = log_likelihood - elbo_local, ``amortization_gap`` = elbo_local - elbo_amortized and
        ``inference_gap`` = log_likelihood - elbo_amortized, their standard errors over the
        data (``*_stderr``), ``num_data`` and ``settings`` (``settings["log_likelihood"]``
        with ``precomputed: True`` for a given ``log_likelihood``).
    """
    log_px = _LogPx(method, num_steps, num_chains, is_samples, dict(ais_options or {}))
    check_owner_data(model, data, check_data)
    fit = _LocalFit(local_steps, float(local_lr), local_samples, local_flows, init_samples)
    if not isinstance(elbo_samples, int) or elbo_samples < 1:
        raise ValueError(f"elbo_samples must be an integer >= 1, got {elbo_samples!r}")
    nesting = max_plate_nesting
    log_p = log_px.given_or_estimate(log_likelihood, model, guide, data, nesting, kwargs)
    if max_elements is None:
        max_elements = tile_elements(data.device, keeps_graph=True)
    elbos = _elbos(model, guide, data, fit, elbo_samples, batch_size, max_elements, nesting, kwargs)
    per = _gaps(log_p, *elbos)
    out = _means(per)
    out["log_likelihood_method"] = method
    out["num_data"] = len(data)
    out["settings"] = _settings(log_px, log_likelihood is not None, fit, elbo_samples)
    if return_per_datapoint:
        out["per_datapoint"] = {k: v.detach() for k, v in per.items()}
    return out
