"""Bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015; Wu et al. 2017): a sandwich of
log p(x) on data simulated from the model, whose width says how far to trust AIS at a given
number of steps.

On simulated data the latents z* that generated each x are an exact draw from p(z | x). Forward
AIS from q0 gives a stochastic lower bound of log p(x); AIS run in reverse, from b = 1 down to
b = 0 along the same path with the same (frozen) HMC kernels and started at z*, has weights with
E[w] = 1 / p(x), so -log (1/C) sum_c w_c is a stochastic upper bound::

    E[lower] <= log p(x) <= E[upper]

Both tighten as the number of steps grows; when their gap is small, forward AIS with that many
steps is accurate on data like these (for the real data, only as far as the model fits it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .ais import AISOptions, _run
from .inputs import require_data
from .log_weights import simulate

__all__ = ["bdmc"]


def bdmc(
    model: Callable,
    guide: Callable | None,
    like: torch.Tensor,
    num_steps: int = 1000,
    num_chains: int = 16,
    *,
    initial: str = "guide",
    schedule: str = "sigmoid",
    leapfrog_steps: int = 10,
    step_size: float = 0.05,
    target_accept: float = 0.65,
    adapt_chains: int = 4,
    adapt_warmup: int = 20,
    adapt_steps: int = 100,
    batch_size: int | None = None,
    max_elements: int | None = None,
    max_plate_nesting: int = 1,
    **kwargs,
) -> dict:
    """Simulate data shaped like ``like`` from the model and sandwich their log p(x).

    Args:
        model, guide, and every option: as in :func:`~pyro_vae.ais_log_likelihood`; the
            reverse chains use the forward run's pilot-adapted step sizes, reversed.
        like: ``[N, ...]``, a batch the model takes as its data (only its shape is used, e.g.
            the test set), passed as ``model(like, **kwargs)``.
    Returns:
        a dict of ``data`` (``[N, ...]``, simulated: z from the prior, then x from the
        likelihood), ``latents`` (``{site: [N, ...]}``, the draws that generated it), ``lower``
        (forward AIS) and ``upper`` (reverse AIS), each ``[N]``, ``gap`` = mean(upper - lower)
        (a float, nats), and ``lower_stats``/``upper_stats``
        (:class:`~pyro_vae.infer.ais.AISResult`).
    Raises:
        ValueError: a model with other than one observed site, or whose observed site is not
            shaped like ``like``; and those of :func:`~pyro_vae.ais_log_likelihood`.
    """
    require_data(like, "like")
    data, latents = _simulate(model, like, max_plate_nesting, kwargs)
    options = AISOptions.of(locals())
    lower, upper = _run(
        model,
        guide,
        data,
        num_steps,
        num_chains,
        options,
        check_data=False,
        kwargs=kwargs,
        start_latents=latents,
    )
    return {
        "data": data,
        "latents": latents,
        "lower": lower.log_likelihood,
        "upper": upper.log_likelihood,
        "gap": float((upper.log_likelihood - lower.log_likelihood).mean()),
        "lower_stats": lower,
        "upper_stats": upper,
    }


def _simulate(model, like: torch.Tensor, max_plate_nesting: int, kwargs) -> tuple:
    """``(data shaped like like, {site: latents that generated it})``: one ancestral draw of
    the model, its one observed site's value taken as the data."""
    observed, latents = simulate(model, like, max_plate_nesting=max_plate_nesting, **kwargs)
    if len(observed) != 1:
        raise ValueError(
            f"bdmc simulates the model's data from its one observed site, but the model has "
            f"{len(observed)} ({sorted(observed)}); the data passed to the model must be that "
            f"site's value"
        )
    ((name, data),) = observed.items()
    # a site's value carries the size-1 dims of the plates it broadcasts over (e.g. [1, B]
    # under a plate at dim -2); the data the model takes do not
    while data.dim() > like.dim() and data.shape[0] == 1:
        data = data[0]
    if data.shape != like.shape:
        raise ValueError(
            f"the model's observed site {name!r} has shape {list(data.shape)} for data of shape "
            f"{list(like.shape)}; bdmc needs the data to be that site's value"
        )
    return (data.to(like.dtype) if like.is_floating_point() else data), latents
