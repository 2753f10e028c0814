"""Estimators side by side: the same VAE trained under each ELBO estimator at an equal budget.

:func:`compare_estimators` trains one architecture under every requested estimator (``trace``,
``iwae``, ``stl``, ``dreg``, ... at their K) and every seed, evaluates each trained model with the
K-sample importance-sampled test log-likelihood, measures gradient signal-to-noise ratios, and
writes a paper-style table (``comparison.md``, ``.csv``, ``.json``) and two figures.

The protocol, so that rows compare:

* **Same start.** For a given seed every estimator starts from the same initial weights and sees
  the same minibatch order (both depend on the seed alone); the test set is binarized once, with
  a fixed seed, and shared by every run. ``delta`` columns are *paired* differences against the
  first estimator at the same seed, which cancels most of the seed-to-seed noise.
* **Equal budget.** Either an equal number of epochs (the same number of gradient steps and data
  passes for every estimator: ``epochs``), or an equal training time (``seconds``): a run stops
  after the epoch in which its training time, the sum of the trainer's per-epoch ``seconds``
  (training only, evaluation excluded), reaches the budget, so it overshoots by at most one epoch.
  It is enforced by a callback that raises a private exception after that epoch, which this
  module catches. A time budget depends on the machine and its load; an epoch budget does not.
* **Honest evaluation.** The test log-likelihood uses ``eval_samples`` importance samples for
  every estimator (whatever K it trained with), every ``eval_every`` epochs and at the end.
* **Gradient SNR at one fixed point.** Rainforth et al. (2018)'s per-parameter SNR,
  ``|E g| / sd g`` over ``snr_repeats`` independent gradient estimates, averaged over the
  parameters of the inference network (encoder) and of the generative network (decoder), is
  measured for every estimator at every K of ``snr_k`` *at the same parameters and on the same
  batch*: the model trained under the first estimator with the first seed, at the end of its
  training, and the first ``snr_batch_size`` training images binarized with a fixed seed. So the
  SNRs differ only by the estimator and K, not by where each estimator's training ended.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyro
import torch

from .._device import resolve_device
from .._io import atomic_write_json, atomic_write_text
from .._registry import lookup
from ..data.sources import ImageData, binarize_static, load_dataset
from ..infer.estimators import ESTIMATORS, make_elbo
from ..infer.evaluate import evaluate
from ..infer.gradients import gradient_snr
from ..model.config import ModelConfig
from ..model.vae import VAE
from ..training.config import TrainConfig
from ..training.loop import TrainingDiverged, train
from .plots import plot_log_likelihood_curves, plot_snr_vs_k
from .run import epoch_line, prepare_data

__all__ = [
    "EstimatorSpec",
    "CompareConfig",
    "ComparisonResult",
    "parse_estimators",
    "summarize_runs",
    "format_markdown_table",
    "compare_estimators",
    "COMPARISON_FILES",
]

#: What :func:`compare_estimators` writes to ``out_dir`` (figures unless ``figures=False``).
COMPARISON_FILES = (
    "comparison.md",
    "comparison.csv",
    "comparison.json",
    "log_likelihood_curves.png",
    "snr_vs_k.png",
)


@dataclass(frozen=True)
class EstimatorSpec:
    """One row of the comparison: an estimator name of :data:`~pyro_vae.ESTIMATORS` and its K."""

    name: str
    num_particles: int = 1

    @property
    def label(self) -> str:
        return f"{self.name} (K={self.num_particles})"


def _canonical(name: str) -> str:
    lookup("estimator", name, ESTIMATORS)  # raises, listing the valid names
    return name.strip().lower().replace("-", "_")


def _positive_int(text: Any, what: str) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError(f"{what} must be a positive integer, got {text!r}") from None
    if value < 1:
        raise ValueError(f"{what} must be a positive integer (>= 1), got {value}")
    return value


def _split(items: str | Sequence[Any]) -> list[str]:
    if isinstance(items, str):
        items = items.split(",")
    return [str(t).strip() for t in items if str(t).strip()]


def parse_estimators(
    estimators: str | Sequence[str | EstimatorSpec],
    num_particles: int | str | Sequence[int] = (1,),
) -> list[EstimatorSpec]:
    """Estimator specs from ``"trace,iwae:5,dreg"``-style text (or a list of such items).

    An item ``name:K`` fixes its own K; a bare ``name`` gets one spec per K in ``num_particles``
    (so ``"iwae,dreg"`` with ``num_particles="1,5,50"`` gives six rows). Names are checked
    against :data:`~pyro_vae.ESTIMATORS` (an unknown one raises a ValueError listing the valid
    ones), every K must be a positive integer, and each (name, K) must build with
    :func:`~pyro_vae.make_elbo` (e.g. ``tail_adaptive`` needs K >= 2). Duplicates are dropped.
    """
    if isinstance(num_particles, int):
        ks = [_positive_int(num_particles, "--num-particles")]
    else:
        ks = [_positive_int(k, "--num-particles") for k in _split(num_particles)]
    if not ks:
        raise ValueError("--num-particles is empty; give at least one K, e.g. '1' or '1,5'")
    specs: list[EstimatorSpec] = []
    items = [estimators] if isinstance(estimators, EstimatorSpec) else estimators
    for item in [items] if isinstance(items, str) else items:
        for token in [item] if isinstance(item, EstimatorSpec) else _split(item):
            if isinstance(token, EstimatorSpec):
                found = [EstimatorSpec(_canonical(token.name), token.num_particles)]
            elif ":" in token:
                name, k = token.split(":", 1)
                what = f"K in {token!r} (write name:K, e.g. iwae:5)"
                found = [EstimatorSpec(_canonical(name), _positive_int(k, what))]
            else:
                found = [EstimatorSpec(_canonical(token), k) for k in ks]
            for spec in found:
                if spec not in specs:
                    specs.append(spec)
    if not specs:
        valid = ", ".join(sorted(ESTIMATORS))
        raise ValueError(f"no estimators given; choose from: {valid}")
    for spec in specs:
        try:
            make_elbo(spec.name, spec.num_particles)
        except ValueError as e:
            raise ValueError(f"estimator {spec.name!r} with K={spec.num_particles}: {e}") from e
    return specs


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
        snr_k = tuple(_positive_int(k, "snr_k") for k in self.snr_k)
        object.__setattr__(self, "snr_k", tuple(sorted(set(snr_k))))
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
        }


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


# ------------------------------------------------------------------------------------ budget


class _BudgetExhausted(Exception):
    """Raised by :class:`_Budget` after the epoch in which the time budget ran out."""


class _Budget:
    """Training callback: records each epoch and stops the run once the training time (the sum
    of the records' ``seconds``) reaches ``seconds`` (None: never stops)."""

    def __init__(self, seconds: float | None, log: Callable[[dict], None] | None = None) -> None:
        self.seconds = seconds
        self.log = log
        self.history: list[dict] = []
        self.elapsed = 0.0

    def __call__(self, record: dict) -> None:
        self.history.append(record)
        self.elapsed += float(record.get("seconds", 0.0))
        if self.log is not None:
            self.log(record)
        if self.seconds is not None and self.elapsed >= self.seconds:
            raise _BudgetExhausted


# ----------------------------------------------------------------------------------- summary


def _mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); the std is None for a single value."""
    vals = [float(v) for v in values]
    if not vals:
        return math.nan, None
    mean = math.fsum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    var = math.fsum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return mean, math.sqrt(var)


_METRICS = ("test_log_likelihood", "test_elbo", "kl", "active_units", "seconds_per_epoch", "epochs")


def summarize_runs(
    runs: Sequence[dict[str, Any]], snr: Sequence[dict[str, Any]] = ()
) -> list[dict[str, Any]]:
    """One row per (estimator, K), in order of first appearance: for each metric of
    ``_METRICS`` its mean and sample std over seeds (``<metric>_mean``, ``<metric>_std``), the
    paired difference of the test log-likelihood against the first (estimator, K) at the same
    seeds (``delta_log_likelihood_mean``/``_std``), and the inference and generative network
    SNRs of the matching ``snr`` entry (NaN if none)."""
    keys: list[tuple[str, int]] = []
    for r in runs:
        key = (r["estimator"], int(r["num_particles"]))
        if key not in keys:
            keys.append(key)
    if not keys:
        return []
    by_key = {k: [r for r in runs if (r["estimator"], int(r["num_particles"])) == k] for k in keys}
    baseline = {r["seed"]: r["test_log_likelihood"] for r in by_key[keys[0]]}
    snr_at = {(s["estimator"], int(s["num_particles"])): s for s in snr}
    rows = []
    for name, k in keys:
        group = by_key[(name, k)]
        row: dict[str, Any] = {
            "estimator": name,
            "num_particles": k,
            "num_seeds": len(group),
            "seeds": [r["seed"] for r in group],
        }
        for metric in _METRICS:
            row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std([r[metric] for r in group])
        paired = [
            r["test_log_likelihood"] - baseline[r["seed"]] for r in group if r["seed"] in baseline
        ]
        row["delta_log_likelihood_mean"], row["delta_log_likelihood_std"] = _mean_std(paired)
        row["delta_baseline"] = f"{keys[0][0]} (K={keys[0][1]})"
        s = snr_at.get((name, k), {})
        row["inference_snr"] = s.get("inference_snr", math.nan)
        row["generative_snr"] = s.get("generative_snr", math.nan)
        rows.append(row)
    return rows


def _pm(mean: float, std: float | None, digits: int = 2) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    text = f"{mean:.{digits}f}"
    if std is not None and math.isfinite(std):
        text += f" ± {std:.{digits}f}"
    return text.replace("-", "−")


def _snr_text(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.3g}"


_HEADER = (
    "estimator",
    "K",
    "test log p(x)",
    "Δ log p(x) vs {base}",
    "test ELBO",
    "KL",
    "active units",
    "inference SNR",
    "generative SNR",
    "s / epoch",
    "epochs",
)


def format_markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`summarize_runs` as a Markdown table (nats per image, mean ± std)."""
    if not rows:
        raise ValueError("no rows to format")
    header = [h.format(base=rows[0]["delta_baseline"]) for h in _HEADER]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---", "---:"] + ["---:"] * (len(header) - 2)) + "|",
    ]
    for i, r in enumerate(rows):
        delta = (
            "(baseline)"
            if i == 0
            else _pm(r["delta_log_likelihood_mean"], r["delta_log_likelihood_std"])
        )
        if i and not delta.startswith("−") and delta != "n/a":
            delta = "+" + delta
        epochs = _pm(r["epochs_mean"], r["epochs_std"], 1 if r["epochs_std"] else 0)
        cells = [
            f"`{r['estimator']}`",
            str(r["num_particles"]),
            _pm(r["test_log_likelihood_mean"], r["test_log_likelihood_std"]),
            delta,
            _pm(r["test_elbo_mean"], r["test_elbo_std"]),
            _pm(r["kl_mean"], r["kl_std"]),
            _pm(r["active_units_mean"], r["active_units_std"], 1),
            _snr_text(r["inference_snr"]),
            _snr_text(r["generative_snr"]),
            _pm(r["seconds_per_epoch_mean"], r["seconds_per_epoch_std"], 1),
            epochs,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _display(name: str) -> str:
    return {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}.get(name, name)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _markdown(rows, snr, config: CompareConfig, info: dict[str, Any]) -> str:
    seeds = ", ".join(str(s) for s in config.seeds)
    n_seeds = _count(len(config.seeds), "seed")
    m = config.model
    text = [
        f"# ELBO estimators compared on {_display(info['dataset'])}",
        "",
        f"{info['train_size']:,} training and {info['test_size']:,} test images "
        f"(test set binarized once, fixed seed), {m.x_dim}-"
        f"{'-'.join(str(h) for h in m.hidden_dims)}-{m.z_dim} VAE ({m.activation}, "
        f"{m.likelihood} likelihood, {m.prior} prior, {m.guide} guide), Adam lr {config.lr:g}"
        f"{' (' + config.lr_schedule + ' schedule)' if config.lr_schedule else ''}, "
        f"batch {config.batch_size}; equal budget: **{config.budget}**; seeds {seeds}; "
        f"device {info['device']}.",
        "",
        format_markdown_table(rows),
        f"Test log p(x): the {config.eval_samples}-sample importance-sampled log-likelihood in "
        f"nats per image, mean ± sample std over the {n_seeds}, the same "
        "evaluation for every estimator whatever K it trained with. Δ: the paired difference "
        f"against {rows[0]['delta_baseline']} at the same seed (same initial weights and "
        "minibatch order), mean ± std over seeds. Test ELBO: the single-sample ELBO "
        "(the mean of log w over the evaluation's draws); KL: KL(q(z|x) || p(z)); active units: "
        "latent dimensions with Cov_x E_q[z_u] > 0.01. s / epoch: training time only (this "
        "machine, under its load at the time).",
    ]
    if snr:
        text.append("")
        text.append(
            f"SNR: the mean over parameters of |E g| / sd g over {config.snr_repeats} "
            "independent gradient estimates (Rainforth et al. 2018), for the encoder (inference) "
            "and the decoder (generative), all measured at the same fixed point: "
            f"{info['snr_checkpoint']}, on the first {info['snr_batch_size']} training images "
            "binarized with a fixed seed."
        )
    return "\n".join(text) + "\n"


def _csv(rows: Sequence[dict[str, Any]]) -> str:
    columns = [k for k in rows[0] if k not in ("seeds", "delta_baseline")]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow(["" if r[c] is None else r[c] for c in columns])
    return buf.getvalue()


def _jsonable(obj: Any) -> Any:
    """NaN and infinities become None (strict JSON); tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


# -------------------------------------------------------------------------------------- runs


_FINAL_KEYS = (
    "test_log_likelihood",
    "test_log_likelihood_stderr",
    "test_elbo",
    "kl",
    "active_units",
)


def _one_run(
    spec: EstimatorSpec,
    seed: int,
    config: CompareConfig,
    train_x: torch.Tensor,
    test_x: torch.Tensor,
    binarize: str | None,
    log: Callable[[str], None],
) -> tuple[dict[str, Any], VAE]:
    torch.manual_seed(seed)  # the initial weights depend on the seed alone
    vae = VAE.from_config(config.model)
    train_config = TrainConfig(
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
    prefix = f"[{spec.name} K={spec.num_particles} seed {seed}]"
    budget = _Budget(config.seconds, lambda r: log(epoch_line(r, f"{prefix} ")))
    stopped_by, error = "epochs", None
    try:
        result = train(vae, train_x, test_x, train_config, callbacks=[budget])
        history = list(result.history)
    except _BudgetExhausted:
        history = list(budget.history)
        stopped_by = "seconds"
    except TrainingDiverged as e:
        # Reported as a failed run (NaN metrics, "n/a" in the table); the others go on.
        history, stopped_by, error = list(budget.history), "diverged", str(e)
        log(f"{prefix} {e}")
    history = [dict(r) for r in history]
    if error is not None:
        last = dict.fromkeys(_FINAL_KEYS, math.nan)
    else:
        last = history[-1]
    if error is None and "test_log_likelihood" not in last:
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
    train_seconds = math.fsum(r["seconds"] for r in history)
    run = {
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
    if error is not None:
        run["error"] = error
        return run, vae
    log(
        f"{prefix} done: {run['epochs']} epochs ({stopped_by} budget), test log p(x) "
        f"{run['test_log_likelihood']:.2f} nats, {run['seconds_per_epoch']:.1f} s/epoch"
    )
    return run, vae


def _measure_snr(
    vae: VAE,
    specs: Sequence[EstimatorSpec],
    config: CompareConfig,
    x: torch.Tensor,
    num_data: int,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    names = list(dict.fromkeys(s.name for s in specs))
    pairs = [(n, k) for n in names for k in config.snr_k]
    pairs += [(s.name, s.num_particles) for s in specs if (s.name, s.num_particles) not in pairs]
    out = []
    for name, k in pairs:
        try:
            elbo = make_elbo(name, k)
        except ValueError as e:  # e.g. tail_adaptive at K = 1
            log(f"[snr] {name} K={k}: skipped ({e})")
            continue
        pyro.set_rng_seed(0)
        t0 = time.perf_counter()
        stats = gradient_snr(
            vae.model, vae.guide, elbo, x, num_repeats=config.snr_repeats, num_data=num_data
        )
        entry = {
            "estimator": name,
            "num_particles": k,
            "inference_snr": stats.mean_snr["inference"],
            "generative_snr": stats.mean_snr["generative"],
            "inference_median_snr": stats.median_snr["inference"],
            "generative_median_snr": stats.median_snr["generative"],
            "seconds": time.perf_counter() - t0,
        }
        log(
            f"[snr] {name} K={k}: inference {entry['inference_snr']:.4g}, generative "
            f"{entry['generative_snr']:.4g} ({entry['seconds']:.1f} s)"
        )
        out.append(entry)
    return out


def _write_outputs(
    out: Path,
    rows: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    snr: list[dict[str, Any]],
    config: CompareConfig,
    info: dict[str, Any],
    figures: bool,
) -> dict[str, Path]:
    files = {
        "comparison.md": atomic_write_text(
            out / "comparison.md", _markdown(rows, snr, config, info)
        ),
        "comparison.csv": atomic_write_text(out / "comparison.csv", _csv(rows)),
        "comparison.json": atomic_write_json(
            out / "comparison.json",
            _jsonable({"config": config.to_dict(), **info, "rows": rows, "snr": snr, "runs": runs}),
        ),
    }
    if not figures:
        return files
    curves: dict[str, list[list[dict]]] = {}
    for r in runs:
        label = EstimatorSpec(r["estimator"], r["num_particles"]).label
        curves.setdefault(label, []).append(r["history"])
    files["log_likelihood_curves.png"] = plot_log_likelihood_curves(
        curves,
        out / "log_likelihood_curves.png",
        title=f"{_display(info['dataset'])}: test log-likelihood (K={config.eval_samples}), "
        f"mean ± 1 s.d. over {_count(len(config.seeds), 'seed')}",
    )
    if snr:
        series: dict[str, dict[int, dict[str, float]]] = {}
        for s in snr:
            if s["num_particles"] in config.snr_k:
                series.setdefault(s["estimator"], {})[s["num_particles"]] = {
                    "inference": s["inference_snr"],
                    "generative": s["generative_snr"],
                }
        files["snr_vs_k.png"] = plot_snr_vs_k(
            series,
            out / "snr_vs_k.png",
            title=f"Gradient SNR at one fixed point ({_display(info['dataset'])}, batch "
            f"{info['snr_batch_size']}, {config.snr_repeats} repeats)",
        )
    return files


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
        config: a :class:`CompareConfig` (see the module docstring for the protocol).
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
    if data is None:
        data = load_dataset(config.dataset, data_dir=data_dir)
    if data.num_pixels != config.model.x_dim:
        raise ValueError(
            f"the model's x_dim is {config.model.x_dim} but {data.name} images have "
            f"{data.num_pixels} pixels; use ModelConfig(x_dim={data.num_pixels}, ...)"
        )
    train_x, test_x, binarize, kind = prepare_data(data, config.model.likelihood, test_seed=0)
    train_x, test_x = train_x[: config.train_size], test_x[: config.test_size]
    test_x = test_x.to(device)
    specs = list(config.estimators)
    log(
        f"data: {data.name} from {data.source}; {len(train_x):,} training / {len(test_x):,} test "
        f"images; {_count(len(specs), 'estimator')} x {_count(len(config.seeds), 'seed')}, "
        f"{config.budget}"
    )
    t_start = time.perf_counter()
    runs: list[dict[str, Any]] = []
    snr_model: VAE | None = None
    snr_run: dict[str, Any] = {}
    for spec in specs:
        for seed in config.seeds:
            run, vae = _one_run(spec, seed, config, train_x, test_x, binarize, log)
            runs.append(run)
            if snr_model is None and "error" not in run:
                snr_model = vae  # the fixed point of the SNR measurements
                snr_run = run
    snr: list[dict[str, Any]] = []
    snr_bs = min(config.snr_batch_size or config.batch_size, len(train_x))
    checkpoint = (
        f"the model trained under {snr_run['estimator']} (K={snr_run['num_particles']}) with "
        f"seed {snr_run['seed']} at the end of its training"
        if snr_model is not None
        else "none (every run diverged)"
    )
    if config.snr_repeats and snr_model is not None:
        x = train_x[:snr_bs]
        x = binarize_static(x, seed=0) if binarize == "dynamic" else x
        log(f"[snr] at {checkpoint}, batch of {snr_bs}, {config.snr_repeats} repeats")
        snr_model.train()
        snr = _measure_snr(snr_model, specs, config, x.to(device), len(train_x), log)
    rows = summarize_runs(runs, snr)
    info = {
        "dataset": data.name,
        "data_source": data.source,
        "data_kind": kind,
        "train_size": len(train_x),
        "test_size": len(test_x),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "snr_checkpoint": checkpoint,
        "snr_batch_size": snr_bs,
        "total_seconds": time.perf_counter() - t_start,
        "torch": torch.__version__,
        "pyro": pyro.__version__,
    }
    files: dict[str, Path] = {}
    if out_dir is not None:
        files = _write_outputs(Path(out_dir), rows, runs, snr, config, info, figures)
        log(f"written to {out_dir}/: " + ", ".join(files))
    return ComparisonResult(rows, runs, snr, {**config.to_dict(), **info}, files)
