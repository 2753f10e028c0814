"""Likelihoods: normalised densities, support checks with actionable messages."""

import pyro
import pytest
import torch

import pyro_vae as pv


def _params(name, x_dim):
    lik = pv.make_likelihood(name, x_dim).double()
    with torch.no_grad():
        for p in lik.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return lik, torch.randn(x_dim, dtype=torch.float64)


@pytest.mark.parametrize("name", ["gaussian", "learned_gaussian", "laplace"])
def test_real_likelihoods_integrate_to_one(name):
    lik, params = _params(name, 1)
    t = torch.linspace(-40, 40, 200001, dtype=torch.float64).unsqueeze(-1)
    with torch.no_grad():
        p = lik(params).log_prob(t).exp()
    assert abs(float(torch.trapezoid(p, t[:, 0])) - 1) < 1e-6


def test_continuous_bernoulli_integrates_to_one_on_the_unit_square():
    lik, params = _params("continuous_bernoulli", 2)
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    xx = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        p = lik(params).log_prob(xx).exp().reshape(1001, 1001)
    assert abs(float(torch.trapezoid(torch.trapezoid(p, t, dim=1), t)) - 1) < 1e-5


def test_bernoulli_sums_to_one_over_binary_vectors():
    lik, params = _params("bernoulli", 3)
    xs = torch.tensor([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)]).double()
    assert abs(float(lik(params).log_prob(xs).exp().sum()) - 1) < 1e-12


def test_gaussian_fixed_scale_is_the_identity_covariance_model():
    lik = pv.make_likelihood("gaussian", 4)
    assert lik(torch.zeros(4)).base_dist.scale.tolist() == [1.0] * 4
    assert list(lik.parameters()) == []
    assert pv.make_likelihood("gaussian", 4, scale=0.5)(torch.zeros(4)).base_dist.scale[0] == 0.5


def test_learned_scales_are_parameters_with_a_floor():
    lik = pv.likelihoods.LearnedGaussianLikelihood(3, init_scale=2.0, min_scale=0.1)
    torch.testing.assert_close(lik.scale(), torch.full((3,), 2.0))
    with torch.no_grad():
        lik.raw_scale.fill_(-1e4)
    assert float(lik.scale().min().detach()) >= 0.1
    with pytest.raises(ValueError, match="init_scale must exceed min_scale"):
        pv.likelihoods.LearnedGaussianLikelihood(3, init_scale=0.05, min_scale=0.1)


def test_bernoulli_rejects_grayscale_with_a_fix():
    lik = pv.make_likelihood("bernoulli", 4)
    with pytest.raises(
        ValueError, match=r"binary data in \{0, 1\}.*Binarize.*continuous_bernoulli"
    ):
        lik.check(torch.tensor([[0.0, 0.5, 1.0, 1.0]]))
    lik.check(torch.tensor([[0.0, 1.0, 1.0, 0.0]]))


def test_continuous_bernoulli_rejects_data_outside_unit_interval():
    lik = pv.make_likelihood("continuous_bernoulli", 2)
    with pytest.raises(ValueError, match=r"in \[0, 1\].*max 1.5"):
        lik.check(torch.tensor([[0.2, 1.5]]))


@pytest.mark.parametrize("name", sorted(set(pv.LIKELIHOODS)))
def test_shape_and_nan_checks(name):
    lik = pv.make_likelihood(name, 4)
    with pytest.raises(ValueError, match="expects x_dim=4"):
        lik.check(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"shape \[N, x_dim\].*flatten"):
        lik.check(torch.zeros(2, 2, 2))
    with pytest.raises(ValueError, match="non-finite value.*NaN"):
        lik.check(torch.tensor([[0.0, float("nan"), 1.0, 0.0]]))
    with pytest.raises(TypeError, match="floating point"):
        lik.check(torch.zeros(2, 4, dtype=torch.long))


def test_pyro_validation_still_catches_bypassed_checks():
    vae = pv.VAE(4, 2, (8,))
    with pytest.raises(ValueError, match="Expected value argument"):
        pv.make_elbo("trace").differentiable_loss(vae.model, vae.guide, torch.full((3, 4), 0.5))


def test_unknown_likelihood_lists_valid_names():
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'.*bernoulli.*laplace"):
        pv.make_likelihood("poisson", 3)


