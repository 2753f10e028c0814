"""The callback protocol: hook order and payloads in train() and run_experiment(), plain
functions as before, rank 0 only under DDP."""

import json
import multiprocessing
import os
import socket
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pyro
import pytest
import torch
import torch.multiprocessing as mp
from test_examples import _fake_data as fake_image_data

import pyro_vae as pv
from pyro_vae.experiments.run import RESULTS_NAME, run_experiment
from pyro_vae.training import distributed as pvd
from pyro_vae.training.callbacks import HOOKS, Callback, CallbackList

CFG = pv.TrainConfig(epochs=2, batch_size=32, eval_samples=3, eval_every=2, progress=False)


class Recorder(Callback):
    """Every hook call, in order: ``(hook, payload)``."""

    def __init__(self):
        self.calls = []

    def on_run_start(self, config):
        self.calls.append(("on_run_start", config))

    def on_epoch_end(self, metrics):
        self.calls.append(("on_epoch_end", metrics))

    def on_evaluation(self, results):
        self.calls.append(("on_evaluation", results))

    def on_figures(self, paths):
        self.calls.append(("on_figures", paths))

    def on_run_end(self, results):
        self.calls.append(("on_run_end", results))

    def on_run_error(self, error):
        self.calls.append(("on_run_error", error))

    @property
    def hooks(self):
        return [h for h, _ in self.calls]

    def payloads(self, hook):
        return [p for h, p in self.calls if h == hook]


def _data(n=96, m=24, d=12):
    g = torch.Generator().manual_seed(0)
    return torch.bernoulli(torch.rand(n, d, generator=g)), torch.bernoulli(
        torch.rand(m, d, generator=g)
    )


def _vae(d=12):
    torch.manual_seed(0)
    return pv.VAE(d, 2, (8,))


def test_train_calls_the_hooks_in_order_with_their_payloads(tmp_path):
    x, xt = _data()
    rec = Recorder()
    vae = _vae()
    res = pv.train(vae, x, xt, CFG, out_dir=tmp_path, callbacks=[rec])
    assert rec.hooks == [
        "on_run_start",
        "on_epoch_end",
        "on_epoch_end",
        "on_evaluation",  # epoch 2 estimates the log-likelihood (eval_every=2)
        "on_run_end",
    ]
    (start,) = rec.payloads("on_run_start")
    assert start == {
        "model": vae.config.to_dict(),
        "model_class": "VAE",
        "train": CFG.to_dict(),
        "out_dir": str(tmp_path),
        "resume": False,
        "start_epoch": 1,
        "world_size": 1,
    }
    epochs = rec.payloads("on_epoch_end")
    for record, metrics in zip(res.history, epochs, strict=True):
        assert metrics == {**record, "lr": CFG.lr}  # the record, with the learning rate
        assert {"epoch", "train_elbo", "test_elbo", "seconds", "lr"} <= set(metrics)
    assert "test_log_likelihood" not in epochs[0] and "test_log_likelihood" in epochs[1]
    assert "lr" not in res.history[0]  # the run's own records are unchanged
    (evaluation,) = rec.payloads("on_evaluation")
    assert evaluation == {**res.evaluation, "epoch": 2}
    assert evaluation["num_samples"] == 3
    assert evaluation["log_likelihood"] == epochs[1]["test_log_likelihood"]
    assert {"elbo", "kl", "active_units", "active_units_per_site"} <= set(evaluation)
    (end,) = rec.payloads("on_run_end")
    assert end["epochs"] == 2 and end["history"] == res.history
    assert end["evaluation"] is res.evaluation and end["seconds"] == res.seconds
    assert end["checkpoint"] == str(tmp_path / "checkpoint.pt")


def test_plain_functions_are_still_called_with_each_epoch(tmp_path):
    x, xt = _data()
    seen, rec = [], Recorder()

    class OnlyTheEnd:  # a duck-typed object: any of the hook methods
        ended = 0

        def on_run_end(self, results):
            OnlyTheEnd.ended += 1

    res = pv.train(_vae(), x, None, CFG, callbacks=[seen.append, rec, OnlyTheEnd()])
    assert [r["epoch"] for r in seen] == [1, 2]
    assert seen == rec.payloads("on_epoch_end") and seen[0]["lr"] == CFG.lr
    assert "on_evaluation" not in rec.hooks  # no test data, no evaluation
    assert rec.payloads("on_run_start")[0]["out_dir"] is None
    assert OnlyTheEnd.ended == 1 and res.evaluation is None


def test_the_base_callback_does_nothing_and_a_wrong_one_is_refused():
    cb = Callback()
    for hook in HOOKS:
        assert getattr(cb, hook)({}) is None
    with pytest.raises(TypeError, match="a callback must be a pyro_vae Callback"):
        CallbackList([3])
    with pytest.raises(TypeError, match="on_epoch_end"):
        pv.train(_vae(), _data()[0], config=CFG, callbacks=["tensorboard"])


