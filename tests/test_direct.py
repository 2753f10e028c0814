"""The direct (interpreter-free) loss against the Pyro program's, for Trace_ELBO,
TraceMeanField_ELBO and our IWAE / Renyi bounds.

Reference: the estimator's ``differentiable_loss`` on the VAE's Pyro program, on the same random
draws. The
direct loss must give the same value and gradients and consume the random stream identically,
for every built-in prior x likelihood x guide, and must refuse (return None) wherever it would
compute something else.
"""

import itertools
from unittest import mock

import pyro
import pyro.distributions as dist
import pyro.infer as infer
import pyro.poutine as poutine
import pytest
import torch

import pyro_vae as pv
from pyro_vae.training.fast_path import VALIDATE_EVERY, direct_loss, training_loss

PRIORS = ["normal", "learned_normal", "mixture", "vamp"]
LIKELIHOODS = ["bernoulli", "gaussian", "learned_gaussian", "continuous_bernoulli", "laplace"]
GUIDES = ["normal", "iaf"]


def _vae(prior="normal", likelihood="bernoulli", guide="normal", cls=pv.VAE):
    torch.manual_seed(0)
    return cls(6, 3, (8,), prior=prior, likelihood=likelihood, guide=guide, num_components=3)


def _x(n=10):
    # Binary data lie in every built-in likelihood's support.
    return torch.bernoulli(torch.rand(n, 6, generator=torch.Generator().manual_seed(1)))


def _loss_grads_and_rng(fn, vae, seed=7):
    vae.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = fn()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in vae.named_parameters() if p.grad is not None}
    vae.zero_grad(set_to_none=True)
    return loss.detach(), grads, torch.get_rng_state()


@pytest.mark.parametrize("num_particles", [1, 3])
@pytest.mark.parametrize("estimator", ["trace", "meanfield", "iwae", "renyi"])
@pytest.mark.parametrize(
    "prior,likelihood,guide", list(itertools.product(PRIORS, LIKELIHOODS, GUIDES))
)
def test_same_loss_gradients_and_random_stream_as_pyro(
    prior, likelihood, guide, estimator, num_particles
):
    # float64, so that a real difference is not lost in float32 rounding (which reaches ~1e-4
    # on some gradients of the continuous Bernoulli's normalizer): agreement to ~1e-12 expected.
    vae, x = _vae(prior, likelihood, guide).double(), _x().double()
    elbo = pv.make_elbo(estimator, num_particles)
    num_data = 250
    direct = direct_loss(vae, elbo, x, num_data)
    assert direct is not None
    expected, expected_grads, expected_rng = _loss_grads_and_rng(
        lambda: elbo.differentiable_loss(vae.model, vae.guide, x, num_data=num_data), vae
    )
    got, grads, rng = _loss_grads_and_rng(lambda: direct(x, num_data), vae)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-9)
    assert grads.keys() == expected_grads.keys() and grads
    for name, g in grads.items():
        torch.testing.assert_close(g, expected_grads[name], rtol=1e-8, atol=1e-9, msg=name)
    assert torch.equal(rng, expected_rng), "the direct loss drew different random numbers"


@pytest.mark.parametrize("num_data", [None, 10])
def test_unscaled_full_batch(num_data):
    vae, x = _vae(), _x()
    elbo = pv.make_elbo("trace")
    direct = direct_loss(vae, elbo, x, num_data)
    expected, _, _ = _loss_grads_and_rng(
        lambda: elbo.differentiable_loss(vae.model, vae.guide, x, num_data=num_data), vae
    )
    got, _, _ = _loss_grads_and_rng(lambda: direct(x, num_data), vae)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-5)


def test_meanfield_uses_the_analytic_kl():
    """With a N(0, I) prior the direct meanfield loss is -E[log p(x|z)] + KL, computed here by
    hand from the encoder's Gaussian and the same draw of z."""
    vae, x = _vae(), _x()
    direct = direct_loss(vae, pv.make_elbo("meanfield"), x, None)
    with torch.no_grad():
        torch.manual_seed(3)
        got = direct(x, None)
        torch.manual_seed(3)
        q = vae.encoder(x)
        loc, scale = q.base_dist.loc, q.base_dist.scale
        z = loc + scale * torch.randn_like(loc)
        log_px = vae.decode(z).log_prob(x)
        kl = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum(-1)
    torch.testing.assert_close(got, -(log_px - kl).sum(), rtol=1e-5, atol=1e-5)


def test_probe_leaves_the_random_state_alone():
    vae, x = _vae(), _x()
    torch.manual_seed(11)
    before = torch.get_rng_state()
    assert direct_loss(vae, pv.make_elbo("trace"), x, 100) is not None
    assert torch.equal(torch.get_rng_state(), before)


