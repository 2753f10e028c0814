"""ELBO estimators: values against their definitions, gradients against each other and against
closed forms on the linear-Gaussian model, and every estimator through SVI, the module form and
``pyro_vae.train``."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import exact_posterior_params, linear_gaussian_vae, with_guide
from pyro.infer import SVI, RenyiELBO, Trace_ELBO
from pyro.optim import Adam
from torch import nn
from torch.distributions import kl_divergence

import pyro_vae as pv
from pyro_vae.infer.estimators import (
    ESTIMATORS,
    IWAE_ELBO,
    STL_ELBO,
    DReG_ELBO,
    Renyi_ELBO,
    Score_ELBO,
    TailAdaptive_ELBO,
    make_elbo,
    tail_adaptive_weights,
)

NEW = ("iwae", "stl", "dreg", "renyi", "tail_adaptive", "score")


class LinearGuide(pv.Guide):
    """q(z | x) = N(A x + c, L L^T) with learnable A, c, L, initialised at the exact posterior
    of a linear-Gaussian VAE (``shift`` moves the mean, ``inflate`` scales L)."""

    def __init__(self, vae, shift=0.0, inflate=1.0):
        super().__init__(vae.config.x_dim, vae.config.z_dim)
        x_dim = vae.config.x_dim
        eye = torch.eye(x_dim, dtype=torch.float64)
        with torch.no_grad():
            loc0, cov = exact_posterior_params(vae, torch.zeros(1, x_dim, dtype=torch.float64))
            # loc(x) = A x + c is affine: its columns are the loc of the unit vectors minus loc(0)
            a = (exact_posterior_params(vae, eye)[0] - loc0).T
        self.A = nn.Parameter(a.clone())
        self.c = nn.Parameter(loc0[0] + shift)
        self.L = nn.Parameter(inflate * torch.linalg.cholesky(cov))

    def forward(self, x):
        return dist.MultivariateNormal(x @ self.A.T + self.c, scale_tril=torch.tril(self.L))

    gaussian = forward


def lg_vae(shift=0.0, inflate=1.0, n=16, seed=0):
    vae = linear_gaussian_vae(seed=seed)
    x = vae.sample(n, mean=False)
    return with_guide(vae, LinearGuide(vae, shift, inflate)), x


def exact_elbo(vae, x):
    """The closed-form ELBO sum_n E_q[log p(x_n | z)] - KL(q(z | x_n) || p(z)), differentiable
    in the guide's and the decoder's parameters."""
    q = vae.encoder(x)
    lin = vae.decoder.out
    s = float(vae.likelihood.scale()[0])
    m, cov = q.loc, q.covariance_matrix
    resid = x - m @ lin.weight.T - lin.bias
    trace = torch.einsum("dz,bzy,dy->b", lin.weight, cov, lin.weight)
    d = x.shape[-1]
    expected_ll = -0.5 * d * math.log(2 * math.pi * s**2) - (resid.pow(2).sum(-1) + trace) / (
        2 * s**2
    )
    prior = dist.MultivariateNormal(torch.zeros_like(m[0]), torch.eye(m.shape[-1], dtype=m.dtype))
    return (expected_ll - kl_divergence(q, prior)).sum()


def grads(loss, params):
    return [
        g if g is not None else torch.zeros_like(p)
        for p, g in zip(params, torch.autograd.grad(loss, params, allow_unused=True), strict=True)
    ]


def seeded(seed, fn):
    pyro.set_rng_seed(seed)
    return fn()


def close(a, b, **kw):
    for u, v in zip(a, b, strict=True):
        torch.testing.assert_close(u, v, **kw)


@pytest.fixture
def small_vae():
    vae = pv.VAE(6, 2, hidden_dims=(8,), likelihood="gaussian").double()
    x = torch.randn(10, 6, dtype=torch.float64)
    return vae, x


# -- the registry -------------------------------------------------------------------------------
def test_unknown_name_lists_every_valid_estimator():
    with pytest.raises(ValueError) as err:
        make_elbo("nope")
    for name in ESTIMATORS:
        assert name in str(err.value)
    assert set(NEW) <= set(ESTIMATORS)


@pytest.mark.parametrize("name", NEW)
def test_jit_is_rejected_where_pyro_has_no_jit_variant(name):
    with pytest.raises(ValueError, match=f"'{name}' has no JIT variant.*drop jit=True"):
        make_elbo(name, 2, jit=True)


def test_options_are_checked():
    with pytest.raises(ValueError, match="alpha = 1.*'trace'"):
        make_elbo("renyi", 4, alpha=1)
    with pytest.raises(ValueError, match="K >= 2"):
        make_elbo("tail_adaptive", 1)
    with pytest.raises(ValueError, match="baseline must be one of"):
        make_elbo("score", 2, baseline="mean")
    with pytest.raises(ValueError, match="num_particles >= 2"):
        make_elbo("score", 1, baseline="leave_one_out")
    assert make_elbo("tail-adaptive", 3, tail_adaptive_beta=-0.5).tail_adaptive_beta == -0.5
    assert isinstance(make_elbo("score", 1), Score_ELBO)


def test_non_reparameterized_guide_is_refused_with_a_pointer_to_score():
    def model():
        with pyro.plate("data", 3):
            b = pyro.sample("b", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(b, 1.0), obs=torch.zeros(3))

    def guide():
        p = pyro.param("p", torch.tensor(0.3))
        with pyro.plate("data", 3):
            pyro.sample("b", dist.Bernoulli(p))

    for name in ("iwae", "stl", "dreg"):
        with pytest.raises(ValueError, match="reparameterized guide.*'score'"):
            make_elbo(name, 2).differentiable_loss(model, guide)
    assert math.isfinite(make_elbo("score", 2).loss_and_grads(model, guide))


# -- IWAE ---------------------------------------------------------------------------------------
def test_iwae_loss_is_minus_the_sum_of_per_datapoint_bounds_on_the_same_draws(small_vae):
    vae, x = small_vae
    k = 7
    lw = seeded(3, lambda: pv.log_weights(vae.model, vae.guide, x, num_samples=k))
    per_datapoint = lw.log_w.detach().logsumexp(0) - math.log(k)
    assert per_datapoint.shape == (10,)
    loss = seeded(3, lambda: IWAE_ELBO(k).loss(vae.model, vae.guide, x))
    assert loss == pytest.approx(-float(per_datapoint.sum()), rel=1e-12)


@pytest.mark.parametrize("name", ["iwae", "renyi", "dreg", "stl", "score", "tail_adaptive"])
def test_subsample_scale_multiplies_outside_the_bound(small_vae, name):
    vae, x = small_vae
    elbo = make_elbo(name, 5, alpha=0.5) if name == "renyi" else make_elbo(name, 5)
    full = seeded(1, lambda: elbo.differentiable_loss(vae.model, vae.guide, x))
    scaled = seeded(1, lambda: elbo.differentiable_loss(vae.model, vae.guide, x, num_data=250))
    assert scaled.item() == pytest.approx(25.0 * full.item(), rel=1e-12)
    params = list(vae.parameters())
    g_full = seeded(1, lambda: grads(elbo.differentiable_loss(vae.model, vae.guide, x), params))
    g_scaled = seeded(
        1, lambda: grads(elbo.differentiable_loss(vae.model, vae.guide, x, num_data=250), params)
    )
    close(g_scaled, [25.0 * g for g in g_full])


def test_pyro_renyi_elbo_scales_inside_the_logsumexp_and_ours_does_not(small_vae):
    """Verifies the trap our estimators avoid (pyro/infer/renyi_elbo.py sums the *scaled*
    site log_prob before the log-sum-exp)."""
    vae, x = small_vae
    pyro_renyi = RenyiELBO(alpha=0, num_particles=5, vectorize_particles=True, max_plate_nesting=1)
    ours = seeded(2, lambda: IWAE_ELBO(5).loss(vae.model, vae.guide, x))
    theirs = seeded(2, lambda: pyro_renyi.loss(vae.model, vae.guide, x))
    assert theirs == pytest.approx(ours, rel=1e-9)  # the same bound without subsampling (B=1 plate)
    ours = seeded(2, lambda: IWAE_ELBO(5).loss(vae.model, vae.guide, x, num_data=100))
    theirs = seeded(2, lambda: pyro_renyi.loss(vae.model, vae.guide, x, num_data=100))
    assert theirs != pytest.approx(ours, rel=1e-3)


@pytest.mark.parametrize("num_data", [None, 40])
def test_iwae_with_one_particle_is_trace_elbo_in_value_and_gradient(small_vae, num_data):
    vae, x = small_vae
    params = list(vae.parameters())
    loss_fn = lambda e: e.differentiable_loss(vae.model, vae.guide, x, num_data=num_data)  # noqa: E731
    a = seeded(4, lambda: loss_fn(IWAE_ELBO(1)))
    b = seeded(4, lambda: loss_fn(Trace_ELBO()))
    torch.testing.assert_close(a, b)
    close(
        seeded(4, lambda: grads(loss_fn(IWAE_ELBO(1)), params)),
        seeded(4, lambda: grads(loss_fn(Trace_ELBO()), params)),
    )


# -- STL and DReG: the model's gradient is untouched ---------------------------------------------
@pytest.mark.parametrize("guide", ["normal", "iaf"])
@pytest.mark.parametrize("k", [1, 4])
def test_stl_is_trace_elbo_for_the_model_draw_by_draw(guide, k):
    vae = pv.VAE(6, 2, hidden_dims=(8,), likelihood="gaussian", guide=guide).double()
    x = torch.randn(10, 6, dtype=torch.float64)
    trace = Trace_ELBO(num_particles=k, vectorize_particles=k > 1, max_plate_nesting=1)
    generative = list(vae.decoder.parameters())
    for seed in range(3):
        stl = seeded(seed, lambda: STL_ELBO(k).differentiable_loss(vae.model, vae.guide, x, 30))
        ref = seeded(seed, lambda: trace.differentiable_loss(vae.model, vae.guide, x, 30))
        # an IAF's log q at a replayed z goes through the flow's inverse: equal to rounding
        torch.testing.assert_close(stl, ref, rtol=1e-10, atol=1e-8)
        close(grads(stl, generative), grads(ref, generative), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("guide", ["normal", "iaf"])
def test_dreg_is_iwae_for_the_model_draw_by_draw(guide):
    vae = pv.VAE(6, 2, hidden_dims=(8,), likelihood="gaussian", guide=guide).double()
    x = torch.randn(10, 6, dtype=torch.float64)
    generative = list(vae.decoder.parameters())
    for seed in range(3):
        dreg = seeded(seed, lambda: DReG_ELBO(5).differentiable_loss(vae.model, vae.guide, x))
        iwae = seeded(seed, lambda: IWAE_ELBO(5).differentiable_loss(vae.model, vae.guide, x))
        torch.testing.assert_close(dreg, iwae, rtol=1e-10, atol=1e-8)
        close(grads(dreg, generative), grads(iwae, generative), rtol=1e-9, atol=1e-9)


# -- at the exact posterior the path-derivative guide gradients vanish sample by sample ----------
def test_guide_gradient_vanishes_draw_by_draw_at_the_exact_posterior_for_stl_and_dreg():
    vae, x = lg_vae()
    inference = list(vae.encoder.parameters())
    for seed in range(5):
        for elbo in (STL_ELBO(1), STL_ELBO(4), DReG_ELBO(4)):
            loss = seeded(seed, lambda e=elbo: e.differentiable_loss(vae.model, vae.guide, x))
            biggest = max(float(g.abs().max()) for g in grads(loss, inference))
            assert biggest < 1e-8, (type(elbo).__name__, seed, biggest)
        for elbo in (Trace_ELBO(), IWAE_ELBO(4)):
            loss = seeded(seed, lambda e=elbo: e.differentiable_loss(vae.model, vae.guide, x))
            biggest = max(float(g.abs().max()) for g in grads(loss, inference))
            assert biggest > 0.5, (type(elbo).__name__, seed, biggest)


# -- unbiasedness: many copies of one datapoint in a batch are many independent draws ------------
def _mean_and_stderr(elbo, vae, x, params, repeats):
    est = torch.stack(
        [
            torch.cat(
                [
                    g.reshape(-1)
                    for g in grads(elbo.differentiable_loss(vae.model, vae.guide, x), params)
                ]
            )
            for _ in range(repeats)
        ]
    )
    return est.mean(0), est.std(0) / math.sqrt(repeats)


@pytest.mark.parametrize(
    "elbo",
    [
        Trace_ELBO(),
        STL_ELBO(1),
        Score_ELBO(1),
        Score_ELBO(2),
        TailAdaptive_ELBO(2, tail_adaptive_beta=0.0),
    ],
    ids=["trace", "stl", "score_decaying", "score_loo", "ta0"],
)
def test_elbo_gradient_estimators_are_unbiased_against_the_closed_form(elbo):
    vae, x = lg_vae(shift=0.4, inflate=1.5, n=2)
    x = x.repeat_interleave(1000, 0)  # 2 datapoints x 1000 independent draws each
    params = list(vae.encoder.parameters()) + list(vae.decoder.parameters())
    exact = torch.cat([g.reshape(-1) for g in grads(-exact_elbo(vae, x), params)])
    mean, stderr = _mean_and_stderr(elbo, vae, x, params, repeats=10)
    used = exact.abs() + stderr > 0  # torch.tril leaves the upper triangle of L without gradient
    z = ((mean - exact) / (stderr + 1e-3 * exact.abs()))[used]
    assert float(z.abs().max()) < 6.0, z


def test_score_gradient_is_unbiased_for_an_iaf_guide():
    """A flow caches log|det J| from sample()'s no_grad forward; read from that cache, the score
    d log q would miss the flow's parameters entirely (biased at z ~ 17 before the fix)."""
    vae = pv.VAE(4, 2, hidden_dims=(8,), likelihood="gaussian", guide="iaf").double()
    x = torch.randn(2, 4, dtype=torch.float64).repeat_interleave(1000, 0)
    params = list(vae.encoder.flows.parameters())
    with pyro.validation_enabled(False):
        a, sa = _mean_and_stderr(Trace_ELBO(max_plate_nesting=1), vae, x, params, repeats=8)
        b, sb = _mean_and_stderr(Score_ELBO(2), vae, x, params, repeats=8)
    se = (sa**2 + sb**2).sqrt()
    used = se > 0  # the autoregressive masks leave some weights without gradient
    z = ((a - b)[used] / se[used]).abs()
    assert float(z.max()) < 6.0 and float(z.median()) < 1.5, (z.max(), z.median())


