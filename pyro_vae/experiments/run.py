"""The end-to-end run behind ``examples/mnist_svi.py``: data, model, training, honest evaluation,
``results.json`` and figures. Examples only parse arguments and call :func:`run_experiment`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from .._device import resolve_device
from .._io import atomic_write_json
from ..data import ImageData, binarize_static, load_dataset
from ..infer.evaluate import evaluate
from ..model.build import build_model
from ..model.config import ModelConfig
from ..model.vae import VAE
from ..training.callbacks import Callback, CallbackList
from ..training.checkpoint import CHECKPOINT_NAME
from ..training.config import TrainConfig
from ..training.distributed import evaluate_distributed, get_context
from ..training.loop import METRICS_NAME, train
from .gold_standard import GoldStandard, evaluate_gold, gold_lines
from .plots import (
    plot_image_grid,
    plot_latent_space,
    plot_manifold,
    plot_reconstructions,
    plot_training_curves,
)

if TYPE_CHECKING:
    from ..training.distributed import DistributedContext
    from ..training.loop import TrainResult

__all__ = [
    "PRESETS",
    "RESULTS_NAME",
    "run_experiment",
    "prepare_data",
    "for_images",
    "epoch_line",
    "device_name",
]

RESULTS_NAME = "results.json"

#: Named setups from the literature: (model overrides, train overrides).
PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    # Burda, Grosse & Salakhutdinov (2015), one stochastic layer: 784-200-200-50 tanh, dynamic
    # binarization, batch 20, Adam (eps 1e-4) with lr 1e-3 * 10^(-i/7) for 3^i epochs, i = 0..7
    # (3280 epochs), 5000-sample test log-likelihood. Their table: VAE k=1 86.76 nats.
    "burda2015": (
        {"z_dim": 50, "hidden_dims": (200, 200), "activation": "tanh", "likelihood": "bernoulli"},
        {
            "batch_size": 20,
            "lr": 1e-3,
            "epochs": 3280,
            "eval_samples": 5000,
            "eval_every": 100,
            "lr_schedule": "burda2015",
        },
    ),
}


def for_images(model_config: ModelConfig, data: ImageData) -> ModelConfig:
    """``model_config`` fitted to the data: ``x_dim`` the data's pixels per image (a placeholder
    such as the examples' 784 becomes a file's 64) and its ``image_shape`` filled in where a conv
    net needs it."""
    if model_config.x_dim != data.num_pixels:
        model_config = replace(model_config, x_dim=data.num_pixels)
    conv = "conv" in (model_config.encoder, model_config.decoder)
    if conv and not model_config.image_shape:
        shape = tuple(data.image_shape)
        return replace(model_config, image_shape=shape if len(shape) == 3 else (1, *shape))
    return model_config


def prepare_data(
    data: ImageData, likelihood: str, *, test_seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, str | None, str]:
    """Pick the data representation a likelihood is valid for.

    Returns ``(train_x, test_x, binarize, kind)``: for ``bernoulli``, grayscale training pixels
    with dynamic binarization and a test set binarized once with ``test_seed``; otherwise
    grayscale in [0, 1] throughout (``kind`` says whether log-likelihoods are probabilities of
    binary images or densities of grayscale ones, which do not compare).
    """
    if likelihood == "bernoulli":
        return data.train_x, binarize_static(data.test_x, seed=test_seed), "dynamic", "binary"
    return data.train_x, data.test_x, None, "grayscale density"


def _figures(vae: VAE, data: ImageData, test_x: torch.Tensor, history, out: Path) -> list[str]:
    shape = data.image_shape
    names = []
    plot_training_curves(
        history,
        out / "training_curves.png",
        title=f"{data.name}: ELBO and log-likelihood per image",
    )
    names.append("training_curves.png")
    torch.manual_seed(0)
    plot_image_grid(
        vae.sample(64).cpu(),
        shape,
        out / "samples.png",
        title="Samples from the prior (likelihood mean)",
    )
    names.append("samples.png")
    originals = test_x[:20]
    plot_reconstructions(
        originals.cpu(),
        vae.reconstruct(originals).cpu(),
        shape,
        out / "reconstructions.png",
        title="Test images and reconstructions",
    )
    names.append("reconstructions.png")
    n = min(len(test_x), 5000)
    z = vae.posterior_mean(test_x[:n]).cpu()
    labels = data.test_y[:n] if data.test_y is not None else None  # unlabelled: one colour
    classes = data.class_names if labels is not None else None
    plot_latent_space(z, labels, out / "latent_space.png", class_names=classes)
    names.append("latent_space.png")
    if vae.config.z_dim == 2:

        def decode_mean(z2):
            with torch.no_grad():
                z2 = torch.as_tensor(z2, dtype=torch.float32, device=test_x.device)
                return vae.decode(z2).mean.cpu()

        plot_manifold(decode_mean, shape, out / "manifold.png")
        names.append("manifold.png")
    return names


def device_name(device: torch.device) -> str:
    """``"cpu"``, or the GPU's name (``"NVIDIA H100 80GB HBM3"``), for the results."""
    return str(device) if device.type == "cpu" else torch.cuda.get_device_name(device)


