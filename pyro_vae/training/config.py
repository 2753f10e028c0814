"""How to train: a small frozen dataclass saved beside checkpoints as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._io import atomic_write_json
from ..model.config import JsonConfig, ModelConfig

__all__ = ["TrainConfig", "lr_at_epoch", "save_config", "load_config"]


@dataclass(frozen=True)
class TrainConfig(JsonConfig):
    """How to train: optimisation, estimator, evaluation, bookkeeping."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    #: estimator name for :func:`~pyro_vae.make_elbo`
    elbo: str = "trace"
    num_particles: int = 1
    #: K of the test K-sample log-likelihood
    eval_samples: int = 1000
    #: evaluate the test log-likelihood every this many epochs (and always at the last); 0 = never
    eval_every: int = 5
    #: ``"dynamic"``: draw x ~ Bernoulli(pixels) afresh for every training batch
    binarize: str | None = None
    seed: int = 0
    device: str = "cpu"
    jit: bool = False
    #: between Pyro-run, validated steps (every 200th), use the model's own log weights where it
    #: has them (:mod:`pyro_vae.training.loss` says what runs when); False runs the Pyro
    #: program, validated, every step
    fast_path: bool = True
    progress: bool = True
    #: ``None`` (constant lr) or ``"burda2015"``: lr * 10^(-i/7) for 3^i epochs, i = 0, 1, ...
    lr_schedule: str | None = None
    #: the training objective's KL weight (Higgins et al. 2017); reported bounds are beta = 1's
    beta: float = 1.0
    #: raise the KL weight linearly from 0 to ``beta`` over this many epochs (Sonderby et al.
    #: 2016), step by step; 0 = no warm-up
    kl_warmup: int = 0
    #: free bits (Kingma et al. 2016): nats per datapoint below which a latent site's
    #: batch-mean KL is not penalized; 0 = off (trace and meanfield only)
    free_bits: float = 0.0
    #: torch Adam's implementation: ``"fused"`` (one kernel, where torch has one for the device
    #: and dtype), ``"foreach"`` or ``"for-loop"``; the same algorithm, rounded differently
    adam_impl: str = "fused"

    def __post_init__(self) -> None:
        self.check_types()
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "num_particles": self.num_particles >= 1,
            "eval_samples": self.eval_samples >= 1,
            "eval_every": self.eval_every >= 0,
            "beta": self.beta >= 0,
            "kl_warmup": self.kl_warmup >= 0,
            "free_bits": self.free_bits >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"TrainConfig.{name} is out of range: {getattr(self, name)!r}")
        if self.lr_schedule not in (None, "burda2015"):
            raise ValueError(f"lr_schedule must be None or 'burda2015', got {self.lr_schedule!r}")
        if self.adam_impl not in ("fused", "foreach", "for-loop"):
            raise ValueError(
                f"TrainConfig.adam_impl must be 'fused', 'foreach' or 'for-loop', got "
                f"{self.adam_impl!r}"
            )
        if self.binarize not in (None, "dynamic"):
            raise ValueError(f"binarize must be None or 'dynamic', got {self.binarize!r}")
        try:
            kind = torch.device(self.device).type
        except RuntimeError:
            kind = None
        if kind not in ("cpu", "cuda"):
            raise ValueError(
                f"TrainConfig.device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )


def lr_at_epoch(config: TrainConfig, epoch: int) -> float:
    """The learning rate for a 1-based ``epoch`` under ``config.lr_schedule``."""
    if config.lr_schedule is None:
        return config.lr
    i, end = 0, 1
    while epoch > end:  # stage i covers 3^i epochs
        i += 1
        end += 3**i
    return config.lr * 10 ** (-i / 7)


def save_config(
    path: str | Path, model: ModelConfig | None, train: TrainConfig | None = None
) -> Path:
    """Write ``{"model": ..., "train": ...}`` as JSON, atomically (``model`` null for a
    user-written model object without a :class:`ModelConfig`)."""
    obj: dict[str, Any] = {"model": model.to_dict() if model is not None else None}
    if train is not None:
        obj["train"] = train.to_dict()
    return atomic_write_json(path, obj)


def load_config(path: str | Path) -> tuple[ModelConfig | None, TrainConfig | None]:
    """Read a file written by :func:`save_config`."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
        train = TrainConfig.from_dict(obj["train"]) if obj.get("train") is not None else None
        model = obj["model"]
        return (ModelConfig.from_dict(model) if model is not None else None), train
    except FileNotFoundError:
        raise
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(
            f"{path} is not a pyro_vae config (JSON with a 'model' and an optional 'train' "
            f"object, as save_config writes): {type(e).__name__}: {e}"
        ) from e
