"""What a comparison runs: :class:`CompareConfig`, its estimators, seeds, equal budget,
architecture, data subset and evaluation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ...model.config import ModelConfig
from .spec import EstimatorSpec, parse_estimators, positive_int

__all__ = ["CompareConfig"]


@dataclass(frozen=True)
class CompareConfig:
    """The comparison: estimators, seeds, equal budget, architecture, data subset, evaluation.

    Budget: ``epochs`` epochs per run, or with ``seconds`` set, training time per run (then
    ``epochs``, if given, caps the epochs). ``eval_every`` (default: about five evaluations per
    run for an epoch budget, every epoch for a time budget) sets how often the test
    log-likelihood (K = ``eval_samples``) is measured for the learning curves; it is always
    measured at the end. ``snr_repeats=0`` skips the gradient SNRs.
    """

    estimators: tuple[EstimatorSpec, ...] = (
        EstimatorSpec("trace", 1),
        EstimatorSpec("iwae", 5),
        EstimatorSpec("stl", 1),
        EstimatorSpec("dreg", 5),
    )
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int | None = 5
    seconds: float | None = None
    model: ModelConfig = field(default_factory=lambda: ModelConfig(x_dim=784))
    dataset: str = "mnist"
    train_size: int | None = 10000
    test_size: int | None = 1000
    batch_size: int = 100
    lr: float = 1e-3
    lr_schedule: str | None = None
    eval_samples: int = 1000
    eval_every: int | None = None
    snr_k: tuple[int, ...] = (1, 5, 10, 50)
    snr_repeats: int = 100
    snr_batch_size: int | None = None
    device: str = "cpu"
    progress: bool = True
    #: the inference gaps (:func:`~pyro_vae.inference_gaps`) of each trained model on the first
    #: this-many test images (0: none): where each estimator's gain comes from
    gaps_images: int = 0
    #: AIS steps for the gaps' log p(x) (0: importance sampling with ``eval_samples``)
    gaps_ais_steps: int = 0

    def __post_init__(self) -> None:
        specs = tuple(parse_estimators(list(self.estimators)))
        object.__setattr__(self, "estimators", specs)
        seeds = tuple(int(s) for s in self.seeds)
        if not seeds:
            raise ValueError("seeds is empty; give at least one seed, e.g. (0, 1, 2)")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {list(seeds)}")
        object.__setattr__(self, "seeds", seeds)
        if self.seconds is None and self.epochs is None:
            raise ValueError("give a budget: epochs (per run) or seconds (of training per run)")
        if self.seconds is not None and not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise ValueError(f"seconds must be a positive number, got {self.seconds!r}")
        snr_k = tuple(positive_int(k, "snr_k") for k in self.snr_k)
        object.__setattr__(self, "snr_k", tuple(sorted(set(snr_k))))
        self._check_ranges()

    def _check_ranges(self) -> None:
        checks = {
            "epochs": self.epochs is None or self.epochs >= 1,
            "train_size": self.train_size is None or self.train_size >= 1,
            "test_size": self.test_size is None or self.test_size >= 2,
            "batch_size": self.batch_size >= 1,
            "lr": self.lr > 0,
            "eval_samples": self.eval_samples >= 1,
            "eval_every": self.eval_every is None or self.eval_every >= 1,
            "snr_repeats": self.snr_repeats == 0 or self.snr_repeats >= 2,
            "snr_batch_size": self.snr_batch_size is None or self.snr_batch_size >= 1,
            "gaps_images": self.gaps_images >= 0,
            "gaps_ais_steps": self.gaps_ais_steps >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"CompareConfig.{name} is out of range: {getattr(self, name)!r}")

    @property
    def budget(self) -> str:
        if self.seconds is not None:
            cap = f", at most {self.epochs} epochs" if self.epochs is not None else ""
            return f"{self.seconds:g} s of training per run{cap}"
        return f"{self.epochs} epochs per run"

    def max_epochs(self) -> int:
        return self.epochs if self.epochs is not None else 1_000_000

    def resolved_eval_every(self) -> int:
        if self.eval_every is not None:
            return self.eval_every
        return 1 if self.seconds is not None else max(1, self.max_epochs() // 5)

    def to_dict(self) -> dict[str, Any]:
        return {
            "estimators": [f"{s.name}:{s.num_particles}" for s in self.estimators],
            "seeds": list(self.seeds),
            "epochs": self.epochs,
            "seconds": self.seconds,
            "budget": self.budget,
            "model": self.model.to_dict(),
            "dataset": self.dataset,
            "train_size": self.train_size,
            "test_size": self.test_size,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "lr_schedule": self.lr_schedule,
            "eval_samples": self.eval_samples,
            "eval_every": self.resolved_eval_every(),
            "snr_k": list(self.snr_k),
            "snr_repeats": self.snr_repeats,
            "snr_batch_size": self.snr_batch_size or self.batch_size,
            "device": self.device,
            "gaps_images": self.gaps_images,
            "gaps_ais_steps": self.gaps_ais_steps,
        }
