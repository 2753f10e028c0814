"""pyro_vae.experiments.compare.runner: compare_estimators end to end on tiny data."""

import csv
import json
import math
import statistics

import pytest
import torch

import pyro_vae as pv
from pyro_vae.experiments.compare import (
    COMPARISON_FILES,
    CompareConfig,
    compare_estimators,
    parse_estimators,
    runner,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tiny_data(n: int = 40, m: int = 12, side: int = 4, name: str = "tiny") -> pv.ImageData:
    g = torch.Generator().manual_seed(0)
    return pv.ImageData(
        name=name,
        train_x=torch.rand(n, side * side, generator=g),
        train_y=torch.randint(0, 3, (n,), generator=g),
        test_x=torch.rand(m, side * side, generator=g),
        test_y=torch.randint(0, 3, (m,), generator=g),
        image_shape=(side, side),
    )


def tiny_config(**changes) -> CompareConfig:
    kw = dict(
        estimators=tuple(parse_estimators("trace,iwae", "1,3")),
        seeds=(0, 1, 2),
        epochs=2,
        model=pv.ModelConfig(x_dim=16, z_dim=2, hidden_dims=(8,)),
        batch_size=10,
        eval_samples=4,
        eval_every=1,
        snr_k=(1, 3),
        snr_repeats=3,
        progress=False,
    )
    kw.update(changes)
    return CompareConfig(**kw)


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    result = compare_estimators(tiny_config(), data=tiny_data(), out_dir=out, log=lambda m: None)
    return result, out


def test_cuda_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(RuntimeError, match=r"CUDA was requested.*Drop\s+--cuda"):
        compare_estimators(tiny_config(device="cuda"), data=tiny_data(), out_dir=None)


def test_x_dim_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="x_dim is 16 but .* 25 pixels"):
        compare_estimators(tiny_config(), data=tiny_data(side=5), out_dir=None)


def test_one_row_per_estimator_and_k_with_correct_statistics(comparison):
    result, _ = comparison
    keys = [(r["estimator"], r["num_particles"]) for r in result.rows]
    assert keys == [("trace", 1), ("trace", 3), ("iwae", 1), ("iwae", 3)]
    assert len(result.runs) == 4 * 3
    for row in result.rows:
        group = [
            r
            for r in result.runs
            if (r["estimator"], r["num_particles"]) == (row["estimator"], row["num_particles"])
        ]
        lls = [r["test_log_likelihood"] for r in group]
        assert sorted(r["seed"] for r in group) == [0, 1, 2]
        assert row["test_log_likelihood_mean"] == pytest.approx(statistics.mean(lls))
        assert row["test_log_likelihood_std"] == pytest.approx(statistics.stdev(lls))
        # each run's final numbers are its last history record's
        for r in group:
            assert r["test_log_likelihood"] == r["history"][-1]["test_log_likelihood"]
            assert all(math.isfinite(h["test_log_likelihood"]) for h in r["history"])


def test_equal_epoch_budget_and_same_start_per_seed(comparison):
    result, _ = comparison
    assert {r["epochs"] for r in result.runs} == {2}
    assert {r["stopped_by"] for r in result.runs} == {"epochs"}
    # Same seed: same initial weights, minibatches and draws. IWAE with K=1 is Trace_ELBO's
    # estimator, so their runs agree to rounding; across seeds they differ.
    by = {(r["estimator"], r["num_particles"], r["seed"]): r for r in result.runs}
    for seed in (0, 1, 2):
        a, b = by[("trace", 1, seed)], by[("iwae", 1, seed)]
        for ha, hb in zip(a["history"], b["history"], strict=True):
            assert ha["train_elbo"] == pytest.approx(hb["train_elbo"], rel=1e-5)
            assert ha["test_log_likelihood"] == pytest.approx(hb["test_log_likelihood"], rel=1e-5)
    assert by[("trace", 1, 0)]["test_elbo"] != pytest.approx(by[("trace", 1, 1)]["test_elbo"])


