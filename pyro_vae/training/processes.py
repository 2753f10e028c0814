"""One process or several: the one object behind which training's loop does not care.

:class:`SingleProcess` and :class:`DataParallel` have the same methods; ``train`` asks its
``processes`` object for the device, its share of each batch, the step, the epoch's seeding,
sums over processes and the evaluation, and never tests which one it has. See
:mod:`pyro_vae.training.distributed` for how the data-parallel one shards, scales and seeds.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .._device import fork_rng, resolve_device
from ..data.binarization import draw_bernoulli
from ..infer.evaluate import evaluate
from .checkpoint import CheckpointError, load_checkpoint, set_rng_state
from .distributed import (
    DistributedError,
    evaluate_distributed,
    get_context,
    mark_group_threads,
    rank_seed,
    shard,
)
from .errors import TrainingDiverged

__all__ = ["SingleProcess", "DataParallel", "Step"]

#: ``step(x, num_data, weight) -> loss``: gradients of ``weight * loss`` accumulated (averaged
#: over processes under DDP), the detached loss returned
Step = Callable[[torch.Tensor, int, float], torch.Tensor]


class SingleProcess:
    """Training in this process alone."""

    world_size = 1
    rank = 0
    is_main = True

    def device(self, name: str) -> torch.device:
        return resolve_device(name)

    def share(self, size: int) -> tuple[int, int]:
        """``(start, length)`` of this process's share of a global batch of ``size``."""
        return 0, size

    def make_step(self, loss: nn.Module, x_probe: torch.Tensor, binarize: str | None) -> Step:
        def step(x, num_data, weight):
            value = loss(x, num_data)
            (value if weight == 1.0 else value * weight).backward()
            return value.detach()

        return step

    def seed_epoch(self, seed: int, epoch: int) -> None:
        """Nothing: one process continues its own random stream (restored on resume)."""

    def restore_rng(self, state: dict) -> None:
        set_rng_state(state)

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def mean_value(self, loss: torch.Tensor) -> float:
        return float(loss)

    def evaluate(self, vae, data: torch.Tensor, num_samples: int, seed: int) -> dict:
        return evaluate(vae, data, num_samples=num_samples, seed=seed)

    def load(self, path: Path, device: torch.device) -> dict | None:
        """The checkpoint to resume from, or None when there is none yet."""
        return load_checkpoint(path, map_location=device) if path.exists() else None

    def describe(self, record: dict) -> dict:
        return record

    def errors(self, epoch: int):
        return contextlib.nullcontext()


class DataParallel(SingleProcess):
    """Training on every process of the initialized default ``torch.distributed`` group."""

    def __init__(self) -> None:
        self.context = get_context()
        self.world_size = self.context.world_size
        self.rank = self.context.rank
        self.is_main = self.context.is_main

    def device(self, name: str) -> torch.device:
        device = resolve_device(name)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        return device

    def share(self, size: int) -> tuple[int, int]:
        return shard(size, self.world_size, self.rank)

    def make_step(self, loss: nn.Module, x_probe: torch.Tensor, binarize: str | None) -> Step:
        from torch.nn.parallel import DistributedDataParallel

        # Every rank must build DDP with the same flag, whatever its own probe saw.
        unused = _has_unused_parameters(loss, x_probe, binarize)
        flag = torch.tensor([float(unused)], device=x_probe.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        device = x_probe.device
        module = DistributedDataParallel(
            loss,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(flag.item()),
        )
        mark_group_threads()  # DDP keeps the group's threads alive past destroy_process_group
        return super().make_step(module, x_probe, binarize)

    def seed_epoch(self, seed: int, epoch: int) -> None:
        # Different binarizations and z draws on each rank, reproducible on resume.
        torch.manual_seed(rank_seed(seed, epoch, self.rank))

    def restore_rng(self, state: dict) -> None:
        """Nothing: every epoch reseeds from (seed, epoch, rank)."""

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        value = value.detach().clone()
        dist.all_reduce(value)
        return value

    def mean_value(self, loss: torch.Tensor) -> float:
        # All ranks check the same all-reduced value, so they stop together.
        return float(self.sum(loss)) / self.world_size

    def evaluate(self, vae, data: torch.Tensor, num_samples: int, seed: int) -> dict:
        return evaluate_distributed(vae, data, num_samples=num_samples, seed=seed)

    def load(self, path: Path, device: torch.device) -> dict | None:
        """Rank 0 reads the checkpoint and sends it to the others (it need only exist there); an
        error reading it is raised on every rank."""
        box: list = [None]
        if self.is_main:
            try:
                box[0] = ("ok", load_checkpoint(path) if path.exists() else None)
            except CheckpointError as e:
                box[0] = ("error", str(e))
        dist.broadcast_object_list(box, src=0)
        status, value = box[0]
        if status == "error":
            raise CheckpointError(value)
        return value

    def describe(self, record: dict) -> dict:
        return {**record, "world_size": self.world_size}

    @contextlib.contextmanager
    def errors(self, epoch: int):
        """Turn a failed collective into a :class:`DistributedError` that says what to do."""
        try:
            yield
        except Exception as e:
            if _is_collective_failure(e):
                raise self._failed(epoch, e) from e
            raise

    def _failed(self, epoch: int, error: BaseException) -> DistributedError:
        ctx = self.context
        limit = f" ({ctx.timeout:g} s)" if math.isfinite(ctx.timeout) else ""
        return DistributedError(
            f"rank {ctx.rank} of {ctx.world_size}: a collective operation failed during epoch "
            f"{epoch}; another process probably died (its own log says why) or did not answer "
            f"within the process group's timeout{limit}. Resume from the last checkpoint with "
            f"--resume. Cause: {error}"
        )


def _has_unused_parameters(loss: nn.Module, x: torch.Tensor, binarize: str | None) -> bool:
    """Whether one loss evaluation leaves some parameters without a gradient (DDP must be told,
    e.g. the IAF's flows under the score-function estimator). Leaves the RNG, the gradients and
    the loss's step count as they were."""
    step = getattr(loss, "step", None)
    try:
        with fork_rng(x.device):
            if binarize == "dynamic":
                x = draw_bernoulli(x)
            loss(x, len(x)).backward()
        unused = any(p.requires_grad and p.grad is None for p in loss.parameters())
    except (ValueError, RuntimeError):
        unused = False  # the first real step reports whatever went wrong
    finally:
        if step is not None:
            loss.step = step
    loss.zero_grad(set_to_none=True)
    return unused


def _is_collective_failure(e: BaseException) -> bool:
    if isinstance(e, DistributedError | TrainingDiverged | CheckpointError):
        return False
    if isinstance(e, dist.DistError):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(
        w in text for w in ("gloo", "nccl", "connection", "timed out", "timeout", "socket")
    )
