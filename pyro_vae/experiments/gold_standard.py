"""The gold-standard evaluation of a trained model: AIS beside importance sampling, and the gaps.

What ``--ais-steps`` and ``--gaps`` add to a run's ``results.json`` (:func:`evaluate_gold`), on a
fixed first slice of the test set (AIS and the local optimization of the gaps cost far more per
image than the K-sample estimate of the whole test set):

* ``ais``: :func:`~pyro_vae.ais_log_likelihood` (HMC transitions, step sizes adapted by a pilot
  run and frozen, so the estimate stays unbiased) and, on the same images, the importance-sampled
  estimate with the run's ``eval_samples``: the AIS - IS difference is how much the guide's
  proposal loses.
* ``gaps``: :func:`~pyro_vae.inference_gaps` (Cremer, Li & Duvenaud 2018): the approximation gap
  (the best diagonal-Normal q per datapoint against log p(x)) and the amortization gap (the
  encoder against that best q), with log p(x) from AIS when ``ais_steps`` is set (the ``ais``
  estimate itself where it covers the gaps' images), else IS.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .._device import fork_rng
from ..infer.ais import ais_log_likelihood
from ..infer.evaluate import log_likelihood
from ..infer.gaps import inference_gaps
from ..model.config import JsonConfig

__all__ = ["GoldStandard", "evaluate_gold", "gold_lines"]


@dataclass(frozen=True)
class GoldStandard(JsonConfig):
    """Which gold-standard evaluations a run adds, and on how many test images."""

    #: AIS annealing steps (0: no AIS)
    ais_steps: int = 0
    #: independent AIS chains per image
    ais_chains: int = 16
    #: the first this-many test images get AIS (and IS on the same images)
    ais_images: int = 1000
    #: add the approximation / amortization gaps
    gaps: bool = False
    #: the first this-many test images get the gaps (each a local optimization)
    gaps_images: int = 100
    #: Adam steps of each datapoint's local q
    gaps_local_steps: int = 500

    def __post_init__(self) -> None:
        self.check_types()
        for name in ("ais_chains", "ais_images", "gaps_images", "gaps_local_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"GoldStandard.{name} must be >= 1, got {getattr(self, name)}")
        if self.ais_steps < 0:
            raise ValueError(f"GoldStandard.ais_steps must be >= 0, got {self.ais_steps}")

    @property
    def enabled(self) -> bool:
        return self.ais_steps > 0 or self.gaps


def evaluate_gold(
    vae,
    test_x: torch.Tensor,
    spec: GoldStandard,
    *,
    eval_samples: int,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """``{"ais": ..., "gaps": ...}`` (the enabled ones) for the model object ``vae`` on the first
    images of ``test_x [N, D]``; reproducible from ``seed``, leaving the global RNG as it was."""
    out: dict[str, Any] = {}
    vae.eval()
    with fork_rng(test_x.device):
        torch.manual_seed(seed)
        ais_ll = None
        if spec.ais_steps > 0:
            out["ais"], ais_ll = _ais(vae, test_x[: spec.ais_images], spec, eval_samples)
            log(gold_lines(out)[-1])
        if spec.gaps:
            out["gaps"] = _gaps(vae, test_x[: spec.gaps_images], spec, eval_samples, ais_ll)
            log(gold_lines({"gaps": out["gaps"]})[-1])
    return out


def _initial(vae) -> str:
    """AIS starts from the guide where its log q can be evaluated at any z, else (a planar,
    radial, Sylvester or NAF flow) from the prior."""
    encoder = getattr(vae, "encoder", None)
    return "guide" if getattr(encoder, "invertible", True) else "prior"


def _ais(vae, x: torch.Tensor, spec: GoldStandard, eval_samples: int) -> tuple[dict, torch.Tensor]:
    """The ``ais`` results of ``x``, and AIS's per-datapoint log p(x) ``[N]``."""
    t0 = time.perf_counter()
    initial = _initial(vae)
    r = ais_log_likelihood(
        vae.model, vae.guide, x, spec.ais_steps, spec.ais_chains, initial=initial, return_stats=True
    )
    seconds = time.perf_counter() - t0
    is_ll = log_likelihood(vae.model, vae.guide, x, eval_samples)
    n = len(x)
    ll = r.log_likelihood
    summary = {
        "log_likelihood": float(ll.mean()),
        "log_likelihood_stderr": float(ll.std() / n**0.5) if n > 1 else 0.0,
        "mc_stderr": float(r.stderr.mean()),
        "acceptance": float(r.acceptance.mean()),
        "is_log_likelihood": float(is_ll.mean()),
        "is_samples": int(eval_samples),
        "ais_minus_is": float((ll - is_ll).mean()),
        "ais_minus_is_stderr": float((ll - is_ll).std() / n**0.5) if n > 1 else 0.0,
        "num_steps": spec.ais_steps,
        "num_chains": spec.ais_chains,
        "initial": initial,
        "images": n,
        "seconds": seconds,
    }
    return summary, ll


def _gaps(
    vae, x: torch.Tensor, spec: GoldStandard, eval_samples: int, ais_ll: torch.Tensor | None
) -> dict[str, Any]:
    """The ``gaps`` results of ``x``, with log p(x) from ``ais_ll`` (the ``ais`` estimate of
    the first test images, the same settings) where it covers ``x``."""
    t0 = time.perf_counter()
    method = "ais" if spec.ais_steps > 0 else "is"
    reuse = ais_ll is not None and len(ais_ll) >= len(x)
    gaps = inference_gaps(
        vae.model,
        vae.guide,
        x,
        method=method,
        log_likelihood=ais_ll[: len(x)] if reuse else None,
        num_steps=max(1, spec.ais_steps),
        num_chains=spec.ais_chains,
        ais_options={"initial": _initial(vae)},
        is_samples=eval_samples,
        local_steps=spec.gaps_local_steps,
    )
    gaps["images"] = len(x)
    gaps["seconds"] = time.perf_counter() - t0
    return gaps


def gold_lines(results: dict[str, Any]) -> list[str]:
    """The summary lines of the gold-standard results in ``results`` (none if absent)."""
    lines = []
    ais = results.get("ais")
    if ais:
        lines.append(
            f"AIS log-likelihood   {ais['log_likelihood']:.2f} nats on the first {ais['images']} "
            f"test images ({ais['num_steps']} steps x {ais['num_chains']} chains, acceptance "
            f"{ais['acceptance']:.2f}); IS K={ais['is_samples']} on the same images "
            f"{ais['is_log_likelihood']:.2f}, AIS - IS {ais['ais_minus_is']:+.2f} "
            f"+/- {1.96 * ais['ais_minus_is_stderr']:.2f}"
        )
    gaps = results.get("gaps")
    if gaps:
        lines.append(
            f"inference gap        {gaps['inference_gap']:.2f} nats on {gaps['images']} test "
            f"images = approximation {gaps['approximation_gap']:.2f} + amortization "
            f"{gaps['amortization_gap']:.2f} (log p(x) by {gaps['log_likelihood_method']})"
        )
    return lines
