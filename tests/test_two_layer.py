"""TwoLayerVAE: Burda et al.'s two stochastic layers as a Pyro model and guide."""

import pyro
import pyro.poutine as poutine
import pytest
import torch
from gradcheck import loss_grads_and_rng

import pyro_vae as pv


def _x(n=10, d=6, seed=1):
    return torch.bernoulli(torch.rand(n, d, generator=torch.Generator().manual_seed(seed)))


def _small(**kw):
    torch.manual_seed(0)
    return pv.TwoLayerVAE(6, 4, (8,), z2_dim=3, hidden2_dims=(5,), **kw)


def test_defaults_are_burdas_architecture():
    vae = pv.TwoLayerVAE(784)
    c = vae.config
    assert (c.z_dim, c.hidden_dims, c.activation, c.z2_dim, c.hidden2_dims) == (
        100,
        (200, 200),
        "tanh",
        50,
        (100, 100),
    )
    assert c.latent_layers == 2
    linears = [m.out_features for m in vae.encoder.net.modules() if isinstance(m, torch.nn.Linear)]
    assert linears == [200, 200, 200]  # 784-200-200 -> (loc, scale) of z1 (100)
    q2 = [m.out_features for m in vae.q_z2.modules() if isinstance(m, torch.nn.Linear)]
    assert q2 == [100, 100, 100]  # z1-100-100 -> (loc, scale) of z2 (50)


def test_the_program_reads_like_the_math():
    vae = _small()
    x = _x()
    guide = poutine.trace(vae.guide).get_trace(x)
    model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)
    assert [n for n, s in guide.nodes.items() if s["type"] == "sample"] == ["data", "z1", "z2"]
    assert [n for n, s in model.nodes.items() if s["type"] == "sample"] == ["data", "z2", "z1", "x"]
    assert model.nodes["z1"]["fn"].event_shape == (4,) and model.nodes["z2"]["fn"].event_shape == (
        3,
    )
    assert model.nodes["x"]["is_observed"]


@pytest.mark.parametrize(
    "estimator,k", [("trace", 1), ("trace", 3), ("iwae", 3), ("renyi", 3), ("tail_adaptive", 3)]
)
def test_own_log_weights_equal_the_pyro_program(estimator, k):
    vae = _small().double()
    x = _x().double()
    elbo = pv.make_elbo(estimator, k)
    expected, expected_grads, expected_rng = loss_grads_and_rng(
        lambda: elbo.differentiable_loss(vae.model, vae.guide, x, num_data=100), vae
    )
    got, grads, rng = loss_grads_and_rng(
        lambda: elbo.objective(vae.log_weights(x, 100, **elbo.request())), vae
    )
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-9)
    assert grads.keys() == expected_grads.keys() and len(grads) == len(list(vae.parameters()))
    for name, g in grads.items():
        torch.testing.assert_close(g, expected_grads[name], rtol=1e-8, atol=1e-9, msg=name)
    assert torch.equal(rng, expected_rng)


@pytest.mark.parametrize("options", [dict(pathwise=True), dict(analytic_kl=True)])
def test_own_log_weights_leave_path_derivatives_and_closed_form_kls_to_the_program(options):
    with pytest.raises(ValueError, match="the Pyro program handles"):
        _small().log_weights(_x(), **options)


@pytest.mark.parametrize("estimator", sorted(pv.ESTIMATORS))
@pytest.mark.parametrize("net", ["two_layer", "conv"])
def test_every_estimator_runs_and_lowers_the_loss(estimator, net):
    torch.manual_seed(0)
    if net == "conv":
        vae = pv.VAE(64, 4, (16,), net="conv", image_shape=(1, 8, 8), conv_channels=(4, 8))
    else:
        vae = pv.TwoLayerVAE(64, 6, (16,), z2_dim=3, hidden2_dims=(8,))
    x = _x(64, 64, seed=2)
    k = 1 if estimator in ("trace", "meanfield", "tracegraph", "score") else 3
    loss = pv.training.loss.TrainingLoss(vae, pv.make_elbo(estimator, k))

    def bound():  # the ELBO of the current model, on many draws, with a fixed seed
        torch.manual_seed(123)
        with torch.no_grad():
            return float(
                pv.log_likelihood(vae.model, vae.guide, x, 64, return_stats=True).elbo.mean()
            )

    before = bound()
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        loss(x, 1000).backward()
        opt.step()
    assert bound() > before + 1.0, estimator


def test_load_model_gives_identical_log_likelihoods(tmp_path):
    vae = _small(guide="iaf")
    pv.train(
        vae,
        _x(32),
        config=pv.TrainConfig(epochs=1, batch_size=16, eval_every=0, progress=False),
        out_dir=tmp_path,
    )
    loaded = pv.load_model(tmp_path)
    assert type(loaded) is pv.TwoLayerVAE and loaded.config == vae.config
    x = _x(8)
    torch.manual_seed(4)
    a = pv.log_likelihood(vae.model, vae.guide, x, num_samples=16)
    torch.manual_seed(4)
    b = pv.log_likelihood(loaded.model, loaded.guide, x, num_samples=16)
    assert torch.equal(a, b)


