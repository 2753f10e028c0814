"""Configuration as small frozen dataclasses that round-trip through JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from ._io import atomic_write_json

__all__ = ["ModelConfig", "TrainConfig", "lr_at_epoch", "save_config", "load_config"]

C = TypeVar("C", bound="_JsonConfig")


class _JsonConfig:
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        names = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} field(s) {unknown}; valid fields are {sorted(names)}"
            )
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class ModelConfig(_JsonConfig):
    """Everything needed to rebuild a :class:`~pyro_vae.VAE`'s architecture.

    ``prior``, ``likelihood`` and ``guide`` are registry names; a user-written object is recorded
    as ``"custom:<ClassName>"`` and must be passed again when the model is loaded.
    """

    x_dim: int
    z_dim: int = 20
    hidden_dims: tuple[int, ...] = (400,)
    activation: str = "relu"
    prior: str = "normal"
    likelihood: str = "bernoulli"
    guide: str = "normal"
    #: mixture components (``mixture``) or pseudo-inputs (``vamp``)
    num_components: int = 10
    #: number of IAF layers (``guide="iaf"``)
    num_flows: int = 2
    #: the fixed (``gaussian``) or initial (``learned_gaussian``, ``laplace``) likelihood scale
    likelihood_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.x_dim < 1 or self.z_dim < 1:
            raise ValueError(f"x_dim and z_dim must be >= 1, got {self.x_dim} and {self.z_dim}")


@dataclass(frozen=True)
class TrainConfig(_JsonConfig):
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
    #: between Pyro-run, validated steps (every 50th), skip Pyro's validation and, for ``trace``,
    #: ``meanfield``, ``iwae`` and ``renyi`` on the VAE's own program, evaluate the same loss
    #: without Pyro's interpreter (:mod:`pyro_vae.direct`); False runs the Pyro program,
    #: validated, every step
    fast_path: bool = True
    progress: bool = True
    #: ``None`` (constant lr) or ``"burda2015"``: lr * 10^(-i/7) for 3^i epochs, i = 0, 1, ...
    lr_schedule: str | None = None

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "num_particles": self.num_particles >= 1,
            "eval_samples": self.eval_samples >= 1,
            "eval_every": self.eval_every >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"TrainConfig.{name} is out of range: {getattr(self, name)!r}")
        if self.lr_schedule not in (None, "burda2015"):
            raise ValueError(f"lr_schedule must be None or 'burda2015', got {self.lr_schedule!r}")
        if self.binarize not in (None, "dynamic"):
            raise ValueError(f"binarize must be None or 'dynamic', got {self.binarize!r}")


def lr_at_epoch(config: TrainConfig, epoch: int) -> float:
    """The learning rate for a 1-based ``epoch`` under ``config.lr_schedule``."""
    if config.lr_schedule is None:
        return config.lr
    i, end = 0, 1
    while epoch > end:  # stage i covers 3^i epochs
        i += 1
        end += 3**i
    return config.lr * 10 ** (-i / 7)


def save_config(path: str | Path, model: ModelConfig, train: TrainConfig | None = None) -> Path:
    """Write ``{"model": ..., "train": ...}`` as JSON, atomically."""
    obj: dict[str, Any] = {"model": model.to_dict()}
    if train is not None:
        obj["train"] = train.to_dict()
    return atomic_write_json(path, obj)


def load_config(path: str | Path) -> tuple[ModelConfig, TrainConfig | None]:
    """Read a file written by :func:`save_config`."""
    obj = json.loads(Path(path).read_text())
    train = TrainConfig.from_dict(obj["train"]) if "train" in obj else None
    return ModelConfig.from_dict(obj["model"]), train
