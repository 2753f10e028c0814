"""Training: stochastic variational inference over minibatches, with safe checkpoints.

Each step is SVI's update, ``loss.backward(); optimizer.step()``, on the estimator's surrogate
loss (:class:`~pyro_vae.training.loss.TrainingLoss`), with a torch optimizer over the model's
parameters (the form that DDP wraps). The data plate is scaled by N / B, so losses estimate the
full-data bound. One process or several is one object (:mod:`pyro_vae.training.processes`);
:mod:`pyro_vae.training.distributed` explains the sharding, scaling, seeding and failures.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pyro
import torch
from tqdm.auto import tqdm

from .._io import atomic_write_text
from .._malloc import retain_freed_memory
from ..data import as_tensor, check_data
from ..data.binarization import draw_bernoulli
from ..data.checks import value_range
from ..infer.estimators import make_elbo
from ..infer.evaluate import check_model_data
from ..model.config import ModelConfig
from .callbacks import Callback, CallbackList
from .checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    PREVIOUS_NAME,
    CheckpointError,
    get_rng_state,
    model_config,
    remove_stale_temporaries,
    save_checkpoint,
)
from .config import TrainConfig, lr_at_epoch
from .errors import TrainingDiverged
from .kl_weight import KLWeight
from .loss import TrainingLoss
from .optimizer import load_optimizer_state, make_optimizer
from .processes import DataParallel, SingleProcess

__all__ = ["TrainingDiverged", "TrainResult", "train", "minibatch", "METRICS_NAME"]

METRICS_NAME = "metrics.jsonl"
#: the files train writes atomically into out_dir (their interrupted writes' temporaries are
#: removed at start and after each checkpoint)
_RUN_FILES = (CHECKPOINT_NAME, PREVIOUS_NAME, CONFIG_NAME, METRICS_NAME)


@dataclass
class TrainResult:
    """``history``: one metrics dict per epoch; ``evaluation``: the full :func:`evaluate` dict of
    the last epoch's test evaluation (None if the run evaluated nothing)."""

    history: list[dict]
    checkpoint: Path | None
    seconds: float
    evaluation: dict | None = None
    #: of ``seconds``, those this call spent evaluating the test data after its epochs
    eval_seconds: float = 0.0


