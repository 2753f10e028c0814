"""THE one place that runs a model/guide pair: per-datapoint log weights ``[K, B]``.

Every estimator, :func:`~pyro_vae.log_likelihood`, :func:`~pyro_vae.gradient_snr` and the
evaluation metrics get their numbers from :func:`log_weights`. It traces the guide under an outer
particle plate of K draws, replays the model on those draws, and sums each site's log density
over its event dimensions and any plates other than the particle plate and the data plate
(dim -1), so the datapoint index survives::

    log w_nk = log p(x_n, z_nk) - log q(z_nk | x_n),     z_nk ~ q(z | x_n),  k = 1..K

Pyro's ``vectorized_importance_weights`` sums over every plate, the data plate included (one
weight per minibatch), and its ``RenyiELBO`` applies the data plate's N/B scale *inside* the
log-sum-exp; both lose what an importance-weighted bound per datapoint needs.

A model object may also compute the same :class:`~pyro_vae.model.protocol.LogWeights` itself in
plain torch (the built-in VAE does, see :meth:`pyro_vae.VAE.log_weights`); training uses that
between validated steps and checks it against this function (see ``pyro_vae.training.loss``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.subsample_messenger import _Subsample
from torch.distributions import kl_divergence

from ..model.protocol import LogWeights

__all__ = [
    "LogWeights",
    "NotPerDatapoint",
    "log_weights",
    "latent_sites",
    "PARTICLE_PLATE",
    "LogJoint",
    "log_joint",
    "fixed_log_density",
    "sample_prior",
    "simulate",
]

#: the name of the outer plate that holds the K particles
PARTICLE_PLATE = "_num_particles_vectorized"


class NotPerDatapoint(ValueError):
    """The model/guide pair has no per-datapoint log weights (a global latent, or sites scaled
    differently); ``trace`` and ``meanfield`` then use Pyro's own estimators."""


def _in_particle_plate(fn, num_samples: int, dim: int):
    def wrapped(*args, **kwargs):
        with pyro.plate(PARTICLE_PLATE, num_samples, dim=dim):
            return fn(*args, **kwargs)

    return wrapped


def _is_scored(site: dict) -> bool:
    return site["type"] == "sample" and not isinstance(site["fn"], _Subsample)


def _is_latent(site: dict) -> bool:
    return _is_scored(site) and not site["is_observed"]


def latent_sites(trace: poutine.Trace) -> list[dict]:
    """The latent (unobserved, non-plate) sample sites of ``trace``."""
    return [site for site in trace.nodes.values() if _is_latent(site)]


def _reduce(site: dict, lp: torch.Tensor, num_dims: int) -> torch.Tensor:
    """Mask a site's ``lp`` and reduce it to ``[K or 1, B or 1]``.

    ``num_dims`` = max_plate_nesting + 1 (the particle plate). Plates strictly between the
    particle plate (leftmost) and the data plate (dim -1) are summed out.
    """
    if site["mask"] is not None:
        lp = torch.where(torch.as_tensor(site["mask"], device=lp.device), lp, lp.new_zeros(()))
    if lp.dim() > num_dims:
        raise ValueError(
            f"site {site['name']!r} has batch shape {list(lp.shape)} with more dims than "
            f"max_plate_nesting + 1 = {num_dims}; declare its event dims with .to_event() or "
            f"raise max_plate_nesting"
        )
    lp = lp.reshape((1,) * (num_dims - lp.dim()) + lp.shape)
    if num_dims > 2:
        lp = lp.sum(dim=tuple(range(1, num_dims - 1)))
    return lp


def _in_data_plate(site: dict) -> bool:
    return any(f.dim == -1 and f.name != PARTICLE_PLATE for f in site["cond_indep_stack"])


def _check_per_datapoint(model_trace: poutine.Trace, guide_trace: poutine.Trace) -> float:
    """The data plate's scale N/B, after checking that every latent is per datapoint."""
    sites = [s for t in (model_trace, guide_trace) for s in t.nodes.values() if _is_scored(s)]
    if any(_in_data_plate(s) for s in sites):
        for s in sites:
            if not s["is_observed"] and not _in_data_plate(s):
                raise NotPerDatapoint(
                    f"latent site {s['name']!r} is not in the data plate (a pyro.plate at dim "
                    f"-1): per-datapoint log weights would count a global latent once per "
                    f"datapoint; put it in the data plate, or use Pyro's Trace_ELBO for models "
                    f"with global latents"
                )
    scales = set()
    for s in (s for t in (model_trace, guide_trace) for s in t.nodes.values() if _is_scored(s)):
        if isinstance(s["scale"], torch.Tensor) and s["scale"].numel() > 1:
            raise NotPerDatapoint(
                f"site {s['name']!r} has a tensor scale: per-datapoint log weights take one "
                f"subsampling scale for all sites"
            )
        scales.add(float(s["scale"]))
    if len(scales) > 1:
        raise NotPerDatapoint(
            f"per-datapoint log weights need one subsampling scale for all sites, found "
            f"{sorted(scales)} (a poutine.scale on some sites?); the per-datapoint estimators "
            f"need the data plate's N/B alone"
        )
    return scales.pop() if scales else 1.0


