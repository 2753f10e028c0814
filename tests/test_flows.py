"""Flow guides: each one's log q against an independent density, training, checkpoints, and every
estimator either running or naming the fix."""

import pytest
import torch
from conftest import requires_cuda

import pyro_vae as pv
from pyro_vae.model.flows import FLOWS, NEEDS_INVERSE, ConditionedSylvester, FlowNotInvertible

NAMES = sorted(FLOWS)
INVERTIBLE = sorted(n for n, s in FLOWS.items() if s.invertible)


def _guide(name, x_dim=5, z_dim=3, num_flows=2, jitter=0.5):
    """A float64 flow guide whose flows are far from the identity (parameters jittered)."""
    torch.manual_seed(0)
    g = pv.make_guide(name, x_dim, z_dim, (8,), "tanh", num_flows).double()
    with torch.no_grad():
        for p in g.flows.parameters():
            p.add_(jitter * torch.randn_like(p))
    return g


def _log_abs_det(t, v):
    """log |det dt/dv| ``[K, B]`` for ``v [K, B, D]`` by autograd (not the transform's own
    formula), after checking that datapoints and particles do not mix."""
    k, b, d = v.shape
    jac = torch.autograd.functional.jacobian(t._call, v).reshape(k * b, d, k * b, d)
    blocks = torch.stack([jac[i, :, i, :] for i in range(k * b)])
    off = jac.clone()
    for i in range(k * b):
        off[i, :, i, :] = 0
    assert off.abs().max() < 1e-12, "the flow mixes datapoints or particles"
    return torch.linalg.slogdet(blocks)[1].reshape(k, b)


@pytest.mark.parametrize("name", NAMES)
def test_log_q_of_its_own_draw_is_the_transformed_density(name):
    g = _guide(name)
    q = g(torch.rand(3, 5, dtype=torch.float64))
    torch.manual_seed(1)
    z = q.rsample((2,))
    log_q = q.log_prob(z)
    # The reference: the same base draw, pushed through each layer, less log |det J| by autograd.
    torch.manual_seed(1)
    v = z0 = q.base_dist.rsample((2,))
    ref = q.base_dist.log_prob(v)
    for t in q.transforms:
        ref = ref - _log_abs_det(t, v)
        v = t._call(v)
    torch.testing.assert_close(v, z)
    # (NAF adds 1e-8 inside a log: agreement to 1e-6, where a wrong term would be O(0.1))
    torch.testing.assert_close(log_q, ref, rtol=1e-6, atol=1e-6)
    assert (z - z0).abs().max() > 0.1  # the flows are far from the identity


@pytest.mark.parametrize("name", NAMES)
def test_log_q_elsewhere_inverts_the_flow_or_names_the_fix(name):
    # Milder flows: inverting steep splines would amplify rounding errors past the tolerance.
    g = _guide(name, jitter=0.1)
    q = g(torch.rand(3, 5, dtype=torch.float64))
    z = q.rsample((2,))
    log_q = q.log_prob(z)
    assert g.invertible is (name in INVERTIBLE)
    if g.invertible:  # a fresh tensor misses Pyro's cache: the inverse gives the same density
        torch.testing.assert_close(q.log_prob(z.clone()), log_q)
    else:
        with pytest.raises(FlowNotInvertible, match=f"the {name} flow has no inverse.*STL, DReG"):
            q.log_prob(z.clone())


def test_conditional_sylvester_log_det_is_exact_with_a_rotation():
    """Pyro's own Sylvester drops Q from its log-determinant; ours is the paper's identity."""
    torch.manual_seed(0)
    g = _guide("sylvester", num_flows=1)
    t = g(torch.rand(2, 5, dtype=torch.float64)).transforms[-1]
    assert isinstance(t, ConditionedSylvester)
    r, s, b, u = t._params()
    assert torch.equal(r, r.triu()) and torch.equal(s, s.triu()) and u.shape[-2] == 3 // 2 + 1
    v = torch.randn(4, 2, 3, dtype=torch.float64)
    torch.testing.assert_close(t.log_abs_det_jacobian(v, t(v)), _log_abs_det(t, v))