def train(
    vae,
    train_data,
    test_data=None,
    config: TrainConfig = TrainConfig(),
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    callbacks: Iterable[Callback | Callable[[dict], None]] = (),
    elbo=None,
    distributed: bool = False,
    override: Iterable[str] = (),
) -> TrainResult:
    """Train ``vae`` with SVI.

    Args:
        vae: a :class:`~pyro_vae.VAE` (moved to ``config.device``).
        train_data: ``[N, x_dim]`` tensor, numpy array or torch Dataset, values in the
            likelihood's support (or in [0, 1] with ``config.binarize="dynamic"``).
        test_data: optional ``[M, x_dim]``, used as given (binarize it once beforehand).
        config: a :class:`~pyro_vae.TrainConfig`.
        out_dir: where ``checkpoint.pt``, ``config.json`` and ``metrics.jsonl`` go; None = nowhere.
        resume: continue from ``out_dir``'s checkpoint up to ``config.epochs`` (a
            :class:`CheckpointError` if there is none).
        callbacks: :class:`~pyro_vae.training.callbacks.Callback` objects (loggers) or plain
            functions of each epoch's metrics dict (their ``on_epoch_end``); called on rank 0
            only: run start, each epoch (its record with the ``lr``), each evaluation with
            ``eval_samples``, run end (see :mod:`pyro_vae.training.callbacks`).
        elbo: an ELBO object overriding ``config.elbo`` (e.g. a user-written estimator).
        distributed: data-parallel training over the processes of the initialized default
            ``torch.distributed`` group (see :mod:`pyro_vae.training.distributed`): every
            process passes the same data and config; ``config.batch_size`` is the per-process
            batch; with ``device="cuda"`` each process uses its current device. Only rank 0
            writes files; every rank returns the same history.
        override: on resume, the :class:`TrainConfig` fields that may differ from the
            checkpoint's beyond ``RESUMABLE_CHANGES`` (epochs, progress, device, evaluation,
            adam_impl); every change is recorded in the checkpoint's ``config_changes``, with
            its epoch.

    On a CPU with glibc, ``train`` tells the process's allocator to keep freed memory (at most
    about 64 MB) instead of handing it back to the kernel each step: a process-wide setting, made
    once (:mod:`pyro_vae._malloc`; ``PYRO_VAE_MALLOPT=0`` turns it off).

    Returns:
        a :class:`TrainResult`; ``history`` holds one dict per epoch with per-datapoint
        ``train_elbo``, ``test_elbo`` and (every ``eval_every`` epochs) ``test_log_likelihood``.
    Raises:
        TrainingDiverged: the loss became NaN/inf; the checkpoint of the last good epoch stays.
        CheckpointError: resuming from a corrupt or foreign checkpoint, or with another model or
            other training settings (see ``override``).
        DistributedError: under ``distributed``, a collective failed (another process died or
            timed out).
    """
    callbacks = CallbackList(callbacks)  # a wrong one fails before any work
    s = _session(vae, train_data, test_data, config, out_dir, resume, elbo, distributed, override)
    if s.procs.is_main:
        callbacks.on_run_start(_run_start(vae, config, out_dir, resume, s.history, s.procs))
    with _reporting_errors(callbacks if s.procs.is_main else CallbackList()):
        return _epochs(s, callbacks)


@dataclass
class _Session:
    """What one call of :func:`train` works with, once set up."""

    procs: SingleProcess | DataParallel
    vae: torch.nn.Module
    config: TrainConfig
    x_train: torch.Tensor
    x_test: torch.Tensor | None
    optimizer: torch.optim.Optimizer
    loss: TrainingLoss
    step: Callable
    plan: _BatchPlan
    ckpt_path: Path | None
    run: dict  # history, config_changes (and the global step) so far

    @property
    def history(self) -> list[dict]:
        return self.run["history"]


def _session(vae, train_data, test_data, config, out_dir, resume, elbo, distributed, override):
    """Processes, checked data on the device, optimizer, the restored run and the step."""
    procs = DataParallel() if distributed else SingleProcess()
    device = procs.device(config.device)
    if resume and out_dir is None:
        raise ValueError("resume=True needs out_dir (where the checkpoint is)")
    if device.type == "cpu":
        retain_freed_memory()
    ckpt_path = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    if ckpt_path is not None and procs.is_main and ckpt_path.parent.is_dir():
        remove_stale_temporaries(ckpt_path.parent, _RUN_FILES)
    x_train = _prepare(vae, train_data, "training data", config.binarize, device)
    x_test = None if test_data is None else _prepare(vae, test_data, "test data", None, device)
    if len(x_train) < procs.world_size:
        raise ValueError(f"{len(x_train)} training points cannot be shared by {procs.world_size}")
    vae.to(device)
    elbo = make_elbo(config.elbo, config.num_particles, jit=config.jit) if elbo is None else elbo
    optimizer = make_optimizer(vae.parameters(), config.lr, config.adam_impl)
    run = _restore(procs, vae, optimizer, elbo, ckpt_path, device, config, resume, set(override))
    plan = _BatchPlan(len(x_train), config.batch_size, procs)
    first_step = run.get("step", len(run["history"]) * plan.num_steps)
    loss = _training_loss(vae, elbo, config, plan, first_step)
    step = procs.make_step(loss, x_train[:2], config.binarize)
    return _Session(
        procs, vae, config, x_train, x_test, optimizer, loss, step, plan, ckpt_path, run
    )


