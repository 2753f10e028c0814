"""Gradient signal-to-noise ratios: known toy gradients, parameter groups, and Rainforth et al.'s
effect (IWAE's inference SNR falls with K, DReG's does not) on the linear-Gaussian model."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from test_estimators import lg_vae

import pyro_vae as pv
from pyro_vae.infer.estimators import ESTIMATORS
from pyro_vae.infer.gradients import GradientSNR, default_param_groups, gradient_snr


class ToyELBO:
    """loss = c . a + sum_i (1 + s_i eps_i) b_i + (eps' . d): a's gradient is deterministic,
    b's has mean 1 and std s (SNR 1/s), d's is pure noise (mean 0)."""

    def __init__(self, a, b, d, s):
        self.a, self.b, self.d, self.s = a, b, d, s

    def differentiable_loss(self, model, guide, *args, **kwargs):
        c = torch.arange(1.0, 1.0 + self.a.numel()).reshape(self.a.shape)
        noisy = 1.0 + self.s * torch.randn_like(self.b)
        return (
            (c * self.a).sum() + (noisy * self.b).sum() + (torch.randn_like(self.d) * self.d).sum()
        )


def test_known_gradients_give_known_snr():
    a = torch.zeros(3, requires_grad=True)
    b = torch.zeros(4, requires_grad=True)
    d = torch.zeros(200, requires_grad=True)
    s = torch.tensor([0.5, 1.0, 2.0, 4.0])
    unused = torch.zeros(2, requires_grad=True)
    r = gradient_snr(
        None,
        None,
        ToyELBO(a, b, d, s),
        num_repeats=2000,
        param_groups={"det": [a], "signal": [b], "noise": [d], "unused": [unused]},
    )
    assert isinstance(r, GradientSNR) and r.num_repeats == 2000
    torch.testing.assert_close(r.mean["det"], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    assert torch.equal(r.variance["det"], torch.zeros(3, dtype=torch.float64))
    assert math.isinf(r.mean_snr["det"]) and bool(torch.isinf(r.snr["det"]).all())
    # SNR = 1/s, within the Monte Carlo error of R = 2000 repeats
    torch.testing.assert_close(r.snr["signal"], 1 / s.double(), rtol=0.1, atol=0)
    # pure noise: |mean| / std ~ |N(0, 1/R)|, so about sqrt(2 / pi) / sqrt(R) = 0.018
    assert r.mean_snr["noise"] < 0.05 and r.median_snr["noise"] < 0.05
    # no gradient at all: 0 / 0 is nan, left out of the summaries
    assert bool(r.snr["unused"].isnan().all()) and math.isnan(r.mean_snr["unused"])
    assert a.grad is None and "det" in str(r)


def test_num_repeats_must_allow_a_variance():
    with pytest.raises(ValueError, match="num_repeats"):
        gradient_snr(None, None, None, num_repeats=1, param_groups={})


@pytest.mark.parametrize("prior", ["normal", "vamp"])
def test_default_groups_for_a_vae_split_encoder_from_the_rest(prior):
    vae = pv.VAE(
        6, 2, hidden_dims=(8,), prior=prior, likelihood="learned_gaussian", num_components=3
    )
    x = torch.rand(5, 6)
    groups = default_param_groups(vae.model, vae.guide, x)
    ids = {name: {id(p) for p in ps} for name, ps in groups.items()}
    assert ids["inference"] == {id(p) for p in vae.encoder.parameters()}
    generative = [*vae.decoder.parameters(), *vae.prior.parameters(), *vae.likelihood.parameters()]
    assert ids["generative"] == {id(p) for p in generative}
    assert not ids["inference"] & ids["generative"]
    assert ids["inference"] | ids["generative"] == {id(p) for p in vae.parameters()}


def test_default_groups_for_any_model_follow_dependence():
    def model(x):
        loc = pyro.param("p_loc", torch.zeros(()))
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(loc, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        w = pyro.param("q_w", torch.tensor(0.5))
        scale = pyro.param("q_scale", torch.tensor(1.0), constraint=dist.constraints.positive)
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(w * x, scale))

    x = torch.randn(7)
    groups = default_param_groups(model, guide, x)
    store = pyro.get_param_store()
    assert {id(p) for p in groups["inference"]} == {
        id(store.get_param("q_w").unconstrained()),
        id(store.get_param("q_scale").unconstrained()),
    }
    assert [id(p) for p in groups["generative"]] == [id(store.get_param("p_loc").unconstrained())]
    r = gradient_snr(model, guide, pv.make_elbo("dreg", 3), x, num_repeats=5)
    assert r.snr["inference"].shape == (2,) and r.snr["generative"].shape == (1,)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_every_estimator_works_and_grads_are_left_alone(name):
    vae = pv.VAE(6, 2, hidden_dims=(8,), likelihood="gaussian")
    x = torch.randn(5, 6)
    for p in vae.parameters():
        p.grad = torch.full_like(p, 7.0)
    k = 1 if name in ("trace", "meanfield", "tracegraph") else 3
    elbo = pv.make_elbo(name, k, alpha=0.5) if name == "renyi" else pv.make_elbo(name, k)
    r = gradient_snr(vae.model, vae.guide, elbo, x, num_repeats=3)
    assert set(r.snr) == {"inference", "generative"}
    assert r.snr["inference"].numel() == sum(p.numel() for p in vae.encoder.parameters())
    assert all(math.isfinite(v) for v in r.mean_snr.values())
    assert all(bool((p.grad == 7.0).all()) for p in vae.parameters())


def test_rainforth_effect_iwae_inference_snr_falls_with_k_and_dregs_does_not():
    """Rainforth et al. (2018): IWAE's inference-network SNR is O(1/sqrt(K)); DReG's is not
    (Tucker et al. 2019). A guide near, not at, the exact posterior of a linear-Gaussian VAE."""
    vae, x = lg_vae(shift=0.3, inflate=1.3, n=4)
    snr = {}
    # 600 small estimates: validation (a scale_tril check per draw) and intra-op threads on
    # 2x2 tensors are most of the runtime, so both are off here and restored afterwards
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with pyro.validation_enabled(False):
            for name in ("iwae", "dreg"):
                for k in (1, 10, 100):
                    elbo = pv.make_elbo(name, k)
                    snr[name, k] = gradient_snr(
                        vae.model, vae.guide, elbo, x, num_repeats=150
                    ).mean_snr
    finally:
        torch.set_num_threads(threads)
    iwae = [snr["iwae", k]["inference"] for k in (1, 10, 100)]
    dreg = [snr["dreg", k]["inference"] for k in (1, 10, 100)]
    assert iwae[0] > 1.5 * iwae[1] > 2.25 * iwae[2], iwae  # about 1/sqrt(K): 1, 0.43, 0.17
    assert dreg[2] > 2 * dreg[0] and dreg[1] > 0.7 * dreg[0], dreg  # about 2.2, 2.7, 7
    assert dreg[2] > 10 * iwae[2]
    # the generative network's SNR rises with K for both (the same gradient for both)
    for name in ("iwae", "dreg"):
        gen = [snr[name, k]["generative"] for k in (1, 10, 100)]
        assert gen[0] < gen[1] < gen[2], (name, gen)
