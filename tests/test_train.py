"""Training: metrics, resume equality, safe checkpoints, divergence, devices."""

import json
import pickle

import pytest
import torch
from conftest import requires_cuda

import pyro_vae as pv


def _data(n=64, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g), torch.rand(32, d, generator=g)


def _vae(seed=0):
    torch.manual_seed(seed)
    return pv.VAE(6, 2, (8,), likelihood="continuous_bernoulli")


CFG = pv.TrainConfig(
    epochs=3, batch_size=16, lr=0.01, eval_samples=20, eval_every=2, progress=False
)


def test_train_writes_metrics_checkpoint_and_config(tmp_path):
    x, xt = _data()
    res = pv.train(_vae(), x, xt, CFG, out_dir=tmp_path)
    assert [r["epoch"] for r in res.history] == [1, 2, 3]
    assert "test_log_likelihood" in res.history[1] and "test_log_likelihood" in res.history[2]
    assert "test_log_likelihood" not in res.history[0]
    assert res.history[-1]["train_elbo"] > res.history[0]["train_elbo"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == res.history
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["train"]["epochs"] == 3 and cfg["model"]["x_dim"] == 6
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 3 and ckpt["history"] == res.history


def test_resume_restores_the_score_estimators_baseline(tmp_path):
    """Score_ELBO with K = 1 keeps a decaying average of past ELBOs as its baseline: a resumed run
    must continue from the saved average, not from 0, to end where an uninterrupted one does."""
    from dataclasses import replace

    x, _ = _data(64)
    cfg = pv.TrainConfig(
        epochs=2, batch_size=16, lr=0.01, elbo="score", eval_every=0, progress=False
    )
    a = _vae()
    pv.train(a, x, None, cfg, out_dir=tmp_path / "a")
    b = _vae()
    pv.train(b, x, None, replace(cfg, epochs=1), out_dir=tmp_path / "b")
    saved = pv.load_checkpoint(tmp_path / "b")["estimator"]
    assert isinstance(saved["average"], torch.Tensor) and saved["average"].dim() == 0
    c = _vae(seed=5)
    pv.train(c, x, None, cfg, out_dir=tmp_path / "b", resume=True)
    for (n, p), q in zip(a.state_dict().items(), c.state_dict().values()):
        assert torch.equal(p, q), n


def test_train_elbo_is_per_datapoint_and_matches_evaluation():
    x, _ = _data(256)
    vae = _vae()
    cfg = pv.TrainConfig(epochs=1, batch_size=256, lr=1e-9, progress=False)
    res = pv.train(vae, x, None, cfg)
    ev = pv.evaluate(vae, x, num_samples=1, seed=None)
    # with lr ~ 0 one full-batch step leaves the model as it was: one-sample ELBO vs K=1 ELBO
    assert abs(res.history[0]["train_elbo"] - ev["elbo"]) < 0.5


def test_resume_ends_with_the_same_parameters_as_an_uninterrupted_run(tmp_path):
    x, xt = _data()
    cfg = pv.TrainConfig(
        epochs=3,
        batch_size=16,
        lr=0.01,
        eval_samples=10,
        eval_every=1,
        binarize="dynamic",
        progress=False,
    )
    a = _vae()
    full = pv.train(a, x, torch.bernoulli(xt), cfg, out_dir=tmp_path / "a")
    b = _vae()
    from dataclasses import replace

    pv.train(b, x, torch.bernoulli(xt), replace(cfg, epochs=1), out_dir=tmp_path / "b")
    torch.manual_seed(999)  # whatever the process did in between must not matter
    c = _vae(seed=5)  # a fresh process would build the model anew
    resumed = pv.train(c, x, torch.bernoulli(xt), cfg, out_dir=tmp_path / "b", resume=True)
    for (n, p), q in zip(a.state_dict().items(), c.state_dict().values()):
        assert torch.equal(p, q), n
    assert [r["train_elbo"] for r in resumed.history] == [r["train_elbo"] for r in full.history]
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3]