def _epochs(s: _Session, callbacks: CallbackList) -> TrainResult:
    """The epochs of :func:`train` from where the run stands: train, evaluate, checkpoint."""
    procs, vae, config, history, ckpt_path = s.procs, s.vae, s.config, s.history, s.ckpt_path
    t_start, evaluation, eval_seconds = time.perf_counter(), None, 0.0
    for epoch in range(len(history) + 1, config.epochs + 1):
        with procs.errors(epoch), _keeping(ckpt_path):
            record = _train_epoch(procs, vae, s.step, s.optimizer, s.x_train, s.plan, config, epoch)
            if s.x_test is not None:
                t_eval = time.perf_counter()
                evaluation = _evaluate_epoch(procs, vae, s.x_test, config, epoch, record)
                eval_seconds += time.perf_counter() - t_eval
        history.append(procs.describe(record))
        _warn_if_diverging(history, s.x_train[0].numel())
        if ckpt_path is not None and procs.is_main:
            _save(ckpt_path, vae, s.optimizer, s.loss, history, config, s.run["config_changes"])
        if procs.is_main:
            lr = s.optimizer.param_groups[0]["lr"]
            callbacks.on_epoch_end({**history[-1], "lr": history[-1].get("lr", lr)})
            if s.x_test is not None and "test_log_likelihood" in history[-1]:
                callbacks.on_evaluation({**evaluation, "epoch": epoch})
    seconds = time.perf_counter() - t_start
    if procs.is_main:
        callbacks.on_run_end(
            {
                "epochs": len(history),
                "seconds": seconds,
                "history": history,
                "evaluation": evaluation,
                "checkpoint": None if ckpt_path is None else str(ckpt_path),
            }
        )
    return TrainResult(history, ckpt_path, seconds, evaluation, eval_seconds)


def _run_start(vae, config: TrainConfig, out_dir, resume: bool, history, procs) -> dict:
    """The ``on_run_start`` config of a :class:`~pyro_vae.training.callbacks.Callback`."""
    mc = model_config(vae)
    return {
        "model": None if mc is None else mc.to_dict(),
        "model_class": type(vae).__name__,
        "train": config.to_dict(),
        "out_dir": None if out_dir is None else str(out_dir),
        "resume": resume,
        "start_epoch": len(history) + 1,
        "world_size": procs.world_size,
    }


def _training_loss(vae, elbo, config: TrainConfig, plan, first_step: int) -> TrainingLoss:
    """The loss of every step, from global step ``first_step`` (where a resumed run stands)."""
    warmup_steps = config.kl_warmup * plan.num_steps
    return TrainingLoss(
        vae,
        elbo,
        fast_path=config.fast_path,
        first_step=first_step,
        kl_weight=KLWeight(config.beta, warmup_steps, config.free_bits),
    )


class _BatchPlan:
    """Global batches of ``world * bs`` points; each process takes its contiguous share."""

    def __init__(self, n: int, batch_size: int, procs) -> None:
        world = procs.world_size
        self.n, self.procs = n, procs
        self.bs = min(batch_size, math.ceil(n / world))
        self.starts = list(range(0, n, world * self.bs))
        # A short last global batch of fewer points than processes is skipped (distributed.py).
        if n - self.starts[-1] < world:
            self.starts.pop()
        self.num_steps = len(self.starts)
        self.used = min(n, self.num_steps * world * self.bs)

    def batch(self, order: torch.Tensor, i: int) -> tuple[torch.Tensor, int, int]:
        """``(indices, local size, global size)`` of step ``i`` for this process."""
        start = self.starts[i]
        m = min(self.procs.world_size * self.bs, self.n - start)
        lo, size = self.procs.share(m)
        return order[start + lo : start + lo + size], size, m


