"""Annealed importance sampling (AIS) with Hamiltonian Monte Carlo transitions: a per-datapoint
estimate of log p(x) that, unlike importance sampling, does not depend on the proposal being good
(Neal 2001; Wu, Burda, Salakhutdinov & Grosse 2017).

For each datapoint x_n, C independent chains move through the geometric path between an initial
distribution q0 (the guide q(z | x_n) by default, or the model's prior p(z)) and the posterior::

    pi_t(z) ∝ q0(z)^(1 - b_t) p(x_n, z)^(b_t),        0 = b_0 < b_1 < ... < b_T = 1

    z_0 ~ q0;  for t = 1..T:  log w += (b_t - b_(t-1)) (log p(x_n, z_(t-1)) - log q0(z_(t-1)))
                              z_t ~ K_t(z_(t-1), .)     (t < T; K_t leaves pi_t invariant)

    log p(x_n) ~= log (1/C) sum_c w_c

E[w] = p(x_n) exactly for any T >= 1 (T = 1 is importance sampling with C samples from q0), so the
estimate is a stochastic lower bound that tightens as T grows. K_t is HMC (``leapfrog_steps``
leapfrog steps, identity mass matrix, Metropolis-corrected, a non-finite proposal rejected) in the
unconstrained space of the latents: each site's value is ``biject_to(support)`` of a free vector,
the log-determinant of that map included in the target.

**Step sizes, and why they do not bias the estimate.** A step size adapted on the fly from the
chains' own acceptances would make each kernel a function of the chains' past; AIS's weights are
only unbiased when each K_t is a fixed kernel that leaves pi_t invariant. So the adaptation is a
separate *pilot run*: ``adapt_chains`` extra chains per datapoint anneal along the same path
(with ``min(num_steps, adapt_steps)`` steps), and after every transition the datapoint's step
size is multiplied by exp(rate * (mean acceptance probability - ``target_accept``)) (after
``adapt_warmup`` transitions at b_1 to settle the start). The step size each transition ended
with is recorded, one per datapoint per pilot step, and interpolated (log-linearly in b) onto the
run's b_1..b_(T-1). The estimating run then uses *fresh* chains with that schedule frozen: its
randomness is independent of the pilot's, so given the schedule every transition is a fixed,
pi_t-invariant HMC kernel and E[w] = p(x_n) still holds. The pilot makes at most
``adapt_warmup + adapt_steps`` transitions of ``adapt_chains`` chains, whatever ``num_steps``.
``adapt_chains=0`` skips it and uses ``step_size`` throughout. The schedule b_t is
``"sigmoid"`` by default (see :func:`annealing_schedule`).

A latent's support must not depend on other latents (its ``biject_to`` is taken once, from the
model's trace at the first draws).

**The log joint.** Every leapfrog step needs log p(x, z) and its gradient at new latents. It
comes from the model's Pyro trace (:func:`~pyro_vae.infer.log_weights.log_joint`), unless the
model object offers its own plain-torch ``log_joint(x, latents, **kwargs) -> (log p(x, z),
log p(x | z))`` (each ``[C, B]``, ``latents`` as ``{site: [C, B, ...]}``; the built-in
:class:`~pyro_vae.VAE` and :class:`~pyro_vae.TwoLayerVAE` do), which is used once it agrees with
the trace at the first draws (a ``RuntimeWarning`` and the trace otherwise; the trace, silently,
where it returns None or raises ValueError there). A guide with one latent site is run once per
batch: its distribution depends on x alone.

Everything is vectorized over [chains, datapoints] (one batched log joint and its gradient per
leapfrog step; through the Pyro trace any model/guide pair with continuous latent sites in the
data plate works, hierarchies included), chunked over datapoints (and over chains when one
datapoint's chains would not fit) so that one ``[chains, batch, D]`` tensor stays under
``max_elements``; it runs on the data's device in the data's dtype.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import NamedTuple

import pyro
import torch
from pyro.infer.util import is_validation_enabled
from pyro.poutine.runtime import am_i_wrapped

from .._malloc import retain_freed_memory
from ..model.flows import FlowNotInvertible
from .batching import chunks, tile_elements
from .inputs import check_owner_data
from .log_weights import (
    fixed_log_density,
    latent_sites,
    log_joint,
    log_weights,
    sample_prior,
)
from .unconstrained import support_transform

__all__ = [
    "AISOptions",
    "AISResult",
    "ais_log_likelihood",
    "annealing_schedule",
    "INITIALS",
    "SCHEDULES",
]

#: the initial distributions q0 of the path
INITIALS = ("guide", "prior")
#: the annealing schedules b_0..b_T
SCHEDULES = ("sigmoid", "linear")
#: the multiplicative step-size rule of the pilot: log eps += rate * (acceptance - target)
ADAPT_RATE = 0.5
#: the sigmoid schedule's steepness (Grosse, Ghahramani & Adams 2015)
SIGMOID_DELTA = 4.0


class AISResult(NamedTuple):
    """Per-datapoint results of :func:`ais_log_likelihood` with ``return_stats=True``.

    ``log_likelihood [N]``: the estimate; ``stderr [N]``: its delta-method standard error over
    the chains, sqrt(1/ESS - 1/C); ``ess [N]``: the chains' effective sample size
    (sum w)^2 / sum w^2; ``acceptance [N]``: the estimating run's mean HMC acceptance
    probability over chains and transitions; ``step_size [N]``: the mean of the frozen step-size
    schedule (both NaN for ``num_steps=1``, which makes no transition); ``log_weights [C, N]``:
    each chain's log AIS weight.
    """

    log_likelihood: torch.Tensor
    stderr: torch.Tensor
    ess: torch.Tensor
    acceptance: torch.Tensor
    step_size: torch.Tensor
    log_weights: torch.Tensor


def annealing_schedule(
    num_steps: int, kind: str = "sigmoid", *, dtype=torch.float64, device=None
) -> torch.Tensor:
    """b_0 = 0 < b_1 < ... < b_T = 1, ``[T + 1]``. ``"linear"``: b_t = t / T. ``"sigmoid"``
    (the default): b_t ∝ sigmoid(delta (2t/T - 1)), delta = 4, rescaled to [0, 1]: small steps
    at both ends, where q0 and the posterior change fastest along the path."""
    _check_steps(num_steps)
    if kind == "linear":
        return torch.linspace(0.0, 1.0, num_steps + 1, dtype=dtype, device=device)
    if kind == "sigmoid":
        s = torch.sigmoid(
            torch.linspace(-SIGMOID_DELTA, SIGMOID_DELTA, num_steps + 1, dtype=dtype, device=device)
        )
        b = (s - s[0]) / (s[-1] - s[0])
        b[0], b[-1] = 0.0, 1.0  # exactly, whatever the rounding
        return b
    raise ValueError(f"unknown annealing schedule {kind!r}; choose one of {list(SCHEDULES)}")


def _check_steps(num_steps) -> None:
    if not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(
            f"num_steps must be an integer >= 1 (the number of annealing distributions; 1 is "
            f"plain importance sampling), got {num_steps!r}"
        )


# -- the unconstrained space -------------------------------------------------------------------
class _Site(NamedTuple):
    name: str
    transform: object  # None for a real-valued site: u is z
    shape: tuple  # u's shape after [C, B], the data dim moved next to the chains
    size: int


class _Space:
    """The latents' unconstrained space: every site's ``biject_to(support)``, flattened into one
    ``u [C, B, D]`` (the data dim moved next to the chain dim, so any inner plates ride along)."""

    def __init__(self, model_trace, num_dims: int):
        self.num_dims = num_dims
        self.sites: list[_Site] = []
        for site in latent_sites(model_trace):
            fn, name = site["fn"], site["name"]
            if fn.support.is_discrete:
                raise ValueError(
                    f"AIS with HMC needs continuous latent sites, but {name!r} is discrete "
                    f"({type(fn).__name__}, support {fn.support}); marginalize it out in the "
                    f"model (sum over its values), or estimate log p(x) by importance sampling "
                    f"with pyro_vae.log_likelihood"
                )
            transform = support_transform(fn)
            value = site["value"]
            u = value if transform is None else transform.inv(value)
            moved = u.movedim(num_dims - 1, 1)
            self.sites.append(_Site(name, transform, tuple(moved.shape[2:]), moved[0, 0].numel()))

    def unconstrain(self, latents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``{site: [C, ..., B, ...]}`` -> ``u [C, B, D]``."""
        parts = []
        for s in self.sites:
            z = latents[s.name]
            u = z if s.transform is None else s.transform.inv(z)
            moved = u.movedim(self.num_dims - 1, 1)
            parts.append(moved.reshape(*moved.shape[:2], -1))
        return torch.cat(parts, -1)

    def constrain(self, u: torch.Tensor) -> tuple[dict, torch.Tensor | None]:
        """``u [C, B, D]`` -> ``({site: value}, log |det dz/du| [C, B] or None where all sites are
        real-valued)``."""
        c, b = u.shape[:2]
        latents, lad, start = {}, None, 0
        for s in self.sites:
            block = u[..., start : start + s.size].reshape(c, b, *s.shape)
            block = block.movedim(1, self.num_dims - 1)
            start += s.size
            if s.transform is None:
                latents[s.name] = block
                continue
            z = s.transform(block)
            latents[s.name] = z
            j = s.transform.log_abs_det_jacobian(block, z)
            # sum the event dims, then any plates between the chains and the data
            j = j.reshape(*j.shape[: self.num_dims], -1).sum(-1)
            if self.num_dims > 2:
                j = j.sum(dim=tuple(range(1, self.num_dims - 1)))
            lad = j if lad is None else lad + j
        return latents, lad


