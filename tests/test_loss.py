"""pyro_vae.training.loss: which computation a training step runs, and the run-time check of a
model's own log weights against its Pyro program."""

from unittest import mock

import pyro
import pyro.distributions as dist
import pyro.infer as infer
import pyro.poutine as poutine
import pytest
import torch

import pyro_vae as pv
from pyro_vae.training.loss import VALIDATE_EVERY, TrainingLoss


def _vae(**kwargs):
    torch.manual_seed(0)
    return pv.VAE(6, 3, (8,), num_components=3, **kwargs)


def _x(n=10):
    return torch.bernoulli(torch.rand(n, 6, generator=torch.Generator().manual_seed(1)))


def _run(loss, x, steps):
    for _ in range(steps):
        loss(x, 100).backward()


@pytest.mark.parametrize("estimator", ["trace", "meanfield", "iwae", "stl", "dreg"])
def test_pyro_program_on_validated_steps_own_log_weights_between(estimator):
    vae, x = _vae(), _x()
    elbo = pv.make_elbo(estimator, 1 if estimator in ("trace", "meanfield", "stl") else 3)
    loss = TrainingLoss(vae, elbo)
    with (
        mock.patch.object(elbo, "differentiable_loss", wraps=elbo.differentiable_loss) as prog,
        mock.patch.object(vae, "log_weights", wraps=vae.log_weights) as own,
    ):
        _run(loss, x, 2 * VALIDATE_EVERY + 1)
    assert loss.uses_model_log_weights
    assert prog.call_count == 3  # steps 0, 50, 100
    assert own.call_count == 2 * VALIDATE_EVERY + 1  # every step: the rest, and 3 checks


def test_the_schedule_counts_from_the_first_step_of_a_resumed_run():
    vae, x = _vae(), _x()
    elbo = pv.make_elbo("trace")
    loss = TrainingLoss(vae, elbo, first_step=VALIDATE_EVERY - 1)
    with mock.patch.object(elbo, "differentiable_loss", wraps=elbo.differentiable_loss) as prog:
        _run(loss, x, 2)
    assert prog.call_count == 1  # the global step VALIDATE_EVERY


@pytest.mark.parametrize(
    "elbo",
    [
        pv.make_elbo("score", 2),
        pv.make_elbo("tracegraph"),
        infer.Trace_ELBO(),
        infer.Trace_ELBO(num_particles=2, vectorize_particles=False),
    ],
    ids=["score", "tracegraph", "pyro Trace_ELBO", "pyro unvectorized"],
)
def test_estimators_that_need_the_program_get_it_on_every_step(elbo):
    vae, x = _vae(), _x()
    loss = TrainingLoss(vae, elbo)
    with (
        mock.patch.object(elbo, "differentiable_loss", wraps=elbo.differentiable_loss) as prog,
        mock.patch.object(vae, "log_weights", wraps=vae.log_weights) as own,
    ):
        _run(loss, x, 3)
    assert prog.call_count == 3 and own.call_count == 0 and not loss.uses_model_log_weights


def test_fast_path_off_is_the_program_every_step():
    vae, x = _vae(), _x()
    elbo = pv.make_elbo("trace")
    loss = TrainingLoss(vae, elbo, fast_path=False)
    with mock.patch.object(elbo, "differentiable_loss", wraps=elbo.differentiable_loss) as prog:
        _run(loss, x, 3)
    assert prog.call_count == 3 and not loss.uses_model_log_weights


def test_a_model_without_log_weights_runs_its_program():
    class Plain(pv.VAE):
        log_weights = None

    torch.manual_seed(0)
    loss = TrainingLoss(Plain(6, 3, (8,)), pv.make_elbo("trace"))
    assert not loss.uses_model_log_weights
    _run(loss, _x(), 2)


def test_under_a_users_handler_the_program_runs():
    """poutine.scale changes what the Pyro program computes; the model's own log weights would
    not see it."""
    vae, x = _vae(), _x()
    loss = TrainingLoss(vae, pv.make_elbo("trace"), first_step=1)  # not a validated step
    torch.manual_seed(0)
    plain = loss(x, 100).detach()
    with poutine.scale(scale=2.0):
        torch.manual_seed(0)
        scaled = loss(x, 100).detach()
    torch.testing.assert_close(scaled, 2 * plain, rtol=1e-5, atol=1e-4)
    assert loss.uses_model_log_weights


class _ContextSensitiveLikelihood(pv.likelihoods.BernoulliLikelihood):
    """Pathological: other logits outside Pyro's interpreter. Only the value check sees it."""

    def log_prob(self, params, x):
        wrapped = poutine.runtime.am_i_wrapped()
        return super().log_prob(params if wrapped else params + 1.0, x)


class _ForwardOnlyLikelihood(pv.likelihoods.BernoulliLikelihood):
    """Changes ``forward`` (tempered logits) but inherits Bernoulli's closed-form ``log_prob``."""

    def forward(self, params):
        return super().forward(2.0 * params)


