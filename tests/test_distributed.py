"""Data-parallel training with torch.distributed: 2 gloo processes on the CPU.

The processes are started with ``torch.multiprocessing`` (spawn) or torchrun; run as a script
under torchrun this file is the end-to-end driver of ``examples/mnist_svi.py --distributed`` on
synthetic data (see the bottom).
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.multiprocessing as mp

import pyro_vae as pv
from pyro_vae.training import distributed as pvd

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "mnist_svi.py"

WORLD = 2
B = 8  # per-process batch: a step sees 16 points
# 101 = 6 * 16 + 5: the short last global batch is shared 3 / 2, which the loss weights correct.
N, M = 101, 33


class DeltaGuide(pv.Guide):
    """q(z | x) = Delta(f(x)): the ELBO is then a deterministic function of data and weights, so
    runs whose ranks draw different noise can still be compared exactly."""

    def __init__(self, x_dim: int, z_dim: int) -> None:
        super().__init__(x_dim, z_dim)
        self.net = pv.networks.MLP(x_dim, (8,), z_dim)

    def forward(self, x):
        return dist.Delta(self.net(x), event_dim=1)


def _data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(N, 6, generator=g), torch.rand(M, 6, generator=g)


def _delta_vae():
    torch.manual_seed(0)
    return pv.VAE(6, 2, (8,), likelihood="continuous_bernoulli", guide=DeltaGuide(6, 2))


def _noisy_vae():
    torch.manual_seed(0)
    return pv.VAE(6, 2, (8,))  # Normal guide, Bernoulli likelihood: trained on binarized pixels


CFG = pv.TrainConfig(
    epochs=1, batch_size=B, lr=0.01, eval_samples=4, eval_every=1, progress=False, seed=3
)


# Children fork from a clean server process that imported torch, pyro and this module once:
# no re-import per child (seconds each on a small machine), and no fork of the multi-threaded
# test process (unsafe once torch's thread pool has run).
START = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _mp_context():
    if START == "forkserver":
        multiprocessing.set_forkserver_preload(["torch", "pyro", "pyro_vae", __name__])
    return multiprocessing.get_context(START)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _join_group(rank: int, port: int, timeout: float) -> pvd.DistributedContext:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
    )
    pyro.enable_validation(True)
    pyro.clear_param_store()
    return pvd.init_distributed("cpu", timeout=timeout)


def _train_worker(rank: int, port: int, out: str) -> None:
    out = Path(out)
    ctx = _join_group(rank, port, timeout=60)
    try:
        x, xt = _data()
        exact = _delta_vae()
        res = pv.train(exact, x, xt, CFG, out_dir=out / f"run{rank}", distributed=True)
        noisy = _noisy_vae()
        cfg = replace(CFG, epochs=2, binarize="dynamic")
        pv.train(noisy, x, torch.bernoulli(xt), cfg, distributed=True)
        torch.manual_seed(0)
        hier = pv.TwoLayerVAE(6, 3, (8,), z2_dim=2, hidden2_dims=(4,))
        hier_res = pv.train(hier, x, torch.bernoulli(xt), cfg, distributed=True)
        torch.save(
            {
                "two_layer": hier.state_dict(),
                "two_layer_evaluation": hier_res.evaluation,
                "exact": exact.state_dict(),
                "history": res.history,
                "evaluation": res.evaluation,
                "noisy": noisy.state_dict(),
                "draw": torch.randn(4),  # this rank's RNG stream after training
                "rank": ctx.rank,
            },
            out / f"rank{rank}.pt",
        )
    finally:
        pvd.shutdown_distributed()
    pvd.exit_process()  # gloo's threads outlive the group: skip the interpreter's shutdown


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    _mp_context()
    ctx = mp.start_processes(
        _train_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=False, start_method=START
    )
    deadline = time.monotonic() + 180
    try:
        while not ctx.join(timeout=1):  # raises if a worker failed
            assert time.monotonic() < deadline, "the 2-process run did not finish in 180 s"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    return out, ranks


def _assert_same_state(a: dict, b: dict, exact: bool = True, **tol) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if exact:
            assert torch.equal(a[name], b[name]), name
        else:
            torch.testing.assert_close(a[name], b[name], **tol, msg=name)


def test_parameters_are_identical_on_every_rank(two_ranks):
    _, (r0, r1) = two_ranks
    assert (r0["rank"], r1["rank"]) == (0, 1)
    _assert_same_state(r0["exact"], r1["exact"])
    _assert_same_state(r0["noisy"], r1["noisy"])
    # Global metrics (all-reduced), the same on every rank; only the timing is per rank.
    for a, b in zip(r0["history"], r1["history"]):
        assert {**a, "seconds": 0} == {**b, "seconds": 0}
    assert not torch.equal(r0["exact"]["decoder.out.weight"], _delta_vae().decoder.out.weight)


def test_a_two_layer_vae_trains_data_parallel(two_ranks):
    _, (r0, r1) = two_ranks
    _assert_same_state(r0["two_layer"], r1["two_layer"])
    ev = r0["two_layer_evaluation"]
    assert ev == r1["two_layer_evaluation"]
    assert ev["latent_dims"] == {"z1": 3, "z2": 2} and ev["kl_closed_form"] == ["z2"]


def test_ranks_draw_different_noise(two_ranks):
    _, (r0, r1) = two_ranks
    assert not torch.equal(r0["draw"], r1["draw"])
    seeds = {pvd.rank_seed(3, epoch, rank) for epoch in (1, 2) for rank in (0, 1)}
    assert len(seeds) == 4


def test_two_processes_match_one_process_with_twice_the_batch(two_ranks):
    _, (r0, _) = two_ranks
    x, xt = _data()
    single = _delta_vae()
    res = pv.train(single, x, xt, replace(CFG, batch_size=WORLD * B))
    # Adam over the same gradients (summed in another order): equal to float32 rounding.
    _assert_same_state(r0["exact"], single.state_dict(), exact=False, rtol=1e-4, atol=1e-5)
    (a,), (b,) = r0["history"], res.history
    assert a["world_size"] == WORLD and "world_size" not in b
    for key in ("train_elbo", "test_elbo", "test_log_likelihood", "kl"):
        assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-5), key
    assert a["active_units"] == b["active_units"]
    for key, value in res.evaluation.items():  # the sharded evaluation equals the whole one
        if isinstance(value, float):
            assert r0["evaluation"][key] == pytest.approx(value, rel=1e-5, abs=1e-4), key
        else:  # site names, unit counts
            assert r0["evaluation"][key] == value, key


def test_only_rank_0_writes_files(two_ranks):
    out, _ = two_ranks
    assert sorted(p.name for p in (out / "run0").iterdir()) == [
        "checkpoint.pt",
        "config.json",
        "metrics.jsonl",
    ]
    assert not (out / "run1").exists()


def test_resume_with_a_different_number_of_processes(two_ranks, tmp_path):
    out, _ = two_ranks
    shutil.copytree(out / "run0", tmp_path / "run")
    x, xt = _data()
    cfg = replace(CFG, batch_size=WORLD * B, epochs=2)
    resumed = _delta_vae()
    torch.manual_seed(123)  # the resumed run must not depend on what happened before
    # The same global batch on one process is another per-process batch_size: said explicitly.
    res = pv.train(
        resumed, x, xt, cfg, out_dir=tmp_path / "run", resume=True, override=["batch_size"]
    )
    assert [r["epoch"] for r in res.history] == [1, 2]
    assert res.history[0]["world_size"] == WORLD and "world_size" not in res.history[1]
    uninterrupted = _delta_vae()
    pv.train(uninterrupted, x, xt, cfg)
    _assert_same_state(
        resumed.state_dict(), uninterrupted.state_dict(), exact=False, rtol=1e-4, atol=1e-5
    )
    assert pv.load_checkpoint(tmp_path / "run")["epoch"] == 2


def test_shares_of_a_global_batch_partition_it():
    for size in range(1, 40):
        for world in range(1, 5):
            shares = [pvd.shard(size, world, r) for r in range(world)]
            assert sum(n for _, n in shares) == size
            assert all(shares[r + 1][0] == shares[r][0] + shares[r][1] for r in range(world - 1))
            assert max(n for _, n in shares) - min(n for _, n in shares) <= 1


def test_distributed_without_a_process_group_is_a_clear_error():
    with pytest.raises(pvd.DistributedError, match="torchrun --standalone --nproc_per_node=N"):
        pv.train(_delta_vae(), _data()[0], config=CFG, distributed=True)


def test_example_distributed_flag_without_torchrun_is_a_clear_error(monkeypatch, capsys):
    for key in pvd.TORCHRUN_ENV:
        monkeypatch.delenv(key, raising=False)
    spec = importlib.util.spec_from_file_location("mnist_svi_dist", SCRIPT)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    with pytest.raises(SystemExit) as e:
        example.main(["--distributed", "--epochs", "1"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "missing RANK, WORLD_SIZE" in err
    assert "launch with `torchrun --standalone --nproc_per_node=N examples/mnist_svi.py" in err


# -- a process that dies or hangs --------------------------------------------------------------
class _FailingELBO(pyro.infer.Trace_ELBO):
    """Rank 1 dies (or stops answering) at its third loss: the probe, one step, then this."""

    def __init__(self, rank: int, mode: str) -> None:
        super().__init__()
        self.rank, self.mode, self.calls = rank, mode, 0

    def differentiable_loss(self, *args, **kwargs):
        self.calls += 1
        if self.rank == 1 and self.calls == 3:
            if self.mode == "exit":
                os._exit(1)
            time.sleep(60)
        return super().differentiable_loss(*args, **kwargs)


def _failing_worker(rank: int, port: int, mode: str, report: str) -> None:
    ctx = _join_group(rank, port, timeout=3)
    x, _ = _data()
    try:
        pv.train(_delta_vae(), x, config=CFG, elbo=_FailingELBO(ctx.rank, mode), distributed=True)
    except Exception as e:
        Path(report).write_text(f"{type(e).__name__}: {e}\n{traceback.format_exc()}")
        os._exit(3)
    os._exit(0)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["exit", "hang"])
def test_a_rank_that_dies_or_hangs_ends_the_others_with_a_clear_error(mode, tmp_path):
    # No torchrun agent here (it would stop the survivors itself): the process group's timeout
    # and gloo's connection errors must end rank 0 on their own.
    port, report = _free_port(), tmp_path / "rank0.txt"
    procs = [
        _mp_context().Process(target=_failing_worker, args=(r, port, mode, str(report)))
        for r in range(WORLD)
    ]
    for p in procs:
        p.start()
    try:
        t0 = time.perf_counter()
        procs[0].join(timeout=60)
        elapsed = time.perf_counter() - t0
        assert procs[0].exitcode == 3, f"rank 0 did not fail cleanly (exit {procs[0].exitcode})"
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()
    assert elapsed < 45
    text = report.read_text()
    assert text.startswith("DistributedError: rank 0 of 2: a collective operation failed")
    assert "another process probably died" in text and "timeout (3 s)" in text


_EXIT_SCRIPT = """
import atexit, sys, torch
from pyro_vae.experiments import cli
from pyro_vae.training import distributed as pvd
atexit.register(lambda: sys.stdout.write("atexit ran\\n"))  # no flush: exit_process's job
class ShutDown:  # a module global: its __del__ runs only in the interpreter's shutdown
    def __del__(self):
        sys.stdout.write(" | shut down")