def _at_leaves(guide_trace: poutine.Trace) -> tuple[poutine.Trace, tuple]:
    """A copy of the guide's draws with each latent replaced by a detached leaf tensor that
    requires grad (other sample sites, e.g. subsample indices, kept as drawn)."""
    fixed, leaves = poutine.Trace(), []
    for name, site in guide_trace.nodes.items():
        if site["type"] != "sample":
            continue
        value = site["value"]
        if _is_latent(site):
            value = value.detach().requires_grad_(torch.is_floating_point(value))
            leaves.append(value)
        fixed.add_node(
            name, type="sample", is_observed=site["is_observed"], value=value, infer=site["infer"]
        )
    return fixed, tuple(leaves)


def _analytic_kl(guide_site: dict, model_site: dict) -> torch.Tensor | None:
    try:
        return kl_divergence(guide_site["fn"], model_site["fn"])
    except NotImplementedError:
        return None


def log_weights(
    model,
    guide,
    *args,
    num_samples: int = 1,
    max_plate_nesting: int = 1,
    pathwise: bool = False,
    analytic_kl: bool | Collection[str] = False,
    **kwargs,
) -> LogWeights:
    """Draw ``z_k ~ q(z | x)``, k = 1..K, and return the per-datapoint log densities.

    Args:
        model, guide: Pyro programs taking the same ``*args, **kwargs`` (e.g. ``vae.model``,
            ``vae.guide`` with ``x [B, ...]`` and ``num_data``); per-datapoint sites in a
            ``pyro.plate`` at dim -1, at most ``max_plate_nesting`` plates.
        num_samples: K, drawn in one vectorized particle plate at dim ``-max_plate_nesting-1``.
        pathwise: evaluate ``log_p`` and ``log_q`` at ``leaves``, detached copies of the draws
            (the guide replayed there, so log q is a function of z whatever the guide is, flows
            and dependent latents included), as the path-derivative estimators (STL, DReG)
            need; ``latents`` keep the draws with their path to the guide's parameters.
        analytic_kl: take the closed-form KL(q || p) of a latent site out of ``log_p`` and
            ``log_q`` and return it in ``kl`` (as ``TraceMeanField_ELBO`` does), where Pyro
            registers one *and* it is exact: for the guide's last latent site. (An earlier
            site's closed form would hold fixed what later draws depend on: KL(q(z1 | x) ||
            p(z1 | z2)) with z2 ~ q(z2 | z1) is not E_q[log q(z1 | x) - log p(z1 | z2)].) A
            collection of site names asks for exactly those sites, on the caller's word.
    Returns:
        :class:`LogWeights` with ``log_p``, ``log_q`` (and ``kl``) of shape ``[K, B]``
        (``[K, 1]`` for a model without a data plate); gradients flow through reparameterized
        samples.
    Raises:
        ValueError: a latent outside the data plate, or sites with different subsampling scales.
    """
    num_dims = max_plate_nesting + 1
    dim = -num_dims
    guide_trace = poutine.trace(_in_particle_plate(guide, num_samples, dim)).get_trace(
        *args, **kwargs
    )
    latents = tuple(s["value"] for s in guide_trace.nodes.values() if _is_latent(s))
    leaves: tuple = ()
    if pathwise:
        fixed, leaves = _at_leaves(guide_trace)
        at_leaves = poutine.replay(_in_particle_plate(guide, num_samples, dim), trace=fixed)
        guide_trace = poutine.trace(at_leaves).get_trace(*args, **kwargs)
    replayed = poutine.replay(_in_particle_plate(model, num_samples, dim), trace=guide_trace)
    model_trace = poutine.trace(replayed).get_trace(*args, **kwargs)
    scale = _check_per_datapoint(model_trace, guide_trace)
    log_p, log_q, kl, log_lik, analytic, site_kl = _sum_sites(
        model_trace, guide_trace, analytic_kl, num_dims
    )
    if log_p is None and not analytic:
        raise ValueError("the model has no sample sites")
    present = [v for v in (log_p, log_q, kl) if v is not None]
    shape = (num_samples, torch.broadcast_shapes(*(v.shape for v in present))[-1])
    zeros = present[0].new_zeros(shape)  # on the data's device and in its dtype
    log_p, log_q, log_lik = (zeros if v is None else v for v in (log_p, log_q, log_lik))
    return LogWeights(
        log_p=log_p.expand(shape),
        log_q=log_q.expand(shape),
        kl=kl.expand(shape) if analytic else None,
        scale=scale,
        latents=latents,
        traces=(model_trace, guide_trace),
        log_lik=log_lik.expand(shape),
        analytic=tuple(sorted(analytic)),
        leaves=leaves,
        site_kl={k: v.expand(shape) for k, v in site_kl.items()},
    )


