"""ELBO estimators by name.

``make_elbo(name, num_particles, **options)`` returns a Pyro ``ELBO``: it works with ``SVI``, with
``elbo.differentiable_loss`` and with the module form ``elbo(model, guide)`` plus a torch optimizer.

Notation, per datapoint n with K particles ``z_nk ~ q(z | x_n)``::

    log w_nk = log p(x_n, z_nk) - log q(z_nk | x_n),     w~_nk = softmax_k(log w_nk)

Pyro's estimators: ``trace``, ``meanfield``, ``tracegraph``. Ours, built on per-datapoint log
weights ``[K, B]`` (the data plate's N/B subsampling scale always multiplies *outside* any
log-sum-exp, so a minibatch loss is an unbiased estimate of the full-data objective):

=================  ==========================  ==================================================
name               loss value (per datapoint)  gradient estimator
=================  ==========================  ==================================================
``iwae``           IWAE bound                  reparameterized (Burda et al. 2015)
``dreg``           IWAE bound                  doubly reparameterized (Tucker et al. 2019)
``stl``            ELBO (mean over K)          path derivative, "sticking the landing"
                                               (Roeder et al. 2017)
``renyi``          Renyi bound VR-alpha        reparameterized (Li & Turner 2016)
``tail_adaptive``  ELBO (mean over K)          rank-weighted, tail-adaptive f-divergence
                                               (Wang et al. 2018)
``score``          ELBO (mean over K)          score function (REINFORCE) with a baseline
=================  ==========================  ==================================================
"""

from __future__ import annotations

import math

import pyro.infer as infer
import pyro.util
import torch
from pyro.distributions import TorchDistribution
from pyro.infer import ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample

from .._registry import lookup
from .log_weights import LogWeights, NotPerDatapoint, latent_sites, log_weights

__all__ = [
    "LogWeightsELBO",
    "TraceELBO",
    "MeanFieldELBO",
    "IWAE_ELBO",
    "STL_ELBO",
    "DReG_ELBO",
    "Renyi_ELBO",
    "TailAdaptive_ELBO",
    "Score_ELBO",
    "TraceGraph_ELBO",
    "tail_adaptive_weights",
    "ESTIMATORS",
    "make_elbo",
]


