"""pyro_vae.training.checkpoint: integrity under injected faults. Every damaged file is refused
with a message that names it and says it is corrupt; nothing already written is lost."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

import pyro_vae as pv
from pyro_vae.training.checkpoint import digest


def _run(tmp_path, epochs=2, **kwargs):
    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(64, 6, generator=torch.Generator().manual_seed(1)))
    vae = pv.VAE(6, 3, (8,))
    cfg = pv.TrainConfig(epochs=epochs, batch_size=16, eval_every=0, progress=False, **kwargs)
    pv.train(vae, x, x[:16], cfg, out_dir=tmp_path)
    return tmp_path / "checkpoint.pt"


def _flip_inside(path, tensor: torch.Tensor, bit: int = 0):
    """Flip one bit in the middle of ``tensor``'s bytes as stored in the file."""
    data = bytearray(path.read_bytes())
    raw = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    at = data.find(raw)
    assert at >= 0, "the tensor's bytes were not found in the file"
    data[at + len(raw) // 2] ^= 1 << bit
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "where",
    ["model weight", "model bias", "optimizer exp_avg", "optimizer exp_avg_sq", "rng state"],
)
@pytest.mark.parametrize("bit", [0, 7])
def test_a_flipped_bit_in_any_tensor_is_refused(tmp_path, where, bit):
    path = _run(tmp_path)
    ckpt = pv.load_checkpoint(path)
    tensor = {
        "model weight": lambda: ckpt["model"]["decoder.out.weight"],
        "model bias": lambda: ckpt["model"]["encoder.net.out.bias"],
        "optimizer exp_avg": lambda: ckpt["optimizer"]["state"][0]["exp_avg"],
        "optimizer exp_avg_sq": lambda: ckpt["optimizer"]["state"][2]["exp_avg_sq"],
        "rng state": lambda: ckpt["rng"]["torch"],
    }[where]()
    _flip_inside(path, tensor, bit)
    with pytest.raises(pv.CheckpointError, match=r"checkpoint .*checkpoint\.pt is corrupt"):
        pv.load_checkpoint(path)
    with pytest.raises(pv.CheckpointError, match="is corrupt"):
        pv.load_model(tmp_path)