def _add(total: torch.Tensor | None, term: torch.Tensor) -> torch.Tensor:
    return term if total is None else total + term


def _sum_sites(model_trace, guide_trace, analytic_kl, num_dims: int):
    """Per-datapoint sums over sites: ``(log_p, log_q, kl, log_lik, analytic sites, site_kl)``,
    each sum ``[K or 1, B or 1]`` or None where no site contributes."""
    log_p = log_q = kl = log_lik = None
    analytic: set[str] = set()
    site_kl: dict[str, torch.Tensor] = {}
    if analytic_kl is True:
        sites = latent_sites(guide_trace)
        analytic_kl = {sites[-1]["name"]} if sites else set()
    for name, site in guide_trace.nodes.items():
        if not _is_latent(site):
            continue
        if analytic_kl and name in analytic_kl and name in model_trace.nodes:
            closed = _analytic_kl(site, model_trace.nodes[name])
            if closed is not None:
                site_kl[name] = _reduce(site, closed, num_dims)
                kl = _add(kl, site_kl[name])
                analytic.add(name)
                continue
        lq = _reduce(site, site["fn"].log_prob(site["value"]), num_dims)
        site_kl[name] = lq
        log_q = _add(log_q, lq)
    for name, site in model_trace.nodes.items():
        if _is_scored(site) and name not in analytic:
            lp = _reduce(site, site["fn"].log_prob(site["value"]), num_dims)
            log_p = _add(log_p, lp)
            if site["is_observed"]:
                log_lik = _add(log_lik, lp)
            elif name in site_kl:
                site_kl[name] = site_kl[name] - lp
    return log_p, log_q, kl, log_lik, analytic, site_kl


# -- a program's log density at given latents (annealed importance sampling, BDMC) ---------------
class LogJoint(NamedTuple):
    """A program's log density at given latents, per chain and datapoint, each ``[C, B]``.

    ``log_p``: the sum over every scored site (for a model, log p(x_n, z_cn); for a guide,
    log q(z_cn | x_n)); ``log_lik``: the observed sites' part (zeros for a guide); ``trace``:
    the program's trace at those latents.
    """

    log_p: torch.Tensor
    log_lik: torch.Tensor
    trace: poutine.Trace


def log_joint(
    program,
    latents: Mapping[str, torch.Tensor],
    *args,
    max_plate_nesting: int = 1,
    **kwargs,
) -> LogJoint:
    """Run ``program`` (a model or a guide) at the given values of all its latent sites and
    return its per-datapoint log density.

    Args:
        program: a Pyro program called as ``program(*args, **kwargs)`` whose per-datapoint sites
            sit in a ``pyro.plate`` at dim -1.
        latents: ``{site: [C, B, ...]}``, a value for *every* latent site of the program, with C
            chains (or particles) in an outer plate at dim ``-max_plate_nesting-1``. Values that
            require grad keep their graph: ``log_p`` is differentiable in them.
    Returns:
        :class:`LogJoint` with ``log_p`` and ``log_lik`` of shape ``[C, B]``.
    Raises:
        ValueError: a latent site of the program without a value (it would be drawn afresh),
            a value for a site the program does not have, or a latent outside the data plate.
        NotImplementedError: a site's distribution cannot evaluate ``log_prob`` at the value.
    """
    if not latents:
        raise ValueError("log_joint needs the values of the program's latent sites")
    num_dims = max_plate_nesting + 1
    num_chains = next(iter(latents.values())).shape[0]
    fixed = poutine.Trace()
    for name, value in latents.items():
        fixed.add_node(name, type="sample", is_observed=False, value=value, infer={})
    in_plate = _in_particle_plate(program, num_chains, -num_dims)
    trace = poutine.trace(poutine.replay(in_plate, trace=fixed)).get_trace(*args, **kwargs)
    names = {s["name"] for s in latent_sites(trace)}
    missing, extra = sorted(names - set(latents)), sorted(set(latents) - names)
    if missing:
        raise ValueError(
            f"the program draws latent site(s) {missing} that were not given a value; "
            f"log_joint needs every latent site (given: {sorted(latents)})"
        )
    if extra:
        raise ValueError(
            f"values were given for {extra}, which are not latent sites of the program "
            f"(its latent sites: {sorted(names)})"
        )
    _check_per_datapoint(trace, poutine.Trace())
    log_p = log_lik = None
    for site in trace.nodes.values():
        if _is_scored(site):
            lp = _reduce(site, site["fn"].log_prob(site["value"]), num_dims)
            log_p = _add(log_p, lp)
            if site["is_observed"]:
                log_lik = _add(log_lik, lp)
    terms = [t for t in (log_p, log_lik) if t is not None]
    shape = (num_chains, torch.broadcast_shapes(*(t.shape for t in terms))[-1])
    log_lik = log_p.new_zeros(()) if log_lik is None else log_lik
    return LogJoint(log_p.expand(shape), log_lik.expand(shape), trace)