def _silent(message: str) -> None:
    pass


def _run_device(train_config: TrainConfig, ctx: DistributedContext | None) -> torch.device:
    device = resolve_device(train_config.device)
    if ctx is not None and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())  # cuda:LOCAL_RANK
    return device


def _load_data(
    dataset: str,
    data_dir: str | None,
    ctx: DistributedContext | None,
    image_shape: tuple[int, ...] | None = None,
) -> ImageData:
    """``load_dataset``; under ``torch.distributed`` one process per node fills the cache (or
    downloads) before the others read it."""
    if ctx is not None and ctx.local_rank != 0:
        dist.barrier()
    kw = {} if image_shape is None else {"image_shape": image_shape}
    data = load_dataset(dataset, data_dir=data_dir, **kw)
    if ctx is not None and ctx.local_rank == 0:
        dist.barrier()
    return data


def _final_evaluation(
    vae: VAE,
    result: TrainResult,
    test_x: torch.Tensor,
    train_config: TrainConfig,
    ctx: DistributedContext | None,
) -> dict[str, Any]:
    """The training's last evaluation if it used ``eval_samples``; else a new one (e.g. a
    resumed run that had already finished, or eval_every=0)."""
    final = result.evaluation
    if final is None or final["num_samples"] != train_config.eval_samples:
        ev = evaluate if ctx is None else evaluate_distributed
        final = ev(vae, test_x, train_config.eval_samples, seed=train_config.seed)
    return final


def _metrics(final: dict[str, Any]) -> dict[str, Any]:
    """The evaluation's numbers under their names in ``results.json``."""
    return {
        "test_log_likelihood": final["log_likelihood"],
        "test_log_likelihood_stderr": final["log_likelihood_stderr"],
        "test_log_likelihood_mc_stderr": final["log_likelihood_mc_stderr"],
        "test_elbo": final["elbo"],
        "eval_samples": final["num_samples"],
        "ess": final["ess"],
        "kl": final["kl"],
        "kl_closed_form": final["kl_closed_form"],
        "kl_monte_carlo": final["kl_monte_carlo"],
        "active_units": final["active_units"],
        "active_units_per_site": final["active_units_per_site"],
        "latent_dims": final["latent_dims"],
    }


def _subsets(
    data: ImageData,
    likelihood: str,
    seed: int,
    train_size: int | None,
    test_size: int | None,
) -> tuple[ImageData, torch.Tensor, str | None, str]:
    """The representation :func:`prepare_data` picks for ``likelihood``, cut to the first
    ``train_size``/``test_size`` images: ``(data with that test split, train_x, binarize,
    kind)``."""
    train_x, test_x, binarize, kind = prepare_data(data, likelihood, test_seed=seed)
    test_y = data.test_y[:test_size] if data.test_y is not None else None
    data = replace(data, test_x=test_x[:test_size], test_y=test_y)
    return data, train_x[:train_size], binarize, kind


def _model_line(
    n_params: int,
    n_train: int,
    n_test: int,
    device: torch.device,
    ctx: DistributedContext | None,
    batch_size: int,
) -> str:
    procs = "" if ctx is None else f" x {ctx.world_size} processes (batch {batch_size} each)"
    return (
        f"model: {n_params:,} parameters; training on {n_train:,} images, testing on "
        f"{n_test:,}, device {device}{procs}"
    )


