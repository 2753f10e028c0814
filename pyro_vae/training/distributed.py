"""Data-parallel training with ``torch.distributed``: one VAE trained by N processes.

Launch with torchrun, which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
``MASTER_PORT`` for every process::

    torchrun --standalone --nproc_per_node=2 examples/mnist_svi.py --distributed          # CPU
    torchrun --standalone --nproc_per_node=8 examples/mnist_svi.py --distributed --cuda   # GPUs

How the pieces fit (see :func:`pyro_vae.train` with ``distributed=True``):

* The loss is an ``nn.Module``, :class:`~pyro_vae.training.loss.TrainingLoss`, whose
  ``forward(x, num_data)`` is the estimator's surrogate loss; ``DistributedDataParallel`` wraps it
  and averages gradients (:class:`~pyro_vae.training.processes.DataParallel`).
* Sharding: every rank computes the same permutation from ``(seed, epoch)``; the global batch ``k``
  is ``order[k*W*B : (k+1)*W*B]`` (``W`` processes, ``B`` the per-process batch) and rank ``r``
  takes the ``r``-th contiguous slice of it. The global batches are exactly those of a single
  process with batch ``W*B``. A short last global batch of ``m`` points is split as evenly as
  possible (sizes differ by at most one) and each rank's loss is multiplied by ``W * B_r / m``;
  if ``m < W`` those ``m`` points are skipped for that epoch (a different few each epoch).
* Scaling: each rank's data plate is scaled by ``N / B_r`` (full data-set size over local batch),
  so every rank's loss estimates the full-data negative ELBO; DDP's average of the gradients is
  then ``(N / (W*B)) * sum over the global batch``, the gradient a single process with batch
  ``W*B`` computes.
  This is exact for estimators whose loss is a sum of per-datapoint terms (all of ours with
  their defaults); ``tail_adaptive`` with ``per_datapoint=False`` ranks weights within each
  process's batch, and ``score``'s decaying-average baseline is kept per process.
* Randomness: at the start of every epoch rank ``r`` reseeds torch with
  :func:`rank_seed` ``(seed, epoch, r)``, so the ranks draw different binarizations and different
  z, and a resumed run (with any number of processes) is reproducible.
* Every process holds the whole data set (on its device) and indexes its share each step, like
  ``DistributedSampler`` with ``set_epoch`` but without padding (a short batch is shared instead).
* Only rank 0 writes checkpoints, metrics, results and figures; the checkpoint holds no per-rank
  state, so a run can resume with any number of processes.
* Failures: the process group has a timeout (``timeout``), so a collective whose peer died raises
  instead of waiting forever; torchrun's agent also stops the other ranks when one fails. The NCCL
  watchdog tears the process down on errors and timeouts (``TORCH_NCCL_ASYNC_ERROR_HANDLING``,
  default 3 in recent torch). A non-finite loss on any rank is seen by all ranks at the same step
  (the loss is all-reduced at each check), so they all raise :class:`~pyro_vae.TrainingDiverged`.
* Exit: a script ends with :func:`exit_process` (or runs its ``main`` under
  :func:`pyro_vae.experiments.cli.run_script`). ``DistributedDataParallel`` keeps the gloo
  process group, and its worker threads, alive after ``destroy_process_group``; a worker that
  frees a tensor while the interpreter shuts down aborts the process (``terminate called without
  an active exception``, SIGABRT; about one run in twenty of ``tests/test_distributed.py`` on a
  2-core machine), so a process that joined a group leaves without the interpreter's shutdown.
"""

from __future__ import annotations

import atexit
import inspect
import os
import sys
import threading
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist

from .._device import fork_rng, resolve_device
from ..infer.evaluate import LogLikelihood, PerDatapoint, check_model_data, per_datapoint, summarize

__all__ = [
    "DEFAULT_TIMEOUT",
    "LAUNCH_HINT",
    "TORCHRUN_ENV",
    "DistributedContext",
    "DistributedError",
    "init_distributed",
    "get_context",
    "shutdown_distributed",
    "mark_group_threads",
    "group_threads_marked",
    "exit_process",
    "rank_seed",
    "shard",
    "evaluate_distributed",
]

