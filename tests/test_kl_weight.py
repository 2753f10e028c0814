"""KL weighting of the training objective: beta, a linear warm-up, free bits."""

import pytest
import torch

import pyro_vae as pv
from pyro_vae.training.kl_weight import KLWeight
from pyro_vae.training.loss import TrainingLoss


def _data(n=256, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    proto = (torch.rand(4, d, generator=g) > 0.5).float()
    x = proto[torch.randint(0, 4, (n,), generator=g)]
    flip = torch.rand(n, d, generator=g) < 0.1
    return torch.where(flip, 1 - x, x)


def _cfg(**kw):
    base = dict(epochs=4, batch_size=32, eval_every=0, eval_samples=8, progress=False, lr=1e-2)
    return pv.TrainConfig(**{**base, **kw})


def _trained(**kw):
    torch.manual_seed(0)
    vae = pv.VAE(12, 4, (16,))
    pv.train(vae, _data(), config=_cfg(**kw))
    return vae


def test_beta_below_one_gives_a_larger_kl_than_beta_one():
    x = _data(128, seed=1)
    kl = {b: pv.evaluate(_trained(beta=b), x, num_samples=4)["kl"] for b in (0.2, 1.0, 4.0)}
    assert kl[0.2] > kl[1.0] > kl[4.0], kl


def test_the_reported_train_elbo_is_the_true_bound_and_the_gradient_the_weighted_one():
    torch.manual_seed(0)
    vae = pv.VAE(12, 4, (16,)).double()
    x = _data(16).double()
    elbo = pv.make_elbo("trace")
    plain = TrainingLoss(vae, elbo, first_step=1)
    weighted = TrainingLoss(vae, elbo, first_step=1, kl_weight=KLWeight(beta=0.3))
    torch.manual_seed(5)
    a = plain(x, 100)
    torch.manual_seed(5)
    b = weighted(x, 100)
    torch.testing.assert_close(a, b)  # the same value: the beta = 1 bound
    ga = torch.autograd.grad(a, list(vae.encoder.parameters()))
    gb = torch.autograd.grad(b, list(vae.encoder.parameters()))
    assert max(float((p - q).abs().max()) for p, q in zip(ga, gb)) > 1e-3
    # the weighted gradient is that of log p(x|z) + 0.3 (log p(z) - log q)
    torch.manual_seed(5)
    lw = vae.log_weights(x, 100)
    target = -lw.scale * (lw.log_lik + 0.3 * (lw.log_p - lw.log_lik - lw.log_q)).sum()
    gt = torch.autograd.grad(target, list(vae.encoder.parameters()))
    for p, q in zip(gb, gt):
        torch.testing.assert_close(p, q)


def test_the_warm_up_starts_at_zero_and_rises_linearly():
    w = KLWeight(beta=0.5, warmup_steps=10)
    assert [w.beta_at(s) for s in (0, 5, 10, 50)] == [0.0, 0.25, 0.5, 0.5]


def test_a_warm_up_resumed_equals_one_uninterrupted(tmp_path):
    def run(epochs, out, resume=False):
        torch.manual_seed(0)
        vae = pv.VAE(12, 4, (16,))
        res = pv.train(
            vae, _data(), config=_cfg(epochs=epochs, kl_warmup=3), out_dir=out, resume=resume
        )
        return vae, [r["train_elbo"] for r in res.history]

    whole, full = run(4, tmp_path / "a")
    run(2, tmp_path / "b")
    resumed, again = run(4, tmp_path / "b", resume=True)
    assert again == full
    for p, q in zip(whole.parameters(), resumed.parameters()):
        assert torch.equal(p, q)
    ckpt = pv.load_checkpoint(tmp_path / "b")
    assert ckpt["training_step"] == 4 * 8  # 256 / 32 steps an epoch


def test_warm_up_changes_training():
    a = _trained()
    b = _trained(kl_warmup=3)
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_free_bits_leave_a_site_below_the_floor_unpenalized():
    torch.manual_seed(0)
    vae = pv.VAE(12, 4, (16,)).double()
    x = _data(16).double()
    elbo = pv.make_elbo("meanfield")
    torch.manual_seed(1)
    lw = vae.log_weights(x, 100, analytic_kl=True)
    kl = float(lw.kl_terms()["z"].detach().mean())
    high = KLWeight(free_bits=kl + 1.0).surrogate(elbo, lw, 0)
    grads = torch.autograd.grad(high, list(vae.encoder.parameters()), retain_graph=True)
    # only the likelihood term reaches the encoder: compare with beta = 0
    zero = KLWeight(beta=0.0).surrogate(elbo, lw, 0)
    ref = torch.autograd.grad(zero, list(vae.encoder.parameters()), retain_graph=True)
    for g, r in zip(grads, ref):
        torch.testing.assert_close(g, r)
    low = KLWeight(free_bits=max(kl - 1.0, 0.0)).surrogate(elbo, lw, 0)
    torch.testing.assert_close(low, elbo.objective(lw))  # above the floor: the plain ELBO


def test_free_bits_train_end_to_end_with_two_latent_layers():
    torch.manual_seed(0)
    vae = pv.TwoLayerVAE(12, 4, (16,), z2_dim=2, hidden2_dims=(8,))
    res = pv.train(vae, _data(), config=_cfg(epochs=2, free_bits=0.5, kl_warmup=1))
    assert all(torch.isfinite(torch.tensor(r["train_elbo"])) for r in res.history)


@pytest.mark.parametrize(
    "estimator,kw,match",
    [
        ("tracegraph", dict(beta=0.5), "acts on log weights"),
        ("iwae", dict(free_bits=1.0), "free bits clamp the KL of the single-bound ELBO"),
    ],
)
def test_kl_weighting_an_estimator_it_does_not_fit_is_refused(estimator, kw, match):
    with pytest.raises(ValueError, match=match):
        pv.train(pv.VAE(12, 4, (16,)), _data(), config=_cfg(elbo=estimator, **kw))


def test_kl_weight_settings_are_checked():
    for field in ("beta", "kl_warmup", "free_bits"):
        with pytest.raises(ValueError, match=f"TrainConfig.{field} is out of range"):
            pv.TrainConfig(**{field: -1})


@pytest.mark.parametrize("estimator", ["score", "dreg"])
def test_estimators_whose_gradient_assumes_beta_one_refuse_kl_weighting(estimator):
    with pytest.raises(ValueError, match="derived for beta = 1"):
        TrainingLoss(pv.VAE(12, 4, (16,)), pv.make_elbo(estimator, 2), kl_weight=KLWeight(0.5))


def test_a_checkpoint_from_before_kl_weighting_resumes(tmp_path):
    """Training settings a checkpoint predates are read with today's defaults."""
    torch.manual_seed(0)
    vae = pv.VAE(12, 4, (16,))
    pv.train(vae, _data(), config=_cfg(epochs=1), out_dir=tmp_path)
    path = tmp_path / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    for field in ("beta", "kl_warmup", "free_bits"):
        del ckpt["train_config"][field]
    del ckpt["training_step"]
    ckpt["sha256"] = pv.training.checkpoint.digest(ckpt)
    torch.save(ckpt, path)
    res = pv.train(vae, _data(), config=_cfg(epochs=2), out_dir=tmp_path, resume=True)
    assert [r["epoch"] for r in res.history] == [1, 2]


def test_a_jit_elbo_under_kl_weighting_is_told_to_drop_jit():
    with pytest.raises(ValueError, match=r"drop --jit"):
        TrainingLoss(pv.VAE(12, 4, (16,)), pv.make_elbo("trace", jit=True), kl_weight=KLWeight(0.5))


def test_log_weights_without_their_likelihood_part_cannot_be_kl_weighted():
    lw = pv.LogWeights(torch.zeros(1, 3), torch.zeros(1, 3), None, 1.0, (torch.zeros(1, 3, 2),))
    with pytest.raises(ValueError, match="KL weighting needs log_lik"):
        lw.tempered(0.5)
    with pytest.raises(ValueError, match="per-site KL terms need site_kl"):
        lw.kl_terms()
    two = lw._replace(log_lik=torch.zeros(1, 3), latents=(torch.zeros(1, 3), torch.zeros(1, 3)))
    with pytest.raises(ValueError, match="per-site KL terms need site_kl"):
        two.kl_terms()
