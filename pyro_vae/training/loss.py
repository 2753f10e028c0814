"""The loss a training step differentiates: the estimator's objective, and what runs when.

For an estimator that is a function of log weights (every one of :mod:`pyro_vae.estimators` but
``score`` and ``tracegraph``) and a model object that computes its own log weights in plain torch
(the built-in :class:`~pyro_vae.VAE`), training runs:

* on step 0 and every ``VALIDATE_EVERY``-th step after it (counted from the start of training, a
  resumed run included): **the Pyro program**, with Pyro's validation on; the model's own log
  weights are computed first on the same random draws (no gradient) and their loss *value* is
  compared with the program's (gradients are compared in the tests, in float64). If they
  differ, a ``RuntimeWarning`` says so and every later step runs the Pyro program;
* on the steps between: ``estimator.objective(model.log_weights(x, num_data, ...))``: the same
  estimator on the same draws, without Pyro's interpreter.

Everything else runs the Pyro program (``estimator.differentiable_loss``) on every step, with
Pyro's validation on the validated steps only: a model without ``log_weights``, an estimator
that needs the program (``score``, ``tracegraph``, Pyro's own ELBOs, JIT ELBOs), and any step
made inside a user's Pyro handler (e.g. ``poutine.scale`` around ``train``), which the model's
own log weights would not see. ``fast_path=False`` runs the Pyro program, validated, on every
step.
"""

from __future__ import annotations

import warnings

import pyro
import torch
from pyro.poutine.runtime import am_i_wrapped
from torch import nn

from .._device import fork_rng
from ..infer.estimators import DReG_ELBO, LogWeightsELBO, Score_ELBO, TraceELBO
from .kl_weight import KLWeight

__all__ = ["TrainingLoss", "VALIDATE_EVERY"]

#: the Pyro program runs, validated, on every this-many-th training step, counting from 0
#: (its interpreter costs about 1.5 ms a step: every 200th keeps that near 0.1% of training)
VALIDATE_EVERY = 200