def fixed_log_density(
    program,
    latents: Mapping[str, torch.Tensor],
    *args,
    max_plate_nesting: int = 1,
    **kwargs,
):
    """The program's log density as a function of its latents, without running it again, where
    that is exact: a program with one latent site and no observed site (e.g. a guide q(z | x)
    with one site), whose distribution is built from the program's inputs alone before the draw.

    Returns ``f({site: [C, B, ...]}) -> [C, B]``, differentiable in the values (the
    distribution's parameters detached, from one run of the program at ``latents``), or None
    for any other program, which :func:`log_joint` must run at every point.
    """
    with torch.no_grad():
        joint = log_joint(program, latents, *args, max_plate_nesting=max_plate_nesting, **kwargs)
    sites = [s for s in joint.trace.nodes.values() if _is_scored(s)]
    if len(sites) != 1 or sites[0]["is_observed"]:
        return None
    site, num_dims, shape = sites[0], max_plate_nesting + 1, joint.log_p.shape

    def log_density(values: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return _reduce(site, site["fn"].log_prob(values[site["name"]]), num_dims).expand(shape)

    return log_density


def sample_prior(
    model, *args, num_samples: int = 1, max_plate_nesting: int = 1, **kwargs
) -> dict[str, torch.Tensor]:
    """``num_samples`` ancestral draws of the model's latents from its prior (a hierarchy from
    the top down), ``{site: [K, B, ...]}`` (detached), in an outer particle plate at dim
    ``-max_plate_nesting-1``; the observed sites keep their values."""
    dim = -(max_plate_nesting + 1)
    with torch.no_grad():
        trace = poutine.trace(_in_particle_plate(model, num_samples, dim)).get_trace(
            *args, **kwargs
        )
    _check_per_datapoint(trace, poutine.Trace())
    return {s["name"]: s["value"] for s in latent_sites(trace)}


def simulate(model, *args, max_plate_nesting: int = 1, **kwargs) -> tuple[dict, dict]:
    """Run the model forward: latents from the prior, then its observed sites drawn from the
    likelihood instead of conditioned on (``poutine.uncondition``). ``args``/``kwargs`` are
    the model's, e.g. a datapoint batch ``x [B, ...]`` that only sets the shapes.

    Returns:
        ``(observed, latents)``: ``{site: [B, ...]}`` the simulated values of the observed sites
        and ``{site: [..., B, ...]}`` the latents that generated them (an exact draw from the
        posterior given the simulated data), with ``max_plate_nesting`` batch dims (the data
        plate's last) as in :func:`log_joint`'s values less the chain dim, all detached.
    """
    with torch.no_grad():
        trace = poutine.trace(poutine.uncondition(model)).get_trace(*args, **kwargs)
    _check_per_datapoint(trace, poutine.Trace())
    observed, latents = {}, {}
    for site in trace.nodes.values():
        if not _is_scored(site):
            continue
        value = site["value"]
        if site["infer"].get("was_observed", False):
            observed[site["name"]] = value
        else:
            batch = value.dim() - site["fn"].event_dim
            latents[site["name"]] = value.reshape((1,) * (max_plate_nesting - batch) + value.shape)
    return observed, latents