#: seconds a collective may wait for the other processes before it raises
DEFAULT_TIMEOUT = 600.0

#: the environment variables torchrun sets for each process
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

LAUNCH_HINT = (
    "launch with `torchrun --standalone --nproc_per_node=N examples/mnist_svi.py --distributed`"
)


class DistributedError(RuntimeError):
    """Distributed training was misconfigured, or a collective failed (another process died or
    did not answer within the process group's timeout)."""


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node, the
    process group's ``backend`` and ``timeout`` (seconds; NaN when the group was not made by
    :func:`init_distributed`)."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    timeout: float

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0


def get_context() -> DistributedContext:
    """The context of an initialized default process group (see :func:`init_distributed`)."""
    if not (dist.is_available() and dist.is_initialized()):
        raise DistributedError(
            "distributed training needs an initialized torch.distributed process group: call "
            f"pyro_vae.training.distributed.init_distributed() in every process, and {LAUNCH_HINT}"
        )
    rank = dist.get_rank()
    return DistributedContext(
        rank=rank,
        world_size=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", rank)),
        backend=str(dist.get_backend()),
        timeout=_CURRENT_TIMEOUT.get("seconds", float("nan")),
    )


# The timeout given to init_distributed, for error messages (the process group hides it).
_CURRENT_TIMEOUT: dict[str, float] = {}
# [True] once this process created a process group or DDP (their threads may outlive the group).
_JOINED: list[bool] = []


def init_distributed(
    device: str | torch.device = "cpu",
    *,
    backend: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> DistributedContext:
    """Join the process group described by torchrun's environment variables.

    Args:
        device: ``"cpu"`` (backend gloo) or ``"cuda"`` (backend nccl; this process uses
            ``cuda:LOCAL_RANK``, made the current device).
        backend: override the backend (``"gloo"``, ``"nccl"``).
        timeout: seconds a collective may wait for the others before it raises; bounds how long a
            process can hang when another one died.
    Raises:
        DistributedError: torchrun's variables are missing, or CUDA is asked for but the node
            has fewer GPUs than processes.
    """
    missing = [k for k in TORCHRUN_ENV if k not in os.environ]
    if missing:
        raise DistributedError(
            f"--distributed needs the environment torchrun sets for each process (missing "
            f"{', '.join(missing)}); {LAUNCH_HINT} (add --cuda for GPUs; on several nodes use "
            f"torchrun's --nnodes/--node_rank/--rdzv_endpoint flags)"
        )
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    device = torch.device(device)
    kwargs = {}
    if device.type == "cuda":
        resolve_device("cuda")  # a clear error without CUDA
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(
                f"LOCAL_RANK {local_rank} has no GPU: this node sees {torch.cuda.device_count()} "
                f"GPU(s); start at most that many processes per node (--nproc_per_node)"
            )
        torch.cuda.set_device(local_rank)
        backend = backend or "nccl"
        if (
            backend == "nccl"
            and "device_id" in inspect.signature(dist.init_process_group).parameters
        ):
            kwargs["device_id"] = torch.device("cuda", local_rank)  # torch >= 2.3: eager init
    elif device.type == "cpu":
        backend = backend or "gloo"
    else:
        raise ValueError(f"unsupported device {device}; use 'cpu' or 'cuda'")
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            timeout=timedelta(seconds=timeout),
            rank=rank,
            world_size=world,
            **kwargs,
        )
        mark_group_threads()
    _CURRENT_TIMEOUT["seconds"] = float(timeout)
    return get_context()


def shutdown_distributed(barrier: bool = False) -> None:
    """Leave the process group (a no-op when none is initialized).

    With ``barrier=True`` (after a successful run) every process first waits for the others, so
    that none tears down its connections while rank 0 still writes results: gloo aborts a
    process whose peer disappears mid-teardown ("terminate called without an active exception").
    Leave it False after an error, when a peer may be gone for good.
    """
    if dist.is_available() and dist.is_initialized():
        if barrier:
            try:
                dist.barrier()
            except RuntimeError:
                pass  # a peer already failed; leave anyway
        dist.destroy_process_group()
    _CURRENT_TIMEOUT.clear()


