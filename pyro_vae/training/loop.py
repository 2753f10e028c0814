"""Training: stochastic variational inference over minibatches, with safe checkpoints.

Each step is SVI's update, ``loss.backward(); optimizer.step()``, on the ELBO estimator's
surrogate loss, with a torch optimizer over the VAE's parameters (the form that DDP and CUDA
graphs can wrap). The data plate is scaled by N / B, so losses estimate the full-data bound.

``train(..., distributed=True)`` is the same loop on every process of a ``torch.distributed``
group, with the loss wrapped in ``DistributedDataParallel``; :mod:`pyro_vae.distributed` explains
the sharding, scaling, seeding and failure handling.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from .._device import fork_rng, resolve_device
from .._io import atomic_write_text
from ..data.checks import check_data
from ..infer.estimators import make_elbo
from ..infer.evaluate import evaluate
from .checkpoint import (
    CHECKPOINT_NAME,
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    set_rng_state,
)
from .config import TrainConfig, lr_at_epoch
from .distributed import (
    DistributedError,
    ELBOLoss,
    evaluate_distributed,
    get_context,
    rank_seed,
    shard,
)
from .fast_path import VALIDATE_EVERY, training_loss

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


def _prepare(vae, data, what: str, binarize: str | None, device: torch.device) -> torch.Tensor:
    from ..data.sources import as_tensor

    x = as_tensor(data)
    if binarize == "dynamic":
        check_data(x, vae.config.x_dim, what)
        if bool(((x < 0) | (x > 1)).any()):
            raise ValueError(
                f"binarize='dynamic' draws Bernoulli(x) pixels, so {what} must lie in [0, 1]; got "
                f"min {float(x.min()):.4g}, max {float(x.max()):.4g}"
            )
    else:
        vae.check_data(x, what)
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


def _loss_fn(elbo, vae=None, fast_path: bool = True, first_step: int = 0) -> Callable:
    """``step(model, guide, x, num_data) -> loss value`` with gradients accumulated: the loss of
    :func:`~pyro_vae.direct.training_loss` and its backward; ``loss_and_grads`` for estimators
    without ``differentiable_loss`` (TraceGraph_ELBO), validated every ``VALIDATE_EVERY``-th
    step (every step without the fast path)."""
    # differentiable_loss gives one backward and no per-site .item(); TraceGraph_ELBO lacks it.
    if hasattr(elbo, "differentiable_loss"):
        loss_fn = training_loss(elbo, vae, fast_path, first_step)

        def step(model, guide, x, num_data):
            loss = loss_fn(model, guide, x, num_data)
            loss.backward()
            return loss.detach()

        step.uses_direct = loss_fn.uses_direct
        return step

    counter = itertools.count(first_step)

    def graph_step(model, guide, x, num_data):
        validated = not fast_path or next(counter) % VALIDATE_EVERY == 0
        with contextlib.nullcontext() if validated else pyro.validation_enabled(False):
            return torch.tensor(elbo.loss_and_grads(model, guide, x, num_data=num_data))

    graph_step.uses_direct = lambda: False
    return graph_step


def _find_unused_parameters(vae, elbo, x: torch.Tensor, binarize: str | None, num_data: int):
    """Names of parameters that get no gradient from one loss evaluation on ``x`` (a probe run
    before DDP is built: DDP must be told when some parameters are unused, e.g. the IAF's flows
    under the score-function estimator). Leaves the RNG and the gradients as they were."""
    try:
        with fork_rng(x.device):
            if binarize == "dynamic":
                x = torch.bernoulli(x)
            elbo.differentiable_loss(vae.model, vae.guide, x, num_data=num_data).backward()
        unused = [name for name, p in vae.named_parameters() if p.requires_grad and p.grad is None]
    except (ValueError, RuntimeError):
        unused = []  # the first real step reports whatever went wrong
    vae.zero_grad(set_to_none=True)
    return unused


def _distributed_step(vae, elbo, ctx, device, x_probe, config, num_data, first_step) -> Callable:
    """``step(x, num_data, weight) -> loss``: gradients of ``weight * loss`` averaged over ranks."""
    from torch.nn.parallel import DistributedDataParallel

    if not hasattr(elbo, "differentiable_loss"):
        # e.g. TraceGraph_ELBO, which only has loss_and_grads: average the gradients by hand.
        for t in list(vae.parameters()) + list(vae.buffers()):
            dist.broadcast(t.data, src=0)

        def manual_step(x, num_data, weight):
            loss = elbo.loss_and_grads(vae.model, vae.guide, x, num_data=num_data)
            params = [p for p in vae.parameters() if p.requires_grad]
            flat = torch.cat(
                [
                    (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
                    for p in params
                ]
            )
            flat.mul_(weight / ctx.world_size)
            dist.all_reduce(flat)
            for p, g in zip(params, flat.split([p.numel() for p in params])):
                p.grad = g.view_as(p)
            return torch.tensor(float(loss), device=device)

        return manual_step

    unused = _find_unused_parameters(vae, elbo, x_probe, config.binarize, num_data)
    # Every rank must build DDP with the same flag, whatever its probe saw.
    flag = torch.tensor([float(bool(unused))], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    module = DistributedDataParallel(
        ELBOLoss(vae, elbo, fast_path=config.fast_path, first_step=first_step),
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=bool(flag.item()),
    )

    def ddp_step(x, num_data, weight):
        loss = module(x, num_data)
        (loss if weight == 1.0 else loss * weight).backward()
        return loss.detach()

    return ddp_step


def _load_for_resume(ckpt_path: Path, device: torch.device, ctx) -> dict | None:
    """The checkpoint to resume from (None if there is none yet). Under ``torch.distributed``
    rank 0 reads it and sends it to the others, so it need only exist where rank 0 runs; an error
    reading it is raised on every rank."""
    if ctx is None:
        return load_checkpoint(ckpt_path, map_location=device) if ckpt_path.exists() else None
    box: list = [None]
    if ctx.is_main:
        try:
            box[0] = ("ok", load_checkpoint(ckpt_path) if ckpt_path.exists() else None)
        except CheckpointError as e:
            box[0] = ("error", str(e))
    dist.broadcast_object_list(box, src=0)
    status, value = box[0]
    if status == "error":
        raise CheckpointError(value)
    return value


def _is_collective_failure(e: BaseException) -> bool:
    if isinstance(e, DistributedError | TrainingDiverged | CheckpointError):
        return False
    if isinstance(e, dist.DistError):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(
        w in text for w in ("gloo", "nccl", "connection", "timed out", "timeout", "socket")
    )


def _collective_failed(ctx, epoch: int, error: BaseException) -> Exception:
    limit = f" ({ctx.timeout:g} s)" if math.isfinite(ctx.timeout) else ""
    return DistributedError(
        f"rank {ctx.rank} of {ctx.world_size}: a collective operation failed during epoch "
        f"{epoch}; another process probably died (its own log says why) or did not answer within "
        f"the process group's timeout{limit}. Resume from the last checkpoint with --resume. "
        f"Cause: {error}"
    )


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
    distributed: bool = False,
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
        callbacks: called with each epoch's metrics dict (loggers); on rank 0 only.
        elbo: an ELBO object overriding ``config.elbo`` (e.g. a user-written estimator).
        distributed: data-parallel training over the processes of the initialized default
            ``torch.distributed`` group (see :mod:`pyro_vae.distributed`): every process passes
            the same data and config; ``config.batch_size`` is the per-process batch, so a step
            sees ``world_size * batch_size`` points; with ``device="cuda"`` each process uses its
            current device (``cuda:LOCAL_RANK``). Only rank 0 writes files; every rank returns
            the same history.
    Returns:
        a :class:`TrainResult`; ``history`` holds one dict per epoch with per-datapoint
        ``train_elbo``, ``test_elbo`` and (every ``eval_every`` epochs) ``test_log_likelihood``.
    Raises:
        TrainingDiverged: the loss became NaN/inf; the checkpoint of the last good epoch stays.
        DistributedError: under ``distributed``, a collective failed (another process died or
            timed out).
    """
    ctx = None
    if distributed:
        ctx = get_context()
    main = ctx is None or ctx.is_main
    world = 1 if ctx is None else ctx.world_size
    rank = 0 if ctx is None else ctx.rank
    device = resolve_device(config.device)
    if ctx is not None and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ValueError("resume=True needs out_dir (where the checkpoint is)")
    x_train = _prepare(vae, train_data, "training data", config.binarize, device)
    x_test = None if test_data is None else _prepare(vae, test_data, "test data", None, device)
    n = len(x_train)
    if n < world:
        raise ValueError(f"{n} training points cannot be shared by {world} processes")
    vae.to(device)
    if elbo is None:
        elbo = make_elbo(config.elbo, config.num_particles, jit=config.jit)
    optimizer = torch.optim.Adam(vae.parameters(), lr=config.lr)

    history: list[dict] = []
    start_epoch = 0
    ckpt_path = out / CHECKPOINT_NAME if out is not None else None
    ckpt = _load_for_resume(ckpt_path, device, ctx) if resume else None
    if ckpt is not None:
        if ckpt["model_config"] != vae.config.to_dict():
            raise CheckpointError(
                f"cannot resume: {ckpt_path} was written for model config "
                f"{ckpt['model_config']}, not {vae.config.to_dict()}"
            )
        vae.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if ctx is None:  # distributed runs reseed every epoch from (seed, epoch, rank)
            set_rng_state(ckpt["rng"])
        history = list(ckpt["history"])
        start_epoch = int(ckpt["epoch"])
        if ckpt.get("estimator") is not None and hasattr(elbo, "load_state_dict"):
            elbo.load_state_dict(ckpt["estimator"])
        if main:
            _write_metrics(out, history)
    else:
        pyro.set_rng_seed(config.seed)

    # Per-process batch; one step uses a global batch of world * bs points.
    bs = min(config.batch_size, math.ceil(n / world))
    starts = list(range(0, n, world * bs))
    # A short last global batch of fewer points than processes is skipped (see distributed.py).
    if n - starts[-1] < world:
        starts.pop()
    first_step = start_epoch * len(starts)
    if ctx is None:
        local = _loss_fn(elbo, vae, config.fast_path, first_step)

        def step(x, num_data, weight):
            return local(vae.model, vae.guide, x, num_data)

    else:
        step = _distributed_step(vae, elbo, ctx, device, x_train[:2], config, n, first_step)
    used = min(n, len(starts) * world * bs)
    show = config.progress and sys.stderr.isatty() and main
    t_start = time.perf_counter()
    stats = None
    for epoch in range(start_epoch + 1, config.epochs + 1):
        t0 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at_epoch(config, epoch)
        vae.train()
        if ctx is not None:
            # Different binarizations and z draws on each rank, reproducible on resume.
            torch.manual_seed(rank_seed(config.seed, epoch, rank))
        # The shuffle depends only on (seed, epoch), so a resumed run sees the same order.
        order = torch.randperm(
            n, generator=torch.Generator().manual_seed(config.seed * 100003 + epoch)
        )
        order = order.to(device)
        total = torch.zeros((), device=device)
        bar = tqdm(starts, desc=f"epoch {epoch}/{config.epochs}", disable=not show, leave=False)
        try:
            for i, start in enumerate(bar):
                # This rank's contiguous share of the global batch order[start : start + m].
                m = min(world * bs, n - start)
                lo, size = (0, m) if ctx is None else shard(m, world, rank)
                x = x_train[order[start + lo : start + lo + size]]
                if config.binarize == "dynamic":
                    x = torch.bernoulli(x)
                optimizer.zero_grad(set_to_none=True)
                try:
                    # The weight makes DDP's average exact for unequal shares of a short batch.
                    loss = step(x, n, world * size / m)
                except ValueError as e:
                    # NaN parameters surface first as Pyro's distribution validation errors.
                    if all(bool(torch.isfinite(p).all()) for p in vae.parameters()):
                        raise
                    raise TrainingDiverged(
                        _diverged("non-finite parameters", epoch, i, ckpt_path)
                    ) from e
                total = total + loss * (size / n)
                if i % 50 == 0 or i == len(starts) - 1:
                    if ctx is None:
                        value = float(loss)
                    else:
                        # All ranks check the same all-reduced value, so they stop together.
                        check = loss.detach().clone()
                        dist.all_reduce(check)
                        value = float(check) / world
                    if not math.isfinite(value):
                        raise TrainingDiverged(_diverged(f"a loss of {value}", epoch, i, ckpt_path))
                    bar.set_postfix(elbo=f"{-value / n:.2f}")
                optimizer.step()
            seconds = time.perf_counter() - t0
            if ctx is not None:
                dist.all_reduce(total)
            # Each batch loss is -(N/B) sum_batch ELBO_n; weighted by B/N they sum to
            # -sum_n ELBO_n (over the points this epoch used: all of them on one process).
            record = {"epoch": epoch, "train_elbo": -float(total) / used, "seconds": seconds}
            if ctx is not None:
                record["world_size"] = world
            if x_test is not None:
                vae.eval()
                last = epoch == config.epochs
                do_ll = config.eval_every > 0 and (epoch % config.eval_every == 0 or last)
                k = config.eval_samples if do_ll else 1
                if ctx is None:
                    stats = evaluate(vae, x_test, num_samples=k, seed=config.seed)
                else:
                    stats = evaluate_distributed(vae, x_test, num_samples=k, seed=config.seed)
                record["test_elbo"] = stats["elbo"]
                if do_ll:
                    record["test_log_likelihood"] = stats["log_likelihood"]
                    record["test_log_likelihood_stderr"] = stats["log_likelihood_stderr"]
                    record["eval_samples"] = k
                    record["kl"] = stats["kl"]
                    record["active_units"] = stats["active_units"]
        except Exception as e:
            if ctx is not None and _is_collective_failure(e):
                raise _collective_failed(ctx, epoch, e) from e
            raise
        history.append(record)
        if out is not None and main:
            save_checkpoint(
                ckpt_path,
                vae,
                optimizer,
                epoch=epoch,
                history=history,
                train_config=config,
                rng_state=get_rng_state(),
                estimator_state=elbo.state_dict() if hasattr(elbo, "state_dict") else None,
            )
            _write_metrics(out, history)
        if main:
            for cb in callbacks:
                cb(record)
    return TrainResult(history, ckpt_path, time.perf_counter() - t_start, stats)
