"""The comparison written down: the Markdown table and its notes (``comparison.md``), the rows
as CSV (``comparison.csv``), everything as strict JSON (``comparison.json``), and the figures."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..._io import atomic_write_json, atomic_write_text
from .config import CompareConfig
from .figures import write_figures
from .text import count, display_name

__all__ = ["COMPARISON_FILES", "format_markdown_table", "write_report"]

#: What :func:`~pyro_vae.experiments.compare.compare_estimators` writes to ``out_dir`` (figures
#: unless ``figures=False``).
COMPARISON_FILES = (
    "comparison.md",
    "comparison.csv",
    "comparison.json",
    "log_likelihood_curves.png",
    "snr_vs_k.png",
)

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


def _delta_text(row: dict[str, Any], first: bool) -> str:
    if first:
        return "(baseline)"
    delta = _pm(row["delta_log_likelihood_mean"], row["delta_log_likelihood_std"])
    return delta if delta.startswith("−") or delta == "n/a" else "+" + delta


def _cells(r: dict[str, Any], first: bool) -> list[str]:
    return [
        f"`{r['estimator']}`",
        str(r["num_particles"]),
        _pm(r["test_log_likelihood_mean"], r["test_log_likelihood_std"]),
        _delta_text(r, first),
        _pm(r["test_elbo_mean"], r["test_elbo_std"]),
        _pm(r["kl_mean"], r["kl_std"]),
        _pm(r["active_units_mean"], r["active_units_std"], 1),
        _snr_text(r["inference_snr"]),
        _snr_text(r["generative_snr"]),
        _pm(r["seconds_per_epoch_mean"], r["seconds_per_epoch_std"], 1),
        _pm(r["epochs_mean"], r["epochs_std"], 1 if r["epochs_std"] else 0),
    ]


def format_markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows of :func:`~pyro_vae.experiments.compare.summarize_runs` as a Markdown table
    (nats per image, mean ± std)."""
    if not rows:
        raise ValueError("no rows to format")
    header = [h.format(base=rows[0]["delta_baseline"]) for h in _HEADER]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---", "---:"] + ["---:"] * (len(header) - 2)) + "|",
    ]
    lines += ["| " + " | ".join(_cells(r, i == 0)) + " |" for i, r in enumerate(rows)]
    return "\n".join(lines) + "\n"


def _architecture(m) -> str:
    """``784-400-20 VAE (mlp)`` or ``784-200-200-100-100-100-50 two-layer VAE (conv)``."""
    sizes = [m.x_dim, *m.hidden_dims, m.z_dim]
    if m.latent_layers == 2:
        sizes += [*m.hidden2_dims, m.z2_dim]
    kind = "two-layer VAE" if m.latent_layers == 2 else "VAE"
    return f"{'-'.join(map(str, sizes))} {kind} ({m.encoder} encoder, {m.decoder} decoder)"


def _setup_line(config: CompareConfig, info: dict[str, Any]) -> str:
    seeds = ", ".join(str(s) for s in config.seeds)
    m = config.model
    schedule = f" ({config.lr_schedule} schedule)" if config.lr_schedule else ""
    return (
        f"{info['train_size']:,} training and {info['test_size']:,} test images "
        f"(test set binarized once, fixed seed), {_architecture(m)} ({m.activation}, "
        f"{m.likelihood} likelihood, {m.prior} prior, {m.guide} guide), Adam lr {config.lr:g}"
        f"{schedule}, batch {config.batch_size}; equal budget: **{config.budget}**; "
        f"seeds {seeds}; device {info['device']}."
    )


def _table_notes(rows: Sequence[dict[str, Any]], config: CompareConfig) -> str:
    return (
        f"Test log p(x): the {config.eval_samples}-sample importance-sampled log-likelihood in "
        f"nats per image, mean ± sample std over the {count(len(config.seeds), 'seed')}, the "
        "same evaluation for every estimator whatever K it trained with. Δ: the paired "
        f"difference against {rows[0]['delta_baseline']} at the same seed (same initial weights "
        "and minibatch order), mean ± std over seeds. Test ELBO: the single-sample ELBO "
        "(the mean of log w over the evaluation's draws); KL: E_q[log q(z|x) - log p(z)] over "
        "every latent site under the model's own prior; active units: latent dimensions (of "
        "every site) with Cov_x E_q[z_u] > 0.01. s / epoch: training time only (this "
        "machine, under its load at the time)."
    )