def _train_epoch(procs, vae, step, optimizer, x_train, plan, config, epoch) -> dict:
    """One pass over the data; returns ``{"epoch", "train_elbo", "seconds"}``."""
    t0 = time.perf_counter()
    for group in optimizer.param_groups:
        group["lr"] = lr_at_epoch(config, epoch)
    vae.train()
    procs.seed_epoch(config.seed, epoch)
    # The shuffle depends only on (seed, epoch), so a resumed run sees the same order.
    shuffle = torch.Generator().manual_seed(config.seed * 100003 + epoch)
    order = torch.randperm(plan.n, generator=shuffle).to(x_train.device)
    total = torch.zeros((), device=x_train.device)
    show = config.progress and sys.stderr.isatty() and procs.is_main
    bar = tqdm(
        range(plan.num_steps), desc=f"epoch {epoch}/{config.epochs}", disable=not show, leave=False
    )
    for i in bar:
        index, size, m = plan.batch(order, i)
        x = minibatch(x_train, index, config.binarize)
        optimizer.zero_grad(set_to_none=True)
        # The weight makes DDP's average exact for unequal shares of a short batch.
        loss = _checked(step, vae, x, plan.n, procs.world_size * size / m, epoch, i)
        total = total + loss * (size / plan.n)
        if i % 50 == 0 or i == plan.num_steps - 1:
            value = procs.mean_value(loss)
            if not math.isfinite(value):
                raise TrainingDiverged(_diverged(f"a loss of {value}", epoch, i))
            bar.set_postfix(elbo=f"{-value / plan.n:.2f}")
        optimizer.step()
    bar.close()
    # Each batch loss is -(N/B) sum_batch ELBO_n; weighted by B/N they sum to -sum_n ELBO_n
    # over the points this epoch used (all of them on one process).
    train_elbo = -float(procs.sum(total)) / plan.used
    return {"epoch": epoch, "train_elbo": train_elbo, "seconds": time.perf_counter() - t0}


def minibatch(x_train: torch.Tensor, index: torch.Tensor, binarize: str | None) -> torch.Tensor:
    """The training batch ``[b, ...]``: the rows ``index [b]`` (int64) of ``x_train [N, ...]``,
    drawn as Bernoulli(pixel) where ``binarize == "dynamic"``.

    ``index_select`` gives the very rows ``x_train[index]`` gives, in a fraction of its time on
    a CPU (one copy a row, not a gather an element: 14-57 us against 72-131 us for 128 x 784
    rows of MNIST, hot or cold in cache; benchmarks/RESULTS.md, tenth session)."""
    x = x_train.index_select(0, index)
    return draw_bernoulli(x) if binarize == "dynamic" else x


def _warn_if_diverging(history: list[dict], dims: int) -> None:
    """A warning with advice when the train ELBO (per datapoint, nats) is finite but has fallen
    far below the first epoch's, or below -1000 nats per data dimension, which no sensible
    likelihood on normalized data gives: a learning rate too high usually does this."""
    first, now = history[0]["train_elbo"], history[-1]["train_elbo"]
    fell = len(history) > 1 and now < 10 * min(first, 0.0) - 1000.0
    absurd = now < -1000.0 * dims
    if fell or absurd:
        warnings.warn(
            f"training looks diverged at epoch {history[-1]['epoch']}: the train ELBO is "
            f"{now:.4g} nats per datapoint (epoch 1: {first:.4g}). Try a lower --lr (e.g. a tenth) "
            f"or check the data's scale against the likelihood.",
            RuntimeWarning,
            stacklevel=3,
        )


def _checked(step, vae, x, num_data, weight, epoch, i) -> torch.Tensor:
    try:
        return step(x, num_data, weight)
    except ValueError as e:
        # NaN parameters surface first as Pyro's distribution validation errors.
        if all(bool(torch.isfinite(p).all()) for p in vae.parameters()):
            raise
        raise TrainingDiverged(_diverged("non-finite parameters", epoch, i)) from e


