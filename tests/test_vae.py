"""The VAE program: shapes, bad inputs, and every prior x likelihood x guide x estimator trains."""

import itertools

import pyro
import pyro.poutine as poutine
import pytest
import torch

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
    # no random permutation of 50 indices is drawn: the RNG is untouched by the plate
    state = torch.get_rng_state()
    with poutine.block():
        pyro.plate  # noqa: B018
    assert torch.equal(state, torch.get_rng_state())


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