def mark_group_threads() -> None:
    """Record that this process's gloo/NCCL threads may outlive its process group (called where
    the group is created and where DDP wraps a model): :func:`exit_process` then ends it."""
    _JOINED[:] = [True]


def group_threads_marked() -> bool:
    """Whether :func:`mark_group_threads` ran in this process."""
    return bool(_JOINED)


def exit_process(code: int = 0) -> None:
    """End a script: returns at once unless this process created a process group or built DDP
    (:func:`mark_group_threads`); then waits for its non-daemon threads, runs the ``atexit``
    handlers, flushes stdout and stderr and ends the process with ``os._exit(code)``, skipping
    the interpreter's shutdown. Files the script left open lose what they still buffer: close
    them first (the library's writers are atomic and closed when they return).

    Why: ``DistributedDataParallel``'s reducer keeps the gloo process group and its worker
    threads alive after ``destroy_process_group`` (torch 2.13). When a worker frees a tensor
    that Python once held (a finished collective's) while the interpreter shuts down, it needs
    the GIL, the shutting-down interpreter ends the thread instead, and the unwinding through a
    C++ destructor aborts the process: SIGABRT after a run that wrote all its results, which
    torchrun reports as a failure. Call it as the last statement of a script (or use
    :func:`pyro_vae.experiments.cli.run_script`), not from library code.
    """
    if not group_threads_marked():
        return
    # The interpreter's own order: non-daemon threads first (threading._shutdown also runs the
    # hooks concurrent.futures registers there), then atexit. Both are private CPython APIs.
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass  # closed or replaced: nothing left to lose
    os._exit(code)


def rank_seed(seed: int, *keys: int) -> int:
    """A well-mixed 63-bit seed from ``seed`` and ``keys`` (e.g. epoch and rank)."""
    entropy = [int(seed) % 2**64, *(int(k) % 2**64 for k in keys)]
    hi, lo = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return (int(hi) << 31) ^ int(lo)


def shard(size: int, world_size: int, rank: int) -> tuple[int, int]:
    """``(start, length)`` of rank's contiguous share of ``size`` items: shares differ by at most
    one and the first ``size % world_size`` ranks get the larger ones."""
    base, extra = divmod(size, world_size)
    return rank * base + min(rank, extra), base + (rank < extra)


@torch.no_grad()
def evaluate_distributed(
    vae,
    data: torch.Tensor,
    num_samples: int = 1000,
    *,
    batch_size: int | None = None,
    seed: int | None = 0,
) -> dict:
    """:func:`pyro_vae.evaluate` with the data sharded across the processes of the default group.

    Every process passes the whole ``data``, evaluates its contiguous share and the per-datapoint
    results are all-reduced, so every process returns the same global means (the same keys and
    formulas as :func:`~pyro_vae.evaluate`). Rank ``r > 0`` draws from seed
    ``rank_seed(seed, 0, r)``; rank 0 from ``seed``, so one process reproduces ``evaluate``.
    """
    ctx = get_context()
    check_model_data(vae, data, "evaluation data")
    n = len(data)
    start, length = shard(n, ctx.world_size, ctx.rank)
    # Every rank evaluates at least one datapoint (its own, or the first) to learn the shapes;
    # only its own share enters the all-reduced sums.
    x = data[start : start + length] if length > 0 else data[:1]
    with fork_rng(data.device, enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed if ctx.rank == 0 else rank_seed(seed, 0, ctx.rank))
        mine = per_datapoint(vae, x, num_samples, batch_size=batch_size)

    def gathered(t: torch.Tensor) -> torch.Tensor:
        full = t.new_zeros((n, *t.shape[1:]))
        if length > 0:
            full[start : start + length] = t
        dist.all_reduce(full)
        return full

    return summarize(
        PerDatapoint(
            LogLikelihood(*(gathered(t) for t in mine.stats)),
            gathered(mine.kl),
            {k: gathered(v) for k, v in mine.means.items()},
            {k: gathered(v) for k, v in mine.noise.items()},
            mine.kl_closed_form,
            mine.kl_monte_carlo,
        ),
        num_samples,
    )