def test_dreg_gradient_is_unbiased_for_the_iwae_gradient():
    vae, x = lg_vae(shift=0.4, inflate=1.5, n=2)
    x = x.repeat_interleave(1000, 0)
    params = list(vae.encoder.parameters())
    a, sa = _mean_and_stderr(IWAE_ELBO(5), vae, x, params, repeats=10)
    b, sb = _mean_and_stderr(DReG_ELBO(5), vae, x, params, repeats=10)
    se = (sa**2 + sb**2).sqrt()
    used = se > 0
    assert float(((a - b)[used] / se[used]).abs().max()) < 6.0


# -- Renyi -------------------------------------------------------------------------------------
def test_renyi_alpha_zero_is_iwae_in_value_and_gradient(small_vae):
    vae, x = small_vae
    params = list(vae.parameters())
    a = seeded(5, lambda: Renyi_ELBO(6, alpha=0.0).differentiable_loss(vae.model, vae.guide, x))
    b = seeded(5, lambda: IWAE_ELBO(6).differentiable_loss(vae.model, vae.guide, x))
    torch.testing.assert_close(a, b)
    close(grads(a, params), grads(b, params))


def test_renyi_is_the_per_datapoint_vr_bound_and_orders_between_iwae_and_elbo(small_vae):
    vae, x = small_vae
    k, n = 6, 70
    lw = seeded(5, lambda: pv.log_weights(vae.model, vae.guide, x, num_samples=k))
    for alpha in (-0.5, 0.5, 0.9, 2.0):
        manual = ((1 - alpha) * lw.log_w.detach()).logsumexp(0) - math.log(k)
        manual = manual / (1 - alpha)
        loss = seeded(5, lambda a=alpha: Renyi_ELBO(k, alpha=a).loss(vae.model, vae.guide, x, n))
        assert loss == pytest.approx(-n / len(x) * float(manual.sum()), rel=1e-10)
    # on the same draws the bound falls as alpha rises (power means): IWAE >= VR >= ELBO
    values = [
        seeded(5, lambda a=a: -Renyi_ELBO(k, alpha=a).loss(vae.model, vae.guide, x))
        for a in (0.0, 0.5, 0.999)
    ]
    elbo = seeded(5, lambda: -STL_ELBO(k).loss(vae.model, vae.guide, x))
    assert values[0] > values[1] > values[2] > elbo
    assert values[2] == pytest.approx(elbo, rel=1e-3)