def _evaluate_epoch(procs, vae, x_test, config, epoch, record) -> dict:
    """Adds the test metrics to ``record``; the log-likelihood every ``eval_every`` epochs."""
    vae.eval()
    do_ll = config.eval_every > 0 and (epoch % config.eval_every == 0 or epoch == config.epochs)
    k = config.eval_samples if do_ll else 1
    stats = procs.evaluate(vae, x_test, k, config.seed)
    record["test_elbo"] = stats["elbo"]
    if do_ll:
        record["test_log_likelihood"] = stats["log_likelihood"]
        record["test_log_likelihood_stderr"] = stats["log_likelihood_stderr"]
        record["eval_samples"] = k
        record["kl"] = stats["kl"]
        record["active_units"] = stats["active_units"]
    return stats


#: TrainConfig fields a resumed run may change freely: they do not change what was trained
#: (how long, where, how often and how finely to evaluate, and which kernel rounds Adam's update)
RESUMABLE_CHANGES = ("epochs", "progress", "device", "eval_every", "eval_samples", "adam_impl")


def _restore(procs, vae, optimizer, elbo, ckpt_path, device, config, resume, override) -> dict:
    """The run so far: ``{"history", "config_changes"}`` from the checkpoint on resume (model,
    optimizer, RNG and estimator state restored), else empty with the seed set."""
    if not resume:
        pyro.set_rng_seed(config.seed)
        return {"history": [], "config_changes": []}
    ckpt = procs.load(ckpt_path, device)
    if ckpt is None:
        raise CheckpointError(
            f"nothing to resume: there is no checkpoint at {ckpt_path}; start the run without "
            f"resume (--resume), or point out_dir (--out) at the run to continue"
        )
    _check_model(ckpt_path, ckpt, vae)
    changes = list(ckpt.get("config_changes") or [])
    changed = _check_train_config(ckpt_path, ckpt.get("train_config"), config, override)
    if changed:
        changes.append({"epoch": int(ckpt["epoch"]), "changed": changed})
    try:
        vae.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(
            f"cannot resume from {ckpt_path}: its weights do not fit {type(vae).__name__} ({e}); "
            f"build the model the checkpoint was written for"
        ) from e
    load_optimizer_state(optimizer, ckpt["optimizer"])
    procs.restore_rng(ckpt["rng"])
    if ckpt.get("estimator") is not None and hasattr(elbo, "load_state_dict"):
        elbo.load_state_dict(ckpt["estimator"])
    history = list(ckpt["history"])
    if int(ckpt["epoch"]) != len(history):
        raise CheckpointError(f"{ckpt_path}: epoch {ckpt['epoch']} but {len(history)} records")
    if procs.is_main:
        _write_metrics(ckpt_path.parent, history)
    run = {"history": history, "config_changes": changes}
    if ckpt.get("training_step") is not None:  # the validation cadence's and KL warm-up's
        run["step"] = int(ckpt["training_step"])
    return run


def _differences(old: dict, new: dict) -> dict:
    return {
        k: [old.get(k), new.get(k)] for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
    }


def _check_model(ckpt_path, ckpt: dict, module) -> None:
    """Refuse to resume with another model: another class, or another :class:`ModelConfig`
    (an older checkpoint's config read with today's defaults for fields it predates)."""
    saved, current = ckpt.get("model_config"), model_config(module)
    saved_class = ckpt.get("model_class", type(module).__name__)  # older ones lack it
    if saved_class != type(module).__name__ or (saved is None) != (current is None):
        diff = {"model class": [saved_class, type(module).__name__]}
    elif saved is None:
        diff = {}
    else:
        diff = _differences(ModelConfig.from_dict(saved).to_dict(), current.to_dict())
    if diff:
        listed = ", ".join(f"{k}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in diff.items())
        raise CheckpointError(
            f"cannot resume from {ckpt_path}: the model differs ({listed}); build the model "
            f"the checkpoint was written for, or start a new run in another directory"
        )


def _check_train_config(ckpt_path, saved: dict | None, config, override) -> dict:
    """The training settings that change on this resume; refuses changes not allowed."""
    if saved is None:
        return {}
    # An older checkpoint's settings read with today's defaults for the fields it predates.
    diff = _differences(TrainConfig.from_dict(saved).to_dict(), config.to_dict())
    refused = {k: v for k, v in diff.items() if k not in RESUMABLE_CHANGES and k not in override}
    if refused:
        listed = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in refused.items())
        raise CheckpointError(
            f"cannot resume from {ckpt_path} with other training settings ({listed}): the "
            f"epochs already trained used the checkpoint's. Resume with the same settings, or "
            f"allow these changes explicitly (train(..., override={sorted(refused)}), "
            f"--override {','.join(sorted(refused))}); they are then recorded in the checkpoint"
        )
    return {k: v for k, v in diff.items() if k != "progress"}