# -- the target along the path ----------------------------------------------------------------
class _State(NamedTuple):
    """A batch of chains at ``u [C, B, D]``: ``a`` = log q0(z) + log|J|, ``c`` = log p(x, z) +
    log|J| (``[C, B]``) and their gradients in u. log pi_b(u) = (1 - b) a + b c, whose gradient
    is the same mixture of the two: one evaluation serves every b."""

    u: torch.Tensor
    a: torch.Tensor
    c: torch.Tensor
    grad_a: torch.Tensor
    grad_c: torch.Tensor

    def log_target(self, beta: float) -> torch.Tensor:
        return (1.0 - beta) * self.a + beta * self.c

    def grad(self, beta: float) -> torch.Tensor:
        return (1.0 - beta) * self.grad_a + beta * self.grad_c


def _grad(y: torch.Tensor, u: torch.Tensor, retain: bool) -> torch.Tensor:
    if not y.requires_grad:
        return torch.zeros_like(u)
    (g,) = torch.autograd.grad(y.sum(), u, retain_graph=retain, allow_unused=True)
    return torch.zeros_like(u) if g is None else g


#: what a guide raises when asked for log q at a point it did not draw: no log_prob, or a flow
#: without an inverse (Pyro's transforms raise KeyError on a cache miss)
# FlowNotInvertible: a planar, radial, Sylvester or NAF flow guide knows log q at its own draws
_NOT_EVALUABLE = (NotImplementedError, KeyError, FlowNotInvertible)
_PRIOR_HINT = (
    "AIS evaluates log q(z | x) of the guide at points it did not draw; use "
    "initial='prior' to start the chains from the model's prior instead"
)