# -- tail-adaptive -----------------------------------------------------------------------------
def test_tail_adaptive_weights_rank_the_largest_weight_first():
    log_w = torch.tensor([[3.0, 0.0], [1.0, 5.0], [2.0, 1.0]])
    gamma = tail_adaptive_weights(log_w, beta=-1.0)
    # column 0: ranks (1, 3, 2); column 1: ranks (3, 1, 2); gamma = (1 / rank) normalized
    expected = torch.tensor([[1.0, 1 / 3], [1 / 3, 1.0], [1 / 2, 1 / 2]]) / (11 / 6)
    torch.testing.assert_close(gamma, expected)
    torch.testing.assert_close(tail_adaptive_weights(log_w, beta=0.0), torch.full((3, 2), 1 / 3))
    joint = tail_adaptive_weights(log_w, beta=-1.0, per_datapoint=False)  # sums (3, 6, 3)
    assert joint.shape == (3, 1) and float(joint[1]) == max(joint.flatten().tolist())


def test_tail_adaptive_with_beta_zero_is_trace_elbo_with_k_particles(small_vae):
    vae, x = small_vae
    params = list(vae.parameters())
    a = seeded(
        6,
        lambda: TailAdaptive_ELBO(4, tail_adaptive_beta=0.0).differentiable_loss(
            vae.model, vae.guide, x
        ),
    )
    b = seeded(
        6,
        lambda: Trace_ELBO(
            num_particles=4, vectorize_particles=True, max_plate_nesting=1
        ).differentiable_loss(vae.model, vae.guide, x),
    )
    torch.testing.assert_close(a, b)
    close(grads(a, params), grads(b, params))


