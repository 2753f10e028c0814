"""The table's numbers: per (estimator, K), means and sample standard deviations over seeds and
paired differences against the first estimator at the same seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

__all__ = ["METRICS", "GAP_METRICS", "mean_std", "summarize_runs"]

#: The per-run numbers that :func:`summarize_runs` averages over seeds.
METRICS = ("test_log_likelihood", "test_elbo", "kl", "active_units", "seconds_per_epoch", "epochs")
#: ... and those of a comparison with ``gaps_images`` (the inference gaps of each model)
GAP_METRICS = (
    "gap_log_likelihood",
    "elbo_local",
    "elbo_amortized",
    "approximation_gap",
    "amortization_gap",
)


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); the std is None for a single value."""
    vals = [float(v) for v in values]
    if not vals:
        return math.nan, None
    mean = math.fsum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    var = math.fsum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return mean, math.sqrt(var)


def _key(run: dict[str, Any]) -> tuple[str, int]:
    return run["estimator"], int(run["num_particles"])


def _row(
    group: Sequence[dict[str, Any]],
    baseline: dict[int, float],
    baseline_label: str,
    snr: dict[str, Any],
) -> dict[str, Any]:
    """The summary of one (estimator, K): its runs ``group``, one per seed."""
    name, k = _key(group[0])
    row: dict[str, Any] = {
        "estimator": name,
        "num_particles": k,
        "num_seeds": len(group),
        "seeds": [r["seed"] for r in group],
    }
    for metric in METRICS:
        row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std([r[metric] for r in group])
    for metric in GAP_METRICS:  # where the comparison measured the inference gaps
        if all(metric in r for r in group):
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std([r[metric] for r in group])
    paired = [
        r["test_log_likelihood"] - baseline[r["seed"]] for r in group if r["seed"] in baseline
    ]
    row["delta_log_likelihood_mean"], row["delta_log_likelihood_std"] = mean_std(paired)
    row["delta_baseline"] = baseline_label
    row["inference_snr"] = snr.get("inference_snr", math.nan)
    row["generative_snr"] = snr.get("generative_snr", math.nan)
    return row


def summarize_runs(
    runs: Sequence[dict[str, Any]], snr: Sequence[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """One row per (estimator, K), in order of first appearance: for each metric of
    :data:`METRICS` its mean and sample std over seeds (``<metric>_mean``, ``<metric>_std``),
    the paired difference of the test log-likelihood against the first (estimator, K) at the
    same seeds (``delta_log_likelihood_mean``/``_std``), and the inference and generative
    network SNRs of the matching ``snr`` entry (NaN if none)."""
    keys = list(dict.fromkeys(_key(r) for r in runs))
    if not keys:
        return []
    by_key = {k: [r for r in runs if _key(r) == k] for k in keys}
    baseline = {r["seed"]: r["test_log_likelihood"] for r in by_key[keys[0]]}
    baseline_label = f"{keys[0][0]} (K={keys[0][1]})"
    snr_at = {_key(s): s for s in snr}
    return [_row(by_key[k], baseline, baseline_label, snr_at.get(k, {})) for k in keys]