def _with_gradient(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """The value of ``value``, the gradient of ``surrogate``."""
    return value.detach() + (surrogate - surrogate.detach())


class LogWeightsELBO(ELBO):
    """An estimator as a function of per-datapoint log weights: ``objective(LogWeights)``.

    ``differentiable_loss(model, guide, *args, **kwargs)`` is ``objective(log_weights(model,
    guide, ...))`` with :func:`~pyro_vae.log_weights` on the Pyro program; training may pass a
    model's own :class:`~pyro_vae.LogWeights` (computed with :meth:`request`'s options) to the
    same :meth:`objective`. The loss is ``-scale * sum_n bound_n`` with the data plate's N / B
    scale outside any log-sum-exp, so a minibatch loss estimates the full-data objective.

    Subclasses set ``pathwise`` / ``analytic_kl`` (what they need of the log weights), override
    :meth:`bound` (the per-datapoint value from ``log_w [K, B]``) and, for a gradient other than
    the reparameterized gradient of the bound, :meth:`objective`. Like every Pyro ELBO, model and
    guide take the same ``*args, **kwargs``; per-datapoint sites sit in a plate at dim -1.
    """

    #: log q with the guide's parameters held fixed (the path-derivative estimators)
    pathwise = False
    #: the analytic KL(q || p) where Pyro registers one (TraceMeanField_ELBO's estimator)
    analytic_kl = False
    #: whether a model's own plain-torch log weights may stand in for the Pyro program
    accepts_model_log_weights = True
    _needs_rsample = True
    #: Pyro's estimator of the same objective, for pairs without per-datapoint log weights
    _pyro = None

    def __init__(self, num_particles: int = 1, max_plate_nesting: int = 1) -> None:
        if int(num_particles) < 1:
            raise ValueError(f"num_particles must be >= 1, got {num_particles}")
        super().__init__(
            num_particles=int(num_particles),
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=True,
        )
        # Pyro's ELBO counts the particle plate in max_plate_nesting when K > 1; log_weights
        # adds the particle plate itself, so keep the model's own count.
        self.model_plates = int(max_plate_nesting)

    def _get_trace(self, model, guide, args, kwargs):
        raise NotImplementedError(f"{type(self).__name__} builds its traces with log_weights")

    def request(self) -> dict:
        """The options of ``log_weights`` this estimator needs."""
        return {
            "num_samples": self.num_particles,
            "pathwise": self.pathwise,
            "analytic_kl": self.analytic_kl,
        }

    def log_weights(self, model, guide, *args, **kwargs) -> LogWeights:
        """:func:`~pyro_vae.log_weights` of the Pyro program, guide sites checked."""
        lw = log_weights(
            model,
            guide,
            *args,
            max_plate_nesting=self.model_plates,
            **self.request(),
            **kwargs,
        )
        if self._needs_rsample:
            for site in latent_sites(lw.traces[1]):
                if not site["fn"].has_rsample:
                    raise _NeedsRsample(
                        f"{type(self).__name__} needs a reparameterized guide, but site "
                        f"{site['name']!r} has no rsample; use 'score' or 'tracegraph'"
                    )
        return lw

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        """The per-datapoint objective ``[B]`` from log weights ``[K, B]``."""
        raise NotImplementedError

    def objective(self, lw: LogWeights) -> torch.Tensor:
        """The surrogate loss: a scalar whose value is ``-scale * sum_n bound_n`` and whose
        gradient is the estimator's."""
        return -lw.scale * self.bound(lw.log_w).sum()

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """``objective(log_weights(model, guide, *args, **kwargs))``; for a pair without
        per-datapoint log weights, Pyro's own estimator where it has one (``_pyro``)."""
        rng = pyro.util.get_rng_state() if self._pyro is not None else None
        try:
            lw = self.log_weights(model, guide, *args, **kwargs)
        except (NotPerDatapoint, _NeedsRsample):
            if self._pyro is None:
                raise
            pyro.util.set_rng_state(rng)  # Pyro's estimator draws what this attempt drew
            elbo = self._pyro(
                num_particles=self.num_particles,
                vectorize_particles=self.num_particles > 1,
                max_plate_nesting=self.model_plates,
            )
            return elbo.differentiable_loss(model, guide, *args, **kwargs)
        return self.objective(lw)

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The loss value only (no gradients)."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs).detach())

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """Accumulate the estimator's gradient into ``.grad`` and return the loss value."""
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward(retain_graph=self.retain_graph)
        return loss.detach().item()


class _NeedsRsample(ValueError):
    """A guide site without rsample under a reparameterized estimator."""


def _mean(log_w: torch.Tensor) -> torch.Tensor:
    return log_w.mean(0)


def _iwae(log_w: torch.Tensor) -> torch.Tensor:
    return log_w.logsumexp(0) - math.log(log_w.shape[0])


class TraceELBO(LogWeightsELBO):
    """The ELBO with K particles averaged, reparameterized: ``pyro.infer.Trace_ELBO``'s loss and
    gradient (checked against it in float64), as a function of log weights. A pair without
    per-datapoint log weights (a global latent, a ``poutine.scale`` on some sites) or with a
    guide site that has no ``rsample`` gets ``pyro.infer.Trace_ELBO`` itself."""

    bound = staticmethod(_mean)
    _pyro = infer.Trace_ELBO


class MeanFieldELBO(TraceELBO):
    """``pyro.infer.TraceMeanField_ELBO``: the ELBO with the analytic KL(q || p) of every latent
    site where Pyro registers one and a Monte Carlo term elsewhere (e.g. a mixture prior)."""

    analytic_kl = True
    _pyro = infer.TraceMeanField_ELBO


class IWAE_ELBO(LogWeightsELBO):
    """The importance-weighted bound of Burda et al. (2015), per datapoint::

        L_K = sum_n E[ log (1/K) sum_k p(x_n, z_nk) / q(z_nk | x_n) ],  z_nk ~ q(z | x_n)

    Unlike ``RenyiELBO(alpha=0)``, the data plate's N/B subsampling scale multiplies the bound
    *outside* the log-sum-exp, so minibatch losses are unbiased estimates of the full-data bound.
    Requires a reparameterized guide; with K = 1 it equals ``Trace_ELBO``.
    """

    def __init__(self, num_particles: int = 5, max_plate_nesting: int = 1) -> None:
        super().__init__(num_particles, max_plate_nesting)

    bound = staticmethod(_iwae)


class Renyi_ELBO(LogWeightsELBO):
    """The Renyi (VR-alpha) bound of Li & Turner (2016), per datapoint::

        L_alpha = 1/(1 - alpha) log (1/K) sum_k w_k^(1 - alpha)

    On the same draws it falls as alpha rises: alpha = 0 is the IWAE bound, alpha in (0, 1) lies
    between IWAE and the ELBO (alpha -> 1; use ``trace``), alpha < 0 above IWAE (no longer a lower
    bound on log p(x) in general). The gradient is the reparameterized one,
    ``sum_k v_k d log w_k`` with ``v = softmax_k((1 - alpha) log w_k)``. Pyro's ``RenyiELBO``
    multiplies each log weight by the data plate's N/B *inside* the log-sum-exp (it sums Pyro's
    scaled ``site["log_prob"]``); here the scale multiplies the bound.
    """

    def __init__(
        self, num_particles: int = 2, max_plate_nesting: int = 1, alpha: float = 0.0
    ) -> None:
        alpha = float(alpha)
        if alpha == 1.0:
            raise ValueError(
                "the Renyi bound with alpha = 1 is the ELBO, a 0/0 in this formula; use the "
                "'trace' estimator (Trace_ELBO) for alpha = 1"
            )
        if not math.isfinite(alpha):
            raise ValueError(f"alpha must be finite, got {alpha}")
        super().__init__(num_particles, max_plate_nesting)
        self.alpha = alpha

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        one_minus = 1.0 - self.alpha
        return ((one_minus * log_w).logsumexp(0) - math.log(log_w.shape[0])) / one_minus


def tail_adaptive_weights(
    log_w: torch.Tensor, beta: float = -1.0, per_datapoint: bool = True
) -> torch.Tensor:
    """Normalized tail-adaptive weights ``gamma [K, B]`` (``[K, 1]`` if not ``per_datapoint``).

    gamma_k ∝ F(w_k)^beta with F the empirical tail probability, F(w_k) = #{j: w_j >= w_k} / K:
    with beta < 0 the largest weight gets the largest gamma (Wang et al. 2018, Algorithm 1).
    ``log_w`` is ``[K, B]``; ranks are taken over K for each datapoint, or over the joint weight
    sum_n log w_nk of the batch when ``per_datapoint=False``. Ties are broken arbitrarily.
    """
    log_w = log_w.detach()
    if not per_datapoint:
        log_w = log_w.sum(-1, keepdim=True)
    # argsort of a descending argsort: rank 1 for the largest weight, K for the smallest.
    order = torch.argsort(log_w, dim=0, descending=True)
    rank = torch.argsort(order, dim=0).to(log_w.dtype) + 1.0
    gamma = rank.pow(beta)
    return gamma / gamma.sum(0, keepdim=True)


class TailAdaptive_ELBO(LogWeightsELBO):
    """Tail-adaptive f-divergence (Wang, Liu & Liu 2018) with ranks per datapoint.

    Gradient: ``-scale * sum_n sum_k gamma_nk d log w_nk`` with :func:`tail_adaptive_weights`
    (reparameterized z). The loss *value* is the negative ELBO (mean of log w over K): the
    f-divergence itself is not estimated, so this is a monitor, not the objective.

    Why not Pyro's ``TraceTailAdaptive_ELBO``: its ``loss()`` raises; it ranks the joint weight
    of the whole batch, so one datapoint's tail sets every datapoint's weights; and its ranks are
    mis-assigned (it uses ``argsort + 1`` as ranks, pyro issue 3170, open for pyro 1.9).
    ``per_datapoint=False`` gives the batch-joint ranking Pyro intends, with correct ranks.
    """

    def __init__(
        self,
        num_particles: int = 2,
        max_plate_nesting: int = 1,
        tail_adaptive_beta: float = -1.0,
        per_datapoint: bool = True,
    ) -> None:
        if int(num_particles) < 2:
            raise ValueError(
                f"tail_adaptive ranks K >= 2 particles, got num_particles={num_particles}; with "
                f"K = 1 it is the plain ELBO ('trace')"
            )
        super().__init__(num_particles, max_plate_nesting)
        self.tail_adaptive_beta = float(tail_adaptive_beta)
        self.per_datapoint = bool(per_datapoint)

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        return log_w.mean(0)

    def objective(self, lw: LogWeights) -> torch.Tensor:
        gamma = tail_adaptive_weights(lw.log_w, self.tail_adaptive_beta, self.per_datapoint)
        surrogate = (gamma * lw.log_w).sum()
        return -lw.scale * _with_gradient(self.bound(lw.log_w).sum(), surrogate)


class _PathwiseELBO(LogWeightsELBO):
    """Path-derivative estimators: the direct (score) derivative of log q is dropped.

    With ``g_k = d log w_k / d z_k`` at fixed parameters, the surrogate's gradient is::

        sum_k a_k d_theta log p(x, z_k) |_(z fixed)   +   sum_k c_k g_k . dz_k/d(params)

    with coefficients ``(a, c)`` from :meth:`coefficients`. From :func:`~pyro_vae.log_weights`
    (``leaves`` given) ``g_k`` is taken by autograd at the leaves, where the guide was replayed,
    so log q is a function of z for any guide (flows, dependent latents). From a model's own
    closed form (no ``leaves``: log q with the guide's parameters held fixed, one latent site)
    one backward gives the same, with a gradient hook on z for ``c != a``; that hook stays on
    ``lw.latents``, so compute one objective per :class:`LogWeights`.
    """

    pathwise = True

    def coefficients(self, log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, c)``, each ``[K, B]``, from detached log weights ``[K, B]``."""
        raise NotImplementedError

    def objective(self, lw: LogWeights) -> torch.Tensor:
        log_w = lw.log_w
        direct, path = self.coefficients(log_w.detach())
        value = self.bound(log_w.detach()).sum()
        if not (torch.is_grad_enabled() and log_w.requires_grad):
            return -lw.scale * value
        if not lw.leaves:
            if path is not direct:
                # c / a (w~ for DReG); 0 where a weight underflowed to 0
                ratio = torch.where(direct > 0, path / direct, torch.zeros_like(path))
                for z in lw.latents:
                    if z.requires_grad:
                        z.register_hook(_times(ratio, z, self.model_plates))
            return -lw.scale * _with_gradient(value, (direct * log_w).sum())
        surrogate = (direct * lw.log_p).sum()
        # retain_graph: log_p's graph is shared with log_w and is differentiated again, through
        # the surrogate, by the caller's backward.
        grads = torch.autograd.grad(
            (path * log_w).sum(), lw.leaves, retain_graph=True, allow_unused=True
        )
        for z, g in zip(lw.latents, grads, strict=True):
            if g is not None and z.requires_grad:
                surrogate = surrogate + (g * z).sum()
        return -lw.scale * _with_gradient(value, surrogate)


class STL_ELBO(_PathwiseELBO):
    """Sticking the landing (STL, Roeder, Wu & Duvenaud 2017): the ELBO with K particles
    averaged, and the path-derivative gradient (log q evaluated with the guide's parameters
    detached, z still differentiable).

    Unbiased like ``Trace_ELBO``; the model's gradient is Trace_ELBO's draw for draw, and the
    guide's gradient is exactly 0 for every draw when q(z | x) = p(z | x).
    """

    bound = staticmethod(_mean)

    def coefficients(self, log_w):
        k = torch.full_like(log_w, 1.0 / log_w.shape[0])
        return k, k

    def objective(self, lw: LogWeights) -> torch.Tensor:
        if lw.leaves:
            return super().objective(lw)
        # The closed form (log q at fixed guide parameters): with uniform coefficients the
        # surrogate is the bound itself, its value and its gradient.
        return -lw.scale * self.bound(lw.log_w).sum()


class DReG_ELBO(_PathwiseELBO):
    """The IWAE bound with the doubly reparameterized gradient (Tucker et al. 2019)::

        model params:  sum_k w~_k   d_theta log p(x, z_k)          (the IWAE gradient)
        guide params:  sum_k w~_k^2 d log w_k / dz_k . dz_k/d phi   (DReG)

    Parameters shared by model and guide (e.g. a VampPrior's encoder) get both terms, which is
    the DReG identity applied to each parameter's occurrence. Unbiased for the IWAE gradient;
    its guide gradient's signal-to-noise ratio does not vanish as K grows (it does for IWAE).
    """

    bound = staticmethod(_iwae)

    def coefficients(self, log_w):
        w = torch.softmax(log_w, dim=0)
        return w, w * w


def _times(w: torch.Tensor, z: torch.Tensor, max_plate_nesting: int):
    """A gradient hook on ``z [K, ..., B, *event]`` multiplying by ``w [K, B]``."""
    plates = max_plate_nesting - 1
    shape = (w.shape[0], *(1,) * plates, w.shape[1], *(1,) * (z.dim() - plates - 2))
    factor = w.reshape(shape)
    return lambda grad: grad * factor


class _NoRsample(TorchDistribution):
    """``base`` with ``has_rsample = False``: samples are drawn detached (no pathwise gradient).

    Pyro's ``Distribution.has_rsample_(False)`` would do this in place, but ``Independent`` and
    ``MaskedDistribution`` expose ``has_rsample`` as a read-only property, and the guide's
    distribution object is not ours to mutate.
    """

    has_rsample = False

    def __init__(self, base) -> None:
        self.base_dist = base
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @property
    def support(self):
        return self.base_dist.support

    def expand(self, batch_shape, _instance=None):
        return type(self)(self.base_dist.expand(batch_shape))

    def sample(self, sample_shape=torch.Size()):
        # A new tensor object, so that a flow's log_prob misses its (x, y) cache: the cache holds
        # the log-determinant computed under sample()'s no_grad, which would silently drop the
        # flow parameters' part of the score d log q.
        return self.base_dist.sample(sample_shape).clone()

    def log_prob(self, value):
        return self.base_dist.log_prob(value)


class _ScoreFunctionSites(Messenger):
    """Make every latent sample site of the wrapped guide non-reparameterized."""

    def _pyro_sample(self, msg) -> None:
        if msg["done"] or msg["is_observed"] or isinstance(msg["fn"], _Subsample):
            return
        if msg["fn"].has_rsample:
            msg["fn"] = _NoRsample(msg["fn"])


class Score_ELBO(LogWeightsELBO):
    """The ELBO with the score-function (REINFORCE) gradient: z is not reparameterized.

    Per datapoint, with f_k = log w_k and a baseline b_k independent of z_k::

        grad = mean_k [ d log p(x, z_k)|_(z fixed) + (f_k - b_k) d log q(z_k | x) ]

    (the direct derivative of -log q has zero mean and is dropped, as in ``TraceGraph_ELBO``).
    Baselines: ``"leave_one_out"`` b_k = mean_{j != k} f_j (needs K >= 2); ``"decaying_average"``
    a running mean of f over past steps (rate ``baseline_beta``, state kept on this object);
    ``"none"``; ``"auto"`` = leave-one-out for K >= 2, decaying average for K = 1.

    Why not ``TraceGraph_ELBO`` with ``use_decaying_avg_baseline``: its average is a param-store
    tensor shaped like the batch, i.e. one baseline per *batch position* (meaningless across
    minibatches), and it fails on a smaller last minibatch.
    """

    _needs_rsample = False
    # Its draws are not reparameterized: a model's own (reparameterized) log weights differ.
    accepts_model_log_weights = False
    _BASELINES = ("auto", "leave_one_out", "decaying_average", "none")

    def __init__(
        self,
        num_particles: int = 1,
        max_plate_nesting: int = 1,
        baseline: str = "auto",
        baseline_beta: float = 0.9,
    ) -> None:
        super().__init__(num_particles, max_plate_nesting)
        if baseline not in self._BASELINES:
            raise ValueError(f"baseline must be one of {self._BASELINES}, got {baseline!r}")
        if baseline == "auto":
            baseline = "leave_one_out" if self.num_particles > 1 else "decaying_average"
        if baseline == "leave_one_out" and self.num_particles < 2:
            raise ValueError("baseline='leave_one_out' needs num_particles >= 2")
        if not 0.0 <= baseline_beta < 1.0:
            raise ValueError(f"baseline_beta must be in [0, 1), got {baseline_beta}")
        self.baseline, self.baseline_beta = baseline, float(baseline_beta)
        self._average: torch.Tensor | None = None

    def bound(self, log_w: torch.Tensor) -> torch.Tensor:
        return log_w.mean(0)

    def state_dict(self) -> dict:
        """The decaying-average baseline (``{"average": None}`` before the first step), saved in
        ``train``'s checkpoints so that a resumed run continues with the same baseline. (Under
        ``distributed`` each rank keeps its own average; the checkpoint holds rank 0's, which
        every rank resumes from.)"""
        return {"average": None if self._average is None else self._average.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        average = state.get("average")
        if average is not None and not isinstance(average, torch.Tensor):
            raise TypeError(
                f"Score_ELBO state: 'average' must be a tensor or None, got {average!r}"
            )
        self._average = average

    def log_weights(self, model, guide, *args, **kwargs) -> LogWeights:
        return super().log_weights(model, _ScoreFunctionSites()(guide), *args, **kwargs)

    def _baseline(self, f: torch.Tensor) -> torch.Tensor | float:
        k = f.shape[0]
        if self.baseline == "leave_one_out":
            return (f.sum(0, keepdim=True) - f) / (k - 1)
        if self.baseline == "decaying_average":
            # The average of *past* steps only, so the baseline is independent of these draws.
            old = 0.0 if self._average is None else self._average.to(f.device)
            new = (
                f.mean()
                if self._average is None
                else old + (1 - self.baseline_beta) * (f.mean() - old)
            )
            self._average = new.detach()
            return old
        return 0.0

    def objective(self, lw: LogWeights) -> torch.Tensor:
        f = lw.log_w.detach()
        advantage = f - self._baseline(f)
        surrogate = (lw.log_p + advantage * lw.log_q).mean(0).sum()
        return -lw.scale * _with_gradient(self.bound(f).sum(), surrogate)


class TraceGraph_ELBO(infer.TraceGraph_ELBO):
    """Pyro's ``TraceGraph_ELBO`` (score-function gradients with Rao-Blackwellization over the
    dependency graph) with the ``differentiable_loss`` that training and DDP call."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        # Pyro's own split of the loss value and the surrogate whose gradient is the estimator.
        loss, surrogate = self._loss_and_surrogate_loss(model, guide, args, kwargs)
        return _with_gradient(-torch.as_tensor(loss), torch.as_tensor(surrogate))


