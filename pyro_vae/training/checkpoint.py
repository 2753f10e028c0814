"""Checkpoints that load with ``torch.load(..., weights_only=True)`` and are written atomically.

A checkpoint is a plain dict of tensors and primitives (nanoGPT style)::

    {"format": "pyro_vae.checkpoint", "version": 1, "model_config": {...}, "train_config": {...},
     "model": state_dict, "optimizer": state_dict, "epoch": int, "history": [{...}, ...],
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor, ...]}}
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write
from ..model.config import ModelConfig
from ..model.vae import VAE
from .config import TrainConfig, save_config

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "get_rng_state",
    "set_rng_state",
]

FORMAT = "pyro_vae.checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, foreign or incompatible."""


def get_rng_state() -> dict[str, Any]:
    """Torch CPU and CUDA generator states (numpy's state is not tensor-only, and unused here)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_checkpoint(
    path: str | Path,
    vae,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    epoch: int = 0,
    history: list[dict] | None = None,
    train_config: TrainConfig | None = None,
    rng_state: dict[str, Any] | None = None,
    estimator_state: dict[str, Any] | None = None,
) -> Path:
    """Write a checkpoint atomically, and ``config.json`` beside it. ``estimator_state``: the
    ELBO's own state where it has one (``Score_ELBO``'s baseline), restored on resume."""
    path = Path(path)
    ckpt = {
        "format": FORMAT,
        "version": VERSION,
        "model_config": vae.config.to_dict(),
        "train_config": train_config.to_dict() if train_config is not None else None,
        "model": vae.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "epoch": int(epoch),
        "history": list(history or []),
        "rng": rng_state if rng_state is not None else get_rng_state(),
        "estimator": estimator_state,
    }
    atomic_write(path, lambda tmp: torch.save(ckpt, tmp))
    save_config(path.parent / CONFIG_NAME, vae.config, train_config)
    return path


def _resolve(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise CheckpointError(
            f"no checkpoint at {path}; pass a run directory or a checkpoint file written by "
            f"pyro_vae (train with out_dir=... / --out DIR first)"
        )
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint (a file, or a run directory holding ``checkpoint.pt``).

    Uses ``weights_only=True``: a file that would need arbitrary code to unpickle is refused.
    """
    path = _resolve(path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain containers, "
            f"so it is not a pyro_vae checkpoint (weights_only=True rejected it: "
            f"{str(e).splitlines()[0]})"
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is corrupt or truncated ({e}); restore it "
            f"or train again without --resume"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a pyro_vae checkpoint (no 'format': {FORMAT!r} key); it may be a "
            f"plain state_dict or another library's file"
        )
    if ckpt.get("version") != VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {ckpt.get('version')}, this pyro_vae reads {VERSION}"
        )
    return ckpt


def load_model(path: str | Path, map_location: str | torch.device = "cpu", **objects):
    """Rebuild a trained :class:`~pyro_vae.VAE` from a checkpoint or run directory in one call.

    Pass user-written ``prior=``, ``likelihood=`` or ``guide=`` objects if it was built with them.
    """
    ckpt = load_checkpoint(path, map_location)
    vae = VAE.from_config(ModelConfig.from_dict(ckpt["model_config"]), **objects)
    try:
        vae.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"the checkpoint's weights do not fit its model config: {e}") from e
    return vae.to(map_location)