shut_down = ShutDown()
if sys.argv[1] == "group":
    pvd.init_distributed("cpu", timeout=30)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 1))
    model(torch.ones(2, 3)).sum().backward()
    pvd.shutdown_distributed(barrier=True)
sys.stdout.write("unflushed output")
sys.stderr.write("unflushed error")
def main():
    if sys.argv[2] == "raise":
        raise ValueError("bad input")
    if sys.argv[2] == "exit":
        sys.exit(3)
    pvd.exit_process(7)
    print(" | after exit_process")
cli.run_script(main)
print(" | after run_script")
"""


def _run_exit_script(group: str, end: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    return subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, group, end],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_exit_process_skips_the_shutdown_only_after_a_process_group():
    # With a group, the process ends inside exit_process with the given code, its pending output
    # and atexit handlers not lost; without one it returns and the script goes on.
    proc = _run_exit_script("group", "code")
    assert (proc.returncode, proc.stdout) == (7, "unflushed outputatexit ran\n"), proc.stderr
    assert proc.stderr == "unflushed error"
    proc = _run_exit_script("none", "code")
    assert proc.returncode == 0, proc.stderr
    expected = "unflushed output | after exit_process\n | after run_script\n"
    expected += "atexit ran\n | shut down"
    assert proc.stdout == expected


@pytest.mark.parametrize("group", ["group", "none"])
def test_run_script_ends_an_error_with_its_status_and_message(group):
    # Under a group the error path must skip the shutdown too, keeping Python's exit status and
    # traceback; without one, run_script changes nothing.
    output = "unflushed outputatexit ran\n" + ("" if group == "group" else " | shut down")
    proc = _run_exit_script(group, "raise")
    assert proc.returncode == 1 and proc.stdout == output
    assert "ValueError: bad input" in proc.stderr and "Traceback" in proc.stderr
    proc = _run_exit_script(group, "exit")
    assert proc.returncode == 3 and proc.stdout == output


# -- end to end: torchrun + examples/mnist_svi.py --distributed --------------------------------
def _fake_images(name="mnist", **kw):
    g = torch.Generator().manual_seed(0)
    return pv.ImageData(
        name=name,
        train_x=torch.rand(600, 784, generator=g),
        train_y=torch.randint(0, 10, (600,), generator=g),
        test_x=torch.rand(100, 784, generator=g),
        test_y=torch.randint(0, 10, (100,), generator=g),
        source="synthetic (tests/test_distributed.py)",
    )


@pytest.mark.slow
def test_torchrun_runs_the_example_on_two_processes(tmp_path):
    out = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        __file__,
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("test log-likelihood") == 1  # only rank 0 prints the summary
    assert "x 2 processes" in proc.stdout
    res = json.loads((out / "results.json").read_text())
    assert res["world_size"] == 2 and res["train_size"] == 600 and res["eval_samples"] == 5
    assert res["train"]["batch_size"] == 50
    assert (out / "samples.png").read_bytes()[:4] == b"\x89PNG"
    ckpt = pv.load_checkpoint(out)
    assert ckpt["epoch"] == 1 and ckpt["history"][0]["world_size"] == 2


if __name__ == "__main__":
    # Under torchrun (see the test above): the example with synthetic images instead of MNIST.
    import pyro_vae.experiments.run

    pyro_vae.experiments.run.load_dataset = _fake_images
    spec = importlib.util.spec_from_file_location("mnist_svi", SCRIPT)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    from pyro_vae.experiments import cli

    cli.run_script(  # what the example's __main__ does
        lambda: example.main(
            [
                "--distributed",
                "--dist-timeout",
                "120",
                "--epochs",
                "1",
                "--batch-size",
                "50",
                "--z-dim",
                "2",
                "--hidden-dims",
                "32",
                "--eval-samples",
                "5",
                "--no-progress",
                "--out",
                sys.argv[1],
            ]
        )
    )