def test_the_digest_sees_every_kind_of_value():
    base = {"a": torch.ones(3), "b": [1, 2.5, "x"], "c": {"d": None}}
    d = digest(base)
    assert digest({**base, "sha256": "anything"}) == d  # the digest itself is left out
    for changed in (
        {**base, "a": torch.tensor([1.0, 1.0, 1.0 + 2**-20])},
        {**base, "a": torch.ones(3, dtype=torch.float64)},
        {**base, "a": torch.ones(1, 3)},
        {**base, "b": [1, 2.5, "y"]},
        {**base, "c": {"d": 0}},
    ):
        assert digest(changed) != d


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda b: b[: len(b) // 2], "is corrupt: it is not a torch checkpoint archive"),
        (lambda b: b"", "is corrupt: it is not a torch checkpoint archive"),
        (lambda b: os.urandom(len(b)), "is corrupt: it is not a torch checkpoint archive"),
        (lambda b: b[:-30], "is corrupt"),
    ],
    ids=["half", "empty", "random bytes", "tail cut"],
)
def test_truncated_empty_and_random_files_are_refused(tmp_path, damage, message):
    path = _run(tmp_path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(pv.CheckpointError, match=message) as info:
        pv.load_checkpoint(path)
    text = str(info.value)
    assert "weights_only=False" not in text and "checkpoint.prev.pt" in text


def test_non_finite_state_is_refused_even_with_a_matching_digest(tmp_path):
    path = _run(tmp_path)
    ckpt = pv.load_checkpoint(path)
    ckpt["optimizer"]["state"][1]["exp_avg"][0] = float("nan")
    ckpt["sha256"] = digest(ckpt)
    torch.save(ckpt, path)
    with pytest.raises(pv.CheckpointError, match="optimizer state holds non-finite values"):
        pv.load_checkpoint(path)


def test_the_previous_checkpoint_is_kept_and_loads(tmp_path):
    path = _run(tmp_path, epochs=3)
    previous = tmp_path / "checkpoint.prev.pt"
    assert pv.load_checkpoint(path)["epoch"] == 3
    assert pv.load_checkpoint(previous)["epoch"] == 2
    path.write_bytes(b"garbage")
    with pytest.raises(pv.CheckpointError, match="previous checkpoint .*prev.pt is kept"):
        pv.train(
            pv.VAE(6, 3, (8,)),
            torch.zeros(64, 6),
            config=pv.TrainConfig(epochs=4, progress=False),
            out_dir=tmp_path,
            resume=True,
        )
    os.replace(previous, path)  # what the message says to do
    assert pv.load_checkpoint(path)["epoch"] == 2


def test_a_disk_full_write_keeps_the_checkpoint_and_says_so(tmp_path, monkeypatch):
    path = _run(tmp_path)
    before = path.read_bytes()

    def full(obj, f, *a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(pv.CheckpointError, match="No space left.*is intact.*--resume"):
        _run(tmp_path, epochs=1)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


def test_leftover_temporaries_are_removed_and_only_ours(tmp_path):
    _run(tmp_path, epochs=1)
    stale = [tmp_path / ".checkpoint.pt.abc123.tmp", tmp_path / ".metrics.jsonl.x.tmp"]
    for p in stale:
        p.write_bytes(b"half")
    theirs = tmp_path / ".notes.txt.tmp"
    theirs.write_text("a user's file")
    _run(tmp_path, epochs=1)
    assert not any(p.exists() for p in stale) and theirs.exists()


_CHILD = textwrap.dedent(
    """
    import pathlib, sys, time, torch, pyro_vae as pv
    save = torch.save
    def slow_save(obj, f, *a, **k):  # widen the write window so a kill can land inside it
        save(obj, f, *a, **k)
        time.sleep(0.3)
    torch.save = slow_save
    torch.manual_seed(0)
    x = torch.bernoulli(torch.rand(2048, 20, generator=torch.Generator().manual_seed(1)))
    cfg = pv.TrainConfig(epochs=int(sys.argv[2]), batch_size=16, eval_every=0, progress=False)
    resume = (pathlib.Path(sys.argv[1]) / "checkpoint.pt").exists()
    pv.train(pv.VAE(20, 4, (64,)), x, config=cfg, out_dir=sys.argv[1], resume=resume)
    """
)


def _kill_when(proc, killed, moment: str, deadline: float = 120.0) -> str:
    """SIGKILL ``proc`` at ``moment``: "write" as soon as a checkpoint's temporary file appears
    (mid-write), "epoch N" once N checkpoints were written (mid-training)."""
    start = time.monotonic()
    while proc.poll() is None and time.monotonic() - start < deadline:
        if moment == "write" and any(killed.glob(".checkpoint.pt.*.tmp")):
            break
        if moment.startswith("epoch") and (killed / "metrics.jsonl").exists():
            done = len((killed / "metrics.jsonl").read_text().splitlines())
            if done >= int(moment.split()[1]):
                break
        time.sleep(0.002)
    if proc.poll() is not None:
        return "finished first"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return "killed"


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["write", "epoch 1", "epoch 3"])
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, moment):
    """SIGKILL during a checkpoint write or between epochs: the checkpoint left loads, resuming
    reaches the uninterrupted run's parameters bit for bit, and no temporary files remain."""
    run = [sys.executable, "-c", _CHILD]
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    proc = subprocess.Popen([*run, str(killed), "6"])
    assert _kill_when(proc, killed, moment) == "killed"
    if (killed / "checkpoint.pt").exists():
        pv.load_checkpoint(killed)
    subprocess.run([*run, str(killed), "6"], check=True, timeout=300)
    subprocess.run([*run, str(whole), "6"], check=True, timeout=300)
    a, b = pv.load_checkpoint(killed), pv.load_checkpoint(whole)
    assert a["epoch"] == b["epoch"] == 6
    for name, value in a["model"].items():
        assert torch.equal(value, b["model"][name]), name
    assert not list(killed.glob(".*.tmp"))
