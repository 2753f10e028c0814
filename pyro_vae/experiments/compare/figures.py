"""The comparison's two figures: test log-likelihood curves per estimator (mean ± 1 s.d. over
seeds) and gradient SNR against K at the fixed point."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..plots import plot_log_likelihood_curves, plot_snr_vs_k
from .config import CompareConfig
from .spec import EstimatorSpec
from .text import count, display_name

__all__ = ["write_figures"]


def _curves(runs: Sequence[dict[str, Any]]) -> dict[str, list[list[dict]]]:
    """``{estimator label: [history per seed]}``."""
    curves: dict[str, list[list[dict]]] = {}
    for r in runs:
        label = EstimatorSpec(r["estimator"], r["num_particles"]).label
        curves.setdefault(label, []).append(r["history"])
    return curves


def _snr_series(
    snr: Sequence[dict[str, Any]], ks: Sequence[int]
) -> dict[str, dict[int, dict[str, float]]]:
    """``{estimator: {K: {"inference": SNR, "generative": SNR}}}`` at the K values ``ks``."""
    series: dict[str, dict[int, dict[str, float]]] = {}
    for s in snr:
        if s["num_particles"] in ks:
            series.setdefault(s["estimator"], {})[s["num_particles"]] = {
                "inference": s["inference_snr"],
                "generative": s["generative_snr"],
            }
    return series


def write_figures(
    out: Path,
    runs: Sequence[dict[str, Any]],
    snr: Sequence[dict[str, Any]],
    config: CompareConfig,
    info: dict[str, Any],
) -> dict[str, Path]:
    """``log_likelihood_curves.png`` and, with SNRs, ``snr_vs_k.png`` in ``out``."""
    dataset = display_name(info["dataset"])
    files = {
        "log_likelihood_curves.png": plot_log_likelihood_curves(
            _curves(runs),
            out / "log_likelihood_curves.png",
            title=f"{dataset}: test log-likelihood (K={config.eval_samples}), "
            f"mean ± 1 s.d. over {count(len(config.seeds), 'seed')}",
        )
    }
    if snr:
        files["snr_vs_k.png"] = plot_snr_vs_k(
            _snr_series(snr, config.snr_k),
            out / "snr_vs_k.png",
            title=f"Gradient SNR at one fixed point ({dataset}, batch "
            f"{info['snr_batch_size']}, {config.snr_repeats} repeats)",
        )
    return files
