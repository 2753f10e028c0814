"""The K-sample log-likelihood against the linear-Gaussian model's exact log p(x)."""

import math
import sys

import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import (
    ExactPosterior,
    exact_log_marginal,
    exact_posterior_params,
    linear_gaussian_vae,
    with_guide,
)

import pyro_vae as pv


@pytest.fixture
def lg():
    vae = linear_gaussian_vae()
    x = vae.sample(64, mean=False)
    return vae, x


def test_exact_posterior_gives_exact_log_likelihood_for_every_datapoint(lg):
    vae, x = lg
    with_guide(vae, ExactPosterior(vae))
    for k in (1, 7, 100):
        ll = pv.log_likelihood(vae.model, vae.guide, x, num_samples=k)
        assert ll.shape == (64,)
        torch.testing.assert_close(ll, exact_log_marginal(vae, x), atol=1e-9, rtol=0)


def test_mean_field_guide_rises_with_k_and_reaches_exact(lg):
    vae, x = lg
    with_guide(vae, ExactPosterior(vae, inflate=1.3, diagonal=True))
    exact = exact_log_marginal(vae, x).detach()
    means = []
    for k in (1, 10, 100, 5000):
        # average repeats: the bound holds in expectation, not draw by draw
        reps = 20 if k < 1000 else 1
        ll = torch.stack([pv.log_likelihood(vae.model, vae.guide, x, k) for _ in range(reps)])
        means.append(float(ll.mean()))
    # K=100 is already within Monte Carlo noise of K=5000, so order is asserted up to K=100
    assert means[:3] == sorted(means[:3]) and means[3] > means[1], means
    assert means[0] < float(exact.mean()) - 0.05  # a real gap at K = 1
    assert means[-1] <= float(exact.mean()) + 1e-3
    err = (pv.log_likelihood(vae.model, vae.guide, x, num_samples=5000) - exact).abs()
    assert float(err.max()) < 0.02, float(err.max())


def test_batch_and_chunk_size_do_not_change_the_answer(lg):
    vae, x = lg
    with_guide(vae, ExactPosterior(vae))
    ref = pv.log_likelihood(vae.model, vae.guide, x, num_samples=50)
    for bs, chunk in ((1, 50), (7, 3), (64, 1), (100, 1000)):
        ll = pv.log_likelihood(vae.model, vae.guide, x, 50, bs, chunk_size=chunk)
        torch.testing.assert_close(ll, ref, atol=1e-9, rtol=0)


def test_batch_size_does_not_change_the_answer_with_a_seed(lg):
    """With an approximate guide the draws differ per chunking, but not the estimate's law:
    the same seed and batch layout reproduce exactly, and layouts agree within MC error."""
    vae, x = lg
    with_guide(vae, ExactPosterior(vae, inflate=1.3, diagonal=True))
    torch.manual_seed(1)
    a = pv.log_likelihood(vae.model, vae.guide, x, 2000, batch_size=8, return_stats=True)
    torch.manual_seed(1)
    b = pv.log_likelihood(vae.model, vae.guide, x, 2000, batch_size=8, return_stats=True)
    torch.testing.assert_close(a.log_likelihood, b.log_likelihood)
    c = pv.log_likelihood(vae.model, vae.guide, x, 2000, batch_size=64, return_stats=True)
    assert ((a.log_likelihood - c.log_likelihood).abs() < 5 * (a.stderr + c.stderr) + 1e-6).all()


def test_stats_stderr_and_ess(lg):
    vae, x = lg
    with_guide(vae, ExactPosterior(vae))
    s = pv.log_likelihood(vae.model, vae.guide, x, 100, return_stats=True)
    torch.testing.assert_close(s.ess, torch.full_like(s.ess, 100.0))  # equal weights
    assert float(s.stderr.max()) < 1e-5
    torch.testing.assert_close(s.elbo, s.log_likelihood)  # log w is constant
    with_guide(vae, ExactPosterior(vae, inflate=1.3, diagonal=True))
    s = pv.log_likelihood(vae.model, vae.guide, x, 400, return_stats=True)
    assert ((s.ess > 1) & (s.ess < 400)).all()
    assert (s.elbo < s.log_likelihood).all()  # Jensen
    # the delta-method stderr matches the spread over independent repeats
    reps = torch.stack([pv.log_likelihood(vae.model, vae.guide, x, 400) for _ in range(30)])
    ratio = float(reps.std(0).mean() / s.stderr.mean())
    assert 0.6 < ratio < 1.6, ratio


