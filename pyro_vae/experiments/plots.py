"""Paper-quality figures for VAE experiments, drawn with matplotlib only.

Every function here builds a :class:`matplotlib.figure.Figure` with an Agg canvas
directly, so it never touches pyplot's global state or the backend a user has chosen.
Inputs may be numpy arrays, torch tensors (detached and moved to the CPU here), or
nested sequences. Each function writes a PNG atomically (see :mod:`pyro_vae._io`),
releases its figure and returns the written :class:`~pathlib.Path`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from pyro_vae._io import atomic_write

__all__ = [
    "pca_project",
    "plot_image_grid",
    "plot_latent_space",
    "plot_manifold",
    "plot_reconstructions",
    "plot_training_curves",
]

DEFAULT_DPI = 150

# Inches per displayed image in grids; 28 px at 150 dpi over 0.55 in is ~3 px per pixel.
_CELL_INCHES = 0.55
_MAX_FIG_WIDTH = 10.0
_MIN_FIG_WIDTH = 2.5
# Slack for floating-point round-off when checking that pixel values lie in [0, 1].
_RANGE_TOL = 1e-4
_TITLE_INCHES = 0.35
_ROW_LABEL_SIZE = 9
# Markers of successive series (estimators) in the comparison figures.
_MARKERS = "osD^vP*X<>"


# --------------------------------------------------------------------------- helpers


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert a numpy array, torch tensor or nested sequence to a float64 array."""
    # Duck-typed torch.Tensor check, so that this module never has to import torch.
    # ``double()`` also covers dtypes numpy lacks (bfloat16) and integer/bool tensors.
    if hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "double"):
        x = x.detach().cpu().double().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric array-like, got {type(x).__name__}") from exc
    return arr


def _to_labels(labels: Any, n: int) -> np.ndarray:
    arr = _to_numpy(labels, "labels").reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"labels has {arr.shape[0]} entries but z has {n} rows")
    if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
        raise ValueError("labels must be integer class indices")
    if arr.size and arr.min() < 0:
        raise ValueError(f"labels must be non-negative class indices, got {int(arr.min())}")
    return arr.astype(np.int64)


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | os.PathLike, dpi: int) -> Path:
    """Write ``fig`` as a PNG atomically, then release it."""
    if dpi <= 0:
        raise ValueError(f"dpi must be positive, got {dpi}")
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi))
    finally:
        fig.clear()


def _parse_image_shape(image_shape: Any) -> tuple[int, int, int]:
    """Return ``(height, width, channels)`` for ``(H, W)`` or channel-first ``(C, H, W)``."""
    try:
        shape = tuple(int(s) for s in image_shape)
    except TypeError as exc:
        raise ValueError(f"image_shape must be a tuple like (28, 28), got {image_shape!r}") from exc
    if len(shape) == 2:
        h, w, c = shape[0], shape[1], 1
    elif len(shape) == 3 and shape[0] in (1, 3):
        c, h, w = shape
    else:
        raise ValueError(
            f"image_shape must be (H, W), (1, H, W) or (3, H, W), got {tuple(image_shape)}"
        )
    if h <= 0 or w <= 0:
        raise ValueError(f"image_shape must have positive sizes, got {tuple(image_shape)}")
    return h, w, c