def test_resume_refuses_a_different_architecture(tmp_path):
    x, xt = _data()
    pv.train(_vae(), x, xt, pv.TrainConfig(epochs=1, progress=False), out_dir=tmp_path)
    other = pv.VAE(6, 2, (8,), likelihood="laplace")
    with pytest.raises(pv.CheckpointError, match="cannot resume.*model differs") as info:
        pv.train(
            other, x, xt, pv.TrainConfig(epochs=2, progress=False), out_dir=tmp_path, resume=True
        )
    # only what differs is named
    text = str(info.value)
    assert "likelihood: 'continuous_bernoulli' in the checkpoint, 'laplace' now" in text
    assert "z_dim" not in text and "hidden_dims" not in text


def test_resume_refuses_other_training_settings_unless_overridden(tmp_path):
    x, xt = _data()
    first = pv.TrainConfig(epochs=1, progress=False)
    pv.train(_vae(), x, xt, first, out_dir=tmp_path)
    changed = pv.TrainConfig(epochs=2, lr=1e-2, batch_size=8, progress=False)
    with pytest.raises(pv.CheckpointError, match=r"batch_size: 128 -> 8, lr: 0.001 -> 0.01"):
        pv.train(_vae(), x, xt, changed, out_dir=tmp_path, resume=True)
    assert pv.load_checkpoint(tmp_path)["epoch"] == 1  # nothing was trained or written
    pv.train(_vae(), x, xt, changed, out_dir=tmp_path, resume=True, override=["lr", "batch_size"])
    ckpt = pv.load_checkpoint(tmp_path)
    assert ckpt["epoch"] == 2
    assert ckpt["config_changes"] == [
        {"epoch": 1, "changed": {"batch_size": [128, 8], "epochs": [1, 2], "lr": [0.001, 0.01]}}
    ]
    # more epochs alone is what resuming is for
    longer = pv.TrainConfig(epochs=3, lr=1e-2, batch_size=8, progress=False)
    pv.train(_vae(), x, xt, longer, out_dir=tmp_path, resume=True)
    assert len(pv.load_checkpoint(tmp_path)["config_changes"]) == 2


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    x, xt = _data()
    pv.train(_vae(), x, xt, pv.TrainConfig(epochs=1, progress=False), out_dir=tmp_path)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    real_save = torch.save

    def crashing_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a file")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        pv.train(
            _vae(), x, xt, pv.TrainConfig(epochs=2, progress=False), out_dir=tmp_path, resume=True
        )
    monkeypatch.setattr(torch, "save", real_save)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before
    assert pv.load_checkpoint(tmp_path)["epoch"] == 1
    # the previous checkpoint (here: the same epoch, linked before the failed write) is kept
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint.prev.pt",
        "checkpoint.pt",
        "config.json",
        "metrics.jsonl",
    ]
    assert (tmp_path / "checkpoint.prev.pt").read_bytes() == before


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    x, xt = _data()
    vae = _vae()
    pv.train(vae, x, xt, pv.TrainConfig(epochs=1, progress=False), out_dir=tmp_path)
    good = (tmp_path / "checkpoint.pt").read_bytes()
    with torch.no_grad():
        vae.decoder.out.weight.fill_(float("nan"))
    with pytest.raises(
        pv.TrainingDiverged,
        match=r"diverged: non-finite parameters at epoch 1.*checkpoint.pt\) is intact",
    ):
        pv.train(
            vae, x, xt, pv.TrainConfig(epochs=3, progress=False), out_dir=tmp_path, resume=False
        )
    # resume=False restarts at epoch 1; the divergence stops it before any checkpoint write
    assert (tmp_path / "checkpoint.pt").read_bytes() == good


def test_nan_message_at_first_epoch_says_no_checkpoint_was_written():
    x, _ = _data()
    vae = _vae()
    with torch.no_grad():
        vae.decoder.out.bias.fill_(float("inf"))
    with pytest.raises(
        pv.TrainingDiverged, match="diverged.*no checkpoint was written.*lower --lr"
    ):
        pv.train(vae, x, None, pv.TrainConfig(epochs=1, progress=False))