class _OwnModel(pv.VAE):
    def model(self, x, num_data=None):
        return super().model(x, num_data)


class _HierarchicalPrior(pv.priors.Prior):
    """A prior that samples its own scale: one more latent site, which the direct loss lacks."""

    def forward(self):
        s = pyro.sample("prior_scale", dist.LogNormal(0.0, 0.1)).unsqueeze(-1)  # [B, 1] in plate
        return dist.Normal(torch.zeros(self.z_dim), s * torch.ones(self.z_dim)).to_event(1)


class _ParamPrior(pv.priors.Prior):
    """A prior with a Pyro param outside the VAE's module: training would not optimize it."""

    def forward(self):
        s = pyro.param("prior_scale_param", torch.ones(self.z_dim))
        return dist.Normal(torch.zeros(self.z_dim), s).to_event(1)


class _NoRsampleGuide(pv.guides.NormalGuide):
    def forward(self, x):
        return pv.estimators._NoRsample(super().forward(x))


@pytest.mark.parametrize(
    "case",
    [
        "stl",
        "dreg",
        "tail_adaptive",
        "score",
        "tracegraph",
        "jit",
        "unvectorized particles",
        "Trace_ELBO subclass",
        "subclassed model",
        "prior with its own sample site",
        "prior with its own param",
        "guide without rsample",
    ],
)
def test_refuses_what_it_would_compute_differently(case):
    x = _x()
    vae = _vae()
    elbo = pv.make_elbo("trace")
    if case in ("stl", "dreg", "tail_adaptive", "score"):
        elbo = pv.make_elbo(case, 2)
    elif case == "tracegraph":
        elbo = pv.make_elbo("tracegraph")
    elif case == "jit":
        elbo = pv.make_elbo("trace", jit=True)
    elif case == "unvectorized particles":
        elbo = infer.Trace_ELBO(num_particles=2, vectorize_particles=False)
    elif case == "Trace_ELBO subclass":
        elbo = type("MyELBO", (infer.Trace_ELBO,), {})()
    elif case == "subclassed model":
        vae = _vae(cls=_OwnModel)
    elif case == "prior with its own sample site":
        vae = pv.VAE(6, 3, (8,), prior=_HierarchicalPrior(3))
    elif case == "prior with its own param":
        vae = pv.VAE(6, 3, (8,), prior=_ParamPrior(3))
    elif case == "guide without rsample":
        vae = pv.VAE(6, 3, (8,), guide=_NoRsampleGuide(6, 3, (8,), "relu"))
    assert direct_loss(vae, elbo, x, 100) is None


class _ContextSensitiveLikelihood(pv.likelihoods.BernoulliLikelihood):
    """Pathological: different logits outside Pyro's interpreter. Only the value check sees it."""

    def forward(self, params):
        wrapped = poutine.runtime.am_i_wrapped()
        return super().forward(params if wrapped else params + 1.0)


def test_a_loss_that_disagrees_with_pyro_is_refused_with_a_warning():
    vae = pv.VAE(6, 3, (8,), likelihood=_ContextSensitiveLikelihood(6))
    with pytest.warns(RuntimeWarning, match="differs from Pyro's"):
        assert direct_loss(vae, pv.make_elbo("trace"), _x(), 100) is None


def test_training_loss_runs_pyro_on_validated_steps_and_the_direct_loss_between():
    vae, x = _vae(), _x()
    elbo = pv.make_elbo("trace")
    loss = training_loss(elbo, vae)
    original = elbo.differentiable_loss
    with mock.patch.object(elbo, "differentiable_loss", wraps=original) as pyro_loss:
        for _ in range(2 * VALIDATE_EVERY + 1):
            loss(vae.model, vae.guide, x, 100).backward()
    assert loss.uses_direct()
    # the probe's comparison, then steps 0, 50 and 100
    assert pyro_loss.call_count == 1 + 3


def test_training_loss_falls_back_to_pyro_under_an_active_handler():
    """A user's handler changes what the Pyro program computes: poutine.scale doubles the loss."""
    vae, x = _vae(), _x()
    elbo = pv.make_elbo("trace")
    loss = training_loss(elbo, vae, first_step=1)  # not a validated step
    torch.manual_seed(0)
    plain = loss(vae.model, vae.guide, x, 100).detach()
    assert loss.uses_direct()
    with poutine.scale(scale=2.0):
        torch.manual_seed(0)
        scaled = loss(vae.model, vae.guide, x, 100).detach()
    torch.testing.assert_close(scaled, 2 * plain, rtol=1e-5, atol=1e-4)