def test_a_plain_module_likelihood_trains_and_evaluates():
    """No Likelihood base class needed: without a ``check`` method the data still get the shape
    and NaN checks, and training and evaluation work."""

    class Laplace(torch.nn.Module):
        def forward(self, params):
            return pyro.distributions.Laplace(params, 1.0).to_event(1)

    vae = pv.VAE(6, 2, (8,), likelihood=Laplace())
    res = pv.train(vae, torch.rand(32, 6), config=pv.TrainConfig(epochs=1, progress=False))
    assert len(res.history) == 1
    assert pv.evaluate(vae, torch.rand(8, 6), num_samples=4)["num_samples"] == 4
    with pytest.raises(ValueError, match="NaN"):
        pv.evaluate(vae, torch.full((3, 6), float("nan")))


def test_bernoulli_log_prob_is_the_same_with_and_without_a_gradient():
    """-softplus((1 - 2x) * logit) with and without a gradient, and Pyro's distribution: one
    value, torch's Bernoulli's."""
    from pyro_vae.model.likelihoods import BernoulliLikelihood

    torch.manual_seed(0)
    like = BernoulliLikelihood(30).double()
    logits = 8 * torch.randn(7, 5, 30, dtype=torch.float64)
    x = torch.bernoulli(torch.rand(5, 30, dtype=torch.float64))
    with torch.no_grad():
        fast = like.log_prob(logits, x)
        program = like(logits).log_prob(x)
    trained = like.log_prob(logits.clone().requires_grad_(), x)
    reference = torch.distributions.Bernoulli(logits=logits).log_prob(x.expand_as(logits)).sum(-1)
    for value in (fast, program, trained.detach()):
        torch.testing.assert_close(value, reference, rtol=1e-12, atol=1e-12)
    assert trained.requires_grad


@pytest.mark.parametrize(
    "logits_shape, x_shape, x_dtype",
    [
        ((7, 5, 30), (5, 30), torch.float64),  # K draws against one batch: the evaluation's
        ((5, 30), (5, 30), torch.float64),  # one particle
        ((5, 30), (3, 5, 30), torch.float64),  # x wider than the logits: summed back
        ((7, 5, 30), (5, 30), torch.float32),  # data in another dtype
        ((7, 5, 30), (5, 1), torch.float64),  # x broadcast along the pixels
    ],
)
def test_bernoulli_log_prob_gradient_is_the_cross_entropys(logits_shape, x_shape, x_dtype):
    """The own backward, (x - sigmoid(logit)) * grad, against torch's Bernoulli log-prob
    differentiated by autograd, and its second derivative (create_graph) by gradgradcheck."""
    from pyro_vae.model.likelihoods import BernoulliLikelihood

    torch.manual_seed(0)
    like = BernoulliLikelihood(30)
    logits = (6 * torch.randn(logits_shape, dtype=torch.float64)).requires_grad_()
    x = torch.bernoulli(torch.rand(x_shape, dtype=torch.float64)).to(x_dtype)
    weights = torch.randn(torch.broadcast_shapes(logits_shape, x_shape)[:-1], dtype=torch.float64)
    (grad,) = torch.autograd.grad((like.log_prob(logits, x) * weights).sum(), logits)
    reference = torch.distributions.Bernoulli(logits=logits).log_prob(x.double()).sum(-1)
    (expected,) = torch.autograd.grad((reference * weights).sum(), logits)
    torch.testing.assert_close(grad, expected, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda t: like.log_prob(t, x), (logits,))
    assert torch.autograd.gradgradcheck(lambda t: like.log_prob(t, x), (logits,))


def test_bernoulli_log_prob_differentiates_data_that_need_a_gradient():
    """Data with requires_grad get the cross-entropy: d/dx [x logit - softplus(logit)] = logit."""
    from pyro_vae.model.likelihoods import BernoulliLikelihood

    torch.manual_seed(0)
    logits = torch.randn(4, 30, dtype=torch.float64, requires_grad=True)
    x = torch.bernoulli(torch.rand(4, 30, dtype=torch.float64)).requires_grad_()
    gx, gl = torch.autograd.grad(BernoulliLikelihood(30).log_prob(logits, x).sum(), (x, logits))
    torch.testing.assert_close(gx, logits.detach())
    torch.testing.assert_close(gl, x.detach() - torch.sigmoid(logits.detach()))