def test_bad_training_data_errors():
    vae = pv.VAE(6, 2, (8,))  # bernoulli
    with pytest.raises(ValueError, match="binary training data.*Binarize"):
        pv.train(vae, torch.rand(10, 6), config=pv.TrainConfig(epochs=1, progress=False))
    with pytest.raises(ValueError, match="expects x_dim=6"):
        pv.train(vae, torch.rand(10, 5), config=pv.TrainConfig(epochs=1, progress=False))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        pv.train(
            vae,
            2 * torch.rand(10, 6),
            config=pv.TrainConfig(epochs=1, binarize="dynamic", progress=False),
        )
    nan = torch.rand(10, 6)
    nan[3, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        pv.train(vae, nan, config=pv.TrainConfig(epochs=1, binarize="dynamic", progress=False))


def test_numpy_and_dataset_inputs_go_through_the_same_path():
    x, _ = _data()
    cfg = pv.TrainConfig(epochs=1, progress=False)
    r1 = pv.train(_vae(), x.numpy(), config=cfg)
    r2 = pv.train(_vae(), torch.utils.data.TensorDataset(x, torch.zeros(len(x))), config=cfg)
    r3 = pv.train(_vae(), x, config=cfg)
    assert r1.history[0]["train_elbo"] == r2.history[0]["train_elbo"] == r3.history[0]["train_elbo"]


def test_config_validation():
    with pytest.raises(ValueError, match="TrainConfig.lr is out of range"):
        pv.TrainConfig(lr=0)
    with pytest.raises(ValueError, match="binarize must be None or 'dynamic'"):
        pv.TrainConfig(binarize="static")
    with pytest.raises(ValueError, match=r"unknown TrainConfig field\(s\) \['lrate'\]"):
        pv.TrainConfig.from_dict({"lrate": 1})
    with pytest.raises(ValueError, match="unknown estimator 'elbo2'.*iwae.*trace"):
        pv.train(_vae(), _data()[0], config=pv.TrainConfig(elbo="elbo2", progress=False))
    cfg = pv.TrainConfig(epochs=7, binarize="dynamic")
    assert pv.TrainConfig.from_json(cfg.to_json()) == cfg


def test_resume_without_out_dir():
    with pytest.raises(ValueError, match="resume=True needs out_dir"):
        pv.train(_vae(), _data()[0], config=CFG, resume=True)


def test_cuda_requested_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match=r"CUDA was requested.*Drop --cuda"):
        pv.train(_vae(), _data()[0], config=pv.TrainConfig(device="cuda", progress=False))
    with pytest.raises(ValueError, match="unsupported device"):
        pv.resolve_device("mps")


# -- checkpoints -------------------------------------------------------------------------------
def test_load_model_in_one_call_gives_the_same_predictions(tmp_path):
    x, xt = _data()
    vae = _vae()
    pv.train(vae, x, xt, pv.TrainConfig(epochs=1, progress=False), out_dir=tmp_path)
    loaded = pv.load_model(tmp_path)
    torch.testing.assert_close(loaded.reconstruct(xt), vae.reconstruct(xt))
    assert loaded.config == vae.config


def test_checkpoint_loads_with_weights_only(tmp_path):
    x, _ = _data()
    pv.train(_vae(), x, None, pv.TrainConfig(epochs=1, progress=False), out_dir=tmp_path)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(ckpt) >= {
        "model",
        "optimizer",
        "rng",
        "model_config",
        "train_config",
        "epoch",
        "history",
        "format",
        "version",
    }


def test_corrupt_foreign_and_missing_checkpoints(tmp_path):
    with pytest.raises(pv.CheckpointError, match="no checkpoint at"):
        pv.load_checkpoint(tmp_path)
    bad = tmp_path / "truncated.pt"
    torch.save({"format": "pyro_vae.checkpoint"}, bad)
    bad.write_bytes(bad.read_bytes()[:20])
    with pytest.raises(pv.CheckpointError, match="is corrupt: it is not a torch checkpoint"):
        pv.load_checkpoint(bad)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(pv.CheckpointError, match="not a pyro_vae checkpoint"):
        pv.load_checkpoint(foreign)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "pyro_vae.checkpoint", "payload": pickle.PicklingError("x")}, evil)
    with pytest.raises(pv.CheckpointError, match="refusing to load.*weights_only"):
        pv.load_checkpoint(evil)


