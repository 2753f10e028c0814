"""Bidirectional Monte Carlo against the closed-form log p(x) of linear-Gaussian models."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import (
    ExactPosterior,
    LinearGaussianHierarchy,
    exact_log_marginal,
    exact_posterior_params,
    linear_gaussian_vae,
    with_guide,
)

import pyro_vae as pv
from pyro_vae.infer.bdmc import bdmc


def _poor_guide(vae):
    """The exact posterior's mean shifted by 0.5, its marginal standard deviations halved."""

    def guide(x, num_data=None):
        loc, cov = exact_posterior_params(vae, x)
        with pyro.plate("data", len(x), dim=-1):
            pyro.sample("z", dist.Normal(loc + 0.5, 0.5 * cov.diagonal().sqrt()).to_event(1))

    return guide


def _like(n, d=5):
    return torch.zeros(n, d, dtype=torch.float64)


def test_the_simulated_data_come_from_the_model():
    vae = linear_gaussian_vae()
    out = bdmc(vae.model, vae.guide, _like(4000), num_steps=1, num_chains=1)
    x, z = out["data"], out["latents"]["z"]
    assert x.shape == (4000, 5) and x.dtype == torch.float64 and z.shape == (4000, 2)
    w, b = vae.decoder.out.weight.detach(), vae.decoder.out.bias.detach()
    cov = w @ w.T + 0.49 * torch.eye(5, dtype=torch.float64)
    # p(x) = N(b, W W^T + s^2 I): the sample moments within a few standard errors
    assert (x.mean(0) - b).abs().max() < 4 * (cov.diagonal().max() / 4000) ** 0.5
    torch.testing.assert_close(torch.cov(x.T), cov, rtol=0.1, atol=0.1)
    # and x | z ~ N(W z + b, s^2 I): the residuals have the likelihood's scale
    assert float((x - z @ w.T - b).std()) == pytest.approx(0.7, rel=0.03)


def test_with_the_exact_posterior_both_bounds_are_log_p_x():
    """q0 = p(z | x): forward and reverse weights are constant, lower = upper = log p(x)."""
    vae = linear_gaussian_vae()
    vae = with_guide(vae, ExactPosterior(vae))
    out = bdmc(vae.model, vae.guide, _like(6), num_steps=4, num_chains=3, leapfrog_steps=2)
    exact = exact_log_marginal(vae, out["data"]).detach()
    torch.testing.assert_close(out["lower"], exact, rtol=0, atol=1e-9)
    torch.testing.assert_close(out["upper"], exact, rtol=0, atol=1e-9)
    assert out["gap"] == pytest.approx(0.0, abs=1e-9)


def test_the_sandwich_holds_and_narrows_with_steps():
    """A poor guide: lower <= log p(x) <= upper on average over the data, within Monte Carlo
    error, and the gap shrinks as the steps grow."""
    vae = linear_gaussian_vae()
    guide = _poor_guide(vae)
    gaps = []
    for steps in (10, 100):
        out = bdmc(vae.model, guide, _like(16), num_steps=steps, num_chains=8, leapfrog_steps=5)
        exact = exact_log_marginal(vae, out["data"]).detach()
        n = len(exact)
        lo, hi = out["lower_stats"], out["upper_stats"]
        tol_lo = 3 * float(lo.stderr.pow(2).mean().sqrt()) / math.sqrt(n)
        tol_hi = 3 * float(hi.stderr.pow(2).mean().sqrt()) / math.sqrt(n)
        assert float((out["lower"] - exact).mean()) < tol_lo, (steps, out["gap"])
        assert float((out["upper"] - exact).mean()) > -tol_hi, (steps, out["gap"])
        gaps.append(out["gap"])
    assert gaps[1] < 0.5 * gaps[0] and gaps[1] < 0.3, gaps
    assert float(hi.acceptance.mean()) == pytest.approx(0.65, abs=0.1)


def test_a_hierarchy_and_the_two_layer_vae_run_through():
    m = LinearGaussianHierarchy(guide_kind="meanfield")
    out = bdmc(m.model, m.guide, _like(8, 4), num_steps=50, num_chains=8, leapfrog_steps=4)
    exact = m.exact_log_marginal(out["data"]).detach()
    assert set(out["latents"]) == {"z1", "z2"}
    assert float((out["lower"] - exact).mean()) < 0.1 < float((out["upper"] - exact).mean()) + 0.2
    for initial in ("guide", "prior"):
        torch.manual_seed(0)
        vae = pv.TwoLayerVAE(12, 3, (8,), z2_dim=2, hidden2_dims=(6,))
        out = bdmc(
            vae.model,
            vae.guide,
            torch.zeros(5, 12),
            num_steps=10,
            num_chains=4,
            leapfrog_steps=2,
            initial=initial,
        )
        assert out["data"].shape == (5, 12) and set(out["data"].unique().tolist()) <= {0.0, 1.0}
        assert torch.isfinite(out["lower"]).all() and torch.isfinite(out["upper"]).all()
        assert out["lower"].dtype == torch.float32


def test_a_model_with_two_observed_sites_is_refused():
    def model(x):
        with pyro.plate("data", len(x), dim=-1):
            z = pyro.sample("z", dist.Normal(x.new_zeros(len(x)), 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x[:, 0])
            pyro.sample("y", dist.Normal(z, 1.0), obs=x[:, 1])

    with pytest.raises(
        ValueError, match=r"one observed site, but the model has 2 \(\['x', 'y'\]\)"
    ):
        bdmc(model, None, _like(3, 2), num_steps=2, num_chains=2, initial="prior")
    with pytest.raises(ValueError, match="like must be a non-empty tensor"):
        bdmc(model, None, [1.0], num_steps=2, num_chains=2)
