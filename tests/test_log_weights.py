"""pyro_vae.log_weights: the one function that runs a model/guide pair, against Pyro's own
estimators and closed forms."""

import pyro
import pyro.distributions as dist
import pyro.infer as infer
import pyro.poutine as poutine
import pytest
import torch
from gradcheck import loss_grads_and_rng
from linear_gaussian import ExactPosterior, exact_log_marginal, linear_gaussian_vae, with_guide

import pyro_vae as pv
from pyro_vae.infer.log_weights import NotPerDatapoint


def _vae(prior="normal", guide="normal"):
    torch.manual_seed(0)
    return pv.VAE(6, 3, (8,), prior=prior, guide=guide, num_components=3).double()


def _x(n=10):
    return torch.bernoulli(torch.rand(n, 6, generator=torch.Generator().manual_seed(1))).double()


@pytest.mark.parametrize("num_particles", [1, 4])
@pytest.mark.parametrize(
    "ours,pyros",
    [("trace", infer.Trace_ELBO), ("meanfield", infer.TraceMeanField_ELBO)],
)
@pytest.mark.parametrize("prior", ["normal", "mixture", "vamp"])
@pytest.mark.parametrize("guide", ["normal", "iaf"])
def test_trace_and_meanfield_equal_pyros_own_estimators(ours, pyros, prior, guide, num_particles):
    """Our estimators are functions of log weights; on per-datapoint models they are Pyro's
    Trace_ELBO / TraceMeanField_ELBO, value and gradient, in float64."""
    vae, x = _vae(prior, guide), _x()
    reference = pyros(
        num_particles=num_particles, vectorize_particles=num_particles > 1, max_plate_nesting=1
    )
    expected, expected_grads, _ = loss_grads_and_rng(
        lambda: reference.differentiable_loss(vae.model, vae.guide, x, num_data=40), vae
    )
    elbo = pv.make_elbo(ours, num_particles)
    got, grads, _ = loss_grads_and_rng(
        lambda: elbo.differentiable_loss(vae.model, vae.guide, x, num_data=40), vae
    )
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-9)
    assert grads.keys() == expected_grads.keys()
    for name, g in grads.items():
        torch.testing.assert_close(g, expected_grads[name], rtol=1e-8, atol=1e-9, msg=name)


def test_shapes_scale_and_split_of_the_analytic_kl():
    vae, x = _vae(), _x()
    lw = pv.log_weights(vae.model, vae.guide, x, num_data=40, num_samples=5)
    assert lw.log_p.shape == lw.log_q.shape == (5, 10) and lw.kl is None
    assert lw.scale == 4.0 and lw.latents[0].shape == (5, 10, 3)
    torch.manual_seed(0)
    mf = pv.log_weights(vae.model, vae.guide, x, num_samples=5, analytic_kl=True)
    torch.manual_seed(0)
    mc = pv.log_weights(vae.model, vae.guide, x, num_samples=5)
    # The KL of a Gaussian q to N(0, I) is taken out of both log densities ...
    q = vae.encode(x)
    kl = torch.distributions.kl_divergence(q, vae.prior().expand(q.batch_shape))
    torch.testing.assert_close(mf.kl, kl.expand(5, 10))
    assert torch.equal(mf.log_q, torch.zeros(5, 10))
    # ... and log p keeps the likelihood only: log p(x|z) = log p(x, z) - log p(z).
    log_pz = vae.prior().log_prob(mc.latents[0])
    torch.testing.assert_close(mf.log_p, mc.log_p - log_pz)


def test_exact_posterior_gives_exact_log_weights():
    """Linear-Gaussian model with its exact posterior as guide: every log weight is log p(x)."""
    torch.manual_seed(0)
    vae = linear_gaussian_vae()
    vae = with_guide(vae, ExactPosterior(vae))
    x = torch.randn(16, 5, dtype=torch.float64)
    lw = pv.log_weights(vae.model, vae.guide, x, num_samples=7)
    expected = exact_log_marginal(vae, x).expand(7, 16)
    torch.testing.assert_close(lw.log_w, expected, rtol=0, atol=1e-10)


