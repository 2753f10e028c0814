"""Gradient statistics of ELBO estimators: per-parameter signal-to-noise ratios.

Rainforth et al. (2018), "Tighter variational bounds are not necessarily better", measure an
estimator by the SNR of each gradient element over repeated independent estimates::

    SNR_i = |E[g_i]| / std[g_i]

and show that for the IWAE bound the inference network's SNR falls like 1/sqrt(K) as K grows,
while the generative network's rises; the doubly reparameterized gradient (DReG, Tucker et al.
2019) removes the fall. :func:`gradient_snr` measures this for any ELBO of
:func:`~pyro_vae.make_elbo` (or any Pyro ELBO) on a given batch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from .log_weights import log_weights

__all__ = ["GradientSNR", "gradient_snr", "default_param_groups"]


@dataclass
class GradientSNR:
    """Per-group gradient statistics over ``num_repeats`` independent estimates.

    ``mean``, ``variance`` and ``snr`` map a group name to a flat tensor ``[P_group]`` (the
    group's parameters flattened and concatenated in order): the per-element mean gradient, its
    unbiased variance across repeats, and ``|mean| / std``. ``snr`` is ``inf`` where the
    gradient is deterministic and non-zero, and ``nan`` where it is identically 0 (e.g. an
    unused parameter); ``mean_snr`` and ``median_snr`` (Rainforth et al.'s summary: the average
    of the per-element SNRs) ignore the ``nan`` elements.
    """

    mean_snr: dict[str, float]
    median_snr: dict[str, float]
    mean: dict[str, torch.Tensor]
    variance: dict[str, torch.Tensor]
    snr: dict[str, torch.Tensor]
    num_repeats: int

    def __str__(self) -> str:
        rows = [
            f"{g}: mean SNR {self.mean_snr[g]:.4g}, median SNR {self.median_snr[g]:.4g} "
            f"({self.snr[g].numel()} elements)"
            for g in self.snr
        ]
        return f"gradient SNR over {self.num_repeats} repeats\n  " + "\n  ".join(rows)


def _unique(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    seen, out = set(), []
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return out


def _leaf(value: torch.Tensor) -> torch.Tensor:
    # pyro.param returns the constrained value; the optimizer (and autograd) sees the
    # unconstrained leaf, exactly what SVI collects.
    unconstrained = getattr(value, "unconstrained", None)
    return unconstrained() if callable(unconstrained) else value


def _connected(output: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    if not params or not output.requires_grad:
        return []
    grads = torch.autograd.grad(output, params, allow_unused=True)
    return [p for p, g in zip(params, grads, strict=True) if g is not None]


def default_param_groups(model, guide, *args, **kwargs) -> dict[str, list[torch.Tensor]]:
    """``{"inference": [...], "generative": [...]}``: the guide's own and the model's parameters.

    A model object that declares its groups (``model`` a bound method of one with
    ``param_groups()``, as the built-in models have: the guide's networks versus the rest; a
    VampPrior's use of the encoder counts as inference) gives them. For any other pair, by
    dependence on one traced run: parameters that the guide's densities or samples depend on are
    "inference"; the rest that the model's log density depends on at fixed latents are
    "generative".
    """
    declared = getattr(getattr(model, "__self__", None), "param_groups", None)
    if callable(declared):
        return declared()

    lw = log_weights(model, guide, *args, **kwargs)
    model_trace, guide_trace = lw.traces
    # Inference: what the guide's densities or draws depend on; generative: the rest of what
    # the model's density depends on (the guide's parameters are taken first, so the path
    # through z does not count).
    guide_out = lw.log_q.sum() + sum(z.sum() for z in lw.latents if torch.is_floating_point(z))
    model_out = lw.log_p.sum()
    params = _unique(
        _leaf(s["value"])
        for t in (guide_trace, model_trace)
        for s in t.nodes.values()
        if s["type"] == "param"
    )
    params = [p for p in params if p.requires_grad]
    inference = _connected(torch.as_tensor(guide_out), params)
    taken = {id(p) for p in inference}
    rest = [p for p in params if id(p) not in taken]
    return {"inference": inference, "generative": _connected(model_out, rest)}


def _one_estimate(elbo, model, guide, params, args, kwargs) -> list[torch.Tensor]:
    """One gradient estimate ``d loss / d p`` for each of ``params`` (zeros where unused)."""
    if hasattr(elbo, "differentiable_loss"):
        loss = elbo.differentiable_loss(model, guide, *args, **kwargs)
        grads = (
            torch.autograd.grad(loss, params, allow_unused=True)
            if loss.requires_grad
            else [None] * len(params)
        )
    else:  # e.g. TraceGraph_ELBO: only loss_and_grads, which accumulates into .grad
        saved = [p.grad for p in params]
        for p in params:
            p.grad = None
        try:
            elbo.loss_and_grads(model, guide, *args, **kwargs)
            grads = [p.grad for p in params]
        finally:
            for p, g in zip(params, saved, strict=True):
                p.grad = g
    return [
        torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads, strict=True)
    ]


def gradient_snr(
    model,
    guide,
    elbo,
    *args,
    num_repeats: int = 100,
    param_groups: Mapping[str, Iterable[torch.Tensor]] | None = None,
    **kwargs,
) -> GradientSNR:
    """Per-element mean, variance and SNR = |mean| / std of ``num_repeats`` gradient estimates.

    Each repeat is an independent estimate of the gradient of ``elbo``'s loss on the same
    ``*args, **kwargs`` (e.g. one minibatch ``x [B, x_dim]``). Parameters are not changed and
    their ``.grad`` is left as it was.

    Args:
        model, guide: the Pyro program, e.g. ``vae.model``, ``vae.guide``.
        elbo: any Pyro ELBO, e.g. from :func:`~pyro_vae.make_elbo`.
        num_repeats: R >= 2 independent estimates.
        param_groups: ``{name: parameters}``; default :func:`default_param_groups`
            ("inference" and "generative").
    Returns:
        a :class:`GradientSNR`.
    """
    if num_repeats < 2:
        raise ValueError(f"num_repeats must be >= 2 to estimate a variance, got {num_repeats}")
    if param_groups is None:
        param_groups = default_param_groups(model, guide, *args, **kwargs)
    groups = {name: list(ps) for name, ps in param_groups.items()}
    params = _unique(p for ps in groups.values() for p in ps)
    # Welford's running mean and sum of squared deviations, in float64: O(P) memory whatever R.
    mean = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    m2 = [torch.zeros_like(p, dtype=torch.float64) for p in params]
    for r in range(1, num_repeats + 1):
        grads = _one_estimate(elbo, model, guide, params, args, kwargs)
        for mu, s, g in zip(mean, m2, grads, strict=True):
            g = g.to(torch.float64)
            delta = g - mu
            mu.add_(delta / r)
            s.add_(delta * (g - mu))
    index = {id(p): i for i, p in enumerate(params)}
    out_mean, out_var, out_snr, mean_snr, median_snr = {}, {}, {}, {}, {}
    for name, ps in groups.items():
        if ps:
            mu = torch.cat([mean[index[id(p)]].reshape(-1) for p in ps])
            var = torch.cat([m2[index[id(p)]].reshape(-1) for p in ps]) / (num_repeats - 1)
        else:
            mu = var = torch.zeros(0, dtype=torch.float64)
        # Welford's m2 can come out a hair above 0 for a constant gradient: treat sub-rounding
        # variance as 0 so a deterministic gradient reads as infinite SNR.
        var = torch.where(var <= (1e-12 * mu.abs()) ** 2, torch.zeros_like(var), var)
        snr = mu.abs() / var.sqrt()
        finite = snr[~snr.isnan()]
        out_mean[name], out_var[name], out_snr[name] = mu, var, snr
        mean_snr[name] = float(finite.mean()) if finite.numel() else math.nan
        median_snr[name] = float(finite.median()) if finite.numel() else math.nan
    return GradientSNR(mean_snr, median_snr, out_mean, out_var, out_snr, num_repeats)