# -- every estimator through SVI, the module form and train -------------------------------------
def _make(name, k=3):
    return make_elbo(name, k, alpha=0.5) if name == "renyi" else make_elbo(name, k)


@pytest.mark.parametrize("name", NEW)
def test_svi_step_returns_a_finite_float(name, small_vae):
    vae, x = small_vae
    svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-3}), loss=_make(name))
    for _ in range(2):
        loss = svi.step(x, num_data=100)
        assert isinstance(loss, float) and math.isfinite(loss)
    assert math.isfinite(svi.evaluate_loss(x))


@pytest.mark.parametrize("name", NEW)
def test_module_form_with_a_torch_optimizer(name, small_vae):
    vae, x = small_vae
    loss_module = _make(name)(vae.model, vae.guide)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in vae.parameters()]
    for _ in range(2):
        opt.zero_grad()
        loss = loss_module(x)
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    assert all(not torch.equal(a, b) for a, b in zip(before, vae.parameters(), strict=True))


@pytest.mark.parametrize("name", NEW)
def test_train_runs_and_the_loss_goes_down(name):
    torch.manual_seed(0)
    z = torch.randn(256, 2)
    x = z @ torch.randn(2, 8) + 0.1 * torch.randn(256, 8)
    vae = pv.VAE(8, 2, hidden_dims=(16,), likelihood="gaussian", likelihood_scale=0.5)
    cfg = pv.TrainConfig(
        epochs=3,
        batch_size=32,
        lr=1e-2,
        elbo=name,
        num_particles=3,
        eval_every=0,
        eval_samples=5,
        progress=False,
    )
    history = pv.train(vae, x, config=cfg).history
    elbos = [h["train_elbo"] for h in history]
    assert all(math.isfinite(e) for e in elbos) and elbos[-1] > elbos[0], elbos


