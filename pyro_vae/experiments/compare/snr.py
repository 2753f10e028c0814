"""Gradient signal-to-noise ratios at one fixed point.

Rainforth et al. (2018)'s per-parameter SNR, ``|E g| / sd g`` over ``snr_repeats`` independent
gradient estimates, averaged over the encoder's and the decoder's parameters, for every
estimator at every K of ``snr_k`` *at the same parameters and on the same batch*: the model
trained under the first estimator with the first seed (the first run that did not diverge), at
the end of its training, and the first ``snr_batch_size`` training images binarized with a fixed
seed. So the SNRs differ only by the estimator and K, not by where each run's training ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import torch

from ...data import binarize_static
from ...infer.estimators import make_elbo
from ...infer.gradients import gradient_snr
from ...model.vae import VAE
from .config import CompareConfig
from .spec import EstimatorSpec

__all__ = ["measure_snr", "snr_at_fixed_point"]


def _pairs(specs: Sequence[EstimatorSpec], snr_k: Sequence[int]) -> list[tuple[str, int]]:
    """Every estimator at every K of ``snr_k``, then each spec's own K if not among them."""
    names = list(dict.fromkeys(s.name for s in specs))
    pairs = [(n, k) for n in names for k in snr_k]
    pairs += [(s.name, s.num_particles) for s in specs if (s.name, s.num_particles) not in pairs]
    return pairs


def measure_snr(
    vae: VAE,
    specs: Sequence[EstimatorSpec],
    config: CompareConfig,
    x: torch.Tensor,
    num_data: int,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """The inference and generative network SNRs of ``vae`` on the batch ``x``, one entry per
    (estimator, K) that builds (e.g. not ``tail_adaptive`` at K = 1)."""
    out = []
    for name, k in _pairs(specs, config.snr_k):
        try:
            elbo = make_elbo(name, k)
        except ValueError as e:  # e.g. tail_adaptive at K = 1
            log(f"[snr] {name} K={k}: skipped ({e})")
            continue
        pyro.set_rng_seed(0)
        t0 = time.perf_counter()
        stats = gradient_snr(
            vae.model, vae.guide, elbo, x, num_repeats=config.snr_repeats, num_data=num_data
        )
        entry = {
            "estimator": name,
            "num_particles": k,
            "inference_snr": stats.mean_snr["inference"],
            "generative_snr": stats.mean_snr["generative"],
            "inference_median_snr": stats.median_snr["inference"],
            "generative_median_snr": stats.median_snr["generative"],
            "seconds": time.perf_counter() - t0,
        }
        log(
            f"[snr] {name} K={k}: inference {entry['inference_snr']:.4g}, generative "
            f"{entry['generative_snr']:.4g} ({entry['seconds']:.1f} s)"
        )
        out.append(entry)
    return out


def _describe(run: dict[str, Any] | None) -> str:
    if run is None:
        return "none (every run diverged)"
    return (
        f"the model trained under {run['estimator']} (K={run['num_particles']}) with "
        f"seed {run['seed']} at the end of its training"
    )


def snr_at_fixed_point(
    vae: VAE | None,
    run: dict[str, Any] | None,
    specs: Sequence[EstimatorSpec],
    config: CompareConfig,
    train_x: torch.Tensor,
    binarize: str | None,
    device: torch.device,
    log: Callable[[str], None],
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The SNRs at ``vae``, the model ``run`` trained (None: every run diverged, no SNRs), and
    what the report says of that point: ``{"snr_checkpoint": ..., "snr_batch_size": ...}``."""
    batch_size = min(config.snr_batch_size or config.batch_size, len(train_x))
    checkpoint = _describe(run if vae is not None else None)
    where = {"snr_checkpoint": checkpoint, "snr_batch_size": batch_size}
    if not config.snr_repeats or vae is None:
        return [], where
    x = train_x[:batch_size]
    x = binarize_static(x, seed=0) if binarize == "dynamic" else x
    log(f"[snr] at {checkpoint}, batch of {batch_size}, {config.snr_repeats} repeats")
    vae.train()
    return measure_snr(vae, specs, config, x.to(device), len(train_x), log), where
