"""Checkpoints that load with ``torch.load(..., weights_only=True)`` and are written atomically.

A checkpoint is a plain dict of tensors and primitives (nanoGPT style)::

    {"format": "pyro_vae.checkpoint", "version": 2, "model_class": "VAE",
     "model_config": {...} | None, "train_config": {...},
     "model": state_dict, "optimizer": state_dict, "epoch": int, "history": [{...}, ...],
     "rng": {"torch": ByteTensor, "cuda": [ByteTensor, ...]}, "estimator": {...} | None,
     "sha256": hex digest of everything else}

Integrity: the digest covers every tensor's dtype, shape and bytes and every other value, and is
checked on every load, as is the finiteness of the weights and the optimizer state; any mismatch,
an unreadable archive or foreign content raises :class:`CheckpointError` naming the file. The
checkpoint it replaces is kept as ``checkpoint.prev.pt`` (hard-linked before the new one is moved
into place, so a run never lacks a checkpoint), so one corrupt file never costs the run.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import zipfile
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write
from ..model.build import build_model
from ..model.config import ModelConfig
from .config import TrainConfig, save_config

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "PREVIOUS_NAME",
    "digest",
    "remove_stale_temporaries",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
    "model_config",
    "get_rng_state",
    "set_rng_state",
]

FORMAT = "pyro_vae.checkpoint"
VERSION = 2
#: versions this pyro_vae reads (version 1 had no digest)
READABLE = (1, 2)
CHECKPOINT_NAME = "checkpoint.pt"
PREVIOUS_NAME = "checkpoint.prev.pt"
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


def model_config(module) -> ModelConfig | None:
    """The module's :class:`ModelConfig` where it has one (the built-in models), else None."""
    config = getattr(module, "config", None)
    return config if isinstance(config, ModelConfig) else None


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
    config_changes: list[dict] | None = None,
    training_step: int | None = None,
) -> Path:
    """Write a checkpoint atomically, and ``config.json`` beside it. ``estimator_state``: the
    ELBO's own state where it has one (``Score_ELBO``'s baseline), restored on resume;
    ``config_changes`` the training settings changed on resumes, with the epoch of each;
    ``training_step`` the number of training steps taken (the KL warm-up's position)."""
    path = Path(path)
    ckpt: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "model_class": type(vae).__name__,
        "model_config": None if model_config(vae) is None else model_config(vae).to_dict(),
        "train_config": train_config.to_dict() if train_config is not None else None,
        "model": vae.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "epoch": int(epoch),
        "history": list(history or []),
        "rng": rng_state if rng_state is not None else get_rng_state(),
        "estimator": estimator_state,
        # [{"epoch": E, "changed": {field: [before, after]}}]: settings changed on a resume after
        # epoch E, so that train_config with these describes every epoch trained
        "config_changes": list(config_changes or []),
        # the global step count: where the KL warm-up and the validation cadence stand
        "training_step": None if training_step is None else int(training_step),
    }
    ckpt["sha256"] = digest(ckpt)
    try:
        _keep_previous(path)
        atomic_write(path, lambda tmp: torch.save(ckpt, tmp))
        save_config(path.parent / CONFIG_NAME, model_config(vae), train_config)
    except OSError as e:
        kept = f"the checkpoint already there ({path}) is intact" if path.exists() else "none"
        raise CheckpointError(
            f"cannot write checkpoint {path}: {e.strerror or e}; {kept}. Free some space or "
            f"fix the directory's permissions, then continue with --resume"
        ) from e
    remove_stale_temporaries(path.parent, (path.name, PREVIOUS_NAME, CONFIG_NAME))
    return path