def _not_evaluable(e: Exception) -> ValueError:
    """The error for a guide that raised ``e`` (one of ``_NOT_EVALUABLE``) when asked for log q
    at a point it did not draw."""
    return ValueError(f"{_PRIOR_HINT} (the guide raised {type(e).__name__}: {e})")


class _Target:
    """log q0 and log p(x, z) at any ``u``, with their gradients (``torch.enable_grad`` even
    under ``no_grad``). Chains and datapoints are independent, so the gradient of the sum over
    them is every chain's own gradient. A guide with one latent site is run once, and its
    distribution evaluated at every point after (``fixed_log_density``): its parameters depend
    on x alone, and the encoder need not run at every leapfrog step."""

    def __init__(
        self, model, guide, x, initial, space, nesting, kwargs, guide_density=None, own=None
    ):
        self.model, self.guide, self.x, self.initial = model, guide, x, initial
        self.space, self.nesting, self.kwargs = space, nesting, kwargs
        self.guide_density, self.own = guide_density, own

    def _log_p(self, z: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p(x, z), log p(x | z))``, each ``[C, B]``: the model object's own
        ``log_joint`` where it has one (checked against the trace in ``_setup``), else the
        Pyro trace."""
        if self.own is not None:
            return self.own(self.x, z, **self.kwargs)
        joint = log_joint(self.model, z, self.x, max_plate_nesting=self.nesting, **self.kwargs)
        return joint.log_p, joint.log_lik

    def _log_q(self, z: dict) -> torch.Tensor:
        try:
            if self.guide_density is not None:
                return self.guide_density(z)
            return log_joint(
                self.guide, z, self.x, max_plate_nesting=self.nesting, **self.kwargs
            ).log_p
        except _NOT_EVALUABLE as e:
            raise _not_evaluable(e) from e

    def __call__(self, u: torch.Tensor) -> _State:
        with torch.enable_grad():
            u = u.detach().requires_grad_(True)
            z, lad = self.space.constrain(u)
            log_p, log_lik = self._log_p(z)
            base = self._log_q(z) if self.initial == "guide" else log_p - log_lik
            a, c = base, log_p
            if lad is not None:
                a, c = a + lad, c + lad
            grad_a = _grad(a, u, retain=True)
            grad_c = _grad(c, u, retain=False)
        return _State(u.detach(), a.detach(), c.detach(), grad_a, grad_c)


def _where(mask: torch.Tensor, new: _State, old: _State) -> _State:
    m3 = mask.unsqueeze(-1)
    return _State(
        torch.where(m3, new.u, old.u),
        torch.where(mask, new.a, old.a),
        torch.where(mask, new.c, old.c),
        torch.where(m3, new.grad_a, old.grad_a),
        torch.where(m3, new.grad_c, old.grad_c),
    )


def _hmc(
    target: _Target, s: _State, beta: float, eps: torch.Tensor, leapfrog_steps: int
) -> tuple[_State, torch.Tensor]:
    """One Metropolis-corrected HMC transition leaving pi_beta invariant, per chain, with the
    step size ``eps [B]`` of each datapoint. Returns the new state and the acceptance
    probabilities ``[C, B]`` (0 for a non-finite proposal, which is rejected)."""
    e = eps.reshape(1, -1, 1)
    p0 = torch.randn_like(s.u)
    grad = s.grad(beta)
    p = p0 + 0.5 * e * grad
    new, u = s, s.u
    for step in range(leapfrog_steps):
        u = u + e * p
        new = target(u)
        grad = new.grad(beta)
        p = p + (e if step < leapfrog_steps - 1 else 0.5 * e) * grad
    log_accept = (new.log_target(beta) - 0.5 * p.pow(2).sum(-1)) - (
        s.log_target(beta) - 0.5 * p0.pow(2).sum(-1)
    )
    # a proposal with a non-finite density or gradient is rejected (its gradients would be
    # cached as the chain's and poison the next transitions, at every b)
    finite = (
        torch.isfinite(log_accept)
        & torch.isfinite(new.a)
        & torch.isfinite(new.c)
        & torch.isfinite(new.grad_a).all(-1)
        & torch.isfinite(new.grad_c).all(-1)
    )
    log_accept = torch.where(finite, log_accept, torch.full_like(log_accept, -math.inf))
    prob = log_accept.clamp(max=0.0).exp()
    accept = torch.rand_like(prob) < prob
    return _where(accept, new, s), prob


# -- the runs ------------------------------------------------------------------------------------
def _pilot(target, s, betas, step_size, target_accept, leapfrog_steps, warmup):
    """Step sizes ``[T_p - 1, B]`` adapted on the pilot's own chains along ``betas`` (``[T_p +
    1]``; transition t at b_t ends with row t - 1), to be frozen (see the module docstring)."""
    num_transitions = len(betas) - 2
    b = s.u.shape[1]
    log_eps = torch.full((b,), math.log(step_size), dtype=s.u.dtype, device=s.u.device)
    out = log_eps.new_empty(num_transitions, b)
    for _ in range(warmup):
        s, prob = _hmc(target, s, float(betas[1]), log_eps.exp(), leapfrog_steps)
        log_eps = log_eps + ADAPT_RATE * (prob.mean(0) - target_accept)
    for t in range(1, num_transitions + 1):
        s, prob = _hmc(target, s, float(betas[t]), log_eps.exp(), leapfrog_steps)
        log_eps = log_eps + ADAPT_RATE * (prob.mean(0) - target_accept)
        out[t - 1] = log_eps
    return out


def _interpolate(log_eps: torch.Tensor, at: torch.Tensor, to: torch.Tensor) -> torch.Tensor:
    """Step sizes ``[len(to), B]`` at the temperatures ``to``: ``log_eps [len(at), B]`` (known at
    the increasing temperatures ``at``) linearly interpolated in b, held at the ends."""
    if len(at) == 1:
        return log_eps.expand(len(to), -1).exp()
    at, to = at.to(log_eps), to.to(log_eps)
    j = torch.searchsorted(at, to).clamp(1, len(at) - 1)
    w = ((to - at[j - 1]) / (at[j] - at[j - 1])).clamp(0, 1).unsqueeze(-1)
    return (log_eps[j - 1] * (1 - w) + log_eps[j] * w).exp()


def _forward(target, s, betas, schedule, leapfrog_steps):
    """Forward AIS from ``s`` ~ q0: ``(log w [C, B], summed acceptance probabilities [B])``."""
    log_w = torch.zeros_like(s.a)
    accepted = s.a.new_zeros(s.a.shape[1])
    num_steps = len(betas) - 1
    for t in range(1, num_steps + 1):
        log_w = log_w + float(betas[t] - betas[t - 1]) * (s.c - s.a)
        if t < num_steps:
            s, prob = _hmc(target, s, float(betas[t]), schedule[t - 1], leapfrog_steps)
            accepted = accepted + prob.mean(0)
    return log_w, accepted


def _reverse(target, s, betas, schedule, leapfrog_steps):
    """Reverse AIS from ``s`` ~ the posterior, b = 1 down to 0, with the same kernels:
    ``(log w [C, B], summed acceptance probabilities [B])``; E[w] = 1 / p(x)."""
    log_w = torch.zeros_like(s.a)
    accepted = s.a.new_zeros(s.a.shape[1])
    num_steps = len(betas) - 1
    for t in range(num_steps, 0, -1):
        log_w = log_w + float(betas[t - 1] - betas[t]) * (s.c - s.a)
        if t > 1:
            s, prob = _hmc(target, s, float(betas[t - 1]), schedule[t - 2], leapfrog_steps)
            accepted = accepted + prob.mean(0)
    return log_w, accepted


def _initial_latents(model, guide, x, initial, num_chains, nesting, kwargs) -> dict:
    """``{site: [C, ..., B, ...]}`` drawn from q0 (detached)."""
    if initial == "prior":
        return sample_prior(model, x, num_samples=num_chains, max_plate_nesting=nesting, **kwargs)
    with torch.no_grad():
        lw = log_weights(
            model, guide, x, num_samples=num_chains, max_plate_nesting=nesting, **kwargs
        )
    return {s["name"]: s["value"].detach() for s in latent_sites(lw.traces[1])}


@dataclass(frozen=True)
class AISOptions:
    """The keyword options of :func:`ais_log_likelihood` that :func:`~pyro_vae.bdmc` shares,
    as they were given (see :func:`ais_log_likelihood` for each; checked by the run)."""

    initial: str
    schedule: str
    leapfrog_steps: int
    step_size: float
    target_accept: float
    adapt_chains: int
    adapt_warmup: int
    adapt_steps: int
    batch_size: int | None
    max_elements: int | None
    max_plate_nesting: int

    @classmethod
    def of(cls, values: Mapping[str, object]) -> AISOptions:
        """The options among ``values`` by name, e.g. the ``locals()`` of a function that takes
        them all as keywords."""
        return cls(**{f.name: values[f.name] for f in fields(cls)})


class _Plan(NamedTuple):
    """The checked options of one run, with its annealing schedules."""

    initial: str
    betas: torch.Tensor
    leapfrog_steps: int
    step_size: float
    target_accept: float
    adapt_chains: int
    adapt_warmup: int
    pilot_betas: torch.Tensor
    nesting: int


def _check_options(initial, num_chains, leapfrog_steps, step_size, target_accept, adapt_chains):
    if initial not in INITIALS:
        raise ValueError(
            f"unknown initial distribution {initial!r}; choose 'guide' (q(z | x), the default) "
            f"or 'prior' (the model's prior, for a guide whose log q cannot be evaluated)"
        )
    if not isinstance(num_chains, int) or num_chains < 1:
        raise ValueError(f"num_chains must be an integer >= 1, got {num_chains!r}")
    if not isinstance(leapfrog_steps, int) or leapfrog_steps < 1:
        raise ValueError(f"leapfrog_steps must be an integer >= 1, got {leapfrog_steps!r}")
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size!r}")
    if not 0 < target_accept < 1:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept!r}")
    if not isinstance(adapt_chains, int) or adapt_chains < 0:
        raise ValueError(
            f"adapt_chains must be an integer >= 0 (0: no adaptation), got {adapt_chains!r}"
        )


def _own_log_joint(model, x, z0, joint, kwargs):
    """The model object's own plain-torch ``log_joint(x, latents, **kwargs) -> (log p(x, z),
    log p(x | z))`` (each ``[C, B]``), where it has one and it agrees with the Pyro trace at the
    first draws; else None (the trace at every leapfrog step), also where it returns None or
    raises ValueError at them (no closed form for this model). Not inside a user's Pyro handler,
    which the model's own computation would not see (as in training's fast path)."""
    own = getattr(getattr(model, "__self__", None), "log_joint", None)
    if not callable(own) or am_i_wrapped():
        return None
    with torch.no_grad():
        try:
            out = own(x, z0, **kwargs)
        except ValueError:
            return None
    if out is None:
        return None
    log_p, log_lik = out
    tol = dict(rtol=1e-5, atol=1e-4) if log_p.dtype == torch.float32 else {}
    if torch.allclose(log_p, joint.log_p, **tol) and torch.allclose(log_lik, joint.log_lik, **tol):
        return own
    largest = float((log_p - joint.log_p).detach().abs().max())
    warnings.warn(
        f"{type(model.__self__).__name__}.log_joint differs from the log joint of its Pyro "
        f"program (largest difference {largest:.3g}); AIS uses the Pyro program instead",
        RuntimeWarning,
        stacklevel=5,
    )
    return None


def _setup(model, guide, x, opts: _Plan, num_chains, kwargs, *, validated: bool):
    """q0's draws, the unconstrained space from the model's trace, the target and the chains'
    initial state. The first evaluation runs with Pyro's validation as set (the user's model
    meets it there); the annealing runs without it (its checks of every leapfrog step's
    arguments cost time, and a diverging proposal must be rejected, not raised)."""
    nesting = opts.nesting
    with pyro.validation_enabled(False) if not validated else contextlib.nullcontext():
        z0 = _initial_latents(model, guide, x, opts.initial, num_chains, nesting, kwargs)
        joint = log_joint(model, z0, x, max_plate_nesting=nesting, **kwargs)
        space = _Space(joint.trace, nesting + 1)
        own = _own_log_joint(model, x, z0, joint, kwargs)
        density = None
        if opts.initial == "guide":
            try:
                # built unvalidated: its distribution is evaluated at every leapfrog step,
                # where a diverging proposal must give -inf (rejected), not an error
                with pyro.validation_enabled(False):
                    density = fixed_log_density(guide, z0, x, max_plate_nesting=nesting, **kwargs)
            except _NOT_EVALUABLE as e:
                raise _not_evaluable(e) from e
        target = _Target(model, guide, x, opts.initial, space, nesting, kwargs, density, own)
        # at copies of the draws: a flow's cached inverse of its own draw must not hide that
        # its log q cannot be evaluated anywhere else
        state = target(space.unconstrain({k: v.clone() for k, v in z0.items()}))
    return space, target, state


def _batch(model, guide, x, opts: _Plan, num_chains, chain_chunk, kwargs, start_latents=None):
    """Forward AIS (and, given the generating ``start_latents``, reverse AIS) for one batch of
    datapoints ``x [B, ...]``: ``(forward log w [C, B], acceptance [B], mean step size [B],
    reverse log w [C, B] or None, reverse acceptance [B] or None)``."""
    num_transitions = len(opts.betas) - 2
    validated = is_validation_enabled()
    b = len(x)
    schedule = None
    if num_transitions > 0 and opts.adapt_chains > 0:
        _, target, state = _setup(
            model, guide, x, opts, opts.adapt_chains, kwargs, validated=validated
        )
        validated = False
        with pyro.validation_enabled(False):
            log_eps = _pilot(
                target,
                state,
                opts.pilot_betas,
                opts.step_size,
                opts.target_accept,
                opts.leapfrog_steps,
                opts.adapt_warmup,
            )
        schedule = _interpolate(log_eps, opts.pilot_betas[1:-1], opts.betas[1:-1])
    fwd, acc, rev, rev_acc = [], 0.0, [], 0.0
    for _, c in chunks(num_chains, chain_chunk):
        space, target, state = _setup(model, guide, x, opts, c, kwargs, validated=validated)
        validated = False
        if schedule is None:  # no pilot: the given step size throughout, in the latents' dtype
            schedule = state.u.new_full((max(num_transitions, 0), b), opts.step_size)
        with pyro.validation_enabled(False):
            log_w, a = _forward(target, state, opts.betas, schedule, opts.leapfrog_steps)
            fwd.append(log_w)
            acc = acc + a * c
            if start_latents is not None:
                z = {k: v.unsqueeze(0).expand(c, *v.shape) for k, v in start_latents.items()}
                log_w, a = _reverse(
                    target, target(space.unconstrain(z)), opts.betas, schedule, opts.leapfrog_steps
                )
                rev.append(log_w)
                rev_acc = rev_acc + a * c
    denom = max(num_transitions, 1) * num_chains
    nan = fwd[0].new_full((b,), math.nan)
    acceptance = acc / denom if num_transitions else nan
    step = schedule.mean(0) if num_transitions else nan
    if start_latents is None:
        return torch.cat(fwd), acceptance, step, None, None
    return (
        torch.cat(fwd),
        acceptance,
        step,
        torch.cat(rev),
        (rev_acc / denom if num_transitions else nan),
    )


def _summary(log_w: torch.Tensor, acceptance, step_size, sign: float = 1.0) -> AISResult:
    """AISResult of log weights ``[C, N]``: log mean w (times ``sign``: -1 for reverse AIS,
    whose weights estimate 1 / p(x))."""
    c = log_w.shape[0]
    s1, s2 = log_w.logsumexp(0), (2 * log_w).logsumexp(0)
    ess = torch.exp(2 * s1 - s2)
    return AISResult(
        log_likelihood=sign * (s1 - math.log(c)),
        stderr=(1.0 / ess - 1.0 / c).clamp(min=0).sqrt(),
        ess=ess,
        acceptance=acceptance,
        step_size=step_size,
        log_weights=log_w,
    )


def _plan(num_steps, num_chains, guide, o: AISOptions) -> _Plan:
    """The options checked, and the run's and the pilot's annealing schedules."""
    _check_steps(num_steps)
    _check_options(
        o.initial, num_chains, o.leapfrog_steps, o.step_size, o.target_accept, o.adapt_chains
    )
    if not isinstance(o.adapt_steps, int) or o.adapt_steps < 1:
        raise ValueError(f"adapt_steps must be an integer >= 1, got {o.adapt_steps!r}")
    if guide is None and o.initial == "guide":
        raise ValueError("no guide given: pass one, or start from the prior with initial='prior'")
    pilot_steps = max(2, min(num_steps, o.adapt_steps))
    return _Plan(
        o.initial,
        annealing_schedule(num_steps, o.schedule, dtype=torch.float64),
        o.leapfrog_steps,
        float(o.step_size),
        float(o.target_accept),
        o.adapt_chains,
        int(o.adapt_warmup),
        annealing_schedule(pilot_steps, o.schedule, dtype=torch.float64),
        o.max_plate_nesting,
    )


def _run(
    model,
    guide,
    data,
    num_steps,
    num_chains,
    options: AISOptions,
    *,
    check_data,
    kwargs,
    start_latents=None,
):
    """The shared driver of :func:`ais_log_likelihood` and :func:`~pyro_vae.bdmc`:
    ``(forward AISResult, reverse AISResult or None)``."""
    check_owner_data(model, data, check_data)
    opts = _plan(num_steps, num_chains, guide, options)
    dtype = data.dtype if data.is_floating_point() else torch.get_default_dtype()
    max_elements = options.max_elements
    if max_elements is None:
        max_elements = tile_elements(data.device, keeps_graph=True)
    if data.device.type == "cpu":
        retain_freed_memory()
    n, d = len(data), max(1, data[0].numel())
    chain_chunk = max(1, min(num_chains, max_elements // d))
    batch_size = options.batch_size
    if batch_size is None:
        batch_size = max(1, min(n, max_elements // (d * chain_chunk)))
    fwd, acc, step, rev, rev_acc = [], [], [], [], []
    data_dim = opts.nesting - 1  # of a latent's value without the chain dim
    for start, b in chunks(n, batch_size):
        x = data[start : start + b]
        latents = None
        if start_latents is not None:
            latents = {k: v.narrow(data_dim, start, b) for k, v in start_latents.items()}
        f, a, s, r, ra = _batch(model, guide, x, opts, num_chains, chain_chunk, kwargs, latents)
        fwd.append(f.to(dtype))
        acc.append(a.to(dtype))
        step.append(s.to(dtype))
        if r is not None:
            rev.append(r.to(dtype))
            rev_acc.append(ra.to(dtype))
    acc_all, step_all = torch.cat(acc), torch.cat(step)
    forward = _summary(torch.cat(fwd, 1), acc_all, step_all)
    reverse = None
    if start_latents is not None:
        reverse = _summary(torch.cat(rev, 1), torch.cat(rev_acc), step_all, sign=-1.0)
    return forward, reverse


def ais_log_likelihood(
    model: Callable,
    guide: Callable | None,
    data: torch.Tensor,
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
    return_stats: bool = False,
    batch_size: int | None = None,
    max_elements: int | None = None,
    max_plate_nesting: int = 1,
    check_data: bool = True,
    **kwargs,
) -> torch.Tensor | AISResult:
    """Annealed importance sampling estimate of log p(x_n) per datapoint (see the module
    docstring for the algorithm and why the step-size adaptation leaves it unbiased).

    Args:
        model, guide: Pyro programs ``model(x, **kwargs)``, ``guide(x, **kwargs)`` with their
            per-datapoint sites in a ``pyro.plate`` at dim -1 and continuous latent sites.
            ``guide`` is only used with ``initial="guide"`` (may be None with ``"prior"``).
        data: ``[N, ...]``.
        num_steps: T, the number of annealing distributions after q0 (T - 1 HMC transitions;
            T = 1 is importance sampling with ``num_chains`` samples).
        num_chains: C independent chains per datapoint.
        initial: ``"guide"`` (q0 = q(z | x); the guide replayed at any z must give its
            log q, as a Normal, a MultivariateNormal or an invertible flow does) or ``"prior"``
            (q0 = p(z), drawn ancestrally through the model's own program).
        schedule: ``"sigmoid"`` (default) or ``"linear"`` b_t, see :func:`annealing_schedule`.
        leapfrog_steps, step_size, target_accept: HMC's leapfrog steps per transition, the
            pilot's initial step size and the acceptance probability it adapts to.
        adapt_chains, adapt_warmup, adapt_steps: the pilot run's chains per datapoint (0: no
            pilot, a fixed ``step_size``), its transitions at b_1 before annealing, and its
            annealing steps (at most ``num_steps``; its step sizes are interpolated in b onto
            the run's schedule, so the pilot's cost does not grow with ``num_steps``).
        batch_size: datapoints per run (default: as many as keep ``[C, batch, D]`` under
            ``max_elements``).
        max_elements: default :func:`~pyro_vae.infer.batching.tile_elements` of the data's
            device with ``keeps_graph=True`` (2**22 on a CPU).
        check_data: run the model object's ``check_data`` first, where it has one.
        **kwargs: passed to model and guide (e.g. ``num_data``).
    Returns:
        ``[N]`` log-likelihoods in nats (in the data's dtype, on its device), or an
        :class:`AISResult` with ``return_stats=True``.
    Raises:
        ValueError: ``num_steps < 1``, an unknown ``initial``/``schedule``, a discrete latent
            site, a latent outside the data plate, or a guide whose log q cannot be evaluated
            at arbitrary points (use ``initial="prior"``).
    """
    options = AISOptions.of(locals())
    forward, _ = _run(
        model, guide, data, num_steps, num_chains, options, check_data=check_data, kwargs=kwargs
    )
    return forward if return_stats else forward.log_likelihood