def _save(ckpt_path: Path, vae, optimizer, loss, history: list[dict], config, changes) -> None:
    elbo = loss.elbo
    save_checkpoint(
        ckpt_path,
        vae,
        optimizer,
        epoch=len(history),
        history=history,
        train_config=config,
        rng_state=get_rng_state(),
        estimator_state=elbo.state_dict() if hasattr(elbo, "state_dict") else None,
        config_changes=changes,
        training_step=loss.step,
    )
    _write_metrics(ckpt_path.parent, history)
    remove_stale_temporaries(ckpt_path.parent, _RUN_FILES)


def _prepare(vae, data, what: str, binarize: str | None, device: torch.device) -> torch.Tensor:
    """The data as a tensor on ``device``, checked: by the model's own ``check_data`` where it
    has one (shape and the likelihood's support), else for shape ``[N, D]`` and finiteness."""
    x = as_tensor(data)
    if binarize == "dynamic":
        config = model_config(vae)
        check_data(x, config.x_dim if config is not None else None, what)
        lo, hi = value_range(x)
        if not (lo >= 0 and hi <= 1):
            raise ValueError(
                f"binarize='dynamic' draws Bernoulli(x) pixels, so {what} must lie in [0, 1]; got "
                f"min {lo:.4g}, max {hi:.4g}"
            )
    else:
        check_model_data(vae, x, what)
    # Resident on the device, in the model's floating dtype (a float64 model trains on float64
    # data): no host-to-device copy or cast per batch.
    dtype = next((p.dtype for p in vae.parameters() if p.is_floating_point()), x.dtype)
    return x.to(device=device, dtype=dtype)


def _write_metrics(out_dir: Path, history: list[dict]) -> None:
    # Rewritten whole and atomically from the checkpointed history, so a crash between the
    # checkpoint and the metrics never leaves duplicated or missing lines after a resume.
    atomic_write_text(out_dir / METRICS_NAME, "".join(json.dumps(r) + "\n" for r in history))


def _diverged(what: str, epoch: int, step: int) -> str:
    return f"training diverged: {what} at epoch {epoch}, step {step + 1}"


@contextlib.contextmanager
def _reporting_errors(callbacks: CallbackList):
    """``on_run_error`` for an exception (Ctrl-C included) that ends the run, then re-raised."""
    try:
        yield
    except BaseException as e:
        callbacks.on_run_error(e)
        raise


@contextlib.contextmanager
def _keeping(ckpt_path: Path | None):
    """Completes a :class:`TrainingDiverged` message with what was kept and what to try."""
    try:
        yield
    except TrainingDiverged as e:
        kept = (
            f"the last good checkpoint ({ckpt_path}) is intact"
            if ckpt_path is not None and ckpt_path.exists()
            else "no checkpoint was written"
        )
        raise TrainingDiverged(
            f"{e}; this epoch's parameters are discarded and {kept}. Try a lower --lr, another "
            f"likelihood scale, or check the data."
        ) from e.__cause__
