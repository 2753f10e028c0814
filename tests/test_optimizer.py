"""Adam's implementations (pyro_vae/training/optimizer.py): one algorithm, any kernel."""

from dataclasses import replace

import pytest
import torch

import pyro_vae as pv
from pyro_vae.training.optimizer import load_optimizer_state, make_optimizer


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.bernoulli(torch.rand(96, 12, generator=g), generator=g).double()


def _vae(seed=0):
    torch.manual_seed(seed)
    return pv.VAE(12, 3, (16,)).double()


CFG = pv.TrainConfig(epochs=2, batch_size=16, lr=0.01, eval_every=0, progress=False)


def test_the_fused_kernel_is_the_default_and_is_used():
    opt = make_optimizer(_vae().parameters(), 1e-3)
    assert opt.param_groups[0]["fused"] is True
    assert make_optimizer(_vae().parameters(), 1e-3, "for-loop").param_groups[0]["foreach"] is False
    with pytest.raises(ValueError, match="unknown Adam implementation 'adamw'.*for-loop"):
        make_optimizer(_vae().parameters(), 1e-3, "adamw")
    with pytest.raises(ValueError, match="adam_impl must be 'fused', 'foreach' or 'for-loop'"):
        pv.TrainConfig(adam_impl="fast")


def test_training_with_the_fused_kernel_ends_where_the_for_loop_does():
    x = _data()
    ends = {}
    for impl in ("fused", "foreach", "for-loop"):
        vae = _vae()
        result = pv.train(vae, x, config=replace(CFG, adam_impl=impl))
        ends[impl] = (vae.state_dict(), result.history[-1]["train_elbo"])
    ref, ref_elbo = ends["for-loop"]
    for impl in ("fused", "foreach"):
        state, elbo = ends[impl]
        assert elbo == pytest.approx(ref_elbo, rel=1e-9)
        for name, p in state.items():
            torch.testing.assert_close(p, ref[name], rtol=1e-9, atol=1e-11, msg=name)
    # ...and 60 steps later the parameters really moved (the comparison above is not vacuous)
    moved = max(
        float((p - q).abs().max()) for p, q in zip(ref.values(), _vae().state_dict().values())
    )
    assert moved > 1e-2


def test_a_resumed_run_uses_the_configured_kernel_not_the_checkpoints(tmp_path):
    x = _data()
    pv.train(_vae(), x, config=replace(CFG, epochs=1, adam_impl="for-loop"), out_dir=tmp_path)
    vae = _vae()
    opt = make_optimizer(vae.parameters(), 0.01, "fused")
    load_optimizer_state(
        opt, torch.load(tmp_path / "checkpoint.pt", weights_only=True)["optimizer"]
    )
    assert opt.param_groups[0]["fused"] is True and opt.state  # the moments came across
    # the change of kernel is allowed on resume and recorded
    pv.train(vae, x, config=CFG, out_dir=tmp_path, resume=True)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["config_changes"][0]["changed"]["adam_impl"] == ["for-loop", "fused"]