def test_samples_are_drawn_from_the_top_of_the_hierarchy_down():
    vae = _small(likelihood="gaussian")
    calls = []
    vae.p_z1.register_forward_hook(lambda m, args, out: calls.append(args[0].shape))
    samples = vae.sample(5)
    assert samples.shape == (5, 6) and calls == [torch.Size([5, 3])]  # p(z1 | z2) ran on z2


def test_the_vamp_prior_is_refused_for_the_top_layer():
    with pytest.raises(ValueError, match="not over the top layer z2"):
        pv.TwoLayerVAE(6, 4, (8,), prior="vamp")


def test_build_model_picks_the_class_from_the_config():
    vae = _small()
    again = pv.build_model(vae.config)
    assert type(again) is pv.TwoLayerVAE and again.config == vae.config
    with pytest.raises(ValueError, match="2 stochastic layers"):
        pv.VAE.from_config(vae.config)


def test_the_program_is_a_valid_pyro_program_under_svi():
    vae = _small()
    pyro.clear_param_store()
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), pv.make_elbo("trace"))
    assert torch.isfinite(torch.tensor(svi.step(_x())))


def test_gradient_groups_put_both_guide_networks_on_the_inference_side():
    vae = _small()
    groups = pv.infer.gradients.default_param_groups(vae.model, vae.guide, _x())
    inference = {id(p) for p in groups["inference"]}
    assert inference == {id(p) for m in (vae.encoder, vae.q_z2) for p in m.parameters()}
    generative = {id(p) for p in groups["generative"]}
    assert {id(p) for p in vae.p_z1.parameters()} <= generative
    assert len(inference) + len(generative) == len(list(vae.parameters()))
    snr = pv.gradient_snr(vae.model, vae.guide, pv.make_elbo("iwae", 2), _x(), num_repeats=3)
    assert snr.mean_snr["inference"] > 0 and snr.mean_snr["generative"] > 0


def test_the_comparison_harness_compares_estimators_on_two_layers(tmp_path):
    from pyro_vae.experiments.compare import CompareConfig, compare_estimators, parse_estimators

    g = torch.Generator().manual_seed(0)
    data = pv.ImageData(
        name="tiny",
        train_x=torch.rand(40, 16, generator=g),
        train_y=torch.zeros(40, dtype=torch.long),
        test_x=torch.rand(12, 16, generator=g),
        test_y=torch.zeros(12, dtype=torch.long),
        image_shape=(4, 4),
    )
    model = pv.ModelConfig(16, 3, (8,), latent_layers=2, z2_dim=2, hidden2_dims=(4,))
    config = CompareConfig(
        estimators=tuple(parse_estimators("trace,dreg:2", "1")),
        seeds=(0,),
        epochs=1,
        model=model,
        batch_size=10,
        eval_samples=4,
        snr_k=(1,),
        snr_repeats=2,
        progress=False,
    )
    result = compare_estimators(config, data=data, out_dir=tmp_path, log=lambda m: None)
    assert [r["estimator"] for r in result.rows] == ["trace", "dreg"]
    assert "two-layer VAE" in (tmp_path / "comparison.md").read_text()


def test_meanfield_takes_the_closed_form_kl_only_where_it_is_exact():
    """KL(q(z1 | x) || p(z1 | z2)) would hold z2 fixed while z2 ~ q(z2 | z1): only the last
    guide site (z2) gets its closed form, so meanfield's bound is the ELBO in expectation."""
    vae, x = _small().double(), _x().double()
    lw = pv.log_weights(vae.model, vae.guide, x, num_samples=4000, analytic_kl=True)
    assert lw.analytic == ("z2",)
    trace = pv.log_weights(vae.model, vae.guide, x, num_samples=4000)
    torch.testing.assert_close(lw.log_w.mean(0), trace.log_w.mean(0), rtol=0, atol=0.15)


def test_own_log_joint_equals_the_pyro_program_s():
    """TwoLayerVAE.log_joint against the Pyro program's log joint at random latents: values
    and gradients in both latents, float64."""
    vae, x = _small().double(), _x(5).double()
    z = {
        "z1": 1.5 * torch.randn(4, 5, 4, dtype=torch.float64),
        "z2": 1.5 * torch.randn(4, 5, 3, dtype=torch.float64),
    }
    results = []
    for fn in (
        lambda v: vae.log_joint(x, v),
        lambda v: pv.infer.log_weights.log_joint(vae.model, v, x)[:2],
    ):
        v = {k: t.clone().requires_grad_(True) for k, t in z.items()}
        log_p, log_lik = fn(v)
        grads = torch.autograd.grad((log_p + log_lik).sum(), [v["z1"], v["z2"]])
        results.append((log_p.detach(), log_lik.detach(), *grads))
    assert results[0][0].shape == (4, 5)
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"latent sites \['z1', 'z2'\], got \['z1'\]"):
        vae.log_joint(x, {"z1": z["z1"]})
