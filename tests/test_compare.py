"""pyro_vae.experiments.compare and examples/compare_estimators.py: the comparison harness."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import statistics
from pathlib import Path

import pytest
import torch

import pyro_vae as pv
from pyro_vae.experiments import compare
from pyro_vae.experiments.compare import (
    CompareConfig,
    EstimatorSpec,
    compare_estimators,
    format_markdown_table,
    parse_estimators,
    summarize_runs,
)

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "compare_estimators.py"
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


# ------------------------------------------------------------------------------ parsing


def test_parse_estimators_name_k_and_k_lists():
    specs = parse_estimators("trace, IWAE:5,dreg", "1,5")
    assert specs == [
        EstimatorSpec("trace", 1),
        EstimatorSpec("trace", 5),
        EstimatorSpec("iwae", 5),
        EstimatorSpec("dreg", 1),
        EstimatorSpec("dreg", 5),
    ]
    assert parse_estimators(["iwae:5", "iwae:5", "tail-adaptive:3"]) == [
        EstimatorSpec("iwae", 5),
        EstimatorSpec("tail_adaptive", 3),
    ]
    assert parse_estimators("stl", 2) == [EstimatorSpec("stl", 2)]
    assert EstimatorSpec("dreg", 5).label == "dreg (K=5)"


@pytest.mark.parametrize(
    "estimators, ks, message",
    [
        ("trace,iwea", "1", r"unknown estimator 'iwea'; valid estimators are: .*dreg.*iwae"),
        ("iwae:0", "1", r"K in 'iwae:0'.*positive integer"),
        ("iwae:five", "1", r"K in 'iwae:five'.*positive integer"),
        ("iwae", "1,0", r"--num-particles must be a positive integer"),
        ("iwae", "", r"--num-particles is empty"),
        ("tail_adaptive:1", "1", r"tail_adaptive.*K=1.*K >= 2"),
        (",", "1", r"no estimators given; choose from: .*trace"),
    ],
)
def test_parse_estimators_errors(estimators, ks, message):
    with pytest.raises(ValueError, match=message):
        parse_estimators(estimators, ks)


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(epochs=None, seconds=None), "give a budget"),
        (dict(seconds=0.0), "seconds must be a positive number"),
        (dict(seeds=(0, 0)), "seeds must be distinct"),
        (dict(seeds=()), "seeds is empty"),
        (dict(snr_repeats=1), "snr_repeats"),
        (dict(snr_k=(0, 5)), "snr_k must be a positive integer"),
        (dict(estimators=(EstimatorSpec("nope", 1),)), "unknown estimator 'nope'"),
    ],
)
def test_config_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**changes)


def test_cuda_without_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(RuntimeError, match=r"CUDA was requested.*Drop\s+--cuda"):
        compare_estimators(tiny_config(device="cuda"), data=tiny_data(), out_dir=None)


def test_x_dim_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="x_dim is 16 but .* 25 pixels"):
        compare_estimators(tiny_config(), data=tiny_data(side=5), out_dir=None)


# ------------------------------------------------------------------------------ summary


def _fake_runs():
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
    runs = _fake_runs()
    snr = [{"estimator": "iwae", "num_particles": 5, "inference_snr": 0.5, "generative_snr": 3.0}]
    rows = summarize_runs(runs, snr)
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
    table = format_markdown_table(rows)
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 2
    assert "Δ log p(x) vs trace (K=1)" in lines[0]
    mean, std = rows[1]["test_log_likelihood_mean"], rows[1]["test_log_likelihood_std"]
    assert f"{mean:.2f} ± {std:.2f}".replace("-", "−") in lines[3]
    assert "+1.10 ± 0.10" in lines[3] and "(baseline)" in lines[2] and "n/a" in lines[2]


def test_summary_single_seed_has_no_std():
    rows = summarize_runs([r for r in _fake_runs() if r["seed"] == 0])
    assert rows[0]["test_log_likelihood_std"] is None
    assert "±" not in format_markdown_table(rows).splitlines()[2].split("|")[3]


def test_budget_callback_stops_after_the_epoch_that_exhausts_it():
    budget = compare._Budget(1.0)
    budget({"epoch": 1, "seconds": 0.4})
    budget({"epoch": 2, "seconds": 0.4})
    with pytest.raises(compare._BudgetExhausted):
        budget({"epoch": 3, "seconds": 0.4})
    assert [r["epoch"] for r in budget.history] == [1, 2, 3]
    unlimited = compare._Budget(None)
    for e in range(5):
        unlimited({"epoch": e, "seconds": 100.0})


# --------------------------------------------------------------------------- end to end


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
    assert sorted(p.name for p in out.iterdir()) == sorted(compare.COMPARISON_FILES)
    assert set(result.files) == set(compare.COMPARISON_FILES)
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
    real_train = compare.train

    def train(vae, train_x, test_x, config, callbacks=()):
        if config.elbo == "iwae" and config.seed == 1:
            raise pv.TrainingDiverged("training diverged: a loss of nan at epoch 1, step 3")
        return real_train(vae, train_x, test_x, config, callbacks=callbacks)

    monkeypatch.setattr(compare, "train", train)
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


# ----------------------------------------------------------------------------- example


def _load_example():
    spec = importlib.util.spec_from_file_location("compare_estimators_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def example():
    return _load_example()


def test_example_runs_end_to_end(example, monkeypatch, tmp_path):
    seen = {}

    def load(name, data_dir=None, **kw):
        seen.update(name=name, data_dir=data_dir)
        return tiny_data(n=30, m=10, side=28, name=name)

    monkeypatch.setattr("pyro_vae.experiments.compare.load_dataset", load)
    out = tmp_path / "run"
    result = example.main(
        [
            "--estimators",
            "trace,dreg:2",
            "--seeds",
            "0,1",
            "--epochs",
            "1",
            "--train-size",
            "20",
            "--test-size",
            "8",
            "--batch-size",
            "10",
            "--z-dim",
            "2",
            "--hidden-dims",
            "8",
            "--eval-samples",
            "3",
            "--snr-k",
            "1,2",
            "--snr-repeats",
            "2",
            "--dataset",
            "fashion-mnist",
            "--data-dir",
            "somewhere",
            "--no-progress",
            "--out",
            str(out),
        ]
    )
    assert seen == {"name": "fashion-mnist", "data_dir": "somewhere"}
    assert sorted(p.name for p in out.iterdir()) == sorted(compare.COMPARISON_FILES)
    assert [(r["estimator"], r["num_particles"]) for r in result.rows] == [
        ("trace", 1),
        ("dreg", 2),
    ]
    assert result.config["train_size"] == 20 and result.config["test_size"] == 8
    assert result.config["model"]["hidden_dims"] == [8]


def test_example_preset_and_explicit_flags(example, monkeypatch):
    seen = {}
    monkeypatch.setattr(example, "compare_estimators", lambda config, **kw: seen.update(c=config))
    example.main(["--preset", "burda2015", "--epochs", "7", "--no-progress"])
    c = seen["c"]
    assert c.model.hidden_dims == (200, 200) and c.model.z_dim == 50
    assert c.model.activation == "tanh"
    assert (c.batch_size, c.lr_schedule, c.eval_samples, c.epochs) == (20, "burda2015", 5000, 7)
    example.main(["--seconds", "30"])
    assert seen["c"].seconds == 30 and seen["c"].epochs is None
    example.main([])
    assert seen["c"].epochs == 5 and [s.label for s in seen["c"].estimators] == [
        "trace (K=1)",
        "iwae (K=5)",
        "stl (K=1)",
        "dreg (K=5)",
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--estimators", "trace,iwea"], "unknown estimator 'iwea'; valid estimators are:"),
        (["--estimators", "iwae:0"], "positive integer"),
        (["--num-particles", "0"], "positive integer"),
        (["--estimators", "tail_adaptive"], "K >= 2"),
        (["--cuda"], "CUDA was requested"),
    ],
)
def test_example_bad_arguments(example, capsys, argv, message):
    if argv == ["--cuda"] and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(SystemExit) as exc:
        example.main([*argv, "--no-progress", "--out", "/nonexistent/never-written"])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_example_bad_flag_values(example, capsys):
    for argv in (["--seeds", "a"], ["--snr-k", "0"], ["--epochs", "0"], ["--seconds", "-1"]):
        with pytest.raises(SystemExit) as exc:
            example.main(argv)
        assert exc.value.code == 2
    assert "--snr-k values must be >= 1" in capsys.readouterr().err
