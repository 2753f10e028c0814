"""The run loop: every estimator x seed trained at the equal budget and evaluated, then the
gradient SNRs at the fixed point, the summary and the report."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyro
import torch

from ..._device import resolve_device
from ...data import ImageData, load_dataset
from ...infer.evaluate import evaluate
from ...model.build import build_model
from ...model.vae import VAE
from ...training.config import TrainConfig
from ...training.loop import TrainingDiverged, train
from ..gold_standard import GoldStandard, evaluate_gold
from ..run import device_name, epoch_line, for_images, prepare_data
from .budget import Budget, BudgetExhausted
from .config import CompareConfig
from .report import write_report
from .snr import snr_at_fixed_point
from .spec import EstimatorSpec
from .stats import GAP_METRICS, summarize_runs
from .text import count

__all__ = ["ComparisonResult", "compare_estimators"]


@dataclass
class ComparisonResult:
    """``rows``: one summary dict per estimator x K (the table); ``runs``: one dict per
    estimator x K x seed, with its history; ``snr``: one dict per estimator x K measured;
    ``files``: what was written (name -> path)."""

    rows: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    snr: list[dict[str, Any]]
    config: dict[str, Any]
    files: dict[str, Path]


# ------------------------------------------------------------------------------- one run

_FINAL_KEYS = (
    "test_log_likelihood",
    "test_log_likelihood_stderr",
    "test_elbo",
    "kl",
    "active_units",
)


def _train_config(
    spec: EstimatorSpec, seed: int, config: CompareConfig, binarize: str | None
) -> TrainConfig:
    return TrainConfig(
        epochs=config.max_epochs(),
        batch_size=config.batch_size,
        lr=config.lr,
        lr_schedule=config.lr_schedule,
        elbo=spec.name,
        num_particles=spec.num_particles,
        eval_samples=config.eval_samples,
        eval_every=config.resolved_eval_every(),
        binarize=binarize,
        seed=seed,
        device=config.device,
        progress=config.progress,
    )


def _train_within_budget(
    vae: VAE,
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    train_config: TrainConfig,
    budget: Budget,
) -> tuple[list[dict], str, str | None]:
    """Train until the epochs or ``budget``'s seconds run out, or the loss diverges; returns
    the history, what stopped the run (``epochs``, ``seconds``, ``diverged``) and the error."""
    try:
        result = train(vae, train_x, test_x, train_config, callbacks=[budget])
    except BudgetExhausted:
        return [dict(r) for r in budget.history], "seconds", None
    except TrainingDiverged as e:
        # Reported as a failed run (NaN metrics, "n/a" in the table); the others go on.
        return [dict(r) for r in budget.history], "diverged", str(e)
    return [dict(r) for r in result.history], "epochs", None


def _final_metrics(
    vae: VAE, test_x: torch.Tensor, history: list[dict], config: CompareConfig, seed: int
) -> dict[str, Any]:
    """The last record of ``history``, evaluated at the end if the run stopped between two
    evaluations (a time budget)."""
    last = history[-1]
    if "test_log_likelihood" not in last:
        vae.eval()
        stats = evaluate(vae, test_x, num_samples=config.eval_samples, seed=seed)
        last.update(
            test_elbo=stats["elbo"],
            test_log_likelihood=stats["log_likelihood"],
            test_log_likelihood_stderr=stats["log_likelihood_stderr"],
            eval_samples=config.eval_samples,
            kl=stats["kl"],
            active_units=stats["active_units"],
        )
    return last


def _gaps(vae: VAE, x: torch.Tensor, config: CompareConfig, seed: int) -> dict[str, Any]:
    """The approximation and amortization gaps of the trained ``vae`` on ``x``: the flagship's
    gold-standard evaluation (log p(x) by AIS with ``gaps_ais_steps``, else IS), its numbers."""
    spec = GoldStandard(
        ais_steps=config.gaps_ais_steps, ais_images=len(x), gaps=True, gaps_images=len(x)
    )
    kw = dict(eval_samples=config.eval_samples, seed=seed, log=lambda line: None)
    g = evaluate_gold(vae, x, spec, **kw)
    g = {**g["gaps"], "gap_log_likelihood": g["gaps"]["log_likelihood"]}
    return {**{k: g[k] for k in GAP_METRICS}, "gap_method": g["log_likelihood_method"]}


def _run_record(
    spec: EstimatorSpec,
    seed: int,
    config: CompareConfig,
    history: list[dict],
    stopped_by: str,
    last: dict[str, Any],
) -> dict[str, Any]:
    train_seconds = math.fsum(r["seconds"] for r in history)
    return {
        "estimator": spec.name,
        "num_particles": spec.num_particles,
        "seed": seed,
        "epochs": len(history),
        "stopped_by": stopped_by,
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / len(history) if history else math.nan,
        "test_log_likelihood": last["test_log_likelihood"],
        "test_log_likelihood_stderr": last["test_log_likelihood_stderr"],
        "test_elbo": last["test_elbo"],
        "kl": last["kl"],
        "active_units": last["active_units"],
        "eval_samples": config.eval_samples,
        "history": history,
    }


def _one_run(
    spec: EstimatorSpec,
    seed: int,
    config: CompareConfig,
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    binarize: str | None,
    log: Callable[[str], None],
) -> tuple[dict[str, Any], VAE]:
    """Train and evaluate one estimator at one seed; returns its run record and the model."""
    torch.manual_seed(seed)  # the initial weights depend on the seed alone
    vae = build_model(config.model)
    prefix = f"[{spec.name} K={spec.num_particles} seed {seed}]"
    budget = Budget(config.seconds, lambda r: log(epoch_line(r, f"{prefix} ")))
    train_config = _train_config(spec, seed, config, binarize)
    history, stopped_by, error = _train_within_budget(vae, train_x, test_x, train_config, budget)
    if error is not None:
        log(f"{prefix} {error}")
        run = _run_record(
            spec, seed, config, history, stopped_by, dict.fromkeys(_FINAL_KEYS, math.nan)
        )
        run["error"] = error
        if config.gaps_images:  # the same columns as the other runs', without numbers
            run.update(dict.fromkeys(GAP_METRICS, math.nan))
        return run, vae
    last = _final_metrics(vae, test_x, history, config, seed)
    run = _run_record(spec, seed, config, history, stopped_by, last)
    if config.gaps_images:
        try:
            run.update(_gaps(vae, test_x[: config.gaps_images], config, seed))
        except Exception as e:  # noqa: BLE001 - one model's gaps must not end the comparison
            run.update(dict.fromkeys(GAP_METRICS, math.nan), gaps_error=f"{type(e).__name__}: {e}")
            log(f"{prefix} the inference gaps failed: {run['gaps_error']}")
    log(
        f"{prefix} done: {run['epochs']} epochs ({stopped_by} budget), test log p(x) "
        f"{run['test_log_likelihood']:.2f} nats, {run['seconds_per_epoch']:.1f} s/epoch"
    )
    return run, vae


def _all_runs(
    specs: Sequence[EstimatorSpec],
    config: CompareConfig,
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    binarize: str | None,
    log: Callable[[str], None],
) -> tuple[list[dict[str, Any]], VAE | None, dict[str, Any] | None]:
    """Every estimator x seed, in order; also the first run that did not diverge and its model
    (the fixed point of the SNR measurements; None if every run diverged)."""
    runs: list[dict[str, Any]] = []
    fixed_vae: VAE | None = None
    fixed_run: dict[str, Any] | None = None
    for spec in specs:
        for seed in config.seeds:
            run, vae = _one_run(spec, seed, config, train_x, test_x, binarize, log)
            runs.append(run)
            if fixed_vae is None and "error" not in run:
                fixed_vae, fixed_run = vae, run
    return runs, fixed_vae, fixed_run


# ---------------------------------------------------------------------------------- data


def _load_data(config: CompareConfig, data: ImageData | None, data_dir: str | None) -> ImageData:
    if data is None:
        data = load_dataset(config.dataset, data_dir=data_dir)
    if data.num_pixels != config.model.x_dim:
        raise ValueError(
            f"the model's x_dim is {config.model.x_dim} but {data.name} images have "
            f"{data.num_pixels} pixels; use ModelConfig(x_dim={data.num_pixels}, ...)"
        )
    return data


def _train_and_test(
    data: ImageData, config: CompareConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, str | None, str]:
    """The training and test images of the comparison (the test set binarized once, seed 0,
    for a Bernoulli likelihood), the training binarization and the kind of data."""
    train_x, test_x, binarize, kind = prepare_data(data, config.model.likelihood, test_seed=0)
    train_x, test_x = train_x[: config.train_size], test_x[: config.test_size]
    return train_x, test_x.to(device), binarize, kind


# ----------------------------------------------------------------------------- comparison


def compare_estimators(
    config: CompareConfig = CompareConfig(),
    *,
    data: ImageData | None = None,
    data_dir: str | None = None,
    out_dir: str | Path | None = "runs/compare",
    figures: bool = True,
    log: Callable[[str], None] = print,
) -> ComparisonResult:
    """Train ``config.model`` under every estimator x seed at an equal budget; tabulate.

    Args:
        config: a :class:`CompareConfig` (see :mod:`pyro_vae.experiments.compare` for the
            protocol).
        data: an :class:`~pyro_vae.ImageData` to use instead of loading ``config.dataset``;
            its first ``train_size``/``test_size`` images are used.
        data_dir: passed to :func:`~pyro_vae.load_dataset`.
        out_dir: where ``comparison.md``, ``.csv``, ``.json`` and the figures go (None: nowhere).
        figures: write ``log_likelihood_curves.png`` and (with SNRs) ``snr_vs_k.png``.
        log: progress messages.
    Returns:
        a :class:`ComparisonResult`.
    """
    device = resolve_device(config.device)
    data = _load_data(config, data, data_dir)
    config = replace(config, model=for_images(config.model, data))
    train_x, test_x, binarize, kind = _train_and_test(data, config, device)
    specs = list(config.estimators)
    log(
        f"data: {data.name} from {data.source}; {len(train_x):,} training / {len(test_x):,} test "
        f"images; {count(len(specs), 'estimator')} x {count(len(config.seeds), 'seed')}, "
        f"{config.budget}"
    )
    t_start = time.perf_counter()
    runs, fixed_vae, fixed_run = _all_runs(specs, config, train_x, test_x, binarize, log)
    snr, snr_info = snr_at_fixed_point(
        fixed_vae, fixed_run, specs, config, train_x, binarize, device, log
    )
    rows = summarize_runs(runs, snr)
    info = {
        "dataset": data.name,
        "data_source": data.source,
        "data_kind": kind,
        "train_size": len(train_x),
        "test_size": len(test_x),
        "device": device_name(device),
        **snr_info,
        "total_seconds": time.perf_counter() - t_start,
        "torch": torch.__version__,
        "pyro": pyro.__version__,
    }
    files: dict[str, Path] = {}
    if out_dir is not None:
        files = write_report(Path(out_dir), rows, runs, snr, config, info, figures)
        log(f"written to {out_dir}/: " + ", ".join(files))
    return ComparisonResult(rows, runs, snr, {**config.to_dict(), **info}, files)
