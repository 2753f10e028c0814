"""Priors: densities integrate to 1, KL analytic against Monte Carlo, shapes and devices."""

import pyro.distributions as dist
import pytest
import torch
from torch.distributions import kl_divergence

import pyro_vae as pv
from pyro_vae.infer.evaluate import kl_to_prior


def _grid_integral(d, lo=-12.0, hi=12.0, n=801):
    """Trapezoid integral of exp(log_prob) over a 2-D box."""
    t = torch.linspace(lo, hi, n, dtype=torch.float64)
    zz = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        p = d.log_prob(zz).exp().reshape(n, n)
    return torch.trapezoid(torch.trapezoid(p, t, dim=1), t)


@pytest.mark.parametrize("name", ["normal", "learned_normal", "mixture", "vamp"])
def test_prior_density_integrates_to_one(name):
    vae = pv.VAE(3, 2, (8,), prior=name, num_components=4).double()
    with torch.no_grad():
        for p in vae.prior.parameters():
            p.add_(0.3 * torch.randn_like(p))
    d = vae.prior()
    assert d.event_shape == (2,) and d.batch_shape == ()
    assert abs(float(_grid_integral(d)) - 1.0) < 1e-4


@pytest.mark.parametrize("name", ["normal", "learned_normal", "mixture", "vamp"])
def test_prior_samples_and_broadcasts_in_the_data_plate(name):
    vae = pv.VAE(6, 3, (8,), prior=name, num_components=5)
    z = vae.prior().sample((7,))
    assert z.shape == (7, 3)
    assert vae.prior().log_prob(torch.zeros(4, 9, 3)).shape == (4, 9)
    assert vae.sample(5).shape == (5, 6)


@pytest.mark.parametrize("name", ["normal", "learned_normal", "mixture", "vamp"])
def test_prior_follows_to(name):
    """.to() moves/casts every prior tensor: buffers and parameters, never a stray constant."""
    vae = pv.VAE(6, 3, (8,), prior=name, num_components=5).to(torch.float64)
    d = vae.prior()
    assert d.sample().dtype == torch.float64
    assert d.log_prob(torch.zeros(3, dtype=torch.float64)).dtype == torch.float64


def test_learned_prior_parameters_are_trainable():
    vae = pv.VAE(6, 3, (8,), prior="mixture", num_components=5)
    names = {n for n, _ in vae.prior.named_parameters()}
    assert names == {"logits", "locs", "log_scales"}
    vamp = pv.VAE(6, 3, (8,), prior="vamp", num_components=5)
    assert [n for n, _ in vamp.prior.named_parameters()] == ["pseudo_inputs"]
    # the encoder is owned once: not re-registered under the prior
    assert not any(k.startswith("prior.") and "encoder" in k for k in vamp.state_dict())


def test_vamp_prior_is_the_mixture_of_encoder_posteriors():
    vae = pv.VAE(6, 2, (8,), prior="vamp", num_components=3).double()
    u = vae.prior.pseudo_inputs
    z = torch.randn(10, 2, dtype=torch.float64)
    q = vae.encoder.gaussian(u)
    expected = torch.logsumexp(q.log_prob(z.unsqueeze(1)), -1) - torch.log(torch.tensor(3.0))
    torch.testing.assert_close(vae.prior().log_prob(z), expected.double())


def test_unbound_vamp_prior_says_how_to_bind():
    with pytest.raises(RuntimeError, match="bind"):
        pv.priors.VampPrior(2, 6, 3)()


@pytest.mark.parametrize("prior", ["normal", "learned_normal"])
def test_analytic_kl_matches_monte_carlo(prior):
    torch.manual_seed(0)
    vae = pv.VAE(6, 3, (8,), prior=prior).double()
    with torch.no_grad():
        for p in vae.prior.parameters():
            p.add_(0.5 * torch.randn_like(p))
    x = torch.bernoulli(torch.rand(5, 6, dtype=torch.float64))
    q, p = vae.encode(x), vae.prior()
    analytic = kl_divergence(q, p.expand(q.batch_shape))
    z = q.sample((200000,))
    mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
    torch.testing.assert_close(analytic, mc, atol=0.01, rtol=0.01)
    torch.testing.assert_close(kl_to_prior(vae, x), analytic)


def test_kl_to_prior_falls_back_to_monte_carlo_for_a_mixture():
    vae = pv.VAE(6, 2, (8,), prior="mixture", num_components=3).double()
    x = torch.bernoulli(torch.rand(4, 6, dtype=torch.float64))
    with pytest.raises(NotImplementedError):
        kl_divergence(vae.encode(x), vae.prior().expand([4]))
    torch.manual_seed(0)
    kl = kl_to_prior(vae, x, num_samples=100000)
    q, p = vae.encode(x), vae.prior()
    z = q.sample((100000,))
    torch.testing.assert_close(kl, (q.log_prob(z) - p.log_prob(z)).mean(0), atol=0.03, rtol=0)


def test_user_written_prior_in_a_few_lines():
    class StudentTPrior(torch.nn.Module):
        def __init__(self, z_dim):
            super().__init__()
            self.register_buffer("loc", torch.zeros(z_dim))

        def forward(self):
            return dist.StudentT(4.0, self.loc, 1.0).to_event(1)

    vae = pv.VAE(6, 3, (8,), prior=StudentTPrior(3))
    assert vae.config.prior == "custom:StudentTPrior"
    x = torch.bernoulli(torch.rand(16, 6))
    loss = pv.make_elbo("trace").differentiable_loss(vae.model, vae.guide, x)
    assert torch.isfinite(loss)


def test_unknown_prior_lists_valid_names():
    with pytest.raises(ValueError, match="unknown prior 'gauss'.*learned_normal.*mixture.*vamp"):
        pv.VAE(6, 3, prior="gauss")
    with pytest.raises(ValueError, match="num_components must be >= 1"):
        pv.priors.MixturePrior(2, 0)
