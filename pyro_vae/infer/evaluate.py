"""Honest evaluation: the K-sample importance-sampled log-likelihood, the ELBO, KL, active units."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import pyro
import torch
from pyro.infer.util import is_validation_enabled
from pyro.poutine.runtime import am_i_wrapped

from .._device import fork_rng
from .._malloc import retain_freed_memory
from .._work_ahead import work_ahead
from .batching import CPU_TILE_ELEMENTS, CUDA_TILE_ELEMENTS, MIN_CHUNK, chunks, tile_elements
from .inputs import check_model_data, check_owner_data
from .log_weights import latent_sites, log_weights

__all__ = [
    "LogLikelihood",
    "log_likelihood",
    "evaluate",
    "kl_to_prior",
    "active_units",
    "per_datapoint",
    "PerDatapoint",
    "summarize",
    "check_model_data",
    # the tile sizes, from .batching (benchmarks/bench_eval.py imports them from here)
    "CPU_TILE_ELEMENTS",
    "CUDA_TILE_ELEMENTS",
    "MIN_CHUNK",
    "tile_elements",
]


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
    max_elements: int | None = None,
    return_stats: bool = False,
    check_data: bool = True,
    fast_path: bool = True,
    **kwargs,
) -> torch.Tensor | LogLikelihood:
    """K-sample importance-sampled estimate of log p(x_n) for each datapoint::

        log p(x_n) ~= log (1/K) sum_k p(x_n, z_k) / q(z_k | x_n),   z_k ~ q(z | x_n)

    A lower bound in expectation that tightens as K grows (Burda et al. 2015), and exact for every
    K when ``q`` is the true posterior.

    Works for any ``model(x, **kwargs)`` / ``guide(x, **kwargs)`` whose per-datapoint sites live in
    a ``pyro.plate`` at dim -1 over ``x``'s first dimension. Runs on ``data``'s device, in
    batches of datapoints and, within a batch, in tiles of ``chunk_size`` samples (default: as
    many as keep one ``[tile, batch, D]`` tensor under ``max_elements``, by default
    :func:`tile_elements` of the device: cache-sized on a CPU), so memory is bounded for any K
    and N; the log-sum-exp is accumulated tile by tile.

    Where ``model`` and ``guide`` are methods of one object with an ``importance_sampler`` (the
    built-in models), each batch runs the encoder once and its tiles are that object's
    plain-torch log weights, on the very draws of the Pyro program: the first tile of the first
    batch is computed both ways, the program with Pyro's validation on, and compared (a
    ``RuntimeWarning`` and the program for the rest where they differ). ``fast_path=False``, or
    any other pair, runs the Pyro program on every tile, with Pyro's validation on the first
    sample of each batch.

    Args:
        data: ``[N, ...]``.
        num_samples: K.
        batch_size: datapoints per batch (default: chosen from ``max_elements``).
        check_data: run the model object's ``check_data`` (e.g. :meth:`pyro_vae.VAE.check_data`)
            first, where ``model`` is a bound method of one that has it.
    Returns:
        ``[N]`` log-likelihoods in nats, or a :class:`LogLikelihood` with ``return_stats=True``.
    """
    check_owner_data(model, data, check_data)
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    n = data.shape[0]
    batch_size, chunk_size = _sizes(data, num_samples, batch_size, chunk_size, max_elements)
    # Inside a user's Pyro handler (e.g. poutine.scale) only the program sees the handler.
    own = fast_path and not kwargs and max_plate_nesting == 1 and _same_owner(model, guide)
    own = own and not am_i_wrapped()
    if data.device.type == "cpu":
        retain_freed_memory()
    program = _ProgramTiles(model, guide, max_plate_nesting, kwargs)
    dtype = data.dtype if data.is_floating_point() else torch.get_default_dtype()
    out = {k: torch.empty(n, dtype=dtype, device=data.device) for k in LogLikelihood._fields}
    # the full tiles ahead, stated so that a compiled path decides at once whether it pays: at
    # least (K - 1) // chunk of them a full batch, as the program's first tile may be 1 sample
    tile = chunk_size * batch_size * max(1, data[0].numel())
    with work_ahead(tile, (n // batch_size) * ((num_samples - 1) // chunk_size)):
        for start, b in chunks(n, batch_size):
            x = data[start : start + b]
            draw = _own_tiles(model.__self__, x, program, first=start == 0) if own else None
            own, first = draw is not None, None
            if draw is None:
                draw, first = program.tiles(x)
            acc = _LogSumExp()
            for _, k in chunks(num_samples, chunk_size, first):
                acc.add(draw(k))
            for key, value in acc.result(num_samples).items():
                out[key][start : start + b] = value
    if return_stats:
        return LogLikelihood(**out)
    return out["log_likelihood"]


def _sizes(data, num_samples: int, batch_size, chunk_size, max_elements) -> tuple[int, int]:
    """``(datapoints per batch, samples per tile)``, the given ones or the defaults: a batch
    with room for tiles of min(K, MIN_CHUNK) samples, and tiles that keep one ``[tile, batch,
    D]`` tensor under ``max_elements`` (default :func:`tile_elements` of the data's device)."""
    n, d = data.shape[0], max(1, data[0].numel())
    if max_elements is None:
        max_elements = tile_elements(data.device)
    if batch_size is None:
        batch_size = max(1, min(n, max_elements // (d * min(num_samples, MIN_CHUNK))))
    if chunk_size is None:
        chunk_size = max(1, min(num_samples, max_elements // (batch_size * d)))
    return batch_size, chunk_size


class _LogSumExp:
    """Running sums over the tiles of one batch: log sum w, log sum w^2 and sum log w."""

    def __init__(self) -> None:
        self.s1 = self.s2 = self.total = None

    def add(self, lw: torch.Tensor) -> None:
        s1, s2, total = lw.logsumexp(0), (2 * lw).logsumexp(0), lw.sum(0)
        if self.s1 is None:
            self.s1, self.s2, self.total = s1, s2, total
        else:
            self.s1 = torch.logaddexp(self.s1, s1)
            self.s2 = torch.logaddexp(self.s2, s2)
            self.total = self.total + total

    def result(self, num_samples: int) -> dict[str, torch.Tensor]:
        ess = torch.exp(2 * self.s1 - self.s2)
        return {
            "log_likelihood": self.s1 - math.log(num_samples),
            "ess": ess,
            "stderr": (1.0 / ess - 1.0 / num_samples).clamp(min=0).sqrt(),
            "elbo": self.total / num_samples,
        }


def _same_owner(model, guide) -> bool:
    owner = getattr(model, "__self__", None)
    return owner is not None and getattr(guide, "__self__", None) is owner


class _ProgramTiles:
    """Tiles of log weights from the Pyro program of ``model``/``guide`` (the guide run on each
    tile): ``tiles(x)`` returns ``(draw, first)``, ``draw(k) -> log w [k, B]`` and ``first`` the
    size of the first tile (1 with Pyro's validation on, which only that tile runs under)."""

    def __init__(self, model, guide, max_plate_nesting: int, kwargs: dict) -> None:
        self.model, self.guide = model, guide
        self.max_plate_nesting, self.kwargs = max_plate_nesting, kwargs

    def log_w(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return log_weights(
            self.model,
            self.guide,
            x,
            num_samples=k,
            max_plate_nesting=self.max_plate_nesting,
            **self.kwargs,
        ).log_w

    def tiles(self, x: torch.Tensor):
        # Pyro's validation (each datapoint's support, the distributions' arguments, the site
        # shapes) runs on a first tile of one sample per batch; the other tiles rerun the same
        # program on the same x without it: its checks of a [tile, B, D] likelihood's
        # arguments are a visible share of an evaluation on a CPU (see benchmarks/).
        validated = [is_validation_enabled()]

        def draw(k: int) -> torch.Tensor:
            if validated[0]:
                validated[0] = False
                return self.log_w(x, k)
            with pyro.validation_enabled(False):
                return self.log_w(x, k)

        return draw, 1 if validated[0] else None


def _own_tiles(owner, x: torch.Tensor, program: _ProgramTiles, first: bool):
    """The model object's ``importance_sampler(x)``, ``draw(k) -> log w [k, B]``, or None where
    it has none (or raises ValueError: a guide its closed form does not cover). On the
    ``first`` batch its first sample is checked against the Pyro program's, on the same random
    draws."""
    sampler = getattr(owner, "importance_sampler", None)
    try:
        own = sampler(x) if callable(sampler) else None
        if own is not None and first:
            with fork_rng(x.device):
                value = own(1)
    except ValueError:
        return None
    if own is None:
        return None
    if first:
        with fork_rng(x.device):  # validated, on the same draws; the estimate's are untouched
            expected = program.log_w(x, 1)
        if not torch.allclose(value, expected, rtol=1e-4, atol=1e-3):
            warnings.warn(
                f"{type(owner).__name__}.importance_sampler gives log weights up to "
                f"{float((value - expected).abs().max()):.3g} nats away from its Pyro "
                f"program's; the evaluation runs the Pyro program. A subclass that changes "
                f"model or guide should override log_weights or set log_weights = None.",
                RuntimeWarning,
                stacklevel=4,
            )
            return None
    return own


def _site_means(guide_trace) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per latent site ``(mean [B, d], noise [B, d])``: E_q[z | x] estimated by averaging the
    site's conditional mean over the K draws (its draws where it has no mean, e.g. a flow),
    and the variance of that average (0 for a site whose mean is exact)."""
    out = {}
    for site in latent_sites(guide_trace):
        v = site["value"]
        try:
            m = site["fn"].mean.expand(v.shape)
        except NotImplementedError:
            m = v
        k, b = m.shape[0], m.shape[1]
        m = m.reshape(k, b, -1)
        noise = m.var(0) / k if k > 1 else torch.zeros_like(m[0])
        out[site["name"]] = (m.mean(0), noise)
    return out


class PerDatapoint(NamedTuple):
    """Per-datapoint evaluation of ``N`` datapoints: ``stats`` (:class:`LogLikelihood`),
    ``kl [N]``, ``means``/``noise`` ``{site: [N, d]}`` (posterior means and the variance of
    their estimates), and which sites' KL is in closed form or Monte Carlo."""

    stats: LogLikelihood
    kl: torch.Tensor
    means: dict[str, torch.Tensor]
    noise: dict[str, torch.Tensor]
    kl_closed_form: tuple[str, ...]
    kl_monte_carlo: tuple[str, ...]


#: Monte Carlo draws per datapoint for the latent sites without an exact closed-form KL (and
#: the posterior means of sites without an exact mean)
KL_SAMPLES = 100


def _has_mean(site: dict) -> bool:
    try:
        return site["fn"].mean is not None
    except NotImplementedError:
        return False


def _needs_monte_carlo(module, x: torch.Tensor) -> bool:
    """Whether some latent site has no exact closed-form KL or no exact mean (see
    :func:`log_weights`): then the KL and the posterior means take Monte Carlo draws."""
    lw = log_weights(module.model, module.guide, x, num_samples=1, analytic_kl=True)
    sites = latent_sites(lw.traces[1])
    return set(lw.analytic) != {s["name"] for s in sites} or not all(_has_mean(s) for s in sites)


def _kl_and_means(module, x: torch.Tensor, num_samples: int):
    # Closed forms where exact (see log_weights), Monte Carlo over num_samples draws elsewhere.
    lw = log_weights(module.model, module.guide, x, num_samples=num_samples, analytic_kl=True)
    sites = latent_sites(lw.traces[1])
    kl = lw.kl if lw.kl is not None else torch.zeros_like(lw.log_q)
    kl = (kl + lw.log_q - (lw.log_p - lw.log_lik)).mean(0)
    return kl, _site_means(lw.traces[1]), [s["name"] for s in sites], set(lw.analytic)


@torch.no_grad()
def kl_to_prior(
    vae,
    data: torch.Tensor,
    num_samples: int = KL_SAMPLES,
    *,
    max_elements: int | None = None,
) -> torch.Tensor:
    """E_q[log q(z | x_n) - log p(z)] per datapoint ``[N]``, summed over every latent site of the
    model's own program under its own prior (e.g. p(z1 | z2) in a hierarchy): the closed form
    where Pyro registers one and it is exact (the guide's last latent site), a Monte Carlo
    estimate with ``num_samples`` draws for the other sites. In batches of bounded size."""
    return _posterior_terms(vae, data, num_samples, max_elements)[0]


def _posterior_terms(module, data: torch.Tensor, kl_samples: int, max_elements) -> tuple:
    """``(kl [N], means, noise, closed-form sites, Monte Carlo sites)`` of :class:`PerDatapoint`,
    in batches that keep one ``[kl_samples, batch, D]`` tensor under ``max_elements`` (default
    :func:`tile_elements` of the data's device)."""
    n, d = len(data), max(1, data[0].numel())
    if max_elements is None:
        max_elements = tile_elements(data.device)
    # One draw per datapoint where every site has a closed form and an exact mean.
    draws = kl_samples if _needs_monte_carlo(module, data[:1]) else 1
    batch = max(1, min(n, max_elements // (d * draws)))
    kls, means, noise, names, closed = [], {}, {}, [], set()
    for start, b in chunks(n, batch):
        kl, site_means, names, closed = _kl_and_means(module, data[start : start + b], draws)
        kls.append(kl)
        for name, (m, v) in site_means.items():
            means.setdefault(name, []).append(m)
            noise.setdefault(name, []).append(v)
    return (
        torch.cat(kls),
        {k: torch.cat(v) for k, v in means.items()},
        {k: torch.cat(v) for k, v in noise.items()},
        tuple(n_ for n_ in names if n_ in closed),
        tuple(n_ for n_ in names if n_ not in closed),
    )


@torch.no_grad()
def per_datapoint(
    module,
    data: torch.Tensor,
    num_samples: int = 1000,
    *,
    batch_size: int | None = None,
    kl_samples: int = KL_SAMPLES,
    max_elements: int | None = None,
) -> PerDatapoint:
    """The per-datapoint numbers behind :func:`evaluate` (and its sharded form) for any model
    object with ``model(x, num_data=None)`` and ``guide(x, num_data=None)``."""
    stats = log_likelihood(
        module.model,
        module.guide,
        data,
        num_samples,
        batch_size,
        return_stats=True,
        check_data=False,
        max_elements=max_elements,
    )
    return PerDatapoint(stats, *_posterior_terms(module, data, kl_samples, max_elements))


ACTIVE_UNIT_THRESHOLD = 1e-2


def _active(means: torch.Tensor, noise: torch.Tensor, threshold: float) -> int:
    # Cov_x(E_q[z_u | x]), less the variance that the Monte Carlo estimate of each mean adds.
    return int((means.var(0) - noise.mean(0) > threshold).sum())


@torch.no_grad()
def active_units(
    vae, data: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD
) -> dict[str, int]:
    """Active units per latent site: dimensions u with Cov_x(E_q[z_u | x]) > threshold (Burda
    et al. 2015), E_q estimated as in :func:`per_datapoint`."""
    _, means, noise, _, _ = _posterior_terms(vae, data, KL_SAMPLES, None)
    return {k: _active(means[k], noise[k], threshold) for k in means}


def summarize(r: PerDatapoint, num_samples: int) -> dict:
    """The dict :func:`evaluate` returns, from :func:`per_datapoint`'s results (shared with the
    sharded evaluation in :mod:`pyro_vae.training.distributed`)."""
    ll, n = r.stats.log_likelihood, len(r.stats.log_likelihood)
    per_site = {k: _active(r.means[k], r.noise[k], ACTIVE_UNIT_THRESHOLD) for k in r.means}
    return {
        "log_likelihood": float(ll.mean()),
        "log_likelihood_stderr": float(ll.std() / math.sqrt(n)) if n > 1 else 0.0,
        "log_likelihood_mc_stderr": float(r.stats.stderr.mean()),
        "ess": float(r.stats.ess.mean()),
        "elbo": float(r.stats.elbo.mean()),
        "kl": float(r.kl.mean()),
        "kl_closed_form": list(r.kl_closed_form),
        "kl_monte_carlo": list(r.kl_monte_carlo),
        "active_units": sum(per_site.values()),
        "active_units_per_site": per_site,
        "latent_dims": {k: int(m.shape[1]) for k, m in r.means.items()},
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
) -> dict:
    """Mean per-datapoint metrics on ``data [N, D]`` in nats, for any model object with
    ``model``/``guide``: ``log_likelihood`` (K-sample), its standard error over datapoints and the
    mean Monte Carlo error, ``elbo``, ``kl`` (all latent sites, under the model's own prior;
    ``kl_closed_form``/``kl_monte_carlo`` name the sites computed each way), ``active_units``
    (in all, and ``active_units_per_site``). The model's ``check_data`` runs where it has one.
    With ``seed`` the draws are reproducible and leave the global RNG as it was.
    """
    check_model_data(vae, data, "evaluation data")
    with fork_rng(data.device, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        r = per_datapoint(vae, data, num_samples, batch_size=batch_size)
    return summarize(r, num_samples)
