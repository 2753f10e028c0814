"""ELBO estimators by name.

``make_elbo(name, num_particles, **options)`` returns a Pyro ``ELBO``: it works with ``SVI``, with
``elbo.differentiable_loss`` and with the module form ``elbo(model, guide)`` plus a torch optimizer.
"""

from __future__ import annotations

import math

import pyro.infer as infer
import torch
from pyro.infer import ELBO

from ._registry import lookup
from .importance import is_scored_site, vectorized_log_weights

__all__ = ["IWAE_ELBO", "ESTIMATORS", "make_elbo"]


class IWAE_ELBO(ELBO):
    """The importance-weighted bound of Burda et al. (2015), per datapoint::

        L_K = sum_n E[ log (1/K) sum_k p(x_n, z_nk) / q(z_nk | x_n) ],  z_nk ~ q(z | x_n)

    Unlike ``RenyiELBO(alpha=0)``, the data plate's N/B subsampling scale multiplies the bound
    *outside* the log-sum-exp, so minibatch losses are unbiased estimates of the full-data bound.
    Requires a reparameterized guide; with K = 1 it equals ``Trace_ELBO``.
    """

    def __init__(self, num_particles: int = 5, max_plate_nesting: int = 1) -> None:
        super().__init__(
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=True,
        )

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError(f"{type(self).__name__} builds its vectorized traces itself")

    def log_weights(self, model, guide, *args, **kwargs):
        lw = vectorized_log_weights(
            model,
            guide,
            *args,
            num_samples=self.num_particles,
            max_plate_nesting=self.max_plate_nesting,
            **kwargs,
        )
        for site in lw.guide_trace.nodes.values():
            if is_scored_site(site) and not site["fn"].has_rsample:
                raise ValueError(
                    f"{type(self).__name__} needs a reparameterized guide, but site "
                    f"{site['name']!r} has no rsample; use 'score' or 'tracegraph' instead"
                )
        return lw

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        lw = self.log_weights(model, guide, *args, **kwargs)
        bound = lw.log_w.logsumexp(0) - math.log(self.num_particles)
        return -lw.scale * bound.sum()

    def loss(self, model, guide, *args, **kwargs) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()


def _trace(num_particles, max_plate_nesting, jit, **options):
    cls = infer.JitTrace_ELBO if jit else infer.Trace_ELBO
    return cls(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
               vectorize_particles=num_particles > 1, **options)


def _meanfield(num_particles, max_plate_nesting, jit, **options):
    cls = infer.JitTraceMeanField_ELBO if jit else infer.TraceMeanField_ELBO
    return cls(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
               vectorize_particles=num_particles > 1, **options)


def _tracegraph(num_particles, max_plate_nesting, jit, **options):
    cls = infer.JitTraceGraph_ELBO if jit else infer.TraceGraph_ELBO
    return cls(num_particles=num_particles, max_plate_nesting=max_plate_nesting,
               vectorize_particles=num_particles > 1, **options)


def _iwae(num_particles, max_plate_nesting, jit, **options):
    if jit:
        raise ValueError("'iwae' has no JIT variant; drop jit=True (--jit)")
    return IWAE_ELBO(num_particles=num_particles, max_plate_nesting=max_plate_nesting, **options)


ESTIMATORS = {
    "trace": _trace,
    "meanfield": _meanfield,
    "tracegraph": _tracegraph,
    "iwae": _iwae,
}


def make_elbo(
    name: str, num_particles: int = 1, *, jit: bool = False, max_plate_nesting: int = 1, **options
) -> ELBO:
    """Build an ELBO estimator by name.

    Args:
        name: one of :data:`ESTIMATORS` (``trace``, ``meanfield``, ``tracegraph``, ``iwae``, ...).
        num_particles: Monte Carlo samples per datapoint (K for ``iwae``).
        jit: use Pyro's JIT-compiled variant where it has one.
        max_plate_nesting: plates in the model (1: the data plate).
        options: passed to the estimator.
    """
    if int(num_particles) < 1:
        raise ValueError(f"num_particles must be >= 1, got {num_particles}")
    factory = lookup("estimator", name, ESTIMATORS)
    return factory(int(num_particles), max_plate_nesting, jit, **options)