def _timing(history: list[dict]) -> dict[str, Any]:
    train_seconds = sum(r["seconds"] for r in history)
    return {
        "epochs": len(history),
        "train_seconds": train_seconds,
        "seconds_per_epoch": train_seconds / max(1, len(history)),
    }


def run_experiment(
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    dataset: str = "mnist",
    data_dir: str | None = None,
    out_dir: str | Path = "runs/mnist",
    resume: bool = False,
    train_size: int | None = None,
    test_size: int | None = None,
    figures: bool = True,
    log: Callable[[str], None] = print,
    data: ImageData | None = None,
    distributed: bool = False,
    overwrite: bool = False,
    override: tuple[str, ...] = (),
    image_shape: tuple[int, ...] | None = None,
    callbacks: Iterable[Callback | Callable[[dict], None]] = (),
    gold: GoldStandard | None = None,
) -> dict[str, Any]:
    """Train and evaluate a VAE on MNIST or Fashion-MNIST; write everything to ``out_dir``.

    ``dataset`` may also be the path of the user's own file or image folder (see
    :func:`~pyro_vae.load_dataset`; ``image_shape`` for images the file cannot tell the shape
    of); ``model_config.x_dim`` is taken from the data. ``train_size``/``test_size`` take the
    first images of each split (smoke runs). ``data`` can be passed instead of a dataset name.
    Returns the dict written to ``results.json``.

    ``distributed=True``: every process of the initialized ``torch.distributed`` group calls this
    with the same arguments (see :mod:`pyro_vae.training.distributed`); they train one model
    together (``train_config.batch_size`` per process), shard the test evaluation and return
    the same results; only rank 0 logs and writes ``out_dir`` (checked first,
    :func:`check_out_dir`: a run there needs ``resume``, ``override`` naming the settings that
    may change, or ``overwrite``). ``gold`` adds AIS and the inference gaps on the first test
    images (:mod:`~pyro_vae.experiments.gold_standard`). ``callbacks`` (loggers such as
    :class:`~pyro_vae.experiments.loggers.TensorBoardLogger`) see the run on rank 0, from its
    start (the config with the data set) to its end (the ``results.json`` dict).
    """
    clock = {"start": time.perf_counter()}
    callbacks = CallbackList(callbacks)  # a wrong one fails here, before any work
    ctx = get_context() if distributed else None
    _refuse_gold_under_ddp(ctx, gold)
    main = ctx is None or ctx.is_main
    log = log if main else _silent
    device = _run_device(train_config, ctx)
    out = Path(out_dir)
    if main:
        check_out_dir(out, resume=resume, overwrite=overwrite)
    if data is None:
        data = _load_data(dataset, data_dir, ctx, image_shape)
    log(f"data: {data.name} from {data.source}")
    data, train_x, binarize, kind = _subsets(
        data, model_config.likelihood, train_config.seed, train_size, test_size
    )
    test_x = data.test_x.to(device)
    train_config = replace(train_config, binarize=binarize)
    model_config = for_images(model_config, data)
    clock["data"] = time.perf_counter()
    vae, n_params = _model(model_config, train_config, len(train_x), len(test_x), device, ctx, log)
    run_info = {**_data_entries(data, kind, len(train_x)), "num_parameters": n_params}
    in_training = [lambda r: log(epoch_line(r)), _InTraining(callbacks, run_info)]
    kw = dict(out_dir=out, resume=resume, distributed=distributed, override=override)
    result = train(vae, train_x, test_x, train_config, callbacks=in_training, **kw)
    clock["trained"] = time.perf_counter()
    try:
        final = _final_evaluation(vae, result, test_x, train_config, ctx)
        clock["evaluated"] = time.perf_counter()
        setup = _setup(model_config, train_config, device, n_params, ctx)
        results = {**run_info, **_metrics(final), **_timing(result.history), **setup}
        if main:
            report = (out, figures, gold, train_config, clock, callbacks, log)
            _finish(vae, data, test_x, result, final, results, *report)
    except BaseException as e:
        if main:
            callbacks.on_run_error(e)
        raise
    return results


