"""Annealed importance sampling against closed forms: linear-Gaussian models (one layer and a
hierarchy) and a Gamma-Poisson model with a positive latent, in float64 on the CPU."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from linear_gaussian import (
    ExactPosterior,
    LinearGaussianHierarchy,
    exact_log_marginal,
    exact_posterior_params,
    linear_gaussian_vae,
    with_guide,
)
from torch import nn

import pyro_vae as pv
from pyro_vae.infer.ais import AISResult, _interpolate, ais_log_likelihood, annealing_schedule
from pyro_vae.infer.log_weights import fixed_log_density, log_joint, log_weights


def _x(n=10, d=5, seed=1):
    return 2.0 * torch.randn(
        n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )


class GammaPoisson(nn.Module):
    """z ~ Gamma(a, b) (rate b), x_j | z ~ Poisson(z), j = 1..D: a positive latent, and
    p(x) = b^a / Gamma(a) * Gamma(a + S) / (b + D)^(a + S) / prod_j x_j!, S = sum_j x_j."""

    def __init__(self, a=2.0, b=1.5):
        super().__init__()
        self.a, self.b = a, b

    def model(self, x):
        with pyro.plate("data", len(x), dim=-1):
            z = pyro.sample("z", dist.Gamma(x.new_tensor(self.a), x.new_tensor(self.b)))
            rate = z.unsqueeze(-1).expand(*z.shape, x.shape[-1])
            pyro.sample("x", dist.Poisson(rate).to_event(1), obs=x)

    def guide(self, x):
        with pyro.plate("data", len(x), dim=-1):
            pyro.sample("z", dist.LogNormal(x.new_zeros(len(x)), x.new_ones(len(x))))

    def exact_log_marginal(self, x):
        a, b, s, d = self.a, self.b, x.sum(-1), x.shape[-1]
        return (
            a * math.log(b)
            - math.lgamma(a)
            + torch.lgamma(a + s)
            - (a + s) * math.log(b + d)
            - torch.lgamma(x + 1).sum(-1)
        )


def test_schedules_run_from_0_to_1():
    for kind in ("sigmoid", "linear"):
        b = annealing_schedule(50, kind)
        assert b.shape == (51,) and b[0] == 0 and b[-1] == 1 and (b.diff() > 0).all()
    s = annealing_schedule(50)
    assert s[1] < 1 / 50  # small steps near q0, where the path changes fastest
    with pytest.raises(ValueError, match="unknown annealing schedule"):
        annealing_schedule(5, "cosine")


def test_the_pilot_s_step_sizes_are_interpolated_in_b():
    at = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    log_eps = torch.tensor([[0.0, -1.0], [-2.0, -1.0], [-4.0, 1.0]], dtype=torch.float64)
    to = torch.tensor([0.05, 0.1, 0.3, 0.9, 0.95], dtype=torch.float64)
    got = _interpolate(log_eps, at, to).log()
    expected = torch.tensor(
        [[0.0, -1.0], [0.0, -1.0], [-1.0, -1.0], [-4.0, 1.0], [-4.0, 1.0]], dtype=torch.float64
    )
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(_interpolate(log_eps, at, at), log_eps.exp())


def test_log_joint_is_the_model_and_guide_densities_at_given_latents():
    vae, x = linear_gaussian_vae(), _x()
    with torch.no_grad():
        lw = log_weights(vae.model, vae.guide, x, num_samples=4)
        z = {"z": lw.latents[0]}
        joint = log_joint(vae.model, z, x)
        q = log_joint(vae.guide, z, x)
        fixed = fixed_log_density(vae.guide, z, x)
    torch.testing.assert_close(joint.log_p, lw.log_p)
    torch.testing.assert_close(joint.log_lik, lw.log_lik)
    torch.testing.assert_close(q.log_p, lw.log_q)
    assert torch.equal(q.log_lik, torch.zeros_like(q.log_p))
    torch.testing.assert_close(fixed(z), lw.log_q)
    # a guide with two sites may make one depend on the other: it must be run every time
    m = LinearGaussianHierarchy(guide_kind="meanfield")
    with torch.no_grad():
        lw = log_weights(m.model, m.guide, x[:, :4], num_samples=2)
        zs = dict(zip(("z1", "z2"), lw.latents))
        assert fixed_log_density(m.guide, zs, x[:, :4]) is None
    with pytest.raises(ValueError, match=r"draws latent site\(s\) \['z2'\] that were not given"):
        log_joint(m.model, {"z1": zs["z1"]}, x[:, :4])
    with pytest.raises(ValueError, match=r"\['w'\], which are not latent sites"):
        log_joint(m.model, {**zs, "w": zs["z1"]}, x[:, :4])


@pytest.mark.parametrize("num_steps", [1, 4])
def test_with_the_exact_posterior_as_guide_every_chain_weighs_p_x(num_steps):
    """q0 = p(z | x): every pi_t is the posterior and every increment (b_t - b_t-1) log p(x)."""
    vae = linear_gaussian_vae()
    vae, x = with_guide(vae, ExactPosterior(vae)), _x()
    r = ais_log_likelihood(
        vae.model, vae.guide, x, num_steps, 3, leapfrog_steps=2, return_stats=True
    )
    exact = exact_log_marginal(vae, x).detach()
    torch.testing.assert_close(r.log_likelihood, exact, rtol=0, atol=1e-9)
    torch.testing.assert_close(r.log_weights, exact.expand(3, -1), rtol=0, atol=1e-9)
    assert r.log_likelihood.dtype == torch.float64 and r.log_weights.shape == (3, 10)


def _poor_guide(vae):
    """q(z | x): the exact posterior's mean shifted by 0.5 and its marginal standard deviations
    halved, a deliberately poor diagonal Normal (IS with 16 samples is nats off)."""

    def guide(x, num_data=None):
        loc, cov = exact_posterior_params(vae, x)
        with pyro.plate("data", len(x), dim=-1):
            pyro.sample("z", dist.Normal(loc + 0.5, 0.5 * cov.diagonal().sqrt()).to_event(1))

    return guide


def test_the_error_falls_with_steps_to_hundredths_and_ais_beats_is():
    """With a poor guide AIS with 16 chains gets within a few hundredths of a nat where IS
    with 16 samples is nats off, and its HMC moves are accepted at about the target rate."""
    vae, x = linear_gaussian_vae(), _x(20)
    guide = _poor_guide(vae)
    exact = exact_log_marginal(vae, x).detach()
    with torch.no_grad():
        is_error = float((exact - pv.log_likelihood(vae.model, guide, x, 16)).mean())
    errors, stats = [], None
    for steps in (1, 10, 300):
        stats = ais_log_likelihood(
            vae.model, guide, x, steps, 16, leapfrog_steps=5, return_stats=True
        )
        errors.append(float((exact - stats.log_likelihood).mean()))
    assert is_error > 1 and errors[0] > 1, (is_error, errors)  # one step is IS
    assert errors == sorted(errors, reverse=True), errors
    assert errors[1] < 0.25 * is_error and abs(errors[-1]) < 0.06, errors
    assert float(stats.acceptance.mean()) == pytest.approx(0.65, abs=0.05)
    assert (stats.step_size > 0).all() and torch.isfinite(stats.stderr).all()


@pytest.mark.parametrize("adapt_chains", [0, 4])
def test_at_few_steps_many_chains_converge_to_p_x(adapt_chains):
    """E[w] = p(x) for every number of steps, whatever the (frozen) step sizes: with 3000
    chains, 3 steps land within Monte Carlo error of log p(x). A kernel that did not leave
    pi_t invariant would leave a bias that no number of chains removes."""
    vae = linear_gaussian_vae()
    vae = with_guide(vae, ExactPosterior(vae, inflate=2.0, diagonal=True))
    x = _x(4)
    r = ais_log_likelihood(
        vae.model,
        vae.guide,
        x,
        3,
        3000,
        leapfrog_steps=3,
        step_size=0.3,
        adapt_chains=adapt_chains,
        return_stats=True,
    )
    err = r.log_likelihood - exact_log_marginal(vae, x).detach()
    assert (err.abs() < 4 * r.stderr + 1e-3).all(), (err, r.stderr)
    assert (r.stderr < 0.05).all()


def test_a_hierarchy_from_its_prior_matches_the_exact_log_p_x():
    """A two-layer linear-Gaussian hierarchy: from the prior p(z2) p(z1 | z2), drawn
    ancestrally, AIS lands on the exact log p(x); from a poor mean-field guide (whose importance
    weights are heavy-tailed: IS with 16 samples is nats off) it gets most of the way."""
    m = LinearGaussianHierarchy(guide_kind="meanfield")
    x = _x(12, 4)
    exact = m.exact_log_marginal(x).detach()
    with torch.no_grad():
        is_error = float((exact - pv.log_likelihood(m.model, m.guide, x, 16)).mean())
    errors, mc = {}, {}
    for initial in ("prior", "guide"):
        r = ais_log_likelihood(
            m.model, m.guide, x, 100, 16, leapfrog_steps=4, initial=initial, return_stats=True
        )
        errors[initial] = float((exact - r.log_likelihood).mean())
        mc[initial] = float(r.stderr.pow(2).mean().sqrt() / math.sqrt(len(x)))
    assert is_error > 2, is_error
    assert abs(errors["prior"]) < 0.03 + 3 * mc["prior"], (errors, mc)
    assert abs(errors["guide"]) < 0.2 * is_error, (errors, is_error)


def test_a_positive_latent_is_annealed_in_its_unconstrained_space():
    """z > 0 moves as u = log z with the log-Jacobian in the target: many chains at few steps
    land within Monte Carlo error of the exact log p(x) (a missing or wrong Jacobian would
    not)."""
    gp = GammaPoisson()
    x = torch.poisson(torch.full((4, 6), 3.0, dtype=torch.float64))
    exact = gp.exact_log_marginal(x)
    for initial in ("guide", "prior"):
        r = ais_log_likelihood(
            gp.model,
            gp.guide,
            x,
            4,
            20000,
            leapfrog_steps=3,
            initial=initial,
            return_stats=True,
        )
        err = r.log_likelihood - exact
        assert (err.abs() < 4 * r.stderr + 2e-3).all() and (r.stderr < 0.02).all(), (initial, err)
        assert (r.acceptance > 0.1).all()  # the moves go somewhere
    # prior draws only: no guide needed
    ll = ais_log_likelihood(gp.model, None, x, 2, 4, leapfrog_steps=1, initial="prior")
    assert ll.shape == (4,) and torch.isfinite(ll).all()


def test_latents_in_an_inner_plate():
    """z_k ~ N(0, 1) in a plate at dim -2 inside the data plate, x | z ~ N(sum_k z_k, 0.5^2):
    p(x) = N(0, 3.25), with max_plate_nesting=2."""

    def model(x):
        with pyro.plate("data", len(x), dim=-1):
            with pyro.plate("k", 3, dim=-2):
                z = pyro.sample("z", dist.Normal(x.new_zeros(()), 1.0))
            pyro.sample("x", dist.Normal(z.sum(-2, keepdim=True), 0.5), obs=x)

    def guide(x):
        with pyro.plate("data", len(x), dim=-1):
            with pyro.plate("k", 3, dim=-2):
                pyro.sample("z", dist.Normal(x.new_zeros(3, len(x)), 1.0))

    x = torch.tensor([-2.0, 0.5, 3.0], dtype=torch.float64)
    exact = dist.Normal(0.0, 3.25**0.5).log_prob(x)
    for initial in ("guide", "prior"):
        r = ais_log_likelihood(
            model,
            guide,
            x,
            3,
            5000,
            leapfrog_steps=3,
            max_plate_nesting=2,
            initial=initial,
            return_stats=True,
        )
        err = r.log_likelihood - exact
        assert (err.abs() < 4 * r.stderr + 2e-3).all(), (initial, err, r.stderr)


def test_chunks_no_grad_and_the_model_parameters_are_left_alone():
    vae = linear_gaussian_vae()
    vae, x = with_guide(vae, ExactPosterior(vae)), _x(7)
    exact = exact_log_marginal(vae, x).detach()
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    with torch.no_grad():
        r = ais_log_likelihood(
            vae.model,
            vae.guide,
            x,
            3,
            5,
            leapfrog_steps=2,
            batch_size=3,
            max_elements=2 * 5,  # 2 chains per chunk of one datapoint
            return_stats=True,
        )
    assert isinstance(r, AISResult) and r.log_weights.shape == (5, 7)
    torch.testing.assert_close(r.log_likelihood, exact, rtol=0, atol=1e-9)
    assert all(f.shape == (7,) for f in (r.stderr, r.ess, r.acceptance, r.step_size))
    for p in vae.parameters():
        assert p.grad is None
    for k, v in vae.state_dict().items():
        assert torch.equal(v, before[k]), k


class _WithLogJoint(nn.Module):
    """The linear-Gaussian VAE's program, with its own plain-torch log joint (``shift`` makes
    it wrong) and a count of its calls."""

    def __init__(self, vae, shift=0.0):
        super().__init__()
        self.vae, self.shift, self.calls = vae, shift, 0
        self.guide = vae.guide

    def model(self, x, num_data=None):
        return self.vae.model(x, num_data)

    def log_joint(self, x, latents, num_data=None):
        self.calls += 1
        z = latents["z"]
        log_lik = self.vae.likelihood(self.vae.decoder(z)).log_prob(x) + self.shift
        return log_lik + dist.Normal(0.0, 1.0).log_prob(z).sum(-1), log_lik


def test_a_model_object_s_own_log_joint_is_used_when_it_agrees_with_the_trace():
    vae, x = linear_gaussian_vae(), _x(6)
    own = _WithLogJoint(vae)
    kw = dict(num_steps=5, num_chains=4, leapfrog_steps=2, return_stats=True)
    pyro.set_rng_seed(3)
    # a plain function, not the VAE's method: the Pyro trace (not VAE.log_joint) at every step
    traced = ais_log_likelihood(lambda x: vae.model(x), vae.guide, x, **kw)
    pyro.set_rng_seed(3)
    fast = ais_log_likelihood(own.model, own.guide, x, **kw)
    assert own.calls > 4 * 2 * 2  # every leapfrog step of the pilot and the run
    torch.testing.assert_close(fast.log_weights, traced.log_weights)
    wrong = _WithLogJoint(vae, shift=0.1)
    pyro.set_rng_seed(3)
    with pytest.warns(RuntimeWarning, match="_WithLogJoint.log_joint differs .* Pyro program"):
        fallback = ais_log_likelihood(wrong.model, wrong.guide, x, **kw)
    torch.testing.assert_close(fallback.log_weights, traced.log_weights)
    assert wrong.calls == 2  # the checks of the pilot's and the run's first draws only


def test_the_two_layer_vae_runs_in_float32():
    torch.manual_seed(0)
    vae = pv.TwoLayerVAE(12, 3, (8,), z2_dim=2, hidden2_dims=(6,))
    x = torch.bernoulli(torch.full((5, 12), 0.3))
    r = ais_log_likelihood(vae.model, vae.guide, x, 20, 4, leapfrog_steps=2, return_stats=True)
    assert r.log_likelihood.dtype == torch.float32 and torch.isfinite(r.log_likelihood).all()
    with torch.no_grad():
        is_ll = pv.log_likelihood(vae.model, vae.guide, x, 4)
    assert float(r.log_likelihood.mean()) > float(is_ll.mean()) - 0.5


# -- errors ----------------------------------------------------------------------------------
def test_errors_name_the_fix():
    vae, x = linear_gaussian_vae(), _x(3)
    with pytest.raises(ValueError, match="unknown initial distribution 'posterior'.*'prior'"):
        ais_log_likelihood(vae.model, vae.guide, x, 5, 2, initial="posterior")
    with pytest.raises(ValueError, match="num_steps must be an integer >= 1"):
        ais_log_likelihood(vae.model, vae.guide, x, 0, 2)
    with pytest.raises(ValueError, match="num_chains must be an integer >= 1"):
        ais_log_likelihood(vae.model, vae.guide, x, 5, 0)
    with pytest.raises(ValueError, match="target_accept must be in"):
        ais_log_likelihood(vae.model, vae.guide, x, 5, 2, target_accept=1.5)
    with pytest.raises(ValueError, match="no guide given.*initial='prior'"):
        ais_log_likelihood(vae.model, None, x, 5, 2)


def test_a_discrete_latent_is_refused_with_the_alternatives():
    def model(x):
        with pyro.plate("data", len(x), dim=-1):
            c = pyro.sample("c", dist.Bernoulli(x.new_full((len(x),), 0.5)))
            pyro.sample("x", dist.Normal(c.unsqueeze(-1), 1.0).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", len(x), dim=-1):
            pyro.sample("c", dist.Bernoulli(x.new_full((len(x),), 0.5)))

    for initial in ("guide", "prior"):
        with pytest.raises(ValueError, match="'c' is discrete.*marginalize.*log_likelihood"):
            ais_log_likelihood(model, guide, _x(3), 5, 2, initial=initial)


class _DrawOnlyNormal(dist.Normal):
    """A Normal that, like a flow without an inverse, knows log q only at its own draws."""

    def rsample(self, sample_shape=torch.Size()):
        self._drawn = super().rsample(sample_shape)
        return self._drawn

    def log_prob(self, value):
        if value is not getattr(self, "_drawn", None):
            raise NotImplementedError("log_prob at a point it did not draw")
        return super().log_prob(value)


def test_a_guide_without_log_q_at_arbitrary_points_names_initial_prior():
    vae, x = linear_gaussian_vae(), _x(3)

    def guide(x):
        with pyro.plate("data", len(x), dim=-1):
            loc = x.new_zeros(len(x), 2)
            pyro.sample("z", _DrawOnlyNormal(loc, torch.ones_like(loc)).to_event(1))

    with torch.no_grad():  # the guide itself works: importance sampling uses its own draws
        assert torch.isfinite(pv.log_likelihood(vae.model, guide, x, 4)).all()
    with pytest.raises(ValueError, match="initial='prior'.*NotImplementedError"):
        ais_log_likelihood(vae.model, guide, x, 5, 2)
    assert torch.isfinite(ais_log_likelihood(vae.model, guide, x, 5, 2, initial="prior")).all()
