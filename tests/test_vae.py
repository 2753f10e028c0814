"""The VAE program: shapes, bad inputs, and every prior x likelihood x guide x estimator trains."""

import itertools

import pyro
import pyro.poutine as poutine
import pytest
import torch
from gradcheck import loss_grads_and_rng

import pyro_vae as pv

PRIORS = ["normal", "learned_normal", "mixture", "vamp"]
LIKELIHOODS = ["bernoulli", "gaussian", "learned_gaussian", "continuous_bernoulli", "laplace"]
GUIDES = ["normal", "iaf"]


def _toy_binary(n=96, d=8, seed=0):
    """Two noisy binary prototypes: learnable structure, valid under every likelihood."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.bernoulli(torch.full((2, d), 0.5), generator=g)
    idx = torch.randint(0, 2, (n,), generator=g)
    flip = torch.bernoulli(torch.full((n, d), 0.05), generator=g)
    return (protos[idx] + flip) % 2


def _mean_elbo(vae, x):
    return pv.evaluate(vae, x, num_samples=8, seed=123)["elbo"]


def _estimator_options(name):
    return {"num_particles": 3} if name not in ("trace", "meanfield", "tracegraph") else {}


COMBOS = list(itertools.product(PRIORS, LIKELIHOODS, GUIDES, sorted(pv.ESTIMATORS)))


@pytest.mark.parametrize("prior,likelihood,guide,estimator", COMBOS)
def test_every_combination_trains(prior, likelihood, guide, estimator):
    torch.manual_seed(0)
    x = _toy_binary()
    vae = pv.VAE(8, 2, (16,), prior=prior, likelihood=likelihood, guide=guide, num_components=3)
    before = _mean_elbo(vae, x)
    elbo = pv.make_elbo(estimator, **_estimator_options(estimator))
    opt = torch.optim.Adam(vae.parameters(), lr=0.03)
    for _ in range(40):
        opt.zero_grad()
        if hasattr(elbo, "differentiable_loss"):
            loss = elbo.differentiable_loss(vae.model, vae.guide, x, num_data=960)
            loss.backward()
        else:
            loss = elbo.loss_and_grads(vae.model, vae.guide, x, num_data=960)
        opt.step()
    after = _mean_elbo(vae, x)
    assert after > before + 0.1, (before, after)


def test_model_and_guide_structure():
    vae = pv.VAE(6, 3, (8,))
    x = torch.bernoulli(torch.rand(5, 6))
    gt = poutine.trace(vae.guide).get_trace(x)
    mt = poutine.trace(poutine.replay(vae.model, trace=gt)).get_trace(x)
    assert mt.nodes["z"]["value"].shape == (5, 3)
    assert mt.nodes["x"]["is_observed"]
    for tr in (gt, mt):
        (frame,) = tr.nodes["z"]["cond_indep_stack"]
        assert (frame.name, frame.dim, frame.size) == ("data", -1, 5)


def test_plate_is_scaled_to_the_data_set_size():
    vae = pv.VAE(6, 3, (8,))
    x = torch.bernoulli(torch.rand(5, 6))
    tr = poutine.trace(vae.model).get_trace(x, num_data=50)
    assert tr.nodes["x"]["scale"] == 10.0
    # No random permutation of 50 indices is drawn: with z given, the subsampled program
    # leaves the RNG exactly as it found it.
    z = {"z": torch.zeros(5, 3)}
    state = torch.get_rng_state()
    poutine.trace(poutine.condition(vae.model, data=z)).get_trace(x, num_data=50)
    assert torch.equal(state, torch.get_rng_state())
    # (and a plate that did draw indices would move it: the check can fail)
    with pyro.plate("draws", 50, subsample_size=5):
        pass
    assert not torch.equal(state, torch.get_rng_state())


def test_two_vaes_do_not_share_parameters():
    a, b = pv.VAE(6, 3, (8,)), pv.VAE(6, 3, (8,))
    x = torch.bernoulli(torch.rand(5, 6))
    svi = pyro.infer.SVI(b.model, b.guide, pyro.optim.Adam({"lr": 0.1}), pyro.infer.Trace_ELBO())
    before = [p.clone() for p in a.parameters()]
    pv.make_elbo("trace").loss(a.model, a.guide, x)
    for _ in range(3):
        svi.step(x)
    assert all(torch.equal(p, q) for p, q in zip(before, a.parameters()))


def test_svi_step_works_with_the_pyro_idiom():
    vae = pv.VAE(6, 3, (8,))
    x = torch.bernoulli(torch.rand(32, 6))
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 0.05}), pv.make_elbo("trace"))
    losses = [svi.step(x) for _ in range(60)]
    assert sum(losses[-10:]) < sum(losses[:10])


def test_conveniences_shapes():
    vae = pv.VAE(6, 3, (8,), likelihood="continuous_bernoulli")
    x = torch.rand(5, 6)
    assert vae.encode(x).batch_shape == (5,)
    assert vae.decode(torch.zeros(4, 3)).event_shape == (6,)
    s = vae.sample(7)
    assert s.shape == (7, 6) and float(s.min()) >= 0 and float(s.max()) <= 1
    assert vae.sample(7, mean=False).shape == (7, 6)
    assert vae.reconstruct(x).shape == (5, 6)
    assert vae.posterior_mean(x).shape == (5, 3)
    iaf = pv.VAE(6, 3, (8,), guide="iaf")
    assert iaf.posterior_mean(x).shape == (5, 3)


@pytest.mark.parametrize(
    "x,match",
    [
        (torch.zeros(5, 7), r"expects x of shape \[batch, 6\], got \[5, 7\]"),
        (torch.zeros(5, 2, 3), r"got \[5, 2, 3\]; flatten"),
        (torch.zeros(6), r"got \[6\]"),
    ],
)
def test_wrong_shapes_say_what_was_expected(x, match):
    vae = pv.VAE(6, 3, (8,))
    with pytest.raises(ValueError, match=match):
        vae.model(x)
    with pytest.raises(ValueError, match=match):
        vae.guide(x)


def test_config_round_trip_rebuilds_the_same_architecture():
    vae = pv.VAE(
        6,
        3,
        (8, 4),
        "tanh",
        prior="mixture",
        likelihood="laplace",
        guide="iaf",
        num_components=3,
        num_flows=1,
        likelihood_scale=0.5,
    )
    cfg = pv.ModelConfig.from_json(vae.config.to_json())
    assert cfg == vae.config
    clone = pv.VAE.from_config(cfg)
    assert clone.state_dict().keys() == vae.state_dict().keys()


def test_custom_objects_must_be_passed_again_when_rebuilding():
    class MyPrior(pv.priors.StandardNormalPrior):
        pass

    vae = pv.VAE(6, 3, (8,), prior=MyPrior(3))
    with pytest.raises(ValueError, match=r"user-written prior \(custom:MyPrior\); pass it again"):
        pv.VAE.from_config(vae.config)
    assert isinstance(pv.VAE.from_config(vae.config, prior=MyPrior(3)).prior, MyPrior)


def test_no_hard_coded_784():
    for d in (1, 10, 3072):
        vae = pv.VAE(d, 2, (8,))
        assert vae.sample(2).shape == (2, d)


# -- VAE.log_weights: the model's own log weights against its Pyro program ---------------------

_PRIORS = ["normal", "learned_normal", "mixture", "vamp"]
_LIKELIHOODS = ["bernoulli", "gaussian", "learned_gaussian", "continuous_bernoulli", "laplace"]
_OWN = ["trace", "meanfield", "iwae", "renyi", "stl", "dreg", "tail_adaptive"]


@pytest.mark.parametrize(
    "estimator,num_particles",
    [(e, k) for e in _OWN for k in (1, 3) if not (e == "tail_adaptive" and k == 1)],
)
@pytest.mark.parametrize("guide", ["normal", "iaf"])
@pytest.mark.parametrize(
    "prior,likelihood",
    [(p, "bernoulli") for p in _PRIORS] + [("normal", lik) for lik in _LIKELIHOODS[1:]],
)
def test_own_log_weights_equal_the_pyro_program(prior, likelihood, guide, estimator, num_particles):
    """Value, gradients and random stream of every estimator's objective on VAE.log_weights
    equal its differentiable_loss on the Pyro program, in float64 (agreement to ~1e-12). The
    path-derivative estimators have a closed form for the diagonal-Normal guide only; with an
    IAF the VAE refuses them (the Pyro program then runs, checked against a hand-written
    reference in tests/test_estimators.py)."""
    if guide == "iaf" and estimator in ("stl", "dreg"):
        with pytest.raises(ValueError, match="diagonal-Normal guide only"):
            torch.manual_seed(0)
            vae = pv.VAE(6, 3, (8,), guide="iaf")
            vae.log_weights(torch.zeros(2, 6), pathwise=True)
        return
    torch.manual_seed(0)
    vae = pv.VAE(
        6, 3, (8,), prior=prior, likelihood=likelihood, guide=guide, num_components=3
    ).double()
    x = torch.bernoulli(torch.rand(10, 6, generator=torch.Generator().manual_seed(1))).double()
    elbo = pv.make_elbo(estimator, num_particles)
    expected, expected_grads, expected_rng = loss_grads_and_rng(
        lambda: elbo.differentiable_loss(vae.model, vae.guide, x, num_data=250), vae
    )
    got, grads, rng = loss_grads_and_rng(
        lambda: elbo.objective(vae.log_weights(x, 250, **elbo.request())), vae
    )
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-9)
    assert grads.keys() == expected_grads.keys() and grads
    for name, g in grads.items():
        torch.testing.assert_close(g, expected_grads[name], rtol=1e-8, atol=1e-9, msg=name)
    assert torch.equal(rng, expected_rng), "the own log weights drew different random numbers"


def test_own_meanfield_uses_the_analytic_kl():
    """With a N(0, I) prior: -E[log p(x|z)] + KL, computed here by hand from the encoder's
    Gaussian and the same draw of z."""
    torch.manual_seed(0)
    vae = pv.VAE(6, 3, (8,))
    x = torch.bernoulli(torch.rand(10, 6))
    elbo = pv.make_elbo("meanfield")
    with torch.no_grad():
        torch.manual_seed(3)
        got = elbo.objective(vae.log_weights(x, **elbo.request()))
        torch.manual_seed(3)
        q = vae.encoder(x)
        loc, scale = q.base_dist.loc, q.base_dist.scale
        z = loc + scale * torch.randn_like(loc)
        log_px = vae.decode(z).log_prob(x)
        kl = 0.5 * (scale**2 + loc**2 - 1 - 2 * scale.log()).sum(-1)
    torch.testing.assert_close(got, -(log_px - kl).sum(), rtol=1e-5, atol=1e-5)


def test_own_log_weights_refuse_a_guide_without_rsample():
    class NoRsample(pv.guides.NormalGuide):
        loc_scale = None  # q is no longer the Normal of loc_scale: the documented opt-out

        def forward(self, x):
            return pv.estimators._NoRsample(self.gaussian(x))

    vae = pv.VAE(6, 3, (8,), guide=NoRsample(6, 3, (8,), "relu"))
    with pytest.raises(ValueError, match="reparameterized q\\(z \\| x_n\\) per datapoint"):
        vae.log_weights(torch.zeros(4, 6))


# -- components are checked once, at construction -----------------------------------------------


class _TensorPrior(pv.Prior):
    def forward(self):
        return torch.zeros(self.z_dim)


class _EventlessPrior(pv.Prior):
    def forward(self):
        return pyro.distributions.Normal(torch.zeros(self.z_dim), 1.0)


class _WideLikelihood(pv.Likelihood):
    def forward(self, params):
        return pyro.distributions.Bernoulli(logits=params[..., :1]).to_event(1)


class _GuideWithoutEvent(pv.Guide):
    def forward(self, x):
        return pyro.distributions.Normal(torch.zeros(len(x), self.z_dim), 1.0)


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        (dict(prior=_TensorPrior(3)), TypeError, "the prior returned a Tensor, not a distribution"),
        (dict(prior=_EventlessPrior(3)), ValueError, r"the prior .*event shape \[\].*\[3\]"),
        (
            dict(likelihood=_WideLikelihood(6)),
            ValueError,
            r"the likelihood .*expected event shape \[6\]",
        ),
        (
            dict(guide=_GuideWithoutEvent(6, 3)),
            ValueError,
            r"the guide .*batch \[B\], event \[z_dim\]",
        ),
    ],
    ids=["prior tensor", "prior event", "likelihood event", "guide event"],
)
def test_a_component_that_breaks_its_contract_is_named_at_construction(kwargs, error, message):
    with pytest.raises(error, match=message):
        pv.VAE(6, 3, (8,), **kwargs)


def test_log_likelihood_gives_the_librarys_support_message():
    vae = pv.VAE(6, 3, (8,))
    grey = torch.rand(4, 6)
    with pytest.raises(ValueError, match="bernoulli likelihood needs binary data in \\{0, 1\\}"):
        pv.log_likelihood(vae.model, vae.guide, grey, num_samples=2)


def test_the_construction_check_keeps_dtype_device_and_batch_norm_state():
    class BatchNormGuide(pv.guides.NormalGuide):
        def __init__(self):
            super().__init__(6, 3, (8,), "relu")
            self.norm = torch.nn.BatchNorm1d(6)

        def loc_scale(self, x):
            return super().loc_scale(self.norm(x))

    guide = BatchNormGuide().double()
    vae = pv.VAE(6, 3, (8,), guide=guide)  # the decoder is float32 here: checked as built
    assert int(guide.norm.num_batches_tracked) == 0 and guide.training
    assert torch.equal(guide.norm.running_var, torch.ones(6, dtype=torch.float64))
    assert vae.training


# -- the own log joint (annealed importance sampling's fast path) -------------------------------


def _log_joint_both(vae, x, latents):
    """``((log p, log lik), grads)`` of the VAE's own log_joint and of the Pyro program's, at
    copies of ``latents`` that require grad (the gradient of log p + log lik, so both count)."""
    out = []
    for fn in (
        lambda z: vae.log_joint(x, z, 100),
        lambda z: pv.infer.log_weights.log_joint(vae.model, z, x, num_data=100)[:2],
    ):
        z = {k: v.clone().requires_grad_(True) for k, v in latents.items()}
        log_p, log_lik = fn(z)
        grads = torch.autograd.grad((log_p + log_lik).sum(), list(z.values()))
        out.append(((log_p.detach(), log_lik.detach()), dict(zip(z, grads))))
    return out


@pytest.mark.parametrize(
    "prior,likelihood",
    [
        ("normal", "bernoulli"),
        ("vamp", "bernoulli"),
        ("mixture", "bernoulli"),
        ("normal", "gaussian"),
    ],
)
def test_own_log_joint_equals_the_pyro_program_s(prior, likelihood):
    torch.manual_seed(0)
    vae = pv.VAE(6, 3, (8,), prior=prior, likelihood=likelihood, num_components=3).double()
    x = torch.bernoulli(torch.rand(5, 6, generator=torch.Generator().manual_seed(1))).double()
    z = {"z": 1.5 * torch.randn(4, 5, 3, dtype=torch.float64)}
    (own, own_grads), (program, program_grads) = _log_joint_both(vae, x, z)
    assert own[0].shape == (4, 5) and own[1].shape == (4, 5)
    for a, b in zip(own, program):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(own_grads["z"], program_grads["z"], rtol=1e-10, atol=1e-12)


def test_own_log_joint_is_none_where_the_program_is_not_its_own():
    class Changed(pv.VAE):
        log_weights = None  # the documented opt-out of a subclass that changes the program

    torch.manual_seed(0)
    vae, x = Changed(6, 3, (8,)), torch.zeros(2, 6)
    assert vae.log_joint(x, {"z": torch.zeros(1, 2, 3)}) is None
    with pytest.raises(ValueError, match=r"latent sites \['z'\], got \['w'\]"):
        pv.VAE(6, 3, (8,)).log_joint(x, {"w": torch.zeros(1, 2, 3)})


@pytest.mark.parametrize("prior", ["normal", "vamp"])
def test_ais_uses_the_own_log_joint_and_falls_back_where_it_is_none(prior):
    """The same draws and the same estimate through the own log joint (used at every leapfrog
    step) and through the Pyro program (a subclass whose log_joint returns None); a mixture
    prior's support is unwrapped to its components' (real) for the unconstrained space."""

    class Counting(pv.VAE):
        calls = 0

        def log_joint(self, x, latents, num_data=None):
            type(self).calls += 1
            return super().log_joint(x, latents, num_data)

    class Traced(pv.VAE):
        def log_joint(self, x, latents, num_data=None):
            return None

    torch.manual_seed(0)
    Counting.calls = 0
    vae = Counting(6, 3, (8,), prior=prior, num_components=3).double()
    traced = Traced(6, 3, (8,), prior=prior, num_components=3).double()
    traced.load_state_dict(vae.state_dict())
    x = torch.bernoulli(torch.rand(4, 6, generator=torch.Generator().manual_seed(1))).double()
    kw = dict(num_steps=4, num_chains=3, leapfrog_steps=2, adapt_chains=0, return_stats=True)
    pyro.set_rng_seed(2)
    fast = pv.ais_log_likelihood(vae.model, vae.guide, x, **kw)
    pyro.set_rng_seed(2)
    slow = pv.ais_log_likelihood(traced.model, traced.guide, x, **kw)
    assert Counting.calls == 1 + 3 * 2 + 1  # the check, every leapfrog step, the first state
    torch.testing.assert_close(fast.log_weights, slow.log_weights, rtol=1e-10, atol=1e-10)