def _binary(n=64, d=12, seed=0):
    return (torch.rand(n, d, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


@pytest.mark.parametrize("name", NAMES)
def test_a_few_training_steps_lower_the_loss(name):
    torch.manual_seed(0)
    vae = pv.VAE(12, 3, (16,), guide=name)
    cfg = pv.TrainConfig(epochs=4, batch_size=16, lr=1e-2, eval_every=0, progress=False)
    history = pv.train(vae, _binary(), None, cfg).history
    assert history[-1]["train_elbo"] > history[0]["train_elbo"] + 0.1


@pytest.mark.parametrize("name", NAMES)
def test_checkpoint_round_trip_rebuilds_the_same_guide(name, tmp_path):
    torch.manual_seed(0)
    vae = pv.VAE(12, 3, (16,), guide=name, num_flows=3)
    with torch.no_grad():
        for p in vae.encoder.flows.parameters():
            p.add_(0.1 * torch.randn_like(p))
    pv.save_checkpoint(tmp_path / "checkpoint.pt", vae)
    loaded = pv.load_model(tmp_path)
    assert loaded.config == vae.config and loaded.config.num_flows == 3
    assert type(loaded.encoder) is type(vae.encoder) and len(loaded.encoder.flows) == 3
    a, b = vae.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = _binary(8)
    outputs = []
    for m in (vae, loaded):
        torch.manual_seed(3)
        q = m.encode(x)
        z = q.rsample((2,))
        ll = pv.log_likelihood(m.model, m.guide, x, num_samples=4)
        outputs.append((z, q.log_prob(z), ll))
    for u, v in zip(*outputs, strict=True):
        assert torch.equal(u, v)


ESTIMATOR_PARTICLES = {"iwae": 3, "dreg": 3, "renyi": 3, "tail_adaptive": 3}


@pytest.mark.parametrize("estimator", sorted(pv.ESTIMATORS))
@pytest.mark.parametrize("name", NAMES)
def test_each_estimator_trains_or_names_the_fix(name, estimator, tmp_path):
    torch.manual_seed(0)
    vae = pv.VAE(12, 3, (16,), guide=name)
    k = ESTIMATOR_PARTICLES.get(estimator, 1)
    cfg = pv.TrainConfig(
        epochs=1, batch_size=32, elbo=estimator, num_particles=k, eval_every=0, progress=False
    )
    if estimator in NEEDS_INVERSE and name not in INVERTIBLE:
        with pytest.raises(FlowNotInvertible, match=f"{name} flow has no inverse.*--guide"):
            pv.train(vae, _binary(), None, cfg, out_dir=tmp_path)
        assert not any(tmp_path.iterdir())  # it failed before the first step wrote anything
        return
    history = pv.train(vae, _binary(), None, cfg).history
    assert torch.isfinite(torch.tensor(history[-1]["train_elbo"]))


@pytest.mark.parametrize("name", ["planar", "iaf"])
def test_more_particles_and_the_log_likelihood(name):
    """K > 1 on the fast path (no slicing of the draw) and the K-sample log-likelihood, which
    scores the guide's own draws and so needs no inverse."""
    torch.manual_seed(0)
    vae = pv.VAE(12, 3, (16,), guide=name)
    cfg = pv.TrainConfig(
        epochs=1, batch_size=32, num_particles=2, eval_samples=8, eval_every=1, progress=False
    )
    x = _binary()
    history = pv.train(vae, x, x[:16], cfg).history
    ll = pv.log_likelihood(vae.model, vae.guide, x[:16], num_samples=8)
    assert ll.shape == (16,) and torch.isfinite(ll).all()
    assert torch.isfinite(torch.tensor(history[-1]["test_log_likelihood"]))


@requires_cuda
@pytest.mark.parametrize("name", NAMES)
def test_flow_guides_train_and_score_on_the_gpu(name, tmp_path):
    torch.manual_seed(0)
    x = _binary()
    cfg = pv.TrainConfig(epochs=1, batch_size=32, eval_every=0, device="cuda", progress=False)
    pv.train(pv.VAE(12, 3, (16,), guide=name), x, None, cfg, out_dir=tmp_path)
    gpu = pv.load_model(tmp_path, map_location="cuda")
    ll = pv.log_likelihood(gpu.model, gpu.guide, x.cuda(), num_samples=4)
    assert ll.is_cuda and torch.isfinite(ll).all()


def test_the_flow_guide_base_class_is_not_a_guide_of_its_own():
    from pyro_vae.model.guides import FlowGuide

    with pytest.raises(TypeError, match=r"FlowGuide is the base .*make_guide\('planar'"):
        FlowGuide(6, 2)