# -- path-derivative estimators against a reference written at detached leaves ----------------


def _pathwise_reference(vae, x, k, seed, kind):
    """STL / DReG guide gradient written by hand: log w at detached copies of z, its gradient
    there times c (1/K or w~^2), pushed back through the draw."""
    torch.manual_seed(seed)
    z = vae.encoder(x).rsample((k,))
    leaf = z.detach().requires_grad_()
    log_w = (
        vae.likelihood(vae.decoder(leaf)).log_prob(x)
        + vae.prior().log_prob(leaf)
        - vae.encoder(x).log_prob(leaf)
    )
    w = torch.softmax(log_w.detach(), 0)
    c = w * w if kind == "dreg" else torch.full_like(w, 1.0 / k)
    (g,) = torch.autograd.grad((c * log_w).sum(), leaf)
    return torch.autograd.grad(-(g * z).sum(), list(vae.encoder.parameters()))


@pytest.mark.parametrize("kind", ["stl", "dreg"])
@pytest.mark.parametrize("guide,own", [("normal", False), ("normal", True), ("iaf", False)])
def test_path_derivative_guide_gradients_equal_the_reference(kind, guide, own):
    """Also for an IAF, whose log q at its own draw would go through the flow's cached input."""
    torch.manual_seed(0)
    vae = pv.VAE(6, 3, (8,), likelihood="gaussian", guide=guide).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    elbo = make_elbo(kind, 5)
    torch.manual_seed(1)
    if own:
        loss = elbo.objective(vae.log_weights(x, **elbo.request()))
    else:
        loss = elbo.differentiable_loss(vae.model, vae.guide, x)
    got = torch.autograd.grad(loss, list(vae.encoder.parameters()))
    for g, r in zip(got, _pathwise_reference(vae, x, 5, 1, kind), strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-11)