def test_works_for_any_model_guide_pair_with_a_data_plate():
    """A hand-written Pyro program (no VAE): z_n ~ N(0,1), x_n ~ N(z_n, 1) => x_n ~ N(0, 2)."""

    def model(x):
        with pyro.plate("data", len(x), dim=-1):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(x):
        with pyro.plate("data", len(x), dim=-1):
            pyro.sample("z", dist.Normal(x / 2, math.sqrt(0.5)))

    x = torch.linspace(-3, 3, 13)
    ll = pv.log_likelihood(model, guide, x, num_samples=10)
    torch.testing.assert_close(ll, dist.Normal(0.0, math.sqrt(2.0)).log_prob(x))


def test_global_latent_broadcasts_and_nested_plates_are_summed():
    """x_nj ~ N(z_n, 1) for j in a nested plate; the exact posterior gives log p(x_n) exactly."""

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            with pyro.plate("pix", x.shape[1], dim=-2):
                pyro.sample("x", dist.Normal(z, 1.0), obs=x.T)

    def guide(x):
        m = x.shape[1]
        with pyro.plate("data", x.shape[0], dim=-1):
            pyro.sample("z", dist.Normal(x.sum(1) / (m + 1), (1.0 / (m + 1)) ** 0.5))

    x = torch.randn(6, 3)
    ll = pv.log_likelihood(model, guide, x, 5, max_plate_nesting=2)
    cov = torch.eye(3) + torch.ones(3, 3)
    torch.testing.assert_close(ll, dist.MultivariateNormal(torch.zeros(3), cov).log_prob(x))


@pytest.mark.parametrize("fast_path", [True, False])
def test_memory_is_bounded_by_tiling(lg, monkeypatch, fast_path):
    """No single vectorized pass sees more than max_elements / (batch * D) samples; the own
    path runs the encoder once per batch, the program once per tile."""
    vae, x = lg
    seen, encoded = [], []
    module = sys.modules["pyro_vae.infer.evaluate"]
    orig, sampler = module.log_weights, vae.importance_sampler

    def spy(*a, num_samples, **k):
        seen.append((num_samples, a[2].shape[0]))
        return orig(*a, num_samples=num_samples, **k)

    def own(x):
        encoded.append(len(x))
        draw = sampler(x)
        return lambda k: seen.append((k, len(x))) or draw(k)

    monkeypatch.setattr(module, "log_weights", spy)
    monkeypatch.setattr(vae, "importance_sampler", own)
    budget = 5 * 64 * 10
    pv.log_likelihood(
        vae.model, vae.guide, x, num_samples=1000, max_elements=budget, fast_path=fast_path
    )
    assert max(k * b * 5 for k, b in seen) <= budget
    # every datapoint gets all 1000 samples (and the own path's one validated sample of the
    # first batch besides); the default batch leaves room for tiles of min(K, MIN_CHUNK) samples
    checked = 2 * seen[0][1] if fast_path else 0
    assert sum(k * b for k, b in seen) == 1000 * 64 + checked
    assert max(k for k, b in seen) >= min(1000, module.MIN_CHUNK)
    batches = math.ceil(64 / seen[0][1])
    assert len(encoded) == (batches if fast_path else 0)


def test_tiles_are_exact_splits_of_one_pass(lg):
    """Tiled over K the draws are the very draws of one [K, B, z] pass when every tile holds a
    multiple of 16 numbers (torch's CPU normal_ fills blocks of 16 and redraws a ragged tail):
    here B * z = 32, so any tiling, ragged last tiles and K not a multiple of the tile included,
    gives the same numbers in float64, on the own path and on the Pyro program alike. (Other
    shapes give the same estimator on other draws.)"""
    vae, x = lg
    with_guide(vae, ExactPosterior(vae, inflate=1.3, diagonal=True))
    results = []
    for fast_path in (True, False):
        for chunk in (None, 1, 7, 37, 250):
            torch.manual_seed(3)
            stats = pv.log_likelihood(
                vae.model,
                vae.guide,
                x,
                250,
                16,
                chunk_size=chunk,
                return_stats=True,
                fast_path=fast_path,
            )
            results.append(stats)
    for r in results[1:]:
        for a, b in zip(r, results[0]):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert float(results[0].stderr.mean()) > 0  # a proposal that is not the posterior


def test_an_importance_sampler_that_disagrees_with_its_program_is_not_used(lg, monkeypatch):
    vae, x = lg
    sampler = vae.importance_sampler
    monkeypatch.setattr(vae, "importance_sampler", lambda x: lambda k: sampler(x)(k) + 1.0)
    torch.manual_seed(0)
    with pytest.warns(RuntimeWarning, match="importance_sampler gives log weights up to 1 nats"):
        ll = pv.log_likelihood(vae.model, vae.guide, x, 20)
    torch.manual_seed(0)
    torch.testing.assert_close(ll, pv.log_likelihood(vae.model, vae.guide, x, 20, fast_path=False))


