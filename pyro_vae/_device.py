"""Devices: a checked ``torch.device`` and a random-state fork that covers it."""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "fork_rng"]


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


def fork_rng(device: torch.device, enabled: bool = True):
    """``torch.random.fork_rng`` for the CPU and, on CUDA, ``device``'s generator: draws inside
    leave the global random state as it was."""
    devices = [device.index or 0] if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices, enabled=enabled)
