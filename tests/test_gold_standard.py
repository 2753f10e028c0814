"""--ais-steps and --gaps in the flagship run (pyro_vae/experiments/gold_standard.py)."""

import json

import pytest
import torch
from test_examples import SMALL, _fake_data, _load_example

from pyro_vae.experiments.gold_standard import GoldStandard, evaluate_gold, gold_lines
from pyro_vae.experiments.run import summary


@pytest.fixture(scope="module")
def example():
    return _load_example()


@pytest.fixture
def fake_data(monkeypatch):
    load = lambda name, data_dir=None, **kw: _fake_data(name)  # noqa: E731
    monkeypatch.setattr("pyro_vae.experiments.run.load_dataset", load)


def test_ais_and_gaps_reach_results_and_the_summary(example, fake_data, tmp_path, capsys):
    argv = [*SMALL, "--out", str(tmp_path), "--z-dim", "2", "--hidden-dims", "16", "--no-figures"]
    argv += ["--ais-steps", "20", "--ais-chains", "3", "--ais-test-size", "7"]
    argv += ["--gaps", "--gaps-test-size", "4"]
    res = example.main(argv)
    ais, gaps = res["ais"], res["gaps"]
    assert (ais["images"], ais["num_steps"], ais["num_chains"]) == (7, 20, 3)
    assert ais["is_samples"] == res["eval_samples"] == 5
    diff = ais["log_likelihood"] - ais["is_log_likelihood"]
    assert ais["ais_minus_is"] == pytest.approx(diff, abs=1e-3)  # float32 means of ~-550
    assert 0 < ais["acceptance"] <= 1 and ais["seconds"] > 0
    assert gaps["images"] == 4 and gaps["log_likelihood_method"] == "ais"
    total = gaps["approximation_gap"] + gaps["amortization_gap"]
    assert gaps["inference_gap"] == pytest.approx(total, abs=1e-3)
    assert json.loads((tmp_path / "results.json").read_text())["ais"] == ais
    out = capsys.readouterr().out
    assert "AIS log-likelihood" in out and "inference gap" in out
    assert "AIS - IS" in summary(res, tmp_path)


def test_gaps_without_ais_use_importance_sampling(example, fake_data, tmp_path):
    argv = [*SMALL, "--out", str(tmp_path), "--z-dim", "2", "--hidden-dims", "16", "--no-figures"]
    res = example.main([*argv, "--gaps", "--gaps-test-size", "3"])
    assert "ais" not in res and res["gaps"]["log_likelihood_method"] == "is"
    assert res["gaps"]["settings"]["log_likelihood"] == {"num_samples": 5}


def test_no_flags_no_gold_standard_and_the_rng_is_left_alone():
    import pyro_vae as pv

    torch.manual_seed(0)
    vae = pv.VAE(6, 2, (8,))
    x = torch.bernoulli(torch.rand(5, 6))
    assert not GoldStandard().enabled and gold_lines({}) == []
    torch.manual_seed(1)
    before = torch.get_rng_state()
    spec = GoldStandard(ais_steps=5, ais_chains=2, gaps=True, gaps_local_steps=3)
    a = evaluate_gold(vae, x, spec, eval_samples=4, log=lambda s: None)
    assert torch.equal(torch.get_rng_state(), before)
    b = evaluate_gold(vae, x, spec, eval_samples=4, log=lambda s: None)
    assert a["ais"]["log_likelihood"] == b["ais"]["log_likelihood"]  # seeded: reproducible


@pytest.mark.parametrize(
    "kw, message",
    [
        ({"ais_steps": -1}, "ais_steps must be >= 0"),
        ({"ais_chains": 0}, "ais_chains must be >= 1"),
        ({"gaps_images": 0}, "gaps_images must be >= 1"),
    ],
)
def test_bad_settings_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        GoldStandard(**kw)
