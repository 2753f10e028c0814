"""The protocol every model object obeys, and the log weights it may compute itself.

The protocol of a model object is two Pyro programs on an ``nn.Module``::

    model(x, num_data=None)    # p(x, z): per-datapoint sites in pyro.plate("data", dim=-1)
    guide(x, num_data=None)    # q(z | x): the same plate, scaled by num_data / len(x) when given

:func:`~pyro_vae.log_weights`, :func:`~pyro_vae.log_likelihood`, the estimators,
:func:`~pyro_vae.gradient_snr`, :func:`~pyro_vae.train`, :func:`~pyro_vae.evaluate` and
checkpoints need only these. What the built-in models have besides is used where present, never
required: ``check_data(x, what)`` (the data check; else shape and finiteness), ``config`` (a
:class:`~pyro_vae.ModelConfig`, recorded in checkpoints so :func:`~pyro_vae.load_model` rebuilds
the model; else pass ``model=``), and ``log_weights``, ``importance_sampler`` and ``log_joint``
below.

Optionally it computes the log weights of those programs itself, in plain torch and on the same
random draws as the Pyro program (this is the training fast path)::

    log_weights(x, num_data=None, *, num_samples=1, pathwise=False, analytic_kl=False)
        -> LogWeights

with the meaning of :func:`pyro_vae.log_weights` (which computes it from the Pyro program for any
pair). Training checks the two against each other on every validated step and falls back to the
Pyro program, with a warning, when they differ; a subclass that changes ``model``/``guide``
without changing ``log_weights`` should set ``log_weights = None``. Evaluation may also ask for::

    importance_sampler(x) -> draw(k) -> log w [k, B]    (or None)

the encoder run once, then the log weights of ``k`` fresh draws at a time (what
:func:`~pyro_vae.log_likelihood` tiles K with), and, for annealed importance sampling, the
model's log density at given latents::

    log_joint(x, latents, num_data=None) -> (log p(x, z), log p(x | z))    (or None)

each ``[C, B]`` for ``latents`` ``{site: [C, B, ...]}`` (C chains), differentiable in the
latents, the values of :func:`pyro_vae.infer.log_weights.log_joint` of ``model`` (not scaled by
``num_data``). :func:`~pyro_vae.ais_log_likelihood` evaluates it at every leapfrog step in place
of the Pyro trace once it agrees with the trace at the first draws (the trace, with a warning,
when it does not); None, or a ValueError, where it has no closed form leaves the trace. The
built-in models return None when ``log_weights`` is None.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["LogWeights"]


class LogWeights(NamedTuple):
    """Per-datapoint log densities of K particles, each ``[K, B]``.

    ``log_p``: log p(x_n, z_nk) over the model's sample sites; ``log_q``: log q(z_nk | x_n) over
    the guide's latent sites (with the guide's parameters held fixed, gradient through z only,
    when asked for ``pathwise``); ``kl``: the analytic KL(q || p) of the latent sites taken out
    of both (``analytic_kl``), else None; ``scale``: the data plate's N / B (1 without
    subsampling); ``latents``: the guide's draws, e.g. ``z [K, B, z_dim]``, to which DReG
    attaches its gradient weights; ``traces``: ``(model_trace, guide_trace)`` when they came
    from the Pyro program, else None; ``log_lik``: the observed sites' part of ``log_p``,
    log p(x_n | z_nk) (so ``log_p - log_lik`` is the prior's); ``analytic``: the names of the
    latent sites whose KL is in ``kl``.

    Asked for ``pathwise`` (the path-derivative estimators) a computation returns one of two
    forms. With ``leaves`` (what :func:`pyro_vae.log_weights` returns for any guide):
    ``log_p`` and ``log_q`` are evaluated at the detached, grad-requiring copies ``leaves`` of
    the draws ``latents``. Without (a model's own closed form, e.g. the VAE's diagonal-Normal
    guide): ``log_q`` is evaluated at the draws with the guide's parameters held fixed, so its
    gradient flows through z only; valid for one latent site.
    """

    log_p: torch.Tensor
    log_q: torch.Tensor
    kl: torch.Tensor | None
    scale: float
    latents: tuple[torch.Tensor, ...] = ()
    traces: tuple | None = None
    log_lik: torch.Tensor | None = None
    analytic: tuple[str, ...] = ()
    leaves: tuple[torch.Tensor, ...] = ()
    #: per latent site, its part of ``log_q - (log_p - log_lik)`` (its analytic KL where taken
    #: out), each ``[K, B]``: what free bits clamp per latent group; None for one latent site
    #: (its term is the total, :meth:`kl_terms`)
    site_kl: dict | None = None

    def tempered(self, beta: float) -> LogWeights:
        """The log weights of ``log p(x | z) + beta * (log p(z) - log q(z | x))`` (KL weighted by
        ``beta``, Higgins et al. 2017): the likelihood kept, the prior, q and KL scaled."""
        if self.log_lik is None:
            raise ValueError(
                "KL weighting needs log_lik (the observed sites' part of log_p) in the log "
                "weights; a model's own log_weights must fill it in"
            )
        prior = self.log_p - self.log_lik
        return self._replace(
            log_p=self.log_lik + beta * prior,
            log_q=beta * self.log_q,
            kl=None if self.kl is None else beta * self.kl,
            site_kl=None
            if self.site_kl is None
            else {k: beta * v for k, v in self.site_kl.items()},
        )

    def kl_terms(self) -> dict:
        """``{site: [K, B]}``, each latent site's part of ``kl + log_q - (log_p - log_lik)``."""
        if self.site_kl is not None:
            return self.site_kl
        if self.log_lik is None or len(self.latents) != 1:
            raise ValueError(
                "per-site KL terms need site_kl (or log_lik and a single latent site) in the "
                "log weights; a model's own log_weights must fill them in"
            )
        total = self.log_q - (self.log_p - self.log_lik)
        return {"z": total if self.kl is None else total + self.kl}

    @property
    def log_w(self) -> torch.Tensor:
        """``log_p - log_q [K, B]``, the log importance weights (minus ``kl`` where that was
        taken out: then the per-particle ELBO terms with analytic KL)."""
        log_w = self.log_p - self.log_q
        return log_w if self.kl is None else log_w - self.kl