class _HierarchicalPrior(pv.priors.Prior):
    """A prior that samples its own scale: a latent site the VAE's own log weights lack."""

    def forward(self):
        s = pyro.sample("prior_scale", dist.LogNormal(0.0, 0.1)).unsqueeze(-1)
        return dist.Normal(torch.zeros(self.z_dim), s * torch.ones(self.z_dim)).to_event(1)


class _OwnProgram(pv.VAE):
    """Changes the program (a tempered likelihood) but inherits VAE.log_weights."""

    def model(self, x, num_data=None):
        pyro.module(self._pyro_name, self)
        with self._data_plate(x, num_data):
            z = pyro.sample("z", self.prior())
            return pyro.sample("x", self.likelihood(2.0 * self.decoder(z)), obs=x)


@pytest.mark.parametrize(
    "vae",
    [
        lambda: _vae(likelihood=_ContextSensitiveLikelihood(6)),
        lambda: _vae(likelihood=_ForwardOnlyLikelihood(6)),
        lambda: _vae(prior=_HierarchicalPrior(3)),
        lambda: _OwnProgram(6, 3, (8,)),
    ],
    ids=[
        "context-sensitive likelihood",
        "likelihood forward only",
        "prior with a site",
        "subclassed program",
    ],
)
def test_own_log_weights_that_disagree_with_the_program_are_dropped_with_a_warning(vae):
    vae, x = vae(), _x()
    elbo = pv.make_elbo("trace")
    loss = TrainingLoss(vae, elbo)
    torch.manual_seed(0)
    with pytest.warns(RuntimeWarning, match="every later step runs the Pyro program"):
        first = loss(x, 100).detach()
    torch.manual_seed(0)
    torch.testing.assert_close(first, elbo.differentiable_loss(vae.model, vae.guide, x, 100))
    assert not loss.uses_model_log_weights
    with mock.patch.object(elbo, "differentiable_loss", wraps=elbo.differentiable_loss) as prog:
        _run(loss, x, 2)
    assert prog.call_count == 2


class _GlobalGuide(pv.guides.Guide):
    """One q(z) for every datapoint (batch shape [1]): the plate draws one z per datapoint,
    a draw from q alone would give one z for the whole batch."""

    def __init__(self, x_dim, z_dim):
        super().__init__(x_dim, z_dim)
        self.loc = torch.nn.Parameter(torch.zeros(1, z_dim))

    def forward(self, x):
        return dist.Normal(self.loc, torch.ones_like(self.loc)).to_event(1)


def test_a_guide_that_is_not_per_datapoint_gets_the_program(recwarn):
    vae = pv.VAE(6, 3, (8,), guide=_GlobalGuide(6, 3))
    elbo = pv.make_elbo("trace")
    x = _x()
    loss = TrainingLoss(vae, elbo, first_step=1)
    torch.manual_seed(0)
    got = loss(x, 100).detach()
    assert not loss.uses_model_log_weights and not recwarn.list
    torch.manual_seed(0)
    torch.testing.assert_close(got, elbo.differentiable_loss(vae.model, vae.guide, x, 100))


def test_the_check_leaves_the_random_stream_as_the_program_alone_would():
    x = _x()
    states = []
    for fast in (True, False):
        loss = TrainingLoss(_vae(), pv.make_elbo("iwae", 3), fast_path=fast)
        torch.manual_seed(5)
        _run(loss, x, 3)
        states.append(torch.get_rng_state())
    assert torch.equal(*states)


@pytest.mark.parametrize("estimator", ["trace", "meanfield", "iwae", "stl", "dreg"])
def test_train_with_and_without_the_fast_path_ends_at_the_same_parameters(estimator):
    x = _x(64)
    results = []
    k = 1 if estimator in ("trace", "meanfield", "stl") else 3
    for fast in (True, False):
        vae = _vae()
        cfg = pv.TrainConfig(
            epochs=2,
            batch_size=8,
            elbo=estimator,
            num_particles=k,
            eval_every=0,
            progress=False,
            fast_path=fast,
        )
        history = pv.train(vae, x, config=cfg).history
        results.append((vae.state_dict(), [r["train_elbo"] for r in history]))
    (fast_state, fast_hist), (slow_state, slow_hist) = results
    for name, value in fast_state.items():
        torch.testing.assert_close(value, slow_state[name], rtol=1e-4, atol=1e-5, msg=name)
    assert fast_hist == pytest.approx(slow_hist, rel=1e-5)


def test_an_estimator_without_differentiable_loss_is_refused_clearly():
    with pytest.raises(TypeError, match="no differentiable_loss.*'tracegraph'"):
        TrainingLoss(_vae(), infer.TraceGraph_ELBO())


def test_an_estimator_subclass_with_its_own_loss_gets_its_own_loss_every_step():
    class Regularized(pv.estimators.IWAE_ELBO):
        def differentiable_loss(self, model, guide, *args, **kwargs):
            return super().differentiable_loss(model, guide, *args, **kwargs) + 0.0

    vae, x = _vae(), _x()
    elbo = Regularized(3)
    loss = TrainingLoss(vae, elbo)
    assert not loss.uses_model_log_weights
    with mock.patch.object(elbo, "differentiable_loss", wraps=elbo.differentiable_loss) as prog:
        _run(loss, x, 3)
    assert prog.call_count == 3