class _TwoLatentGuide(torch.nn.Module):
    """q(z1 | x) q(z2 | z1): a guide whose second latent depends on the first."""

    def __init__(self):
        super().__init__()
        self.a, self.s1 = (
            torch.nn.Parameter(torch.tensor(0.3)),
            torch.nn.Parameter(torch.tensor(0.8)),
        )
        self.b, self.c = (
            torch.nn.Parameter(torch.tensor(0.7)),
            torch.nn.Parameter(torch.tensor(0.1)),
        )
        self.s2 = torch.nn.Parameter(torch.tensor(0.6))

    def model(self, x):
        with pyro.plate("data", len(x), dim=-1):
            z1 = pyro.sample("z1", dist.Normal(0.0, 1.0).expand(x.shape))
            z2 = pyro.sample("z2", dist.Normal(z1, 1.0))
            pyro.sample("x", dist.Normal(z2, 1.0), obs=x)

    def guide(self, x):
        with pyro.plate("data", len(x), dim=-1):
            z1 = pyro.sample("z1", dist.Normal(self.a * x, self.s1))
            pyro.sample("z2", dist.Normal(self.b * z1 + self.c, self.s2))

    def reference(self, x, k, seed, kind):
        torch.manual_seed(seed)
        z1 = dist.Normal(self.a * x, self.s1).expand((k, len(x))).rsample()
        z2 = dist.Normal(self.b * z1 + self.c, self.s2).rsample()
        d = torch.Tensor.detach
        log_q = dist.Normal(d(self.a) * x, d(self.s1)).log_prob(z1) + dist.Normal(
            d(self.b) * z1 + d(self.c), d(self.s2)
        ).log_prob(z2)
        log_p = (
            dist.Normal(0.0, 1.0).log_prob(z1)
            + dist.Normal(z1, 1.0).log_prob(z2)
            + dist.Normal(z2, 1.0).log_prob(x)
        )
        log_w = log_p - log_q
        w = torch.softmax(log_w.detach(), 0)
        surrogate = (w * w * log_w).sum() if kind == "dreg" else log_w.mean(0).sum()
        return torch.autograd.grad(-surrogate, list(self.parameters()))


@pytest.mark.parametrize("kind", ["stl", "dreg"])
def test_path_derivatives_with_a_dependent_latent_equal_the_reference(kind):
    torch.manual_seed(0)
    m = _TwoLatentGuide().double()
    x = torch.randn(5, dtype=torch.float64)
    torch.manual_seed(3)
    loss = make_elbo(kind, 4).differentiable_loss(m.model, m.guide, x)
    got = torch.autograd.grad(loss, list(m.parameters()))
    for g, r in zip(got, m.reference(x, 4, 3, kind), strict=True):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-11)


def test_tracegraph_with_jit_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="'tracegraph' has no JIT variant.*drop jit=True"):
        make_elbo("tracegraph", jit=True)
