"""Per-datapoint importance weights log p(x, z_k) - log q(z_k | x), vectorized over k.

Pyro's ``vectorized_importance_weights`` sums over every plate, the data plate included, and its
``RenyiELBO`` applies the data plate's N/B scale *inside* the log-sum-exp. Both lose the
per-datapoint structure that an importance-weighted bound needs, so this module keeps it: model and
guide run under an outer particle plate, and each site's log density is summed over its event
dimensions and any plates other than the particle plate and the data plate (dim -1).
"""

from __future__ import annotations

from typing import NamedTuple

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.subsample_messenger import _Subsample

__all__ = ["LogWeights", "vectorized_log_weights", "site_log_prob"]


class LogWeights(NamedTuple):
    """``log_w [K, B]``; ``scale`` is the data plate's N/B (1 without subsampling)."""

    log_w: torch.Tensor
    scale: float
    model_trace: poutine.Trace
    guide_trace: poutine.Trace


def _particles(fn, num_samples: int, dim: int):
    def wrapped(*args, **kwargs):
        with pyro.plate("_num_particles_vectorized", num_samples, dim=dim):
            return fn(*args, **kwargs)

    return wrapped


def is_scored_site(site: dict) -> bool:
    return site["type"] == "sample" and not isinstance(site["fn"], _Subsample)


def site_log_prob(site: dict, num_dims: int) -> torch.Tensor:
    """Unscaled, masked log density of a trace site reduced to ``[K or 1, B or 1]``.

    ``num_dims`` = max_plate_nesting + 1 (the particle plate). Plates strictly between the
    particle plate (leftmost) and the data plate (dim -1) are summed out.
    """
    lp = site["fn"].log_prob(site["value"])
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


def _data_scale(trace: poutine.Trace) -> float:
    scales = {float(s["scale"]) for s in trace.nodes.values() if is_scored_site(s)}
    if len(scales) > 1:
        raise ValueError(
            f"per-datapoint importance weights need one subsampling scale for all sites, found "
            f"{sorted(scales)}; keep every per-datapoint site in the same data plate"
        )
    return scales.pop() if scales else 1.0


def vectorized_log_weights(
    model, guide, *args, num_samples: int, max_plate_nesting: int = 1, **kwargs
) -> LogWeights:
    """Draw ``z_k ~ q(z | x)``, k = 1..K; return ``log p(x, z_k) - log q(z_k | x)`` per datapoint.

    ``model`` and ``guide`` take the same ``*args, **kwargs``; their per-datapoint sites must sit
    in a plate at dim -1 and use at most ``max_plate_nesting`` plates. Returns ``log_w`` of shape
    ``[K, B]`` (``[K, 1]`` for models with no data plate); gradients flow through reparameterized
    samples.
    """
    num_dims = max_plate_nesting + 1
    dim = -num_dims
    guide_trace = poutine.trace(_particles(guide, num_samples, dim)).get_trace(*args, **kwargs)
    replayed = poutine.replay(_particles(model, num_samples, dim), trace=guide_trace)
    model_trace = poutine.trace(replayed).get_trace(*args, **kwargs)
    log_w = 0.0
    for site in model_trace.nodes.values():
        if is_scored_site(site):
            log_w = log_w + site_log_prob(site, num_dims)
    for site in guide_trace.nodes.values():
        if is_scored_site(site):
            log_w = log_w - site_log_prob(site, num_dims)
    if not isinstance(log_w, torch.Tensor):
        raise ValueError("the model and guide have no sample sites")
    log_w = log_w.expand(num_samples, log_w.shape[-1])
    return LogWeights(log_w, _data_scale(model_trace), model_trace, guide_trace)


log_weights = vectorized_log_weights  # temporary