def _finish(
    vae,
    data,
    test_x,
    result,
    final,
    results,
    out,
    figures,
    gold,
    train_config,
    clock,
    callbacks,
    log,
):
    """On rank 0: report a new final evaluation, draw the figures, write ``results.json`` and
    the summary, add AIS and the gaps, and end the callbacks' run."""
    if final is not result.evaluation:  # a new evaluation, after training
        callbacks.on_evaluation({**final, "epoch": len(result.history)})
    if figures:
        vae.eval()
        results["figures"] = _figures(vae, data, test_x, result.history, out)
        callbacks.on_figures([out / name for name in results["figures"]])
    clock["end"] = time.perf_counter()
    results["wall_seconds"] = _wall_seconds(clock, result.eval_seconds)
    atomic_write_json(out / RESULTS_NAME, results)
    log(summary(results, out))
    if gold is not None and gold.enabled:
        _add_gold(vae, test_x, gold, train_config, results, out, log)
    callbacks.on_run_end(results)


def _model(model_config, train_config, n_train: int, n_test: int, device, ctx, log):
    """The model of ``model_config`` (its initial weights from the seed alone) and its size."""
    torch.manual_seed(train_config.seed)
    vae = build_model(model_config)
    n_params = sum(p.numel() for p in vae.parameters())
    log(_model_line(n_params, n_train, n_test, device, ctx, train_config.batch_size))
    return vae, n_params


def _refuse_gold_under_ddp(ctx, gold: GoldStandard | None) -> None:
    if ctx is not None and gold is not None and gold.enabled:
        raise ValueError(
            "AIS and the inference gaps (--ais-steps, --gaps) run in one process: train with "
            "torchrun without them, then rerun the same command in one process with --resume "
            "and them (the finished run is evaluated again)"
        )


def _data_entries(data: ImageData, kind: str, n_train: int) -> dict[str, Any]:
    """What ``results.json`` (and the run-start config of the callbacks) says of the data."""
    return {
        "dataset": data.name,
        "data_source": data.source,
        "data_kind": kind,
        "image_shape": list(data.image_shape),
        "train_size": n_train,
        "test_size": len(data.test_x),
    }


def _add_gold(vae, test_x, gold, train_config, results, out, log) -> None:
    """AIS and the gaps into ``results`` (already written without them), written again. A
    failure is recorded and said; the rest of the run's results stay as written."""
    t0 = time.perf_counter()
    kw = dict(eval_samples=train_config.eval_samples, seed=train_config.seed, log=log)
    try:
        results.update(evaluate_gold(vae, test_x, gold, **kw))
    except Exception as e:  # noqa: BLE001 - the trained run must not be lost to it
        results["gold_standard_error"] = f"{type(e).__name__}: {e}"
        log(
            f"warning: AIS / the inference gaps failed ({results['gold_standard_error']}); "
            f"{out / RESULTS_NAME} holds the run's other results"
        )
    seconds = time.perf_counter() - t0
    results["wall_seconds"]["evaluation"] += seconds
    results["wall_seconds"]["total"] += seconds
    atomic_write_json(out / RESULTS_NAME, results)


class _InTraining(Callback):
    """The run's callbacks as ``train`` calls them: the run-start config completed with the
    data set; the run's end left to :func:`run_experiment` (after the figures)."""

    def __init__(self, callbacks: CallbackList, run_info: dict[str, Any]) -> None:
        self.callbacks, self.run_info = callbacks, run_info

    def on_run_start(self, config):
        self.callbacks.on_run_start({**config, **self.run_info})

    def on_epoch_end(self, metrics):
        self.callbacks.on_epoch_end(metrics)

    def on_evaluation(self, results):
        self.callbacks.on_evaluation(results)

    def on_run_error(self, error):
        self.callbacks.on_run_error(error)


