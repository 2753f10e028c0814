"""The model protocol: any nn.Module with ``model(x, num_data=None)`` / ``guide(x, num_data=None)``.

A two-layer linear-Gaussian hierarchy, written as a plain module (not a VAE), has a closed-form
marginal, posterior and KL: the reference for every metric of a hierarchical model.
"""

import pytest
import torch
from linear_gaussian import LinearGaussianHierarchy

import pyro_vae as pv
from pyro_vae.infer.evaluate import kl_to_prior
from pyro_vae.infer.log_weights import log_weights


def _x(n=120, seed=1):
    return 2.0 * torch.randn(
        n, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


@pytest.mark.parametrize("k", [1, 2, 17])
def test_with_the_exact_posterior_the_estimate_and_the_elbo_are_log_p_x_for_every_k(k):
    m, x = LinearGaussianHierarchy(), _x()
    with torch.no_grad():
        exact = m.exact_log_marginal(x)
        stats = pv.log_likelihood(m.model, m.guide, x, num_samples=k, return_stats=True)
    torch.testing.assert_close(stats.log_likelihood, exact, rtol=0, atol=1e-10)
    torch.testing.assert_close(stats.elbo, exact, rtol=0, atol=1e-10)


def test_evaluate_kl_is_the_closed_form_kl_of_the_joint_posterior_to_the_joint_prior():
    m, x = LinearGaussianHierarchy(), _x(300)
    torch.manual_seed(0)
    with torch.no_grad():
        exact = m.exact_kl(x)
        got = kl_to_prior(m, x, num_samples=4000)
        result = pv.evaluate(m, x, num_samples=4)
    # Monte Carlo (no closed form between a MultivariateNormal guide and a diagonal prior)
    torch.testing.assert_close(got.mean(), exact.mean(), rtol=2e-3, atol=0)
    assert result["kl"] == pytest.approx(float(exact.mean()), rel=1e-2)
    assert result["kl_monte_carlo"] == ["z1", "z2"] and result["kl_closed_form"] == []
    torch.testing.assert_close(
        torch.tensor(result["log_likelihood"], dtype=torch.float64),
        m.exact_log_marginal(x).mean().detach(),
    )


def test_a_closed_form_kl_is_used_only_where_it_is_exact():
    """With a mean-field guide every site has a registered Normal-Normal KL, but the KL of z1
    against p(z1 | z2) holds z2 fixed while z2 ~ q(z2 | z1) depends on z1: only the last site
    (z2) may use it. The reported KL equals a pure Monte Carlo E_q[log q - log p(z)] and the
    naive all-closed-form sum does not."""
    torch.manual_seed(3)
    m, x = LinearGaussianHierarchy(guide_kind="meanfield"), _x(200)
    with torch.no_grad():
        result = pv.evaluate(m, x, num_samples=2)
        got = kl_to_prior(m, x, num_samples=10000).mean()
        mc = log_weights(m.model, m.guide, x, num_samples=20000)
        reference = (mc.log_q - (mc.log_p - mc.log_lik)).mean()  # standard error about 0.007
        everywhere = log_weights(m.model, m.guide, x, num_samples=2000, analytic_kl={"z1", "z2"})
        default = log_weights(m.model, m.guide, x, num_samples=1, analytic_kl=True)
    assert everywhere.analytic == ("z1", "z2") and default.analytic == ("z2",)
    naive = everywhere.kl.mean()  # every site in closed form: nothing left in log_q
    assert result["kl_closed_form"] == ["z2"] and result["kl_monte_carlo"] == ["z1"]
    assert float(got) == pytest.approx(float(reference), abs=0.04)
    assert abs(float(naive) - float(reference)) > 0.15


def test_with_a_mean_field_guide_the_estimate_converges_in_k():
    torch.manual_seed(0)
    m, x = LinearGaussianHierarchy(guide_kind="meanfield"), _x(60)
    with torch.no_grad():
        exact = m.exact_log_marginal(x).mean()
        gaps = [
            float(exact - pv.log_likelihood(m.model, m.guide, x, num_samples=k).mean())
            for k in (1, 10, 100, 3000)
        ]
    assert all(g > 0 for g in gaps[:2]) and gaps == sorted(gaps, reverse=True), gaps
    assert gaps[-1] < 0.1 * gaps[0], gaps


def test_active_units_are_counted_per_latent_site():
    m, x = LinearGaussianHierarchy(), _x(500)
    with torch.no_grad():
        result = pv.evaluate(m, x, num_samples=2)
        m1, _, mm, _ = m.exact_posterior(x)
    # E[z1 | x] = m1 exactly; E[z2 | x] = M (m1 - a): each dimension varies with x
    expected = {
        "z1": int((m1.var(0) > 0.01).sum()),
        "z2": int((((m1 - m.a) @ mm.T).var(0) > 0.01).sum()),
    }
    assert result["active_units_per_site"] == expected
    assert result["active_units"] == sum(expected.values())
    assert result["latent_dims"] == {"z1": 3, "z2": 2}


def test_a_plain_module_trains_evaluates_checkpoints_and_resumes(tmp_path):
    x = _x(256)
    cfg = pv.TrainConfig(epochs=3, batch_size=64, eval_every=1, eval_samples=5, progress=False)

    def fresh():
        torch.manual_seed(0)
        return LinearGaussianHierarchy(guide_kind="meanfield")

    whole = fresh()
    full = pv.train(whole, x, x[:64], cfg, out_dir=tmp_path / "whole")
    assert full.history[-1]["train_elbo"] > full.history[0]["train_elbo"]
    part = fresh()
    pv.train(
        part, x, x[:64], pv.TrainConfig(**{**cfg.to_dict(), "epochs": 2}), out_dir=tmp_path / "r"
    )
    resumed = fresh()
    again = pv.train(resumed, x, x[:64], cfg, out_dir=tmp_path / "r", resume=True)

    def timeless(history):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in history]

    assert timeless(again.history) == timeless(full.history)
    for (name, p), q in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(p, q), name
    loaded = pv.load_model(tmp_path / "r", model=LinearGaussianHierarchy(guide_kind="meanfield"))
    torch.manual_seed(5)
    a = pv.log_likelihood(loaded.model, loaded.guide, x[:32], num_samples=8)
    torch.manual_seed(5)
    b = pv.log_likelihood(whole.model, whole.guide, x[:32], num_samples=8)
    assert torch.equal(a, b)
    with pytest.raises(pv.CheckpointError, match="user-written model .*LinearGaussianHierarchy"):
        pv.load_model(tmp_path / "r")


def test_resuming_a_plain_module_into_another_class_is_refused(tmp_path):
    x = _x(64)
    cfg = pv.TrainConfig(epochs=1, batch_size=32, eval_every=0, progress=False)
    pv.train(LinearGaussianHierarchy(guide_kind="meanfield"), x, config=cfg, out_dir=tmp_path)
    other = pv.VAE(4, 3, (8,), likelihood="gaussian").double()
    with pytest.raises(pv.CheckpointError, match="model class"):
        pv.train(
            other,
            x,
            config=pv.TrainConfig(epochs=2, batch_size=32, eval_every=0, progress=False),
            out_dir=tmp_path,
            resume=True,
        )