def test_tiles_are_cache_sized_on_a_cpu_and_large_on_a_gpu():
    module = sys.modules["pyro_vae.infer.evaluate"]
    assert module.tile_elements(torch.device("cpu")) * 4 <= 8 * 2**20  # float32: a few MB
    assert module.tile_elements(torch.device("cuda")) >= 16 * module.tile_elements("cpu")


def test_the_tile_rule_and_the_chunks_are_shared_from_batching():
    from pyro_vae.infer import batching, evaluate

    assert evaluate.tile_elements is batching.tile_elements
    assert (evaluate.CPU_TILE_ELEMENTS, evaluate.MIN_CHUNK) == (2**20, 128)  # bench_eval's
    # AIS and the gaps keep a gradient graph: their default on a CPU is 2**22, as it always was
    assert batching.tile_elements("cpu", keeps_graph=True) == 2**22
    assert list(batching.chunks(10, 4)) == [(0, 4), (4, 4), (8, 2)]
    assert list(batching.chunks(10, 4, first=1)) == [(0, 1), (1, 4), (5, 4), (9, 1)]


def test_bad_inputs():
    vae = linear_gaussian_vae()
    with pytest.raises(ValueError, match="non-empty"):
        pv.log_likelihood(vae.model, vae.guide, torch.zeros(0, 5))
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        pv.log_likelihood(vae.model, vae.guide, torch.zeros(3, 5), num_samples=0)
    with pytest.raises(ValueError, match=r"4 features per datapoint but the model expects x_dim=5"):
        pv.log_likelihood(vae.model, vae.guide, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="non-finite"):
        pv.evaluate(vae, torch.full((3, 5), float("nan"), dtype=torch.float64))


def test_evaluate_reports_kl_and_active_units(lg):
    vae, x = lg
    with torch.no_grad():
        loc, cov = exact_posterior_params(vae, x)
    with_guide(vae, ExactPosterior(vae, diagonal=True))
    res = pv.evaluate(vae, x, num_samples=10)
    q = dist.Normal(loc, cov.diagonal().sqrt()).to_event(1)
    kl = torch.distributions.kl_divergence(q, dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    assert math.isclose(res["kl"], float(kl.mean()), rel_tol=1e-9)
    assert res["active_units"] == 2
    assert res["num_samples"] == 10


@pytest.mark.parametrize(
    "build",
    [
        lambda: pv.VAE(12, 3, (16,)),
        lambda: pv.VAE(12, 3, (16,), prior="vamp", num_components=4),
        lambda: pv.VAE(12, 3, (16,), prior="mixture", num_components=3),
        lambda: pv.VAE(12, 3, (16,), likelihood="gaussian"),
        lambda: pv.VAE(12, 3, (16,), guide="iaf"),
        lambda: pv.VAE(12, 3, (16,), guide="planar"),
        lambda: pv.TwoLayerVAE(12, 3, (16,), z2_dim=2, hidden2_dims=(8,)),
    ],
    ids=["default", "vamp", "mixture", "gaussian", "iaf", "planar", "two_layer"],
)
def test_the_own_tiles_give_the_programs_numbers_for_every_built_in_model(build, monkeypatch):
    """The fast path (the encoder once per batch, the model's own log weights per tile) is the
    Pyro program's estimate on the same draws, for every prior, likelihood, guide and depth."""
    torch.manual_seed(0)
    model = build().double()
    x = torch.bernoulli(torch.rand(9, 12, dtype=torch.float64))
    calls = []
    sampler = model.importance_sampler
    monkeypatch.setattr(model, "importance_sampler", lambda x: calls.append(1) or sampler(x))
    runs = {}
    for fast_path in (True, False):
        torch.manual_seed(1)
        # Without Pyro's validation the program's tiles are the own path's (with it, its first
        # tile of each batch is one sample), so both make the same draws whatever the shapes.
        with pyro.validation_enabled(False):
            runs[fast_path] = pv.log_likelihood(
                model.model,
                model.guide,
                x,
                30,
                4,
                chunk_size=7,
                fast_path=fast_path,
                return_stats=True,
            )
    assert len(calls) == 3  # the own path ran: once per batch of 4
    for own, program in zip(runs[True], runs[False]):
        torch.testing.assert_close(own, program, rtol=1e-10, atol=1e-10)
