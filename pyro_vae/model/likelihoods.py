"""Likelihoods p(x | z).

A likelihood is an ``nn.Module`` that turns the decoder's output ``[..., num_params * x_dim]`` into
a Pyro distribution with ``event_shape == [x_dim]``, and that checks data against its support with
:meth:`Likelihood.check` (called once per data set, so the training step stays free of syncs).
Pyro's own validation stays on as the second line of defence.
"""

from __future__ import annotations

import pyro.distributions as dist
import torch
from torch import nn
from torch.distributions.utils import broadcast_all
from torch.nn.functional import binary_cross_entropy_with_logits, softplus
from torch.overrides import has_torch_function

from .._registry import lookup
from ..data.checks import check_data, is_integral, value_range
from ._bernoulli_kernel import _functorch_active, broadcasts_to, fused_log_prob, fused_value

__all__ = [
    "Likelihood",
    "BernoulliLikelihood",
    "GaussianLikelihood",
    "LearnedGaussianLikelihood",
    "ContinuousBernoulliLikelihood",
    "LaplaceLikelihood",
    "LIKELIHOODS",
    "make_likelihood",
]

_CONTINUOUS = "gaussian, learned_gaussian, continuous_bernoulli or laplace"


class Likelihood(nn.Module):
    """Base class. ``num_params`` decoder outputs per data dimension."""

    num_params: int = 1
    #: human-readable support, named in the data check's error message
    support_text: str = "real numbers"

    def __init__(self, x_dim: int) -> None:
        super().__init__()
        self.x_dim = int(x_dim)

    def forward(self, params: torch.Tensor) -> dist.Distribution:  # pragma: no cover - abstract
        raise NotImplementedError

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x | params) ``[...]`` for decoder outputs ``params [..., num_params * x_dim]``
        and ``x [B, x_dim]`` (broadcast): ``self(params).log_prob(x)``, which a subclass may
        compute without building the distribution (the fast path of
        :meth:`pyro_vae.VAE.log_weights`; the validated steps compare it with the program's)."""
        return self(params).log_prob(x)

    def check(self, x: torch.Tensor, what: str = "data") -> None:
        """Raise ValueError if ``x [N, x_dim]`` has the wrong shape or lies outside the support."""
        check_data(x, self.x_dim, what)


class _BernoulliEvent(dist.Independent):
    """``Bernoulli(logits).to_event(1)`` whose ``log_prob`` is :func:`_bernoulli_log_prob`: the
    log-likelihood summed over the event before it is negated. torch's ``Bernoulli.log_prob``
    negates the whole ``[..., x_dim]`` tensor: one more pass over the largest tensor of a
    K-sample evaluation (measured in benchmarks/)."""

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return _bernoulli_log_prob(self.base_dist.logits, value)


def _bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_d log Bernoulli(x_d; sigmoid(logit_d)) ``[...]`` for ``logits [..., D]`` and binary
    ``x`` (broadcast): -softplus((1 - 2x) * logit) summed over d, the cross-entropy's value for
    x in {0, 1}. Binary data only (the support, checked at every entry point; for other x the
    value is not the cross-entropy's). ``threshold=50``: softplus(t) = t above it, exact to
    float64 (exp(-50) ~ 2e-22).

    Without a gradient (evaluation), in fewer passes over the largest tensor of a K-sample
    evaluation than the cross-entropy (benchmarks/RESULTS.md: 1.58 against 1.66 us a sample on
    a [133, 10, 784] tile), and for a shape that has run long enough, in one compiled pass
    (:func:`fused_value`, 0.68 us a sample). Differentiated, :class:`_BinaryLogProb`. torch's
    own cross-entropy instead where a custom autograd function would be wrong or cannot serve:
    data that need a gradient themselves; tensor subclasses with a ``__torch_function__`` (and
    any active torch-function mode), such as the ``ProvenanceTensor`` that Pyro's
    TraceGraph_ELBO wraps around values downstream of a non-reparameterized site, which would
    cut the function's output from the graph; and torch.func's transforms (``grad``, ``vmap``,
    ``jacrev``), which an autograd function without a vmap rule refuses."""
    if not torch.is_grad_enabled():
        value = fused_value(logits, x)
        if value is not None:
            return value
        # a product, not _BinaryLogProb's addcmul: an infinite logit gives 0 or -inf here, not
        # NaN, and (1 - 2x) is one small [B, D] pass that K-sample tiles share
        return softplus(logits * (1 - 2 * x), threshold=50.0).sum(-1).neg_()
    if x.requires_grad or has_torch_function((logits, x)) or _functorch_active():
        logits, x = broadcast_all(logits, x)
        return -binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    return _BinaryLogProb.apply(logits, x)


class _BinaryLogProb(torch.autograd.Function):
    """:func:`_bernoulli_log_prob` differentiated: the gradient in logits ``(x - sigmoid(logit))
    * grad``. Large CPU tensors (K-sample training steps) take one compiled pass for the value
    and ``sigmoid(logit) - x`` together (:mod:`._bernoulli_kernel`; forward and backward on 5 x
    128 x 784 logits 0.88-0.99 ms against the cross-entropy's 1.9-2.3). Otherwise eager: (1 -
    2x) * logit as one ``addcmul``, softplus, and in the backward sigmoid(logit) - x from the
    saved logits, fewer passes than the cross-entropy's autograd (a log-sigmoid forward with its
    buffer, 1 - x, a product and a difference; then sigmoid, difference and product): 1.5-1.7
    against 1.9-2.3 ms at 5 x 128 x 784, about even at 128 x 784 (0.87-1.09x)
    (``python benchmarks/bench_parts.py``, benchmarks/RESULTS.md).

    On the eager path an infinite logit gives NaN (the addcmul's inf * 0, or inf - inf for x =
    1; the cross-entropy's gives NaN for x = 1); the compiled kernel gives the limits.
    Differentiable again (``create_graph``: the backward is then built of differentiable ops on
    the saved logits), in forward mode (``jvp``), and with batched gradients
    (``is_grads_batched``: the backward then runs out of place)."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(logits, x)
        ctx.save_for_forward(logits, x)
        fused = fused_log_prob(logits, x)
        ctx.compiled = fused is not None
        if fused is not None:
            # an attribute, not a saved tensor: the backward scales it in place, once
            log_p, ctx.residual = fused
            return log_p
        ctx.residual = None
        # logit + (-2) * logit * x: (1 - 2x) * logit in one pass, exactly (x is 0 or 1)
        t = torch.addcmul(logits, logits, x, value=-2)
        return softplus(t, threshold=50.0).sum(-1).neg_()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        logits, x = ctx.saved_tensors
        # the compiled forward's sigmoid(logit) - x serves one backward; another backward of
        # the same graph (retain_graph) runs the same kernel again, for the same numbers
        residual, ctx.residual = ctx.residual, None
        grad = grad.unsqueeze(-1)
        fits = broadcasts_to(x.shape, logits.shape)
        if torch.is_grad_enabled() or not fits or x.dtype != logits.dtype or _functorch_active():
            # a second derivative, x wider than logits, or under torch.func: out of place
            out = (x - torch.sigmoid(logits)) * grad
            return out.sum_to_size(logits.shape), None
        if residual is None and ctx.compiled:
            fused = fused_log_prob(logits, x)
            residual = None if fused is None else fused[1]
        # a fresh buffer either way, so in place (0.1 ms of 1.6 at K = 5)
        out = torch.sigmoid(logits).sub_(x) if residual is None else residual
        try:
            return out.mul_(grad.neg()), None
        except RuntimeError:
            # autograd.grad(is_grads_batched=True) vmaps the backward (torch's older vmap, which
            # no public function reports): a batched grad cannot be multiplied into an unbatched
            # buffer in place; vmap refuses before it writes anything
            return out * grad.neg(), None

    @staticmethod
    def jvp(ctx, logits_t: torch.Tensor, x_t: torch.Tensor | None):
        logits, x = ctx.saved_tensors
        # d/dl [x l - softplus(l)] = x - sigmoid(l); d/dx = l
        out = ((x - torch.sigmoid(logits)) * logits_t).sum(-1)
        return out if x_t is None else out + (logits * x_t).sum(-1)


class BernoulliLikelihood(Likelihood):
    """x_d ~ Bernoulli(sigmoid(logit_d)): binary data only."""

    support_text = "{0, 1}"

    def forward(self, params: torch.Tensor) -> dist.Distribution:
        return _BernoulliEvent(dist.Bernoulli(logits=params), 1)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return _bernoulli_log_prob(params, x)

    def check(self, x: torch.Tensor, what: str = "data") -> None:
        super().check(x, what)
        lo, hi = value_range(x)
        if not (lo >= 0 and hi <= 1 and is_integral(x)):
            nonbinary = (x != 0) & (x != 1)  # only on failure: a count and an example
            example = float(x[nonbinary][0])
            raise ValueError(
                f"the bernoulli likelihood needs binary {what} in {self.support_text}, but "
                f"{int(nonbinary.sum())} values are not (e.g. {example:.4g}): grayscale pixels "
                f"are not Bernoulli outcomes. Binarize the data (pyro_vae.binarize, or "
                f"binarize='dynamic' in training) or pick a continuous likelihood: {_CONTINUOUS}"
            )


class _RealLikelihood(Likelihood):
    def forward(self, params: torch.Tensor) -> dist.Distribution:
        return self.base(params, self.scale()).to_event(1)


class GaussianLikelihood(_RealLikelihood):
    """x ~ N(mu(z), s^2 I) with a fixed scale ``s`` (default 1: the identity-covariance model)."""

    base = dist.Normal

    def __init__(self, x_dim: int, scale: float = 1.0) -> None:
        super().__init__(x_dim)
        if not scale > 0:
            raise ValueError(f"the Gaussian likelihood's scale must be > 0, got {scale}")
        self.register_buffer("_scale", torch.full((x_dim,), float(scale)))

    def scale(self) -> torch.Tensor:
        return self._scale


class LearnedGaussianLikelihood(_RealLikelihood):
    """x ~ N(mu(z), diag(sigma^2)) with one learned scale per data dimension.

    The scale is floored at ``min_scale``: a pixel that is constant in the data would otherwise
    drive its scale to zero and the density to infinity.
    """

    base = dist.Normal

    def __init__(self, x_dim: int, init_scale: float = 1.0, min_scale: float = 1e-2) -> None:
        super().__init__(x_dim)
        self.min_scale = float(min_scale)
        if not init_scale > min_scale:
            raise ValueError(f"init_scale must exceed min_scale={min_scale}, got {init_scale}")
        raw = torch.log(torch.expm1(torch.tensor(float(init_scale) - self.min_scale)))
        self.raw_scale = nn.Parameter(raw.expand(x_dim).clone())

    def scale(self) -> torch.Tensor:
        return softplus(self.raw_scale) + self.min_scale


class LaplaceLikelihood(LearnedGaussianLikelihood):
    """x ~ Laplace(mu(z), b) with one learned scale ``b`` per data dimension (floored)."""

    base = dist.Laplace


class ContinuousBernoulliLikelihood(Likelihood):
    """x_d ~ ContinuousBernoulli(logit_d) on [0, 1] (Loaiza-Ganem & Cunningham 2019).

    The properly normalised density for grayscale pixels that the Bernoulli is often misused for.
    """

    support_text = "[0, 1]"

    def forward(self, params: torch.Tensor) -> dist.Distribution:
        return dist.ContinuousBernoulli(logits=params).to_event(1)

    def check(self, x: torch.Tensor, what: str = "data") -> None:
        super().check(x, what)
        lo, hi = value_range(x)
        if not (lo >= 0 and hi <= 1):
            outside = (x < 0) | (x > 1)
            raise ValueError(
                f"the continuous_bernoulli likelihood needs {what} in {self.support_text}, but "
                f"{int(outside.sum())} values are outside (min {float(x.min()):.4g}, max "
                f"{float(x.max()):.4g}); rescale the data to [0, 1] or pick gaussian or laplace"
            )


LIKELIHOODS = {
    "bernoulli": lambda x_dim, scale: BernoulliLikelihood(x_dim),
    "gaussian": lambda x_dim, scale: GaussianLikelihood(x_dim, scale),
    "learned_gaussian": lambda x_dim, scale: LearnedGaussianLikelihood(x_dim, init_scale=scale),
    "continuous_bernoulli": lambda x_dim, scale: ContinuousBernoulliLikelihood(x_dim),
    "laplace": lambda x_dim, scale: LaplaceLikelihood(x_dim, init_scale=scale),
}


def make_likelihood(name: str, x_dim: int, scale: float = 1.0) -> Likelihood:
    """Build a likelihood by name. ``scale`` is the fixed (gaussian) or initial (learned) scale."""
    return lookup("likelihood", name, LIKELIHOODS)(x_dim, scale)