def test_progress_bar_is_off_when_not_a_terminal(capsys):
    pv.train(_vae(), _data()[0], config=pv.TrainConfig(epochs=1, progress=True))
    assert "epoch 1/1" not in capsys.readouterr().err


def test_callbacks_receive_each_epoch():
    seen = []
    pv.train(
        _vae(), _data()[0], config=pv.TrainConfig(epochs=2, progress=False), callbacks=[seen.append]
    )
    assert [r["epoch"] for r in seen] == [1, 2]


@requires_cuda
def test_cuda_training_matches_cpu_evaluation(tmp_path):
    x, xt = _data()
    vae = _vae()
    pv.train(vae, x, xt, pv.TrainConfig(epochs=2, device="cuda", progress=False), out_dir=tmp_path)
    assert next(vae.parameters()).is_cuda
    cpu = pv.load_model(tmp_path, map_location="cpu")
    gpu = pv.load_model(tmp_path, map_location="cuda")
    a = pv.evaluate(cpu, xt, num_samples=2000, seed=0)["log_likelihood"]
    b = pv.evaluate(gpu, xt.cuda(), num_samples=2000, seed=0)["log_likelihood"]
    assert abs(a - b) < 0.05


def test_a_finite_but_absurd_elbo_warns_with_advice():
    x, _ = _data()
    cfg = pv.TrainConfig(epochs=2, lr=1e6, batch_size=8, eval_every=0, progress=False)
    with pytest.warns(RuntimeWarning, match="training looks diverged.*lower --lr"):
        try:
            pv.train(_vae(), x, config=cfg)
        except pv.TrainingDiverged:
            pytest.fail("lr=1e6 on this model stays finite; the guard must warn, not only NaN")


def test_resume_without_a_checkpoint_refuses(tmp_path):
    with pytest.raises(pv.CheckpointError, match="nothing to resume: there is no checkpoint"):
        pv.train(_vae(), _data()[0], config=CFG, out_dir=tmp_path, resume=True)
    assert not any(tmp_path.iterdir())


def test_configs_check_types_and_accept_numpy_numbers():
    import numpy as np

    cfg = pv.TrainConfig(batch_size=np.int64(64), lr=np.float32(0.5))
    assert type(cfg.batch_size) is int and type(cfg.lr) is float
    for bad, message in [
        (dict(epochs=2.5), r"TrainConfig.epochs must be an int, got 2.5"),
        (dict(epochs="3"), r"TrainConfig.epochs must be an int, got '3'"),
        (dict(jit=1), r"TrainConfig.jit must be a bool"),
    ]:
        with pytest.raises(TypeError, match=message):
            pv.TrainConfig(**bad)
    with pytest.raises(ValueError, match="TrainConfig.device must be 'cpu', 'cuda' or 'cuda:N'"):
        pv.TrainConfig(device="tpu")
    with pytest.raises(TypeError, match=r"ModelConfig.hidden_dims must be a tuple of ints"):
        pv.ModelConfig(784, hidden_dims=(400.5,))


def test_load_config_names_the_file(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=r"config.json is not a pyro_vae config"):
        pv.load_config(bad)


def test_minibatch_is_the_indexed_rows_and_torch_bernoullis_draw():
    """train()'s batch: index_select gives x[index] exactly (any trailing shape, repeated and
    unsorted indices), and the dynamic draw is torch.bernoulli's after the same seed."""
    from pyro_vae.training.loop import minibatch

    g = torch.Generator().manual_seed(3)
    data = torch.rand(50, 2, 7, 7, generator=g)
    index = torch.tensor([41, 3, 3, 17, 0, 49])
    rows = minibatch(data, index, None)
    assert torch.equal(rows, data[index]) and rows.is_contiguous()
    torch.manual_seed(0)
    drawn = minibatch(data, index, "dynamic")
    torch.manual_seed(0)
    assert torch.equal(drawn, torch.bernoulli(data[index]))
    # writing into the batch never touches the data set
    before = data.clone()
    minibatch(data, index, None).fill_(-1.0)
    assert torch.equal(data, before)