def test_pathwise_evaluates_at_detached_leaves_with_the_same_values():
    """pathwise=True: the same draws and values, with log p and log q functions of leaf copies
    of z (the guide replayed there), the draws keeping their path to the encoder."""
    vae, x = _vae(guide="iaf"), _x()
    torch.manual_seed(0)
    plain = pv.log_weights(vae.model, vae.guide, x, num_samples=3)
    torch.manual_seed(0)
    lw = pv.log_weights(vae.model, vae.guide, x, num_samples=3, pathwise=True)
    torch.testing.assert_close(lw.log_w, plain.log_w)
    (leaf,), (z,) = lw.leaves, lw.latents
    assert leaf.is_leaf and leaf.requires_grad and torch.equal(leaf, z) and z.grad_fn is not None
    (g,) = torch.autograd.grad(lw.log_q.sum(), leaf, retain_graph=True)
    expected = torch.autograd.grad(vae.encoder(x).log_prob(leaf).sum(), leaf)[0]
    torch.testing.assert_close(g, expected)


def test_a_global_latent_is_refused_with_the_reason():
    def model(x, num_data=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0))
        with pyro.plate("data", len(x), dim=-1):
            pyro.sample("x", dist.Normal(w, 1.0), obs=x)

    def guide(x, num_data=None):
        pyro.sample("w", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="'w' is not in the data plate.*global latents"):
        pv.log_weights(model, guide, torch.zeros(4), num_samples=2)


def test_a_model_without_a_data_plate_is_one_datapoint():
    def model():
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=torch.tensor(0.5))

    def guide():
        pyro.sample("z", dist.Normal(0.25, 0.5**0.5))  # the exact posterior

    lw = pv.log_weights(model, guide, num_samples=6)
    exact = dist.Normal(0.0, 2**0.5).log_prob(torch.tensor(0.5))
    assert lw.log_w.shape == (6, 1)
    torch.testing.assert_close(lw.log_w, exact.expand(6, 1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("options", [{}, {"analytic_kl": True}, {"pathwise": True}])
def test_every_field_is_on_the_datas_device_and_dtype(options):
    """On the meta device (no GPU needed) as torch would on CUDA: a CPU accumulator expanded to
    [K, B] would raise when combined (a crash on CUDA before this test existed)."""
    with pyro.validation_enabled(False):
        vae = pv.VAE(6, 3, (8,)).to("meta")
        x = torch.zeros(4, 6, device="meta")
        lw = pv.log_weights(vae.model, vae.guide, x, num_samples=2, **options)
        fields = [lw.log_p, lw.log_q, lw.log_lik, lw.log_w] + ([lw.kl] if lw.kl is not None else [])
        assert all(t.device.type == "meta" for t in fields)
    vae, x = _vae(), _x()  # float64
    lw = pv.log_weights(vae.model, vae.guide, x, num_samples=2, **options)
    assert all(t.dtype == torch.float64 for t in (lw.log_p, lw.log_q, lw.log_lik))


class _ScaledKL(pv.VAE):
    """Latent sites under poutine.scale(0.5): no per-datapoint log weights of one scale."""

    log_weights = None

    def model(self, x, num_data=None):
        with self._data_plate(x, num_data):
            with poutine.scale(scale=0.5):
                z = pyro.sample("z", self.prior())
            return pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def guide(self, x, num_data=None):
        with self._data_plate(x, num_data), poutine.scale(scale=0.5):
            return pyro.sample("z", self.encoder(x))


@pytest.mark.parametrize(
    "ours,pyros", [("trace", infer.Trace_ELBO), ("meanfield", infer.TraceMeanField_ELBO)]
)
def test_trace_and_meanfield_fall_back_to_pyros_estimators(ours, pyros):
    torch.manual_seed(0)
    vae, x = _ScaledKL(6, 3, (8,)).double(), _x()
    with pytest.raises(NotPerDatapoint, match=r"one subsampling scale.*poutine.scale"):
        pv.log_weights(vae.model, vae.guide, x)
    torch.manual_seed(1)
    got = pv.make_elbo(ours).differentiable_loss(vae.model, vae.guide, x)
    torch.manual_seed(1)
    expected = pyros(max_plate_nesting=1).differentiable_loss(vae.model, vae.guide, x)
    torch.testing.assert_close(got, expected)
    with pytest.raises(NotPerDatapoint):
        pv.make_elbo("iwae", 2).differentiable_loss(vae.model, vae.guide, x)
