"""Honest evaluation: the K-sample importance-sampled log-likelihood, the ELBO, KL, active units."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import NamedTuple

import pyro
import torch
from pyro.infer.util import is_validation_enabled

from .._device import fork_rng
from .log_weights import latent_sites, log_weights

__all__ = [
    "LogLikelihood",
    "log_likelihood",
    "evaluate",
    "kl_to_prior",
    "active_units",
]

#: elements of one ``[K_chunk, B, D]`` tensor, bounding memory whatever K and N are
DEFAULT_MAX_ELEMENTS = 2**24
#: the default batch leaves room for chunks of at least min(K, this) samples: the guide runs once
#: per chunk, so tiny chunks of many images would spend a large share of the time in the encoder
MIN_CHUNK = 128


class LogLikelihood(NamedTuple):
    """Per-datapoint results of :func:`log_likelihood` with ``return_stats=True``, each ``[N]``.

    ``stderr`` is the delta-method standard error of the estimate, sqrt(1/ESS - 1/K);
    ``ess`` the effective sample size (sum w)^2 / sum w^2; ``elbo`` the mean of log w (an
    estimate of the single-sample ELBO from the same draws).
    """

    log_likelihood: torch.Tensor
    stderr: torch.Tensor
    ess: torch.Tensor
    elbo: torch.Tensor


def _chunks(total: int, size: int, first: int | None = None):
    """``(start, size)`` pairs covering ``range(total)``; the first of ``first`` if given."""
    start = 0
    if first is not None and total > first:
        yield 0, first
        start = first
    for s in range(start, total, size):
        yield s, min(size, total - s)


@torch.no_grad()
def log_likelihood(
    model: Callable,
    guide: Callable,
    data: torch.Tensor,
    num_samples: int = 1000,
    batch_size: int | None = None,
    *,
    chunk_size: int | None = None,
    max_plate_nesting: int = 1,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    return_stats: bool = False,
    check_data: bool = True,
    **kwargs,
) -> torch.Tensor | LogLikelihood:
    """K-sample importance-sampled estimate of log p(x_n) for each datapoint::

        log p(x_n) ~= log (1/K) sum_k p(x_n, z_k) / q(z_k | x_n),   z_k ~ q(z | x_n)

    A lower bound in expectation that tightens as K grows (Burda et al. 2015), and exact for every
    K when ``q`` is the true posterior.

    Works for any ``model(x, **kwargs)`` / ``guide(x, **kwargs)`` whose per-datapoint sites live in
    a ``pyro.plate`` at dim -1 over ``x``'s first dimension. Runs on ``data``'s device, vectorized
    over samples in chunks of ``chunk_size`` (default: as many as keep one ``[chunk, batch, D]``
    tensor under ``max_elements``), so memory is bounded for any K and N.

    Args:
        data: ``[N, ...]``.
        num_samples: K.
        batch_size: datapoints per forward pass (default: chosen from ``max_elements``).
        check_data: run the model object's ``check_data`` (e.g. :meth:`pyro_vae.VAE.check_data`)
            first, where ``model`` is a bound method of one that has it.
    Returns:
        ``[N]`` log-likelihoods in nats, or a :class:`LogLikelihood` with ``return_stats=True``.
    """
    if not isinstance(data, torch.Tensor) or data.dim() < 1 or len(data) == 0:
        raise ValueError("data must be a non-empty tensor of shape [N, ...]")
    # The model's own data check (shape, NaNs, the likelihood's support) where it has one, so
    # that grayscale pixels under a Bernoulli get the library's message, not Pyro's.
    check = getattr(getattr(model, "__self__", None), "check_data", None)
    if check_data and callable(check):
        check(data, "data")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    n = data.shape[0]
    d = max(1, data[0].numel())
    if batch_size is None:
        batch_size = max(1, min(n, max_elements // (d * min(num_samples, MIN_CHUNK))))
    if chunk_size is None:
        chunk_size = max(1, min(num_samples, max_elements // (batch_size * d)))
    dtype = data.dtype if data.is_floating_point() else torch.get_default_dtype()
    out = {k: torch.empty(n, dtype=dtype, device=data.device) for k in LogLikelihood._fields}
    for start, b in _chunks(n, batch_size):
        x = data[start : start + b]
        lse1, lse2, total = [], [], 0.0
        # Pyro's validation (each datapoint's support, the distributions' arguments, the site
        # shapes) runs on a first chunk of one sample per batch; the other chunks rerun the same
        # program on the same x without it: its checks of a [chunk, B, D] likelihood's
        # arguments are a visible share of an evaluation on a CPU (see benchmarks/).
        first = 1 if is_validation_enabled() else None
        for j, (_, k) in enumerate(_chunks(num_samples, chunk_size, first)):
            with pyro.validation_enabled(False) if j else contextlib.nullcontext():
                lw = log_weights(
                    model, guide, x, num_samples=k, max_plate_nesting=max_plate_nesting, **kwargs
                ).log_w
            lse1.append(lw.logsumexp(0))
            lse2.append((2 * lw).logsumexp(0))
            total = total + lw.sum(0)
        s1 = torch.stack(lse1).logsumexp(0)
        s2 = torch.stack(lse2).logsumexp(0)
        ess = torch.exp(2 * s1 - s2)
        sl = slice(start, start + b)
        out["log_likelihood"][sl] = s1 - math.log(num_samples)
        out["ess"][sl] = ess
        out["stderr"][sl] = (1.0 / ess - 1.0 / num_samples).clamp(min=0).sqrt()
        out["elbo"][sl] = total / num_samples
    if return_stats:
        return LogLikelihood(**out)
    return out["log_likelihood"]


@torch.no_grad()
def kl_to_prior(
    vae, data: torch.Tensor, num_samples: int = 100, *, max_elements: int = DEFAULT_MAX_ELEMENTS
) -> torch.Tensor:
    """KL(q(z | x_n) || p(z)) per datapoint ``[N]``, summed over every latent site of the model's
    own program (its own prior, e.g. p(z1 | z2) in a hierarchy): the closed form where Pyro
    registers one, a Monte Carlo estimate E_q[log q - log p] with ``num_samples`` draws for the
    other sites. Computed from :func:`~pyro_vae.log_weights` in batches of bounded size."""
    n, d = len(data), max(1, data[0].numel())
    batch = max(1, min(n, max_elements // (d * num_samples)))
    out = []
    for start, b in _chunks(n, batch):
        x = data[start : start + b]
        lw = log_weights(vae.model, vae.guide, x, num_samples=1, analytic_kl=True)
        if len(lw.analytic) < len(latent_sites(lw.traces[1])):  # some sites need Monte Carlo
            lw = log_weights(vae.model, vae.guide, x, num_samples=num_samples, analytic_kl=True)
        kl = lw.kl if lw.kl is not None else torch.zeros_like(lw.log_q)
        out.append((kl + lw.log_q - (lw.log_p - lw.log_lik)).mean(0))
    return torch.cat(out)


ACTIVE_UNIT_THRESHOLD = 1e-2


def _count_active(posterior_means: torch.Tensor, threshold: float) -> int:
    return int((posterior_means.var(0) > threshold).sum())


@torch.no_grad()
def active_units(vae, data: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """Number of latent dimensions u with Cov_x(E_q[z_u | x]) > threshold (Burda et al. 2015)."""
    return _count_active(vae.posterior_mean(data), threshold)


def summarize(
    stats: LogLikelihood, kl: torch.Tensor, posterior_means: torch.Tensor, num_samples: int
) -> dict[str, float]:
    """The dict :func:`evaluate` returns, from per-datapoint ``[N]`` results and ``[N, z_dim]``
    posterior means (shared with the sharded evaluation in :mod:`pyro_vae.training.distributed`)."""
    ll, n = stats.log_likelihood, len(stats.log_likelihood)
    return {
        "log_likelihood": float(ll.mean()),
        "log_likelihood_stderr": float(ll.std() / math.sqrt(n)) if n > 1 else 0.0,
        "log_likelihood_mc_stderr": float(stats.stderr.mean()),
        "ess": float(stats.ess.mean()),
        "elbo": float(stats.elbo.mean()),
        "kl": float(kl.mean()),
        "active_units": _count_active(posterior_means, ACTIVE_UNIT_THRESHOLD),
        "num_samples": int(num_samples),
    }


@torch.no_grad()
def evaluate(
    vae,
    data: torch.Tensor,
    num_samples: int = 1000,
    *,
    batch_size: int | None = None,
    seed: int | None = 0,
) -> dict[str, float]:
    """Mean per-datapoint metrics on ``data [N, x_dim]`` in nats: ``log_likelihood`` (K-sample),
    its standard error over datapoints and the mean Monte Carlo error, ``elbo``, ``kl``,
    ``active_units``. With ``seed`` the draws are reproducible and leave the global RNG as it was.
    """
    vae.check_data(data, "evaluation data")
    with fork_rng(data.device, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        stats = log_likelihood(
            vae.model, vae.guide, data, num_samples, batch_size, return_stats=True, check_data=False
        )
        kl = kl_to_prior(vae, data)
    return summarize(stats, kl, vae.posterior_mean(data), num_samples)