class TrainingLoss(nn.Module):
    """``forward(x [B, ...], num_data) -> surrogate loss`` (a scalar, not yet backpropagated).

    ``module`` obeys the model protocol (``model``/``guide``, optionally ``log_weights``);
    ``elbo`` is any estimator with ``differentiable_loss``. As an ``nn.Module`` that owns
    ``module``, it is what ``DistributedDataParallel`` wraps. ``first_step`` is the global index
    of the first call (a resumed run's), so a resumed run validates the same steps.
    """

    def __init__(
        self,
        module: nn.Module,
        elbo,
        *,
        fast_path: bool = True,
        first_step: int = 0,
        kl_weight: KLWeight | None = None,
    ):
        super().__init__()
        if not hasattr(elbo, "differentiable_loss"):
            raise TypeError(
                f"{type(elbo).__name__} has no differentiable_loss, which training needs (one "
                f"backward per step); use pyro_vae.make_elbo's estimators, e.g. 'tracegraph' "
                f"instead of Pyro's TraceGraph_ELBO"
            )
        self.module = module
        self.elbo = elbo
        self.fast_path = bool(fast_path)
        self.step = int(first_step)
        self.kl_weight = None if kl_weight is None or kl_weight.is_identity else kl_weight
        _check_kl_weight(self.kl_weight, elbo)
        own = getattr(module, "log_weights", None)
        # Only where the estimator's loss is exactly objective(log_weights): a subclass that
        # overrides differentiable_loss computes something else, and gets its own every step.
        self.uses_model_log_weights = (
            self.fast_path
            and callable(own)
            and isinstance(elbo, LogWeightsELBO)
            and type(elbo).differentiable_loss is LogWeightsELBO.differentiable_loss
            and elbo.accepts_model_log_weights
        )

    def forward(self, x: torch.Tensor, num_data: int | None = None) -> torch.Tensor:
        step = self.step
        self.step += 1
        if not self.fast_path:
            return self._program(x, num_data, step)
        if step % VALIDATE_EVERY == 0:
            return self._validated(x, num_data, step)
        if self.uses_model_log_weights and not am_i_wrapped():
            # Plain torch: Pyro's validation has nothing to check here (entering its context
            # costs more than a small layer, so it is entered for the program only).
            try:
                lw = self._own_log_weights(x, num_data)
            except ValueError:
                # Raised before any draw (see VAE.log_weights): the program takes over.
                self.uses_model_log_weights = False
            else:
                return self._objective(lw, step)
        with pyro.validation_enabled(False):
            return self._program(x, num_data, step)

    def _program(self, x, num_data, step: int) -> torch.Tensor:
        model, guide = self.module.model, self.module.guide
        if self.kl_weight is None:
            return self.elbo.differentiable_loss(model, guide, x, num_data=num_data)
        return self._objective(self.elbo.log_weights(model, guide, x, num_data=num_data), step)

    def _own_log_weights(self, x, num_data):
        return self.module.log_weights(x, num_data, **self.elbo.request())

    def _objective(self, lw, step: int) -> torch.Tensor:
        if self.kl_weight is None:
            return self.elbo.objective(lw)
        # The value of the true bound (what train_elbo reports), the weighted gradient.
        with torch.no_grad():
            value = -lw.scale * self.elbo.bound(lw.log_w).sum()
        surrogate = self.kl_weight.surrogate(self.elbo, lw, step)
        return value + (surrogate - surrogate.detach())

    def _validated(self, x, num_data, step: int) -> torch.Tensor:
        own = None
        if self.uses_model_log_weights and not am_i_wrapped():
            try:
                with fork_rng(x.device), torch.no_grad(), pyro.validation_enabled(False):
                    own = self._objective(self._own_log_weights(x, num_data), step)
            except (ValueError, NotImplementedError):
                # e.g. a guide the model's own computation cannot draw from: the Pyro program
                # handles it (or raises its own clear error), now and from now on.
                self.uses_model_log_weights = False
        loss = self._program(x, num_data, step)
        # A non-finite loss is for train's divergence check; there is nothing to compare.
        if own is not None and bool(torch.isfinite(loss)):
            program = loss.detach()
            if not torch.allclose(own, program, rtol=1e-4, atol=1e-3):
                self.uses_model_log_weights = False
                warnings.warn(
                    f"{type(self.module).__name__}.log_weights gives a {type(self.elbo).__name__} "
                    f"loss of {float(own):.6g} where its Pyro program gives {float(program):.6g}; "
                    f"every later step runs the Pyro program. A subclass that changes model or "
                    f"guide should override log_weights or set log_weights = None.",
                    RuntimeWarning,
                    stacklevel=3,
                )
        return loss


def _check_kl_weight(kl_weight: KLWeight | None, elbo) -> None:
    if kl_weight is None:
        return
    if not isinstance(elbo, LogWeightsELBO):
        name = type(elbo).__name__
        jit = " (drop --jit / jit=True: the JIT ELBOs are Pyro's own)" if "Jit" in name else ""
        raise ValueError(
            f"KL weighting (beta, kl_warmup, free_bits) acts on log weights, which "
            f"{type(elbo).__name__} does not use{jit}; pick one of trace, meanfield, iwae, stl, "
            f"renyi, tail_adaptive"
        )
    if isinstance(elbo, Score_ELBO | DReG_ELBO):
        # Tempering log q scales score's score term by beta, and DReG's identity (the w~^2
        # weights) holds for beta = 1 only: both would give biased gradients.
        raise ValueError(
            f"KL weighting is not available for {type(elbo).__name__}: its gradient estimator "
            f"is derived for beta = 1 (score's score term and DReG's w~^2 weights would be "
            f"biased); use trace, meanfield, iwae, stl, renyi or tail_adaptive"
        )
    if kl_weight.free_bits and not isinstance(elbo, TraceELBO):
        raise ValueError(
            f"free bits clamp the KL of the single-bound ELBO: use elbo='trace' or 'meanfield', "
            f"not {type(elbo).__name__} (beta and kl_warmup work with every log-weight estimator)"
        )
