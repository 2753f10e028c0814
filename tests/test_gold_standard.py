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


@pytest.mark.parametrize("ais_images, calls", [(5, 1), (2, 2)])
def test_the_gaps_reuse_the_ais_estimate_of_their_images(monkeypatch, ais_images, calls):
    """AIS run on at least the gaps' images is their log p(x): AIS runs once. On fewer, the
    gaps run their own."""
    import pyro_vae as pv
    import pyro_vae.experiments.gold_standard as gold
    import pyro_vae.infer.gaps as gaps

    real, runs = gaps.ais_log_likelihood, []

    def counted(*args, **kwargs):
        runs.append(real(*args, **kwargs))
        return runs[-1]

    monkeypatch.setattr(gaps, "ais_log_likelihood", counted)
    monkeypatch.setattr(gold, "ais_log_likelihood", counted)
    torch.manual_seed(0)
    vae = pv.VAE(6, 2, (8,))
    x = torch.bernoulli(torch.rand(6, 6))
    spec = GoldStandard(
        ais_steps=5,
        ais_chains=2,
        ais_images=ais_images,
        gaps=True,
        gaps_images=3,
        gaps_local_steps=3,
    )
    out = evaluate_gold(vae, x, spec, eval_samples=4, log=lambda s: None)
    assert len(runs) == calls and out["gaps"]["log_likelihood_method"] == "ais"
    if calls == 1:
        ll = runs[0].log_likelihood[:3]
        assert out["gaps"]["log_likelihood"] == pytest.approx(float(ll.mean()))
        assert out["gaps"]["settings"]["log_likelihood"]["precomputed"] is True
    else:
        assert "precomputed" not in out["gaps"]["settings"]["log_likelihood"]


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


def test_a_failing_gold_standard_loses_nothing_else(example, fake_data, tmp_path, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("no AIS today")

    monkeypatch.setattr("pyro_vae.experiments.run.evaluate_gold", broken)
    argv = [*SMALL, "--out", str(tmp_path), "--z-dim", "2", "--hidden-dims", "16"]
    res = example.main([*argv, "--ais-steps", "5"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert (
        saved["gold_standard_error"] == "RuntimeError: no AIS today" == res["gold_standard_error"]
    )
    assert saved["test_log_likelihood"] == res["test_log_likelihood"] and saved["figures"]


def test_ais_of_a_flow_without_an_inverse_starts_from_the_prior():
    import pyro_vae as pv

    torch.manual_seed(0)
    vae = pv.VAE(6, 2, (8,), guide="planar")
    x = torch.bernoulli(torch.rand(4, 6))
    out = evaluate_gold(vae, x, GoldStandard(ais_steps=5, ais_chains=2), eval_samples=3, log=print)
    assert out["ais"]["initial"] == "prior" and out["ais"]["log_likelihood"] < 0


def test_gold_standard_under_ddp_is_refused_before_any_work(monkeypatch):
    import pyro_vae as pv
    from pyro_vae.experiments import run

    monkeypatch.setattr(run, "get_context", lambda: object())
    with pytest.raises(ValueError, match="run in one process"):
        run.run_experiment(
            pv.ModelConfig(x_dim=784),
            pv.TrainConfig(),
            distributed=True,
            gold=GoldStandard(ais_steps=10),
        )