def _pyro_jit(name: str, cls, jit_cls):
    """A factory for one of our estimators with Pyro's JIT-compiled variant for ``jit=True``."""

    def factory(num_particles, max_plate_nesting, jit, **options):
        if not jit:
            if cls is TraceGraph_ELBO:
                return cls(
                    num_particles=num_particles,
                    max_plate_nesting=max_plate_nesting,
                    vectorize_particles=num_particles > 1,
                    **options,
                )
            return cls(num_particles=num_particles, max_plate_nesting=max_plate_nesting, **options)
        if cls is TraceGraph_ELBO:
            raise ValueError(
                "'tracegraph' has no JIT variant that training can use (Pyro's "
                "JitTraceGraph_ELBO has no differentiable_loss); drop jit=True (--jit)"
            )
        # torch's own shape checks (e.g. in binary_cross_entropy_with_logits) emit
        # TracerWarnings while tracing; they are static for a fixed batch shape.
        options.setdefault("ignore_jit_warnings", True)
        return jit_cls(
            num_particles=num_particles,
            max_plate_nesting=max_plate_nesting,
            vectorize_particles=num_particles > 1,
            **options,
        )

    factory.__doc__ = cls.__doc__
    return factory


def _ours(name: str, cls):
    def factory(num_particles, max_plate_nesting, jit, **options):
        if jit:
            raise ValueError(f"{name!r} has no JIT variant (Pyro has none); drop jit=True (--jit)")
        return cls(num_particles=num_particles, max_plate_nesting=max_plate_nesting, **options)

    factory.__doc__ = cls.__doc__
    return factory


