"""examples/compare_estimators.py: flags reach compare_estimators; bad ones exit clearly."""

from pathlib import Path

import pytest
import torch
from conftest import load_script
from test_compare_runner import tiny_data

from pyro_vae.experiments.compare import COMPARISON_FILES

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "compare_estimators.py"


def _load_example():
    return load_script(SCRIPT, "compare_estimators_example")


@pytest.fixture(scope="module")
def example():
    return _load_example()


def test_example_runs_end_to_end(example, monkeypatch, tmp_path):
    seen = {}

    def load(name, data_dir=None, **kw):
        seen.update(name=name, data_dir=data_dir)
        return tiny_data(n=30, m=10, side=28, name=name)

    monkeypatch.setattr("pyro_vae.experiments.compare.runner.load_dataset", load)
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
    assert sorted(p.name for p in out.iterdir()) == sorted(COMPARISON_FILES)
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


def test_example_gaps_show_where_each_estimators_gain_comes_from(example, monkeypatch, tmp_path):
    load = lambda name, data_dir=None, **kw: tiny_data(n=30, m=10, side=28, name=name)  # noqa: E731
    monkeypatch.setattr("pyro_vae.experiments.compare.runner.load_dataset", load)
    out = tmp_path / "run"
    argv = ["--estimators", "trace,iwae:2", "--seeds", "0,1", "--epochs", "1"]
    argv += ["--train-size", "20", "--test-size", "8", "--batch-size", "10", "--z-dim", "2"]
    argv += ["--hidden-dims", "8", "--eval-samples", "3", "--snr-repeats", "0", "--no-progress"]
    result = example.main([*argv, "--gaps", "4", "--no-figures", "--out", str(out)])
    assert result.config["gaps_images"] == 4 and result.config["gaps_ais_steps"] == 0
    for row in result.rows:
        total = row["approximation_gap_mean"] + row["amortization_gap_mean"]
        inference_gap = row["gap_log_likelihood_mean"] - row["elbo_amortized_mean"]
        assert total == pytest.approx(inference_gap, abs=1e-3)  # float32 means of ~-550
        assert row["approximation_gap_std"] is not None  # two seeds
    text = (out / "comparison.md").read_text()
    assert "Where the gain comes from: inference gaps on the first 4 test images" in text
    assert "log p(x) by IS, K = 3" in text and text.count("| `iwae` | 2 |") == 2


def test_a_failing_gaps_measurement_does_not_end_the_comparison(example, monkeypatch, tmp_path):
    load = lambda name, data_dir=None, **kw: tiny_data(n=30, m=10, side=28, name=name)  # noqa: E731
    monkeypatch.setattr("pyro_vae.experiments.compare.runner.load_dataset", load)

    def broken(*a, **k):
        raise RuntimeError("no gaps today")

    monkeypatch.setattr("pyro_vae.experiments.compare.runner._gaps", broken)
    argv = ["--estimators", "trace", "--seeds", "0", "--epochs", "1", "--train-size", "20"]
    argv += ["--test-size", "8", "--batch-size", "10", "--z-dim", "2", "--hidden-dims", "8"]
    argv += ["--eval-samples", "3", "--snr-repeats", "0", "--no-progress", "--no-figures"]
    result = example.main([*argv, "--gaps", "4", "--out", str(tmp_path)])
    assert result.runs[0]["gaps_error"] == "RuntimeError: no gaps today"
    assert "Where the gain comes from" in (tmp_path / "comparison.md").read_text()
