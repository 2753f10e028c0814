"""Training: stochastic variational inference over minibatches, with safe checkpoints.

Each step is SVI's update, ``loss.backward(); optimizer.step()``, on the ELBO estimator's
surrogate loss, with a torch optimizer over the VAE's parameters (the form that DDP and CUDA
graphs can wrap). The data plate is scaled by N / B, so losses estimate the full-data bound.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from ._io import atomic_write_text
from .checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from .config import TrainConfig, lr_at_epoch
from .estimators import make_elbo
from .evaluate import evaluate
from .likelihoods import check_data

__all__ = ["TrainingDiverged", "TrainResult", "resolve_device", "train", "METRICS_NAME"]

METRICS_NAME = "metrics.jsonl"


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or infinite; the last good checkpoint is left as it was."""


@dataclass
class TrainResult:
    """``history``: one metrics dict per epoch; ``evaluation``: the full :func:`evaluate` dict of
    the last epoch's test evaluation (None if the run evaluated nothing)."""

    history: list[dict]
    checkpoint: Path | None
    seconds: float
    evaluation: dict | None = None


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"``; a clear error when CUDA is asked for and absent."""
    device = torch.device(device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = torch.version.cuda or "none (a CPU-only build)"
            raise RuntimeError(
                f"CUDA was requested (--cuda / device='cuda') but torch.cuda.is_available() is "
                f"False: this torch {torch.__version__} has CUDA {build} and sees no GPU. Drop "
                f"--cuda to train on the CPU, or install a CUDA build of torch on a GPU machine."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"{device} requested but only {torch.cuda.device_count()} GPU(s) are visible"
            )
    elif device.type != "cpu":
        raise ValueError(f"unsupported device {device}; use 'cpu' or 'cuda[:N]'")
    return device


def _prepare(vae, data, what: str, binarize: str | None, device: torch.device) -> torch.Tensor:
    from .data import as_tensor

    x = as_tensor(data)
    check_data(x, vae.config.x_dim, what)
    if binarize == "dynamic":
        if bool(((x < 0) | (x > 1)).any()):
            raise ValueError(
                f"binarize='dynamic' draws Bernoulli(x) pixels, so {what} must lie in [0, 1]; got "
                f"min {float(x.min()):.4g}, max {float(x.max()):.4g}"
            )
    else:
        vae.likelihood.check(x, what)
    # Resident on the device: no host-to-device copy per batch.
    return x.to(device)


def _write_metrics(out_dir: Path, history: list[dict]) -> None:
    # Rewritten whole and atomically from the checkpointed history, so a crash between the
    # checkpoint and the metrics never leaves duplicated or missing lines after a resume.
    atomic_write_text(out_dir / METRICS_NAME, "".join(json.dumps(r) + "\n" for r in history))


def _diverged(what: str, epoch: int, step: int, ckpt_path: Path | None) -> str:
    kept = (
        f"the last good checkpoint ({ckpt_path}) is intact"
        if ckpt_path is not None and ckpt_path.exists()
        else "no checkpoint was written"
    )
    return (
        f"training diverged: {what} at epoch {epoch}, step {step + 1}; this epoch's parameters "
        f"are discarded and {kept}. Try a lower --lr, another likelihood scale, or check the data."
    )


def _loss_fn(elbo) -> Callable:
    """``step(model, guide, x, num_data) -> loss tensor`` with gradients accumulated."""
    # differentiable_loss gives one backward and no per-site .item(); TraceGraph_ELBO lacks it.
    if hasattr(elbo, "differentiable_loss"):

        def step(model, guide, x, num_data):
            loss = elbo.differentiable_loss(model, guide, x, num_data=num_data)
            loss.backward()
            return loss.detach()

    else:

        def step(model, guide, x, num_data):
            return torch.tensor(elbo.loss_and_grads(model, guide, x, num_data=num_data))

    return step


def train(
    vae,
    train_data,
    test_data=None,
    config: TrainConfig = TrainConfig(),
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Iterable[Callable[[dict], None]] = (),
    elbo=None,
) -> TrainResult:
    """Train ``vae`` with SVI.

    Args:
        vae: a :class:`~pyro_vae.VAE` (moved to ``config.device``).
        train_data: ``[N, x_dim]`` tensor, numpy array or torch Dataset, values in the
            likelihood's support (or in [0, 1] with ``config.binarize="dynamic"``).
        test_data: optional ``[M, x_dim]``, used as given (binarize it once beforehand).
        config: a :class:`~pyro_vae.TrainConfig`.
        out_dir: where ``checkpoint.pt``, ``config.json`` and ``metrics.jsonl`` go; None = nowhere.
        resume: continue from ``out_dir``'s checkpoint up to ``config.epochs``.
        callbacks: called with each epoch's metrics dict (loggers).
        elbo: an ELBO object overriding ``config.elbo`` (e.g. a user-written estimator).
    Returns:
        a :class:`TrainResult`; ``history`` holds one dict per epoch with per-datapoint
        ``train_elbo``, ``test_elbo`` and (every ``eval_every`` epochs) ``test_log_likelihood``.
    Raises:
        TrainingDiverged: the loss became NaN/inf; the checkpoint of the last good epoch stays.
    """
    device = resolve_device(config.device)
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ValueError("resume=True needs out_dir (where the checkpoint is)")
    x_train = _prepare(vae, train_data, "training data", config.binarize, device)
    x_test = None if test_data is None else _prepare(vae, test_data, "test data", None, device)
    vae.to(device)
    if elbo is None:
        elbo = make_elbo(config.elbo, config.num_particles, jit=config.jit)
    optimizer = torch.optim.Adam(vae.parameters(), lr=config.lr)

    history: list[dict] = []
    start_epoch = 0
    ckpt_path = out / CHECKPOINT_NAME if out is not None else None
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path, map_location=device)
        if ckpt["model_config"] != vae.config.to_dict():
            raise CheckpointError(
                f"cannot resume: {ckpt_path} was written for model config "
                f"{ckpt['model_config']}, not {vae.config.to_dict()}"
            )
        vae.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        history = list(ckpt["history"])
        start_epoch = int(ckpt["epoch"])
        _write_metrics(out, history)
    else:
        pyro.set_rng_seed(config.seed)

    n, bs = len(x_train), min(config.batch_size, len(x_train))
    step = _loss_fn(elbo)
    show = config.progress and sys.stderr.isatty()
    t_start = time.perf_counter()
    stats = None
    for epoch in range(start_epoch + 1, config.epochs + 1):
        t0 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at_epoch(config, epoch)
        vae.train()
        # The shuffle depends only on (seed, epoch), so a resumed run sees the same order.
        order = torch.randperm(
            n, generator=torch.Generator().manual_seed(config.seed * 100003 + epoch)
        )
        order = order.to(device)
        total = torch.zeros((), device=device)
        batches = range(0, n, bs)
        bar = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", disable=not show, leave=False)
        for i, start in enumerate(bar):
            x = x_train[order[start : start + bs]]
            if config.binarize == "dynamic":
                x = torch.bernoulli(x)
            optimizer.zero_grad(set_to_none=True)
            try:
                loss = step(vae.model, vae.guide, x, n)
            except ValueError as e:
                # NaN parameters surface first as Pyro's distribution validation errors.
                if all(bool(torch.isfinite(p).all()) for p in vae.parameters()):
                    raise
                raise TrainingDiverged(
                    _diverged("non-finite parameters", epoch, i, ckpt_path)
                ) from e
            total = total + loss * (len(x) / n)
            if i % 50 == 0 or start + bs >= n:
                value = float(loss)
                if not math.isfinite(value):
                    raise TrainingDiverged(_diverged(f"a loss of {value}", epoch, i, ckpt_path))
                bar.set_postfix(elbo=f"{-value / n:.2f}")
            optimizer.step()
        # Each batch loss is -(N/B) sum_batch ELBO_n; weighted by B/N they sum to -sum_n ELBO_n.
        record = {
            "epoch": epoch,
            "train_elbo": -float(total) / n,
            "seconds": time.perf_counter() - t0,
        }
        if x_test is not None:
            vae.eval()
            last = epoch == config.epochs
            do_ll = config.eval_every > 0 and (epoch % config.eval_every == 0 or last)
            k = config.eval_samples if do_ll else 1
            stats = evaluate(vae, x_test, num_samples=k, seed=config.seed)
            record["test_elbo"] = stats["elbo"]
            if do_ll:
                record["test_log_likelihood"] = stats["log_likelihood"]
                record["test_log_likelihood_stderr"] = stats["log_likelihood_stderr"]
                record["eval_samples"] = k
                record["kl"] = stats["kl"]
                record["active_units"] = stats["active_units"]
        history.append(record)
        if out is not None:
            save_checkpoint(
                ckpt_path,
                vae,
                optimizer,
                epoch=epoch,
                history=history,
                train_config=config,
                rng_state=get_rng_state(),
            )
            _write_metrics(out, history)
        for cb in callbacks:
            cb(record)
    return TrainResult(history, ckpt_path, time.perf_counter() - t_start, stats)