def test_a_resumed_run_starts_at_its_next_epoch(tmp_path):
    x, xt = _data()
    pv.train(_vae(), x, xt, replace(CFG, epochs=1), out_dir=tmp_path)
    rec = Recorder()
    pv.train(_vae(), x, xt, CFG, out_dir=tmp_path, resume=True, callbacks=[rec])
    start = rec.payloads("on_run_start")[0]
    assert (start["resume"], start["start_epoch"]) == (True, 2)
    assert [m["epoch"] for m in rec.payloads("on_epoch_end")] == [2]


def test_a_diverged_run_does_not_end(tmp_path):
    x, _ = _data()
    rec = Recorder()
    bad = replace(CFG, lr=1e12, epochs=30)
    with pytest.raises(pv.TrainingDiverged), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "looks diverged", on the way
        pv.train(_vae(), x, config=bad, callbacks=[rec])
    assert rec.hooks[0] == "on_run_start" and "on_run_end" not in rec.hooks
    assert rec.hooks[-1] == "on_run_error"  # loggers close their runs as failed
    assert isinstance(rec.payloads("on_run_error")[0], pv.TrainingDiverged)


def test_a_single_callback_need_not_be_in_a_list(tmp_path):
    x, _ = _data()
    rec = Recorder()
    pv.train(_vae(), x, config=replace(CFG, epochs=1), callbacks=rec)
    assert rec.hooks == ["on_run_start", "on_epoch_end", "on_run_end"]


def _fake_data():
    return fake_image_data(n=200, m=40)


MODEL = pv.ModelConfig(x_dim=784, z_dim=3, hidden_dims=(16,))


def test_run_experiment_reports_figures_and_ends_once_with_the_results(tmp_path):
    rec = Recorder()
    train_config = pv.TrainConfig(epochs=2, batch_size=50, eval_samples=4, progress=False)
    res = run_experiment(
        MODEL,
        train_config,
        data=_fake_data(),
        out_dir=tmp_path,
        log=lambda m: None,
        callbacks=[rec],
    )
    assert rec.hooks == [
        "on_run_start",
        "on_epoch_end",
        "on_epoch_end",
        "on_evaluation",
        "on_figures",
        "on_run_end",  # once: run_experiment's, after the figures, not train's
    ]
    start = rec.payloads("on_run_start")[0]
    assert (start["dataset"], start["train_size"], start["test_size"]) == ("mnist", 200, 40)
    assert start["num_parameters"] == res["num_parameters"] and start["out_dir"] == str(tmp_path)
    assert start["train"]["binarize"] == "dynamic" and start["model"] == res["model"]
    assert rec.payloads("on_evaluation")[0]["log_likelihood"] == res["test_log_likelihood"]
    (paths,) = rec.payloads("on_figures")
    assert [p.name for p in paths] == res["figures"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in paths)
    (end,) = rec.payloads("on_run_end")
    assert end is res and json.loads((tmp_path / RESULTS_NAME).read_text()) == res


def test_run_experiment_reports_an_evaluation_made_after_training(tmp_path):
    train_config = pv.TrainConfig(epochs=1, batch_size=50, eval_samples=4, progress=False)
    kw = dict(data=_fake_data(), out_dir=tmp_path, log=lambda m: None, figures=False)
    run_experiment(MODEL, train_config, **kw)
    rec = Recorder()
    more = pv.TrainConfig(epochs=1, batch_size=50, eval_samples=6, progress=False)
    res = run_experiment(MODEL, more, resume=True, callbacks=[rec], **kw)  # nothing to train
    assert rec.hooks == ["on_run_start", "on_evaluation", "on_run_end"]
    (evaluation,) = rec.payloads("on_evaluation")
    assert (evaluation["epoch"], evaluation["num_samples"]) == (1, 6)
    assert evaluation["log_likelihood"] == res["test_log_likelihood"]


# -- DDP: only rank 0 calls the hooks -------------------------------------------------------

START = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE="2",
    )
    pyro.clear_param_store()
    pvd.init_distributed("cpu", timeout=60)
    try:
        x, xt = _data()
        rec, seen = Recorder(), []
        pv.train(_vae(), x, xt, CFG, callbacks=[rec, seen.append], distributed=True)
        calls = [(h, p.get("epoch") if isinstance(p, dict) else None) for h, p in rec.calls]
        Path(out, f"rank{rank}.json").write_text(json.dumps({"calls": calls, "seen": len(seen)}))
    finally:
        pvd.shutdown_distributed()
    pvd.exit_process()  # gloo's threads outlive the group: skip the interpreter's shutdown


@pytest.mark.slow
def test_only_rank_0_calls_the_hooks(tmp_path):
    if START == "forkserver":
        multiprocessing.set_forkserver_preload(["torch", "pyro", "pyro_vae", __name__])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.start_processes(
        _worker, args=(port, str(tmp_path)), nprocs=2, join=False, start_method=START
    )
    deadline = time.monotonic() + 180
    try:
        while not ctx.join(timeout=1):
            assert time.monotonic() < deadline, "the 2-process run did not finish in 180 s"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    rank0, rank1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert [h for h, _ in rank0["calls"]] == [
        "on_run_start",
        "on_epoch_end",
        "on_epoch_end",
        "on_evaluation",
        "on_run_end",
    ]
    assert rank0["seen"] == 2
    assert rank1 == {"calls": [], "seen": 0}