def _as_images(images: Any, image_shape: Any, name: str = "images") -> np.ndarray:
    """Validate flat images ``[N, D]`` and reshape them to ``[N, H, W]`` or ``[N, H, W, 3]``."""
    h, w, c = _parse_image_shape(image_shape)
    d = h * w * c
    arr = _to_numpy(images, name)
    if arr.ndim == 1:
        arr = arr[None, :]
    elif arr.ndim > 2:
        arr = arr.reshape(arr.shape[0], -1)
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty; need at least one image")
    if arr.shape[1] != d:
        raise ValueError(
            f"{name} have D={arr.shape[1]} values per image but image_shape "
            f"{tuple(image_shape)} needs D={d}"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contain NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
        raise ValueError(
            f"{name} must lie in [0, 1] (pixel intensities or Bernoulli means), "
            f"got range [{lo:.3g}, {hi:.3g}]; pass probabilities, not logits"
        )
    arr = np.clip(arr, 0.0, 1.0)
    if c == 1:
        return arr.reshape(-1, h, w)
    return arr.reshape(-1, c, h, w).transpose(0, 2, 3, 1)


def _tile_rows(
    rows: list[np.ndarray],
    ncol: int,
    pad: int = 1,
    pad_value: float = 1.0,
    row_gaps: Sequence[int] | None = None,
) -> tuple[np.ndarray, list[float]]:
    """Lay out rows of images ``[k, H, W(, 3)]`` (k <= ncol) on one canvas.

    ``row_gaps[i]`` extra pixels go above row ``i``. Returns the canvas and the vertical
    pixel centre of each row (for row labels). Missing tiles are filled with ``pad_value``.
    """
    h, w = rows[0].shape[1:3]
    extra = tuple(rows[0].shape[3:])
    gaps = list(row_gaps) if row_gaps is not None else [0] * len(rows)
    height = pad + sum(h + pad + g for g in gaps)
    width = pad + ncol * (w + pad)
    canvas = np.full((height, width, *extra), pad_value, dtype=np.float64)
    centres = []
    y = pad
    for row, gap in zip(rows, gaps, strict=True):
        y += gap
        for j, img in enumerate(row):
            x = pad + j * (w + pad)
            canvas[y : y + h, x : x + w] = img
        centres.append(y + (h - 1) / 2)
        y += h + pad
    return canvas, centres


def _canvas_figure(
    canvas: np.ndarray, ncol: int, title: str | None, row_labels: Sequence[str] = ()
) -> tuple[Figure, Any]:
    """A figure whose axes hold ``canvas`` exactly, with no white margins to trim.

    The width allots about :data:`_CELL_INCHES` per image; room is added on the left for
    ``row_labels`` (measured) and on top for ``title``.
    """
    width = min(max(ncol * _CELL_INCHES, _MIN_FIG_WIDTH), _MAX_FIG_WIDTH)
    height = width * canvas.shape[0] / canvas.shape[1]
    fig = Figure()
    FigureCanvasAgg(fig)
    left = 0.0
    if row_labels:
        renderer = fig.canvas.get_renderer()
        widest = max(
            fig.text(0, 0, label, fontsize=_ROW_LABEL_SIZE).get_window_extent(renderer).width
            for label in row_labels
        )
        fig.texts.clear()
        left = widest / fig.dpi + 0.12  # label plus tick padding
    top = _TITLE_INCHES if title else 0.0
    fig.set_size_inches(left + width, height + top)
    ax = fig.add_axes((left / (left + width), 0.0, width / (left + width), height / (height + top)))
    if title:
        ax.set_title(title)
    return fig, ax


def _show_canvas(ax: Any, canvas: np.ndarray, cmap: str) -> None:
    kwargs: dict[str, Any] = {"interpolation": "nearest", "vmin": 0.0, "vmax": 1.0}
    if canvas.ndim == 2:
        kwargs["cmap"] = cmap
    ax.imshow(canvas, **kwargs)


# ------------------------------------------------------------------------ training


def _finite_float(value: Any) -> float | None:
    if value is None:
        return None
    try:
        out = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


_CURVE_KEYS = ("train_elbo", "test_elbo", "test_log_likelihood")


def _training_series(
    history: Sequence[Mapping[str, Any]],
) -> dict[str, tuple[list[float], list[float]]]:
    """``{key: (epochs, values)}`` for each key of :data:`_CURVE_KEYS`, finite values only."""
    if isinstance(history, Mapping) or not isinstance(history, Sequence):
        raise TypeError("history must be a list of per-epoch dicts")
    if len(history) == 0:
        raise ValueError("history is empty; need at least one epoch")
    series: dict[str, tuple[list[float], list[float]]] = {key: ([], []) for key in _CURVE_KEYS}
    for i, record in enumerate(history):
        if not isinstance(record, Mapping):
            raise TypeError(f"history[{i}] must be a dict, got {type(record).__name__}")
        epoch = _finite_float(record.get("epoch", i + 1))
        if epoch is None:
            raise ValueError(f"history[{i}] has a non-numeric epoch {record.get('epoch')!r}")
        for key, (xs, ys) in series.items():
            value = _finite_float(record.get(key))
            if value is not None:
                xs.append(epoch)
                ys.append(value)
    if not any(ys for _, ys in series.values()):
        raise ValueError(
            "history has no finite 'train_elbo', 'test_elbo' or 'test_log_likelihood' values"
        )
    return series


_ELBO_STYLES = {
    "train_elbo": {"label": "train ELBO", "color": "C0", "linestyle": "-"},
    "test_elbo": {"label": "test ELBO", "color": "C1", "linestyle": "--"},
}


def _plot_elbo_lines(ax: Any, series: Mapping[str, tuple[list[float], list[float]]]) -> None:
    for key, style in _ELBO_STYLES.items():
        xs, ys = series[key]
        if ys:
            ax.plot(
                xs,
                ys,
                marker="o" if len(ys) <= 30 else None,
                markersize=3.5,
                lw=1.6,
                **style,
            )


def _plot_ll_markers(ax: Any, xs: list[float], ys: list[float], label: str) -> None:
    if ys:
        ax.plot(
            xs,
            ys,
            linestyle="none",
            marker="D",
            markersize=5.5,
            color="C2",
            markeredgecolor="black",
            markeredgewidth=0.6,
            label=label,
            zorder=3,
        )


def _epoch_axis(ax: Any, epochs: set[float]) -> None:
    """Integer epoch ticks; a single epoch gets one labelled tick, the point centred."""
    if len(epochs) == 1:
        (x0,) = epochs
        ax.set_xlim(x0 - 1, x0 + 1)
        ax.set_xticks([x0])
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_training_curves(
    history: Sequence[Mapping[str, Any]],
    path: str | os.PathLike,
    *,
    title: str | None = "Training curves (higher is better)",
    ll_label: str = "test log-likelihood (importance sampled)",
    ylim: tuple[float, float] | None = None,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Plot train/test ELBO per epoch and test log-likelihood estimates where present.

    ``history`` is a list of per-epoch dicts with optional keys ``epoch`` (defaults to the
    1-based position), ``train_elbo``, ``test_elbo`` and ``test_log_likelihood`` (all per
    datapoint, in nats; higher is better). Missing, ``None`` and non-finite values are
    skipped. ``ll_label`` names the log-likelihood markers (e.g. ``"test log p(x), K=5000"``).
    """
    series = _training_series(history)
    fig = _new_figure(5.5, 3.6)
    ax = fig.add_subplot()
    _plot_elbo_lines(ax, series)
    _plot_ll_markers(ax, *series["test_log_likelihood"], label=ll_label)
    _epoch_axis(ax, {x for xs, _ in series.values() for x in xs})
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO, log-likelihood (nats per image)")
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.legend(loc="best", frameon=True, framealpha=0.9)
    if title:
        ax.set_title(title)
    return _save(fig, path, dpi)


# -------------------------------------------------------------------------- images


def plot_image_grid(
    images: Any,
    image_shape: Any,
    path: str | os.PathLike,
    nrow: int | None = None,
    title: str | None = None,
    *,
    cmap: str = "gray",
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Draw images ``[N, D]`` with values in [0, 1] as one tight grid.

    ``nrow`` is the number of images per row (as in torchvision's ``make_grid``); by
    default the grid is as square as possible. Images are separated by thin white lines.
    """
    imgs = _as_images(images, image_shape)
    n = imgs.shape[0]
    if nrow is None:
        ncol = math.ceil(math.sqrt(n))
    else:
        if int(nrow) != nrow or nrow < 1:
            raise ValueError(f"nrow (images per row) must be a positive integer, got {nrow!r}")
        ncol = min(int(nrow), n)
    rows = [imgs[i : i + ncol] for i in range(0, n, ncol)]
    canvas, _ = _tile_rows(rows, ncol)
    fig, ax = _canvas_figure(canvas, ncol, title)
    _show_canvas(ax, canvas, cmap)
    ax.set_axis_off()
    return _save(fig, path, dpi)


def plot_reconstructions(
    originals: Any,
    reconstructions: Any,
    image_shape: Any,
    path: str | os.PathLike,
    title: str | None = None,
    *,
    ncol: int = 10,
    cmap: str = "gray",
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Show each original above its reconstruction, ``ncol`` pairs per row group.

    With more than ``ncol`` images the figure has several groups, each an "original" row
    followed by a "reconstruction" row, with a wider gap between groups.
    """
    orig = _as_images(originals, image_shape, "originals")
    recon = _as_images(reconstructions, image_shape, "reconstructions")
    if orig.shape[0] != recon.shape[0]:
        raise ValueError(
            f"originals has {orig.shape[0]} images but reconstructions has {recon.shape[0]}"
        )
    if int(ncol) != ncol or ncol < 1:
        raise ValueError(f"ncol must be a positive integer, got {ncol!r}")
    n = orig.shape[0]
    ncol = min(int(ncol), n)
    group_gap = max(2, orig.shape[1] // 4)
    rows, gaps, labels = [], [], []
    for g, start in enumerate(range(0, n, ncol)):
        rows += [orig[start : start + ncol], recon[start : start + ncol]]
        gaps += [group_gap if g else 0, 0]
        labels += ["original", "reconstruction"]
    canvas, centres = _tile_rows(rows, ncol, row_gaps=gaps)
    fig, ax = _canvas_figure(canvas, ncol, title, row_labels=labels[:2])
    _show_canvas(ax, canvas, cmap)
    ax.set_xticks([])
    ax.set_yticks(centres, labels)
    ax.tick_params(axis="y", length=0, labelsize=_ROW_LABEL_SIZE)
    for spine in ax.spines.values():
        spine.set_visible(False)
    return _save(fig, path, dpi)


# -------------------------------------------------------------------------- latents


def pca_project(z: Any, n_components: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Project ``z`` ``[N, D]`` on its top principal components via an SVD.

    Returns ``(projection [N, n_components], explained_variance_ratio [n_components])``.
    Signs are fixed so that each component's largest-magnitude loading is positive, which
    makes the output deterministic.
    """
    x = _to_numpy(z, "z")
    if x.ndim != 2:
        raise ValueError(f"z must be a 2-D array [N, D], got shape {x.shape}")
    n, d = x.shape
    if n < 2:
        raise ValueError(f"PCA needs at least 2 points, got {n}")
    if not 1 <= n_components <= d:
        raise ValueError(f"n_components must be between 1 and D={d}, got {n_components}")
    if not np.all(np.isfinite(x)):
        raise ValueError("z contains NaN or infinite values")
    centred = x - x.mean(axis=0, keepdims=True)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    k = min(n_components, vt.shape[0])
    components = vt[:k]
    big = np.argmax(np.abs(components), axis=1)
    components = components * np.sign(components[np.arange(k), big])[:, None]
    proj = centred @ components.T
    var = s**2
    total = var.sum()
    ratio = var[:k] / total if total > 0 else np.zeros(k)
    if k < n_components:  # fewer points than components: the rest carry no variance
        proj = np.pad(proj, ((0, 0), (0, n_components - k)))
        ratio = np.pad(ratio, (0, n_components - k))
    return proj, ratio


def _class_name(label: int, class_names: Any) -> str:
    if class_names is None:
        return str(label)
    return str(class_names[label])


def _latent_codes(z: Any, method: str) -> np.ndarray:
    """``z`` as a finite ``[N, Dz]`` array (1-D codes as one column); checks ``method``."""
    x = _to_numpy(z, "z")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"z must be a non-empty 2-D array [N, Dz], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("z contains NaN or infinite values")
    if method not in ("auto", "pca", "direct"):
        raise ValueError(f"method must be 'auto', 'pca' or 'direct', got {method!r}")
    if method == "pca" and x.shape[1] < 2:
        raise ValueError(f"method='pca' needs Dz >= 2, got Dz={x.shape[1]}")
    return x


def _latent_labels(labels: Any, n: int, class_names: Any) -> np.ndarray | None:
    """Integer class labels (None: no labels), each with an entry in ``class_names``."""
    lab = _to_labels(labels, n) if labels is not None else None
    if lab is not None and class_names is not None:
        named = (
            set(class_names) if isinstance(class_names, Mapping) else set(range(len(class_names)))
        )
        missing = sorted({int(v) for v in np.unique(lab)} - named)
        if missing:
            raise ValueError(f"labels {missing} have no entry in class_names")
    return lab


def _latent_mode(method: str, dz: int) -> str:
    """``"direct"`` (the first two coordinates), ``"pca"`` or ``"strip"`` (1-D codes)."""
    if method == "auto":
        return "direct" if dz == 2 else "strip" if dz == 1 else "pca"
    if method == "direct" and dz == 1:
        return "strip"
    return method


def _class_palette(
    lab: np.ndarray | None, class_names: Any
) -> tuple[np.ndarray, int, ListedColormap | None]:
    """The classes present, how many colours the labels need, and a qualitative palette for up
    to 20 of them (None: more, drawn with a colour bar). The label value indexes the palette, so
    a class keeps its colour across plots."""
    present = np.unique(lab) if lab is not None else np.array([], dtype=np.int64)
    n_colors = int(present.max()) + 1 if present.size else 1
    if class_names is not None and not isinstance(class_names, Mapping):
        n_colors = max(n_colors, len(class_names))
    if n_colors <= 10:
        palette = ListedColormap(
            [tuple(c) for c in _tab_colors("tab10")[:n_colors]], name="classes"
        )
    elif n_colors <= 20:
        palette = ListedColormap(
            [tuple(c) for c in _tab_colors("tab20")[:n_colors]], name="classes"
        )
    else:
        palette = None
    return present, n_colors, palette


def _scatter_style(
    lab: np.ndarray | None,
    order: np.ndarray,
    palette: ListedColormap | None,
    n_colors: int,
    n: int,
) -> dict[str, Any]:
    """Marker size (smaller for more points), transparency and colours of the scatter."""
    size = float(np.clip(8.0 * math.sqrt(2000.0 / n), 0.5, 16.0))
    style: dict[str, Any] = {"s": size, "alpha": 0.6, "linewidths": 0}
    if lab is None:
        style["c"] = "C0"
    elif palette is not None:
        style["c"] = palette(lab[order])
    else:
        style.update(
            c=lab[order],
            cmap="viridis",
            norm=BoundaryNorm(np.arange(n_colors + 1) - 0.5, 256),
        )
    return style


def _scatter_strip(
    ax: Any,
    values: np.ndarray,
    lab: np.ndarray | None,
    present: np.ndarray,
    order: np.ndarray,
    rng: np.random.Generator,
    style: dict[str, Any],
    class_names: Any,
) -> Any:
    """1-D codes against a jittered row per class (one row without labels)."""
    n = len(values)
    if lab is not None:
        rows = {int(v): i for i, v in enumerate(present)}
        base = np.array([rows[int(v)] for v in lab], dtype=np.float64)
    else:
        base = np.zeros(n)
    y = base + rng.uniform(-0.35, 0.35, size=n)
    points = ax.scatter(values[order], y[order], **style)
    ax.set_xlabel("$z$")
    if lab is not None:
        ax.set_yticks(range(len(present)), [_class_name(int(v), class_names) for v in present])
        ax.set_ylabel("class")
        ax.invert_yaxis()
    else:
        ax.set_yticks([])
    return points


def _scatter_plane(
    ax: Any, x: np.ndarray, mode: str, order: np.ndarray, style: dict[str, Any]
) -> tuple[Any, str]:
    """Codes on their first two principal components or coordinates; returns the points and
    the default title."""
    dz = x.shape[1]
    if mode == "pca":
        xy, ratio = pca_project(x, 2)
        ax.set_xlabel(f"PC 1 ({100 * ratio[0]:.1f}% of variance)")
        ax.set_ylabel(f"PC 2 ({100 * ratio[1]:.1f}% of variance)")
        default_title = f"Latent space ({dz}-D, PCA projection)"
    else:
        xy = x[:, :2]
        ax.set_xlabel("$z_1$")
        ax.set_ylabel("$z_2$")
        default_title = "Latent space" if dz == 2 else f"Latent space (first 2 of {dz} dims)"
    points = ax.scatter(xy[order, 0], xy[order, 1], **style)
    ax.set_aspect("equal", adjustable="datalim")
    return points, default_title


def _class_legend(ax: Any, present: np.ndarray, palette: ListedColormap, class_names: Any) -> None:
    handles = [
        Line2D(
            [],
            [],
            linestyle="none",
            marker="o",
            markersize=6,
            markerfacecolor=palette(int(v)),
            markeredgewidth=0,
            label=_class_name(int(v), class_names),
        )
        for v in present
    ]
    ax.legend(
        handles=handles,
        loc="center left",
        bbox_to_anchor=(1.02, 0.5),
        frameon=False,
        handletextpad=0.3,
        borderaxespad=0.0,
        title="class",
    )


def _class_colorbar(fig: Figure, ax: Any, points: Any) -> None:
    # An opaque stand-in mappable, so the colour bar is not faded by the points' alpha.
    solid = ScalarMappable(norm=points.norm, cmap=points.cmap)
    cbar = fig.colorbar(solid, ax=ax, shrink=0.85)
    cbar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    cbar.set_label("class")


def plot_latent_space(
    z: Any,
    labels: Any,
    path: str | os.PathLike,
    method: str = "auto",
    class_names: Sequence[str] | Mapping[int, str] | None = None,
    title: str | None = None,
    *,
    seed: int = 0,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Scatter latent codes ``z`` ``[N, Dz]`` coloured by integer ``labels`` (or ``None``).

    ``method``: ``"auto"`` plots 2-D codes directly, 1-D codes as a jittered strip per
    class and higher-dimensional codes by PCA; ``"pca"`` forces PCA (Dz >= 2);
    ``"direct"`` plots the first two coordinates. ``class_names`` maps label indices to
    names (a sequence indexed by label, or a dict), e.g. ``ImageData.class_names``.
    ``title=None`` gives a short default title; ``title=""`` gives none.
    """
    x = _latent_codes(z, method)
    n = x.shape[0]
    lab = _latent_labels(labels, n, class_names)
    mode = _latent_mode(method, x.shape[1])
    present, n_colors, palette = _class_palette(lab, class_names)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)  # draw classes interleaved so none is hidden underneath
    style = _scatter_style(lab, order, palette, n_colors, n)
    # A legend names the classes of a palette; a strip's y axis already names them.
    use_legend = lab is not None and palette is not None
    fig = _new_figure(6.2 if use_legend else 5.2, 4.6)
    ax = fig.add_subplot()
    if mode == "strip":
        points = _scatter_strip(ax, x[:, 0], lab, present, order, rng, style, class_names)
        default_title, use_legend = "1-D latent space", False
    else:
        points, default_title = _scatter_plane(ax, x, mode, order, style)
    ax.grid(True, alpha=0.25, linewidth=0.5)
    if use_legend:
        _class_legend(ax, present, palette, class_names)
    elif lab is not None and palette is None:
        _class_colorbar(fig, ax, points)
    heading = default_title if title is None else title
    if heading:
        ax.set_title(heading)
    return _save(fig, path, dpi)


def _tab_colors(name: str) -> np.ndarray:
    from matplotlib import colormaps

    return np.asarray(colormaps[name].colors)


def _symmetric_tick_indices(n: int, max_ticks: int) -> list[int]:
    """Cell indices to label: both ends, mirror-symmetric, at least two cells apart."""
    k = max(2, min(max_ticks, (n - 1) // 2 + 1))
    if k % 2 != n % 2 and k > 2:  # same parity as n keeps the ticks mirror-symmetric
        k -= 1
    pos = np.linspace(0, n - 1, k)
    return sorted({math.floor(p + 0.5) if p <= (n - 1) / 2 else math.ceil(p - 0.5) for p in pos})


def _fmt_tick(value: float) -> str:
    text = f"{value:.2f}"
    if text == "-0.00":
        return "0.00"
    return "\u2212" + text[1:] if text.startswith("-") else text


def plot_manifold(
    decode_mean: Callable[[np.ndarray], Any],
    image_shape: Any,
    path: str | os.PathLike,
    n: int = 20,
    span: tuple[float, float] = (0.05, 0.95),
    *,
    title: str | None = None,
    cmap: str = "gray",
    max_ticks: int = 7,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """Decode an ``n`` x ``n`` grid over a 2-D latent space (Kingma & Welling, Fig. 4).

    Grid coordinates are standard-normal quantiles ``Phi^-1(p)`` at ``n`` evenly spaced
    probabilities ``p`` from ``span[0]`` to ``span[1]``, so each cell covers equal prior
    mass. ``decode_mean`` receives a float32 numpy array ``[n*n, 2]`` (convert with
    ``torch.from_numpy`` if needed) and returns ``[n*n, D]`` means in [0, 1] (array or
    tensor). ``z1`` increases to the right, ``z2`` upwards.
    """
    if not callable(decode_mean):
        raise TypeError("decode_mean must be a callable mapping z [M, 2] to images [M, D]")
    if int(n) != n or n < 2:
        raise ValueError(f"n must be an integer >= 2, got {n!r}")
    n = int(n)
    try:
        lo, hi = (float(s) for s in span)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"span must be a pair of probabilities (lo, hi), got {span!r}") from exc
    if not 0.0 < lo < hi < 1.0:
        raise ValueError(f"span must satisfy 0 < lo < hi < 1 (probabilities), got {span!r}")
    h, w, _ = _parse_image_shape(image_shape)
    std_normal = NormalDist()
    grid = np.array([std_normal.inv_cdf(p) for p in np.linspace(lo, hi, n)])
    z1, z2 = np.meshgrid(grid, grid[::-1])  # row 0 is the top, so it gets the largest z2
    zs = np.stack([z1.ravel(), z2.ravel()], axis=1).astype(np.float32)
    decoded = decode_mean(zs)
    imgs = _as_images(decoded, image_shape, "decode_mean output")
    if imgs.shape[0] != n * n:
        raise ValueError(f"decode_mean returned {imgs.shape[0]} images for {n * n} latent points")
    rows = [imgs[i * n : (i + 1) * n] for i in range(n)]
    canvas, _ = _tile_rows(rows, n, pad=0)
    width = min(max(n * 0.32, 3.5), 8.0)
    fig = _new_figure(width + 0.7, width * canvas.shape[0] / canvas.shape[1] + 0.6)
    ax = fig.add_subplot()
    _show_canvas(ax, canvas, cmap)
    idx = _symmetric_tick_indices(n, max_ticks)
    ax.set_xticks([(i + 0.5) * w - 0.5 for i in idx], [_fmt_tick(grid[i]) for i in idx])
    ax.set_yticks([(i + 0.5) * h - 0.5 for i in idx], [_fmt_tick(grid[::-1][i]) for i in idx])
    ax.tick_params(labelsize=9, length=3)
    ax.set_xlabel("$z_1$")
    ax.set_ylabel("$z_2$")
    if title:
        ax.set_title(title)
    return _save(fig, path, dpi)


# ----------------------------------------------------------------- estimator comparisons


def _seed_curves(
    runs: Sequence[Sequence[Mapping[str, Any]]], key: str, label: str
) -> dict[float, list[float]]:
    """``{epoch: [value per run that has one]}`` over the histories ``runs`` of one series."""
    if isinstance(runs, Mapping) or not isinstance(runs, Sequence):
        raise TypeError(f"curves[{label!r}] must be a list of histories (one per seed)")
    at: dict[float, list[float]] = {}
    for history in runs:
        if isinstance(history, Mapping) or not isinstance(history, Sequence):
            raise TypeError(f"curves[{label!r}] must hold histories (lists of per-epoch dicts)")
        for i, record in enumerate(history):
            if not isinstance(record, Mapping):
                raise TypeError(f"curves[{label!r}] has a record that is not a dict: {record!r}")
            epoch = _finite_float(record.get("epoch", i + 1))
            value = _finite_float(record.get(key))
            if epoch is not None and value is not None:
                at.setdefault(epoch, []).append(value)
    return at


def plot_log_likelihood_curves(
    curves: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]],
    path: str | os.PathLike,
    *,
    key: str = "test_log_likelihood",
    title: str | None = "Test log-likelihood during training (mean ± 1 s.d. over seeds)",
    ylabel: str = "test log-likelihood (nats per image)",
    dpi: int = DEFAULT_DPI,
) -> Path:
    """One line per series (e.g. per estimator): the mean over seeds of ``key`` against the
    epoch, with a band of ± 1 sample standard deviation where two or more seeds have a value.

    ``curves`` maps a series label to its runs, one history per seed; a history is a list of
    per-epoch dicts as :func:`~pyro_vae.train` records them (``epoch``, ``key``). Epochs where a
    run has no finite value are skipped for that run, so the mean at an epoch is over the seeds
    that were evaluated there (runs of unequal length under a time budget).
    """
    if not isinstance(curves, Mapping) or not curves:
        raise ValueError("curves must be a non-empty dict {label: [history per seed]}")
    fig = _new_figure(6.0, 4.0)
    ax = fig.add_subplot()
    drawn = 0
    all_x: set[float] = set()
    for i, (label, runs) in enumerate(curves.items()):
        at = _seed_curves(runs, key, str(label))
        if not at:
            continue
        xs = np.array(sorted(at))
        stats = [(np.mean(at[x]), np.std(at[x], ddof=1) if len(at[x]) > 1 else np.nan) for x in xs]
        mean = np.array([m for m, _ in stats])
        std = np.array([s for _, s in stats])
        color = f"C{i % 10}"
        n_seeds = len(runs)
        ax.plot(
            xs,
            mean,
            color=color,
            marker=_MARKERS[i % len(_MARKERS)],
            markersize=4.5,
            lw=1.6,
            label=f"{label}, {n_seeds} seed{'s' if n_seeds != 1 else ''}",
        )
        has_band = np.isfinite(std)
        if has_band.any():
            ax.fill_between(
                xs,
                np.where(has_band, mean - std, mean),
                np.where(has_band, mean + std, mean),
                color=color,
                alpha=0.15,
                linewidth=0,
            )
        all_x.update(xs.tolist())
        drawn += 1
    if not drawn:
        raise ValueError(f"no run in curves has a finite {key!r} value")
    _epoch_axis(ax, all_x)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.legend(loc="lower right", frameon=True, framealpha=0.9, fontsize=9)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path, dpi)


def _plain_log_labels(axis: Any, lo: float, hi: float) -> None:
    """Label a log axis with plain numbers (0.5, 2, 50) instead of 5 x 10^-1; over less than
    about 1.5 decades the 2x and 5x minor ticks get labels too."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    def plain(value: float, _pos: Any = None) -> str:
        return f"{value:g}"

    def two_and_five(value: float, _pos: Any = None) -> str:
        if value <= 0:
            return ""
        mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
        return f"{value:g}" if round(mantissa, 6) in (2.0, 5.0) else ""

    axis.set_major_formatter(FuncFormatter(plain))
    few_decades = lo > 0 and hi / lo < 30
    axis.set_minor_formatter(FuncFormatter(two_and_five) if few_decades else NullFormatter())


_SNR_GROUP_TITLES = {
    "inference": "inference network (encoder)",
    "generative": "generative network (decoder)",
}


def _snr_points(label: Any, by_k: Any, group: str) -> list[tuple[float, float]]:
    """``(K, SNR)`` pairs of one estimator for one group, sorted by K; non-finite and
    non-positive SNRs are skipped."""
    if not isinstance(by_k, Mapping):
        raise TypeError(f"snr[{label!r}] must be a dict {{K: {{group: SNR}}}}")
    points = []
    for k, values in by_k.items():
        kf = _finite_float(k)
        if kf is None or kf <= 0:
            raise ValueError(f"snr[{label!r}] has K={k!r}; K must be a positive number")
        v = _finite_float(values.get(group)) if isinstance(values, Mapping) else None
        if v is not None and v > 0:
            points.append((kf, v))
    return sorted(points)


def _plot_snr_line(ax: Any, i: int, label: Any, points: list[tuple[float, float]]) -> None:
    ks, vs = zip(*points, strict=True)
    # Estimators can give identical gradients (DReG's and IWAE's decoder gradients, STL's and
    # the ELBO's): later lines are thinner, dashed and have smaller markers, so that a line
    # drawn over another leaves it visible.
    ax.plot(
        ks,
        vs,
        color=f"C{i % 10}",
        marker=_MARKERS[i % len(_MARKERS)],
        markersize=max(3.0, 8.0 - 1.5 * (i % 4)),
        lw=max(1.0, 2.6 - 0.5 * (i % 4)),
        linestyle=("-", "--", "-.", (0, (5, 1.5, 1, 1.5, 1, 1.5)))[i % 4],
        label=str(label),
    )


def _plot_reference_slopes(
    ax: Any, anchor: tuple[float, float], ks: set[float], labelled: bool
) -> None:
    """Faint dotted guides proportional to ``sqrt(K)`` and ``1/sqrt(K)`` through ``anchor``."""
    k0, v0 = anchor
    grid = np.geomspace(min(ks), max(ks), 50)
    for power, text in ((0.5, r"$\propto\sqrt{K}$"), (-0.5, r"$\propto 1/\sqrt{K}$")):
        ax.plot(
            grid,
            v0 * (grid / k0) ** power,
            color="0.55",
            linestyle=":",
            lw=1.0,
            zorder=0,
            label=text if labelled else None,
        )


def _plot_snr_panel(
    ax: Any,
    snr: Mapping[str, Mapping[int, Mapping[str, float]]],
    group: str,
    all_k: set[float],
    reference_slopes: bool,
    labelled: bool,
) -> int:
    """One group's lines (adding their K values to ``all_k``); returns how many were drawn."""
    anchor = None
    drawn = 0
    for i, (label, by_k) in enumerate(snr.items()):
        points = _snr_points(label, by_k, group)
        if not points:
            continue
        _plot_snr_line(ax, i, label, points)
        all_k.update(k for k, _ in points)
        drawn += 1
        if anchor is None:
            anchor = points[0]
    if anchor is not None and reference_slopes and len(all_k) > 1:
        _plot_reference_slopes(ax, anchor, all_k, labelled)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("number of particles K")
    ax.set_title(_SNR_GROUP_TITLES.get(group, group), fontsize=10)
    ax.grid(True, which="major", alpha=0.3, linewidth=0.6)
    ax.grid(True, which="minor", alpha=0.12, linewidth=0.4)
    return drawn


def _label_snr_axes(axes: Sequence[Any], ks: set[float]) -> None:
    """The same K ticks on every panel, plain numbers on the log axes, one y label."""
    ticks = sorted(ks)
    for ax in axes:
        ax.set_xticks(ticks, [f"{k:g}" for k in ticks])
        ax.xaxis.set_minor_formatter("")
        _plain_log_labels(ax.yaxis, *ax.get_ylim())
    axes[0].set_ylabel("mean gradient SNR  |E g| / sd g")


def plot_snr_vs_k(
    snr: Mapping[str, Mapping[int, Mapping[str, float]]],
    path: str | os.PathLike,
    *,
    groups: Sequence[str] = ("inference", "generative"),
    title: str | None = "Gradient signal-to-noise ratio against the number of particles K",
    reference_slopes: bool = True,
    dpi: int = DEFAULT_DPI,
) -> Path:
    """One panel per parameter group, SNR against K on log-log axes, one line per estimator.

    ``snr`` maps an estimator label to ``{K: {group: SNR}}`` (e.g. the ``mean_snr`` of
    :func:`~pyro_vae.gradient_snr` at each K). Non-finite and non-positive SNRs are skipped.
    With ``reference_slopes`` each panel gets faint dotted guides proportional to ``sqrt(K)`` and
    ``1/sqrt(K)`` through the first line's first point: Rainforth et al. (2018) show the IWAE
    gradient's inference-network SNR falls like ``1/sqrt(K)`` while its generative-network SNR
    rises like ``sqrt(K)``.
    """
    if not isinstance(snr, Mapping) or not snr:
        raise ValueError("snr must be a non-empty dict {estimator: {K: {group: SNR}}}")
    groups = list(groups)
    if not groups:
        raise ValueError("groups is empty")
    fig = _new_figure(4.0 * len(groups) + 1.2, 3.9)
    axes = fig.subplots(1, len(groups), squeeze=False)[0]
    all_k: set[float] = set()  # over the panels drawn so far
    drawn = 0
    for j, (ax, group) in enumerate(zip(axes, groups, strict=True)):
        drawn += _plot_snr_panel(ax, snr, group, all_k, reference_slopes, labelled=j == 0)
    if not drawn:
        raise ValueError(f"snr has no finite positive value for the groups {groups}")
    _label_snr_axes(axes, all_k)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside right center", frameon=False, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path, dpi)


__all__ += ["plot_log_likelihood_curves", "plot_snr_vs_k"]