def _keep_previous(path: Path) -> None:
    """Make ``checkpoint.prev.pt`` the checkpoint about to be replaced (atomically: a hard link
    under a temporary name, renamed into place), so that both files exist at every moment."""
    if not path.exists():
        return
    previous = path.with_name(
        PREVIOUS_NAME if path.name == CHECKPOINT_NAME else f"{path.name}.prev"
    )
    tmp = previous.with_name(f".{previous.name}.link.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:  # a file system without hard links: copy instead
        shutil.copyfile(path, tmp)
    os.replace(tmp, previous)


def digest(obj: Any) -> str:
    """SHA-256 over a checkpoint's content: keys, primitives, and each tensor's dtype, shape and
    bytes, in a fixed order (the ``sha256`` entry itself is left out)."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in obj.items() if k != "sha256"} if isinstance(obj, dict) else obj)
    return h.hexdigest()


def _feed(h, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=repr):
            h.update(repr(k).encode())
            _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, list | tuple):
        h.update(b"[")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    else:
        h.update(repr(obj).encode())


def remove_stale_temporaries(directory: Path, names: tuple[str, ...]) -> list[Path]:
    """Remove the temporary files that interrupted atomic writes of ``names`` left in
    ``directory`` (``.NAME.*.tmp``: this project's own pattern, nothing else). Returns them."""
    removed = []
    for name in names:
        for tmp in directory.glob(f".{name}.*.tmp"):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


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
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            _corrupt(
                path,
                "it is not a torch checkpoint archive (truncated, "
                "overwritten or not a checkpoint at all)",
            )
        )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than tensors and plain containers "
            f"(weights_only loading rejected them), so it is not a pyro_vae checkpoint. Do not "
            f"load it with a less strict loader unless you wrote it yourself."
        ) from e
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(_corrupt(path, f"its archive cannot be read ({e})")) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a pyro_vae checkpoint (no 'format': {FORMAT!r} key); it may be a "
            f"plain state_dict or another library's file"
        )
    if ckpt.get("version") not in READABLE:
        raise CheckpointError(
            f"{path} has checkpoint version {ckpt.get('version')}, this pyro_vae reads "
            f"{', '.join(map(str, READABLE))}"
        )
    _verify(path, ckpt)
    return ckpt


def _verify(path: Path, ckpt: dict[str, Any]) -> None:
    if ckpt["version"] >= 2:
        stored = ckpt.get("sha256")
        if not isinstance(stored, str) or stored != digest(ckpt):
            raise CheckpointError(_corrupt(path, "its content does not match its SHA-256 digest"))
    for part in ("model", "optimizer"):
        bad = [name for name, t in _tensors(ckpt.get(part)) if not bool(torch.isfinite(t).all())]
        if bad:
            raise CheckpointError(
                _corrupt(path, f"its {part} state holds non-finite values ({', '.join(bad[:3])})")
            )


def _tensors(obj: Any, prefix: str = ""):
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            yield prefix or "tensor", obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _tensors(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from _tensors(v, f"{prefix}[{i}]")


def _corrupt(path: Path, why: str) -> str:
    previous = path.with_name(PREVIOUS_NAME)
    if path.name == CHECKPOINT_NAME and previous.exists():
        fix = (
            f"the previous checkpoint {previous} is kept: check it with "
            f"pyro_vae.load_checkpoint('{previous}') and, if it loads, move it to {path} to "
            f"resume one epoch earlier"
        )
    else:
        fix = "restore the file from a backup, or train again without --resume"
    return f"checkpoint {path} is corrupt: {why}; {fix}"


def load_model(
    path: str | Path, map_location: str | torch.device = "cpu", *, model=None, **objects
):
    """Rebuild a trained model from a checkpoint or run directory in one call.

    A built-in model (:class:`~pyro_vae.VAE`, :class:`~pyro_vae.TwoLayerVAE`) is rebuilt from the
    checkpoint's :class:`ModelConfig`: pass user-written ``prior=``, ``likelihood=``, ``guide=``,
    ``encoder=`` or ``decoder=`` objects if it was built with them. Any other model object is
    passed as ``model=`` (built as it was trained) and gets the checkpoint's weights.
    """
    ckpt = load_checkpoint(path, map_location)
    saved = ckpt.get("model_config")
    if model is None:
        if saved is None:
            raise CheckpointError(
                f"{path} holds a user-written model ({ckpt.get('model_class', 'unknown class')}) "
                f"without a ModelConfig: build it as it was trained and pass it, "
                f"load_model(path, model=MyModel(...))"
            )
        model = build_model(ModelConfig.from_dict(saved), **objects)
        saved_class = ckpt.get("model_class", type(model).__name__)
        if saved_class != type(model).__name__:
            raise CheckpointError(
                f"{path} holds a {saved_class} (a subclass of {type(model).__name__}?), which "
                f"its config alone does not rebuild: pass it, load_model(path, "
                f"model={saved_class}(...))"
            )
    elif objects:
        raise TypeError(f"pass either model= or the components {sorted(objects)}, not both")
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(
            f"the checkpoint's weights do not fit the model ({type(model).__name__}): {e}"
        ) from e
    return model.to(map_location)
