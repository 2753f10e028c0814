"""KL weighting of the training objective: a constant beta, a linear warm-up, free bits.

Only the training loss changes: its *value* (what ``train_elbo`` reports) stays the estimator's
bound of the true model (beta = 1), its *gradient* is that of the weighted objective

    E_q[log p(x | z)] - beta_t * sum_g max(lambda, KL_g)

with ``beta_t`` = ``beta`` after a linear warm-up from 0 over ``warmup_steps`` steps (Sonderby et
al. 2016) and ``KL_g`` = E_q[log q(z_g | x) - log p(z_g | ...)] of latent site g averaged over
the minibatch, clamped below at ``free_bits`` nats (Kingma et al. 2016; ``lambda`` = 0: no clamp).
Without free bits, beta tempers the log weights themselves (:meth:`LogWeights.tempered`), so
the log-weight estimators whose gradients stay unbiased for tempered weights accept it: trace,
meanfield, iwae (beta-IWAE), stl, renyi, tail_adaptive (not score or dreg, whose gradient
identities assume beta = 1; free bits: trace and meanfield). Because the weighting acts on log
weights, not through ``poutine.scale``, the warm-up can start at 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..model.protocol import LogWeights

__all__ = ["KLWeight"]


@dataclass(frozen=True)
class KLWeight:
    beta: float = 1.0
    warmup_steps: int = 0
    free_bits: float = 0.0

    @property
    def is_identity(self) -> bool:
        return self.beta == 1.0 and self.warmup_steps == 0 and self.free_bits == 0.0

    def beta_at(self, step: int) -> float:
        """The KL weight at global training step ``step`` (0-based)."""
        if self.warmup_steps == 0:
            return self.beta
        return self.beta * min(1.0, step / self.warmup_steps)

    def surrogate(self, elbo, lw: LogWeights, step: int) -> torch.Tensor:
        """The weighted objective's surrogate loss (its value is not the reported one)."""
        beta = self.beta_at(step)
        if self.free_bits == 0.0:
            return elbo.objective(lw.tempered(beta))
        batch = lw.log_lik.shape[-1]
        lik = lw.log_lik.mean(0).sum()
        floor = self.free_bits * batch
        penalty = sum(v.mean(0).sum().clamp(min=floor) for v in lw.kl_terms().values())
        return -lw.scale * (lik - beta * penalty)