def test_bernoulli_log_prob_gradient_reaches_through_pyros_provenance_tensors():
    """TraceGraph_ELBO wraps values downstream of a non-reparameterized site (e.g. a VampPrior's
    mixture) in a ProvenanceTensor, whose __torch_function__ cuts a custom autograd function's
    output from the graph: the cross-entropy then serves, with the same value and gradient."""
    from pyro.ops.provenance import track_provenance

    from pyro_vae.model.likelihoods import BernoulliLikelihood

    torch.manual_seed(0)
    like = BernoulliLikelihood(30)
    logits = torch.randn(7, 5, 30, dtype=torch.float64, requires_grad=True)
    x = torch.bernoulli(torch.rand(5, 30, dtype=torch.float64))
    tracked = like.log_prob(track_provenance(logits * 1, frozenset({"z"})), x)
    plain = like.log_prob(logits, x)
    (g_tracked,) = torch.autograd.grad(tracked.sum(), logits)
    (g_plain,) = torch.autograd.grad(plain.sum(), logits)
    torch.testing.assert_close(tracked.detach(), plain.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_tracked, g_plain, rtol=1e-12, atol=1e-12)


# torch's forward_ad loads its own jvp decompositions with torch.jit.script on first use, which
# torch 2.13 itself deprecates: torch's warning about torch's code, not about ours
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_bernoulli_log_prob_other_autograd_uses(compiled, room):
    """What the cross-entropy allowed still works: torch.func.grad and vmap, forward-mode AD,
    batched gradients, expanded (stride-0) logits, float32 logits against float64 data, and grad
    mode on with logits that need no gradient (a plain value); on the eager path and with the
    compiled kernels serving every size (whose forward runs under all of these; the value
    kernel without a gradient, forward-mode AD included)."""
    from pyro_vae.model import _bernoulli_kernel as bk

    with bk.settings(enabled=compiled, min_logits=0, value_compile_after=0):
        _other_autograd_uses()
    # the kernels ran where asked, and only there
    assert bool(bk.RESIDUAL.signatures) == bool(bk.VALUE.signatures) == compiled


def _other_autograd_uses():
    from torch.autograd import forward_ad

    from pyro_vae.model.likelihoods import BernoulliLikelihood

    torch.manual_seed(0)
    like = BernoulliLikelihood(30)
    logits = 5 * torch.randn(4, 30, dtype=torch.float64)
    x = torch.bernoulli(torch.rand(4, 30, dtype=torch.float64))
    expected = x - torch.sigmoid(logits)  # d/dlogits of the summed log-likelihood
    torch.testing.assert_close(
        torch.func.grad(lambda t: like.log_prob(t, x).sum())(logits), expected
    )
    per_row = torch.func.vmap(torch.func.grad(lambda t, xi: like.log_prob(t, xi)))(logits, x)
    torch.testing.assert_close(per_row, expected)
    tangent = torch.randn_like(logits)
    with forward_ad.dual_level():
        out = like.log_prob(forward_ad.make_dual(logits, tangent), x)
        torch.testing.assert_close(
            forward_ad.unpack_dual(out).tangent, (expected * tangent).sum(-1)
        )
        with torch.no_grad():  # forward AD without a graph: the value path keeps the tangent
            out = like.log_prob(forward_ad.make_dual(logits, tangent), x)
        torch.testing.assert_close(
            forward_ad.unpack_dual(out).tangent, (expected * tangent).sum(-1)
        )
    leaf = logits.clone().requires_grad_()
    out = like.log_prob(leaf, x)
    (batched,) = torch.autograd.grad(
        out, leaf, torch.eye(4, dtype=torch.float64), is_grads_batched=True
    )
    torch.testing.assert_close(batched.sum(0), expected)
    row = logits[:1].clone().requires_grad_()
    (g_expanded,) = torch.autograd.grad(like.log_prob(row.expand(4, 30), x).sum(), row)
    torch.testing.assert_close(g_expanded, (x - torch.sigmoid(logits[:1])).sum(0, keepdim=True))
    low = logits.float().requires_grad_()
    (g_low,) = torch.autograd.grad(like.log_prob(low, x).sum(), low)
    assert g_low.dtype == torch.float32
    torch.testing.assert_close(g_low, (x - torch.sigmoid(low.detach().double())).float())
    plain = like.log_prob(logits, x)
    assert not plain.requires_grad
    torch.testing.assert_close(
        plain, torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1)
    )
    with torch.no_grad():
        torch.testing.assert_close(like.log_prob(logits, x), plain)