def test_snr_for_every_estimator_at_every_k(comparison):
    result, _ = comparison
    measured = {(s["estimator"], s["num_particles"]) for s in result.snr}
    assert measured == {("trace", 1), ("trace", 3), ("iwae", 1), ("iwae", 3)}
    for s in result.snr:
        assert s["inference_snr"] > 0 and s["generative_snr"] > 0
    row = result.rows[3]
    snr = next(s for s in result.snr if (s["estimator"], s["num_particles"]) == ("iwae", 3))
    assert row["inference_snr"] == snr["inference_snr"]


def test_files_written(comparison):
    result, out = comparison
    assert sorted(p.name for p in out.iterdir()) == sorted(COMPARISON_FILES)
    assert set(result.files) == set(COMPARISON_FILES)
    md = (out / "comparison.md").read_text()
    assert md.count("\n| `") == 4 and "3 seeds" in md and "2 epochs per run" in md
    with open(out / "comparison.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [(t["estimator"], int(t["num_particles"])) for t in table] == [
        (r["estimator"], r["num_particles"]) for r in result.rows
    ]
    for t, r in zip(table, result.rows, strict=True):
        assert float(t["test_log_likelihood_mean"]) == pytest.approx(r["test_log_likelihood_mean"])

    def strict(value):
        raise ValueError(f"non-standard JSON constant {value}")

    payload = json.loads((out / "comparison.json").read_text(), parse_constant=strict)
    assert len(payload["runs"]) == 12 and len(payload["rows"]) == 4
    assert payload["config"]["estimators"] == ["trace:1", "trace:3", "iwae:1", "iwae:3"]
    for name in ("log_likelihood_curves.png", "snr_vs_k.png"):
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE


def test_seconds_budget_stops_early_and_still_evaluates(tmp_path):
    config = tiny_config(
        estimators=tuple(parse_estimators("trace,dreg:2")),
        seeds=(0,),
        epochs=4,
        seconds=1e-9,
        eval_every=3,
        snr_repeats=0,
    )
    result = compare_estimators(config, data=tiny_data(), out_dir=tmp_path, log=lambda m: None)
    assert [r["epochs"] for r in result.runs] == [1, 1]
    assert {r["stopped_by"] for r in result.runs} == {"seconds"}
    for r in result.runs:
        last = r["history"][-1]
        assert last["eval_samples"] == 4 and math.isfinite(last["test_log_likelihood"])
    assert result.snr == [] and "snr_vs_k.png" not in result.files
    assert (
        "1e-09 s of training per run, at most 4 epochs" in (tmp_path / "comparison.md").read_text()
    )


def test_a_diverged_run_is_reported_and_the_others_go_on(tmp_path, monkeypatch):
    real_train = runner.train

    def train(vae, train_x, test_x, config, callbacks=()):
        if config.elbo == "iwae" and config.seed == 1:
            raise pv.TrainingDiverged("training diverged: a loss of nan at epoch 1, step 3")
        return real_train(vae, train_x, test_x, config, callbacks=callbacks)

    monkeypatch.setattr(runner, "train", train)
    config = tiny_config(estimators=tuple(parse_estimators("trace,iwae:2")), seeds=(0, 1))
    result = compare_estimators(config, data=tiny_data(), out_dir=tmp_path, log=lambda m: None)
    failed = [r for r in result.runs if "error" in r]
    assert [(r["estimator"], r["seed"], r["stopped_by"]) for r in failed] == [
        ("iwae", 1, "diverged")
    ]
    assert math.isnan(result.rows[1]["test_log_likelihood_mean"])
    assert math.isfinite(result.rows[0]["test_log_likelihood_mean"])
    assert "| `iwae` | 2 | n/a | n/a |" in (tmp_path / "comparison.md").read_text()
    assert len(result.snr) == 5  # trace and iwae at K = 1, 2, 3, at the trace run (seed 0)