def _wall_seconds(clock: dict[str, float], eval_in_training: float) -> dict[str, float]:
    """Where this call's wall time went: loading and preparing the data; training (``train``
    less its test evaluations, model building included); evaluating (those evaluations and the
    final one, when it was not the last epoch's; AIS and the gaps are added when they ran); the
    figures; and in all."""
    return {
        "data": clock["data"] - clock["start"],
        "training": clock["trained"] - clock["data"] - eval_in_training,
        "evaluation": eval_in_training + clock["evaluated"] - clock["trained"],
        "figures": clock["end"] - clock["evaluated"],
        "total": clock["end"] - clock["start"],
    }


def _setup(model_config, train_config, device, n_params: int, ctx) -> dict[str, Any]:
    return {
        "device": device_name(device),
        "num_parameters": n_params,
        "world_size": 1 if ctx is None else ctx.world_size,
        "model": model_config.to_dict(),
        "train": train_config.to_dict(),
        "torch": torch.__version__,
    }


def check_out_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Fail before any work if ``out`` cannot hold this run: a file where the folder (or one of
    its parents) should be, a folder this process cannot write, a run already there without
    ``resume``/``overwrite``, or ``resume`` with nothing to resume."""
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            raise FileExistsError(
                f"--out {out}: {parent} is a file, not a folder; choose another --out"
            )
    checkpoint = out / CHECKPOINT_NAME
    held = [n for n in (CHECKPOINT_NAME, RESULTS_NAME, METRICS_NAME) if (out / n).exists()]
    if resume and not checkpoint.exists():
        raise FileNotFoundError(
            f"--resume: there is no checkpoint at {checkpoint}; drop --resume to start the run, "
            f"or point --out at the run to continue"
        )
    if held and not resume and not overwrite:
        raise FileExistsError(
            f"--out {out} already holds a run ({', '.join(held)}); pass --resume to continue it, "
            f"--overwrite to start again in it, or choose another --out"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".{RESULTS_NAME}.probe.tmp"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise PermissionError(
            f"--out {out} cannot be written ({e.strerror or e}); choose a folder you can write"
        ) from e


def epoch_line(r: dict, prefix: str = "") -> str:
    """One log line for an epoch's metrics record (``prefix`` names the run, e.g. its estimator)."""
    parts = [f"{prefix}epoch {r['epoch']:>4}", f"train ELBO {r['train_elbo']:9.3f}"]
    if "test_elbo" in r:
        parts.append(f"test ELBO {r['test_elbo']:9.3f}")
    if "test_log_likelihood" in r:
        parts.append(f"test log p(x) {r['test_log_likelihood']:9.3f} (K={r['eval_samples']})")
    parts.append(f"{r['seconds']:.1f} s")
    return " | ".join(parts)


def _units(results: dict) -> str:
    """``"20/20"``, or ``"z1 37/100, z2 9/50"`` for several latent sites."""
    active, dims = results["active_units_per_site"], results["latent_dims"]
    if len(dims) == 1:
        return f"{results['active_units']}/{sum(dims.values())}"
    return ", ".join(f"{k} {active[k]}/{dims[k]}" for k in dims)


def summary(results: dict, out: Path) -> str:
    se = results["test_log_likelihood_stderr"]
    world = results.get("world_size", 1)
    procs = f" x {world} processes" if world > 1 else ""
    lines = [
        "",
        f"== {results['dataset']} ({results['data_kind']}), {results['epochs']} epochs, "
        f"{results['device']}{procs}, {results['train_seconds']:.0f} s training ==",
        f"test log-likelihood  {results['test_log_likelihood']:.2f} +/- {1.96 * se:.2f} nats "
        f"(K={results['eval_samples']} importance samples, 95% CI over images)",
        f"test ELBO            {results['test_elbo']:.2f} nats",
        f"KL(q || prior)       {results['kl']:.2f} nats, active units {_units(results)}",
        f"written to           {out}/ ({RESULTS_NAME}, metrics.jsonl, checkpoint.pt"
        f"{', figures' if results.get('figures') else ''})",
    ]
    for line in gold_lines(results):
        lines.insert(-1, line)
    wall = results.get("wall_seconds")
    if wall:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in wall.items() if k != "total")
        lines.insert(-1, f"wall time            {wall['total']:.1f} s ({parts})")
    if not math.isfinite(results["test_log_likelihood"]):
        lines.append("warning: the log-likelihood is not finite")
    return "\n".join(lines)
