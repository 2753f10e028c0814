"""pyro_vae.experiments.compare.stats: means, sample stds and paired deltas over seeds."""

import math
import statistics

import pytest

from pyro_vae.experiments.compare import summarize_runs

SNR = [{"estimator": "iwae", "num_particles": 5, "inference_snr": 0.5, "generative_snr": 3.0}]


def fake_runs():
    runs = []
    for name, k, base in (("trace", 1, -100.0), ("iwae", 5, -99.0)):
        for seed, noise in zip((0, 1, 2), (0.3, -0.1, 0.5), strict=True):
            runs.append(
                {
                    "estimator": name,
                    "num_particles": k,
                    "seed": seed,
                    "epochs": 3,
                    "test_log_likelihood": base + noise + (0.1 * seed if k == 5 else 0.0),
                    "test_elbo": base - 5 + noise,
                    "kl": 20 + seed,
                    "active_units": 10 + seed,
                    "seconds_per_epoch": 1.0 + k,
                }
            )
    return runs


def test_summary_mean_std_and_paired_delta():
    runs = fake_runs()
    rows = summarize_runs(runs, SNR)
    assert [(r["estimator"], r["num_particles"]) for r in rows] == [("trace", 1), ("iwae", 5)]
    for row in rows:
        group = [
            r
            for r in runs
            if (r["estimator"], r["num_particles"]) == (row["estimator"], row["num_particles"])
        ]
        for metric in ("test_log_likelihood", "test_elbo", "kl", "active_units"):
            values = [r[metric] for r in group]
            assert row[f"{metric}_mean"] == pytest.approx(statistics.mean(values))
            assert row[f"{metric}_std"] == pytest.approx(statistics.stdev(values))
        assert row["num_seeds"] == 3 and row["seeds"] == [0, 1, 2]
    # paired: iwae - trace at the same seed = 1 + 0.1 * seed
    assert rows[1]["delta_log_likelihood_mean"] == pytest.approx(1.1)
    assert rows[1]["delta_log_likelihood_std"] == pytest.approx(statistics.stdev([1.0, 1.1, 1.2]))
    assert rows[0]["delta_log_likelihood_mean"] == 0.0
    assert rows[1]["inference_snr"] == 0.5 and math.isnan(rows[0]["inference_snr"])


def test_summary_single_seed_has_no_std():
    rows = summarize_runs([r for r in fake_runs() if r["seed"] == 0])
    assert rows[0]["test_log_likelihood_std"] is None