ESTIMATORS = {
    "trace": _pyro_jit("trace", TraceELBO, infer.JitTrace_ELBO),
    "meanfield": _pyro_jit("meanfield", MeanFieldELBO, infer.JitTraceMeanField_ELBO),
    "tracegraph": _pyro_jit("tracegraph", TraceGraph_ELBO, infer.JitTraceGraph_ELBO),
    "iwae": _ours("iwae", IWAE_ELBO),
    "stl": _ours("stl", STL_ELBO),
    "dreg": _ours("dreg", DReG_ELBO),
    "renyi": _ours("renyi", Renyi_ELBO),
    "tail_adaptive": _ours("tail_adaptive", TailAdaptive_ELBO),
    "score": _ours("score", Score_ELBO),
}


def make_elbo(
    name: str, num_particles: int = 1, *, jit: bool = False, max_plate_nesting: int = 1, **options
) -> ELBO:
    """Build an ELBO estimator by name.

    Args:
        name: one of :data:`ESTIMATORS`: ``trace``, ``meanfield``, ``tracegraph`` (Pyro's),
            ``iwae``, ``stl``, ``dreg``, ``renyi``, ``tail_adaptive``, ``score`` (this module).
        num_particles: Monte Carlo samples per datapoint (K for the importance-weighted ones).
        jit: use Pyro's JIT-compiled variant; only ``trace``, ``meanfield``, ``tracegraph``
            have one.
        max_plate_nesting: plates in the model (1: the data plate).
        options: passed to the estimator, e.g. ``alpha`` (``renyi``), ``tail_adaptive_beta`` and
            ``per_datapoint`` (``tail_adaptive``), ``baseline`` and ``baseline_beta``
            (``score``).
    """
    if int(num_particles) < 1:
        raise ValueError(f"num_particles must be >= 1, got {num_particles}")
    factory = lookup("estimator", name, ESTIMATORS)
    return factory(int(num_particles), max_plate_nesting, jit, **options)