def test_fast_path_off_is_pyros_loss_every_step():
    vae, x = _vae(), _x()
    elbo = pv.make_elbo("trace")
    loss = training_loss(elbo, vae, fast_path=False)
    with mock.patch.object(elbo, "differentiable_loss", wraps=elbo.differentiable_loss) as spy:
        for _ in range(3):
            loss(vae.model, vae.guide, x, 100)
    assert spy.call_count == 3 and not loss.uses_direct()


@pytest.mark.parametrize("estimator", ["trace", "meanfield"])
def test_train_with_and_without_the_fast_path_ends_at_the_same_parameters(estimator):
    x = _x(64)
    results = []
    for fast in (True, False):
        vae = _vae()
        cfg = pv.TrainConfig(
            epochs=2, batch_size=8, elbo=estimator, eval_every=0, progress=False, fast_path=fast
        )
        history = pv.train(vae, x, config=cfg).history
        results.append((vae.state_dict(), [r["train_elbo"] for r in history]))
    (fast_state, fast_hist), (slow_state, slow_hist) = results
    for name, value in fast_state.items():
        torch.testing.assert_close(value, slow_state[name], rtol=1e-4, atol=1e-5, msg=name)
    assert fast_hist == pytest.approx(slow_hist, rel=1e-5)


def test_vectorized_particles_without_max_plate_nesting_keep_the_random_stream():
    """Pyro guesses max_plate_nesting with one guide run on its first call: the probe must not
    spend that draw, nor let it shift the compared runs (a false 'differs' warning before)."""
    x = _x()
    runs = []
    for fast in (True, False):
        vae = _vae()
        elbo = infer.Trace_ELBO(num_particles=4, vectorize_particles=True)
        loss = training_loss(elbo, vae, fast_path=fast)
        torch.manual_seed(0)
        runs.append([float(loss(vae.model, vae.guide, x, 100).detach()) for _ in range(3)])
        assert elbo.max_plate_nesting < float("inf")  # guessed by the first step, as without
        assert loss.uses_direct() is fast
    assert runs[0] == pytest.approx(runs[1], rel=1e-5)


class _ScoreCarryingNormal(pv.estimators._NoRsample):
    """Reparameterized, yet with a score-function term in its score parts (like a rejection
    sampler): the gradient of Trace_ELBO includes that term, the direct loss could not."""

    has_rsample = True

    def rsample(self, sample_shape=torch.Size()):
        return self.base_dist.rsample(sample_shape)

    def score_parts(self, value):
        log_prob = self.log_prob(value)
        return pyro.distributions.score_parts.ScoreParts(log_prob, log_prob, log_prob)


class _ScoreCarryingGuide(pv.guides.NormalGuide):
    def forward(self, x):
        return _ScoreCarryingNormal(super().forward(x))


def test_refuses_a_guide_with_a_score_function_term():
    vae = pv.VAE(6, 3, (8,), guide=_ScoreCarryingGuide(6, 3, (8,), "relu"))
    assert direct_loss(vae, pv.make_elbo("trace"), _x(), 100) is None


class _GlobalGuide(pv.guides.Guide):
    """One q(z) for every datapoint, batch shape [1]: Pyro's plate draws one z per datapoint,
    a direct draw from q would give one z for the whole batch."""

    def __init__(self, x_dim, z_dim):
        super().__init__(x_dim, z_dim)
        self.loc = torch.nn.Parameter(torch.zeros(1, z_dim))

    def forward(self, x):
        return dist.Normal(self.loc, torch.ones_like(self.loc)).to_event(1)


def test_a_guide_that_is_not_per_datapoint_gets_pyros_loss():
    vae = pv.VAE(6, 3, (8,), guide=_GlobalGuide(6, 3))
    elbo = pv.make_elbo("trace")
    x = _x()
    assert direct_loss(vae, elbo, x, 100) is None
    # A first batch of one row cannot tell: the probe accepts it, and the first larger batch
    # falls back to Pyro's loss for good, before drawing anything.
    loss = training_loss(elbo, vae, first_step=1)
    loss(vae.model, vae.guide, x[:1], 100)
    assert loss.uses_direct()
    torch.manual_seed(0)
    got = loss(vae.model, vae.guide, x, 100).detach()
    assert not loss.uses_direct()
    torch.manual_seed(0)
    expected = elbo.differentiable_loss(vae.model, vae.guide, x, num_data=100).detach()
    torch.testing.assert_close(got, expected)


def test_probe_waits_for_a_step_without_a_handler(recwarn):
    vae, x = _vae(), _x()
    loss = training_loss(pv.make_elbo("trace"), vae, first_step=1)
    with poutine.scale(scale=2.0):
        loss(vae.model, vae.guide, x, 100)
    assert not loss.uses_direct() and not recwarn.list
    loss(vae.model, vae.guide, x, 100)
    assert loss.uses_direct()
