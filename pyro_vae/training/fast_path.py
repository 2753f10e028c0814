"""The VAE's training loss, evaluated without Pyro's interpreter.

Pyro runs ``model`` and ``guide`` as a program at every step: it builds traces, replays the model
on the guide's draws, broadcasts through the data plate and collects each site's log density.
For a 784-400-20 VAE on one CPU thread that costs about 0.9 ms of an ~9 ms step (a tenth of the
training time, see ``benchmarks/RESULTS.md``). For the VAE's own program, whose structure is
fixed, the same surrogate loss can be written down directly::

    z ~ q(z | x)  (one reparameterized draw per datapoint and particle: [K, B, z_dim])
    log w_nk = log p(x_n | z_nk) + log p(z_nk) - log q(z_nk | x_n)
    trace (Pyro's Trace_ELBO):  loss = -(1/K) sum_k sum_n s * log w_nk
    meanfield (Pyro's TraceMeanField_ELBO):
        loss = -(1/K) sum_k sum_n s * log p(x_n | z_nk)  +  sum_n s * KL(q(z | x_n) || p(z))
    iwae, renyi (ours):  loss = -sum_n s * bound_n(log w_n1..log w_nK),
        e.g. bound_n = logsumexp_k log w_nk - log K for iwae

with s = N / B the data plate's subsampling scale. It calls the same modules and makes the same
random draws as Pyro (one reparameterized draw from the guide), so the value, the gradients and
the random stream are those of ``elbo.differentiable_loss(vae.model, vae.guide, x, num_data=N)``
(to float rounding; ``tests/test_direct.py`` checks every built-in prior x likelihood x guide).
For a diagonal-Normal guide and the N(0, I) prior the log densities and the KL are written out
in closed form; other components are used through their distributions' ``log_prob`` and
``kl_divergence``, as Pyro uses them.

``train`` uses it on the steps between Pyro-run, validated ones, and only after
:func:`direct_loss` has checked, on the first batch, that the Pyro program has exactly this
structure and gives the same loss; anything else (a subclassed model or guide, a prior or
likelihood with sample or param sites of its own, a guide without ``rsample``, an active Pyro
handler, an estimator with its own gradient such as ``stl``, ``dreg``, ``tail_adaptive`` or
``score``) runs the Pyro program at every step. ``TrainConfig(fast_path=False)``
(``--no-fast-path``) runs the Pyro program, validated, at every step.

Measured (``benchmarks/RESULTS.md``, a 784-8-2 network where tensor work is negligible): the
fixed cost of a training step over a hand-written PyTorch loop falls from about 0.7 ms (the Pyro
program, validated every 50th step) to about 0.08 ms (mostly those validated steps).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import pyro.infer as infer
import pyro.poutine as poutine
import torch
from pyro.distributions.util import is_identically_zero
from pyro.poutine.runtime import am_i_wrapped
from torch.distributions import kl_divergence

from .._device import fork_rng
from ..infer.estimators import _PerDatapointELBO
from ..model.priors import StandardNormalPrior
from ..model.vae import VAE

__all__ = ["direct_loss", "training_loss", "NotApplicable", "VALIDATE_EVERY"]


def _kind(elbo) -> str | None:
    """ "trace", "meanfield", "bound" (an estimator of ours whose loss is -scale * sum_n
    bound(log_w)_n with the plain reparameterized gradient: iwae, renyi) or None."""
    # Exact classes only: a subclass may change the loss.
    if type(elbo) is infer.Trace_ELBO:
        return "trace"
    if type(elbo) is infer.TraceMeanField_ELBO:
        return "meanfield"
    cls = type(elbo)
    if (
        isinstance(elbo, _PerDatapointELBO)
        and cls.differentiable_loss is _PerDatapointELBO.differentiable_loss
        and cls.log_weights is _PerDatapointELBO.log_weights
    ):
        return "bound"
    return None


def _static_ok(vae, elbo) -> bool:
    if _kind(elbo) is None:
        return False
    if elbo.num_particles > 1 and not elbo.vectorize_particles:
        return False
    # A subclass that overrides the program gets the Pyro path.
    return (
        isinstance(vae, VAE)
        and type(vae).model is VAE.model
        and type(vae).guide is VAE.guide
        and type(vae)._data_plate is VAE._data_plate
    )


def _sites(trace: poutine.Trace, kind: str) -> dict:
    return {
        name: site
        for name, site in trace.nodes.items()
        if site["type"] == kind and type(site["fn"]).__name__ != "_Subsample"
    }


def _structure_ok(vae, x: torch.Tensor, num_data: int | None) -> bool:
    """Whether the Pyro program on ``x`` is exactly z ~ guide (reparameterized), z ~ prior,
    x ~ likelihood (observed), all in the one data plate, with no other sample or param sites."""
    guide_trace = poutine.trace(vae.guide).get_trace(x, num_data)
    model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x, num_data)
    prefix = f"{vae._pyro_name}$$$"
    for trace in (guide_trace, model_trace):
        if any(not name.startswith(prefix) for name in _sites(trace, "param")):
            return False
    guide_sites, model_sites = _sites(guide_trace, "sample"), _sites(model_trace, "sample")
    if list(guide_sites) != ["z"] or list(model_sites) != ["z", "x"]:
        return False
    qz, pz, px = guide_sites["z"], model_sites["z"], model_sites["x"]
    if qz["is_observed"] or pz["is_observed"] or not px["is_observed"]:
        return False
    if not qz["fn"].has_rsample or any(s["mask"] is not None for s in (qz, pz, px)):
        return False
    # A reparameterized distribution may still carry a score-function term (e.g. a rejection
    # sampler): Trace_ELBO's gradient would have it, the direct loss would not.
    guide_trace.compute_score_parts()
    if not is_identically_zero(qz["score_parts"].score_function):
        return False
    frames = {tuple((f.name, f.dim) for f in s["cond_indep_stack"]) for s in (qz, pz, px)}
    if frames != {(("data", -1),)}:
        return False
    # The direct loss draws one z per row of q's batch: q must be per datapoint, not global.
    return vae.encoder(x).batch_shape == x.shape[:1]


def direct_loss(
    vae, elbo, x: torch.Tensor, num_data: int | None = None
) -> Callable[[torch.Tensor, int | None], torch.Tensor] | None:
    """``loss(x, num_data)``: ``elbo``'s surrogate loss for ``vae`` without Pyro's interpreter,
    or None where that would not be the same loss.

    Args:
        vae: a :class:`~pyro_vae.VAE`.
        elbo: Pyro's ``Trace_ELBO`` or ``TraceMeanField_ELBO`` (any ``num_particles``,
            vectorized), or our ``IWAE_ELBO`` / ``Renyi_ELBO``; anything else gives None.
        x: a batch ``[B, x_dim]`` on which the Pyro program is traced once and both losses are
            compared on the same random draws (the global random state is left as it was).
        num_data: the data-set size N (the plate's scale is N / B).
    Returns:
        a function of ``(x [B, x_dim], num_data)`` returning the surrogate loss (a scalar whose
        value is the negative ELBO estimate and whose gradient is the estimator's), or None. It
        raises :class:`NotApplicable`, before drawing anything, for a batch on which the guide's
        distribution is not one q(z | x_n) per datapoint (a first batch of one row cannot show
        this).
    """
    if not _static_ok(vae, elbo):
        return None
    device = x.device
    with fork_rng(device), torch.no_grad():
        if not _structure_ok(vae, x, num_data):
            return None
    loss = _DirectLoss(vae, elbo)
    # With vectorized particles and no max_plate_nesting, Pyro's first call runs the guide once
    # to guess it: that draw must not shift the compared runs, and the guess is left to the
    # first training step, as it would be without the fast path.
    guess = elbo.vectorize_particles and elbo.max_plate_nesting == float("inf")
    try:
        if guess:
            with fork_rng(device), torch.no_grad():
                elbo.differentiable_loss(vae.model, vae.guide, x, num_data=num_data)
        with fork_rng(device), torch.no_grad():
            expected = elbo.differentiable_loss(vae.model, vae.guide, x, num_data=num_data)
    finally:
        if guess:
            elbo.max_plate_nesting = float("inf")
    with fork_rng(device), torch.no_grad():
        got = loss(x, num_data)
    # A non-finite loss (Pyro gives NaN for inf: loss + (surrogate - surrogate.item())) is
    # caught by train's first, validated step; there is nothing to compare.
    finite = bool(torch.isfinite(expected))
    if finite and not torch.allclose(got, expected, rtol=1e-4, atol=1e-3):
        warnings.warn(
            f"pyro_vae.direct_loss: the direct {type(elbo).__name__} loss ({float(got):.6g}) "
            f"differs from Pyro's ({float(expected):.6g}) for this model; every step will run "
            f"the Pyro program instead. Please report this with your prior/likelihood/guide.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return loss


class NotApplicable(ValueError):
    """The direct loss does not apply to this batch (checked before any random draw)."""


class _DirectLoss:
    def __init__(self, vae, elbo) -> None:
        self.vae = vae
        self.num_particles = int(elbo.num_particles)
        self.kind = _kind(elbo)
        self.analytic_kl = self.kind == "meanfield"
        # The per-datapoint bound of our own estimators (iwae, renyi), over log_w [K, B].
        self.bound = elbo.bound if self.kind == "bound" else None
        self.name = type(elbo).__name__
        self.standard_prior = type(vae.prior) is StandardNormalPrior

    def __call__(self, x: torch.Tensor, num_data: int | None = None) -> torch.Tensor:
        vae, k = self.vae, self.num_particles
        batch = x.shape[0]
        # The plate's scale: a Python float, as in Pyro's subsampled plate.
        scale = 1.0 if num_data is None or num_data == batch else num_data / batch
        q = vae.encoder(x)
        if q.batch_shape != x.shape[:1]:
            raise NotApplicable(
                f"the guide's distribution has batch shape {tuple(q.batch_shape)} for a batch of "
                f"{batch}: the direct loss needs one q(z | x_n) per datapoint; use Pyro's loss"
            )
        # Pyro's particle plate gives z [K, B, z_dim] for K > 1, and our per-datapoint
        # estimators always have the K dimension.
        particles = (k,) if k > 1 or self.bound is not None else ()
        gaussian = _diagonal_normal(q)
        eps = None
        if gaussian is not None:
            loc, s = gaussian
            # The very draw torch's Normal.rsample makes; eps is kept for log q(z) below.
            eps = torch.randn((*particles, *loc.shape), dtype=loc.dtype, device=loc.device)
            z = loc + eps * s
        else:
            z = q.rsample(particles)
        log_px = vae.likelihood(vae.decoder(z)).log_prob(x)
        elbo = log_px + self._latent_term(q, z, gaussian, eps)  # [B] or [K, B]
        if self.bound is not None:  # as _PerDatapointELBO.differentiable_loss
            return -scale * self.bound(elbo).sum()
        elbo = (elbo if scale == 1.0 else elbo * scale).sum()
        return -elbo / k if k > 1 else -elbo

    def _latent_term(self, q, z, gaussian, eps) -> torch.Tensor:
        """log p(z) - log q(z | x) ``[K?, B]``; -KL(q || p) ``[B]`` under meanfield where Pyro
        uses the analytic KL.

        For a diagonal-Normal q, log q(z) at its own draw z = loc + eps * scale is written in
        eps, and for the N(0, I) prior the terms are written out: the same values and gradients
        as the distributions' ``log_prob`` and ``kl_divergence``, in fewer operations (a visible
        share of a small network's step on a CPU)."""
        standard = self.standard_prior and gaussian is not None
        if self.analytic_kl:
            if standard:
                loc, s = gaussian
                return -(0.5 * (s.pow(2) + loc.pow(2) - 1.0) - s.log()).sum(-1)
            try:
                return -kl_divergence(q, self.vae.prior().expand(q.batch_shape))
            except NotImplementedError:  # e.g. a mixture prior: Pyro samples, as below
                pass
        if standard:  # the normalizing constants cancel
            return (0.5 * (eps.pow(2) - z.pow(2)) + gaussian[1].log()).sum(-1)
        if gaussian is not None:
            d = z.shape[-1]
            log_q = -(0.5 * eps.pow(2) + gaussian[1].log()).sum(-1) - d * _HALF_LOG_2PI
        else:
            log_q = q.log_prob(z)
        if self.standard_prior:
            log_pz = -0.5 * z.pow(2).sum(-1) - z.shape[-1] * _HALF_LOG_2PI
        else:
            log_pz = self.vae.prior().log_prob(z)
        return log_pz - log_q

    def __repr__(self) -> str:
        return f"direct {self.name}(num_particles={self.num_particles})"


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_NORMALS = (dist.Normal, torch.distributions.Normal)
_INDEPENDENTS = (dist.Independent, torch.distributions.Independent)


def _diagonal_normal(q) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(loc, scale)`` if ``q`` is exactly ``Normal(loc, scale).to_event(1)``, else None."""
    if type(q) in _INDEPENDENTS and q.reinterpreted_batch_ndims == 1:
        base = q.base_dist
        if type(base) in _NORMALS:
            return base.loc, base.scale
    return None


def pyro_is_idle() -> bool:
    """No Pyro handler is active (a user's ``poutine.scale`` around ``train`` would change what
    the Pyro program computes, so the direct loss must not stand in for it)."""
    return not am_i_wrapped()


#: Pyro runs, validated, on every this-many-th training step, counting from 0 (see training_loss)
VALIDATE_EVERY = 50


def _is_jit(elbo) -> bool:
    # Pyro's JitTrace*_ELBO classes find the parameters to trace through "param" sites.
    return type(elbo).__name__.startswith("Jit")


def training_loss(elbo, vae=None, fast_path: bool = True, first_step: int = 0) -> Callable:
    """``loss(model, guide, x, num_data) -> surrogate loss`` (not yet backpropagated) for
    estimators with ``differentiable_loss``; with ``fast_path=False`` simply
    ``elbo.differentiable_loss`` (the Pyro program, validated, at every step).

    With the fast path, every ``VALIDATE_EVERY``-th step (step 0, 50, ... counted from the start
    of training; ``first_step`` is the index of the first call, a resumed run's global step) runs
    as Pyro runs it. The steps between run on data of the same shape (``train`` checks the data
    once) without Pyro's validation (~10% of a CPU step) and, with ``vae`` given, without running
    the Pyro program at all where :func:`direct_loss` found on the first batch that it gives the
    same loss (``trace``, ``meanfield``, ``iwae``, ``renyi`` on the VAE's own program: ~10%
    more), or else without ``pyro.module`` for a non-JIT estimator (~5%; the torch optimizer
    holds ``vae.parameters()``). A NaN the skipped checks would have caught still stops training
    within ``VALIDATE_EVERY`` steps (the next validated step or the finite-loss check), and the
    epoch's parameters are discarded. The probe of :func:`direct_loss` runs on the first call
    made without a user's Pyro handler around it.
    """
    if not fast_path:

        def pyro_loss(model, guide, x, num_data):
            return elbo.differentiable_loss(model, guide, x, num_data=num_data)

        pyro_loss.uses_direct = lambda: False
        return pyro_loss

    # Counted from the run's global step, so a resumed run validates the same steps.
    counter = itertools.count(first_step)
    skip_register = vae is not None and not _is_jit(elbo)
    direct = None
    probe = vae is not None

    def loss(model, guide, x, num_data):
        nonlocal direct, probe
        # The probe waits for a step without a user's Pyro handler around it (see pyro_is_idle).
        if probe and pyro_is_idle():
            probe = False
            if model == vae.model and guide == vae.guide:
                direct = direct_loss(vae, elbo, x, num_data)
        if next(counter) % VALIDATE_EVERY == 0:
            return elbo.differentiable_loss(model, guide, x, num_data=num_data)
        with pyro.validation_enabled(False):
            if direct is not None and pyro_is_idle():
                try:
                    return direct(x, num_data)
                except NotApplicable:
                    direct = None  # from now on, Pyro's loss on every step
            if not skip_register:
                return elbo.differentiable_loss(model, guide, x, num_data=num_data)
            vae.register_params = False
            try:
                return elbo.differentiable_loss(model, guide, x, num_data=num_data)
            finally:
                vae.register_params = True

    loss.uses_direct = lambda: direct is not None
    return loss