def _snr_notes(config: CompareConfig, info: dict[str, Any]) -> str:
    return (
        f"SNR: the mean over parameters of |E g| / sd g over {config.snr_repeats} "
        "independent gradient estimates (Rainforth et al. 2018), for the encoder (inference) "
        "and the decoder (generative), all measured at the same fixed point: "
        f"{info['snr_checkpoint']}, on the first {info['snr_batch_size']} training images "
        "binarized with a fixed seed."
    )


def markdown(
    rows: Sequence[dict[str, Any]],
    snr: Sequence[dict[str, Any]],
    config: CompareConfig,
    info: dict[str, Any],
) -> str:
    """``comparison.md``: a heading, the setup, the table and what its columns mean."""
    text = [
        f"# ELBO estimators compared on {display_name(info['dataset'])}",
        "",
        _setup_line(config, info),
        "",
        format_markdown_table(rows),
        _table_notes(rows, config),
    ]
    if snr:
        text += ["", _snr_notes(config, info)]
    if rows and "approximation_gap_mean" in rows[0]:
        text += ["", _gaps_table(rows, config)]
    return "\n".join(text) + "\n"


def _gaps_table(rows: Sequence[dict[str, Any]], config: CompareConfig) -> str:
    """Where each estimator's gain comes from (Cremer, Li & Duvenaud 2018): the inference gap
    log p(x) - ELBO of its trained model, split into the approximation gap (the best local
    diagonal-Normal q) and the amortization gap (the encoder against that q)."""
    method = (
        f"AIS, {config.gaps_ais_steps} steps"
        if config.gaps_ais_steps
        else (f"IS, K = {config.eval_samples}")
    )
    lines = [
        f"## Where the gain comes from: inference gaps on the first {config.gaps_images} test "
        f"images (nats, mean ± std over seeds; log p(x) by {method})",
        "",
        "| estimator | K | log p(x) | ELBO, local q | ELBO, encoder | approximation gap "
        "| amortization gap |",
        "|:---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = [
            _pm(r[f"{k}_mean"], r[f"{k}_std"])
            for k in (
                "gap_log_likelihood",
                "elbo_local",
                "elbo_amortized",
                "approximation_gap",
                "amortization_gap",
            )
        ]
        lines.append(f"| `{r['estimator']}` | {r['num_particles']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def rows_csv(rows: Sequence[dict[str, Any]]) -> str:
    """``comparison.csv``: one line per row, every number (no seed list)."""
    columns = [k for k in rows[0] if k not in ("seeds", "delta_baseline")]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for r in rows:
        writer.writerow(["" if r[c] is None else r[c] for c in columns])
    return buf.getvalue()


def jsonable(obj: Any) -> Any:
    """NaN and infinities become None (strict JSON); tuples become lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def write_report(
    out: Path,
    rows: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    snr: list[dict[str, Any]],
    config: CompareConfig,
    info: dict[str, Any],
    figures: bool,
) -> dict[str, Path]:
    """Write :data:`COMPARISON_FILES` to ``out`` (the figures only with ``figures``); returns
    what was written, name -> path."""
    payload = {"config": config.to_dict(), **info, "rows": rows, "snr": snr, "runs": runs}
    files = {
        "comparison.md": atomic_write_text(
            out / "comparison.md", markdown(rows, snr, config, info)
        ),
        "comparison.csv": atomic_write_text(out / "comparison.csv", rows_csv(rows)),
        "comparison.json": atomic_write_json(out / "comparison.json", jsonable(payload)),
    }
    if figures:
        files.update(write_figures(out, runs, snr, config, info))
    return files
