"""Tests for pyro_vae.experiments.plots: every figure is a readable PNG, bad inputs fail clearly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
import torch

from pyro_vae.experiments import plots
from pyro_vae.experiments.plots import (
    pca_project,
    plot_image_grid,
    plot_latent_space,
    plot_manifold,
    plot_reconstructions,
    plot_training_curves,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SHAPE = (28, 28)
D = 28 * 28

FASHION = tuple("T-shirt/top Trouser Pullover Dress Coat Sandal Shirt Sneaker Bag Boot".split())


def assert_png(path: Path, min_height: int = 50, min_width: int = 50) -> np.ndarray:
    """The file is a complete PNG, the only file in its folder (no temp files left)."""
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert img.shape[0] >= min_height and img.shape[1] >= min_width
    assert sorted(os.listdir(path.parent)) == [path.name]
    return img


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, D))


def history(n_epochs: int = 5) -> list[dict]:
    out = []
    for e in range(1, n_epochs + 1):
        rec = {"epoch": e, "train_elbo": -150.0 + 5 * e, "test_elbo": -152.0 + 5 * e}
        rec["seconds"] = 1.5
        if e % 2 == 0:
            rec["test_log_likelihood"] = rec["test_elbo"] + 4.0
        out.append(rec)
    return out


@pytest.fixture
def out(tmp_path: Path) -> Path:
    """An empty folder per test, so assert_png can check for stray temp files."""
    folder = tmp_path / "figs"
    folder.mkdir()
    return folder


def test_never_imports_pyplot_or_switches_backend(tmp_path):
    code = (
        "import sys, matplotlib\n"
        "matplotlib.use('svg')\n"
        "from pyro_vae.experiments.plots import plot_image_grid\n"
        "plot_image_grid([[0.5] * 4], (2, 2), sys.argv[1])\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "x.png")], check=True, env=env)
    assert (tmp_path / "x.png").read_bytes()[:8] == PNG_SIGNATURE


# ----------------------------------------------------------------- training curves


def test_training_curves_png(out):
    path = plot_training_curves(history(), out / "curves.png")
    assert path == out / "curves.png"
    img = assert_png(path)
    assert img.shape[1] > img.shape[0]  # landscape


def test_training_curves_single_epoch_and_missing_keys(out):
    hist = [{"train_elbo": -120.0}]  # no epoch, no test values
    assert_png(plot_training_curves(hist, out / "one.png"))


def test_training_curves_skips_none_and_nan(out, tmp_path):
    hist = [
        {"epoch": 1, "train_elbo": torch.tensor(-130.0), "test_elbo": None},
        {"epoch": 2, "train_elbo": float("nan"), "test_elbo": np.float32(-118.0)},
        {"epoch": 3, "test_log_likelihood": -110.0},
    ]
    assert_png(plot_training_curves(hist, out / "gaps.png", title=None))


def test_training_curves_accepts_str_path_and_makes_folder(tmp_path):
    path = plot_training_curves(history(2), str(tmp_path / "new" / "dir" / "c.png"))
    assert isinstance(path, Path)
    assert_png(path)


@pytest.mark.parametrize(
    ("hist", "exc", "match"),
    [
        ([], ValueError, "history is empty"),
        ({"epoch": 1}, TypeError, "list of per-epoch dicts"),
        (
            [{"epoch": 1, "train_elbo": -1.0}, 3],
            TypeError,
            r"history\[1\] must be a dict",
        ),
        ([{"epoch": 1, "seconds": 2.0}], ValueError, "no finite 'train_elbo'"),
        ([{"epoch": "x", "train_elbo": -1.0}], ValueError, "non-numeric epoch"),
    ],
)
def test_training_curves_errors(out, hist, exc, match):
    with pytest.raises(exc, match=match):
        plot_training_curves(hist, out / "bad.png")
    assert os.listdir(out) == []


# ----------------------------------------------------------------------- image grid


def test_image_grid_png_and_layout(out):
    img = assert_png(plot_image_grid(images(64), SHAPE, out / "grid.png"))
    # 8 x 8 grid with no title: square within a pixel or two.
    assert abs(img.shape[0] - img.shape[1]) <= 2
    # Digits are legible: each 28-px image spans well over 28 output pixels.
    assert img.shape[1] / 8 > 2 * 28


def test_image_grid_title_nrow_tensor_and_channel_first(out):
    x = torch.from_numpy(images(10)).float().reshape(10, 1, 28, 28)
    img = assert_png(
        plot_image_grid(x, (1, 28, 28), out / "row.png", nrow=10, title="Samples"),
        min_height=20,
    )
    assert img.shape[1] > 4 * img.shape[0]  # one wide row


def test_image_grid_rgb_and_single_image(out):
    rgb = np.random.default_rng(1).random((1, 3 * 8 * 8))
    assert_png(plot_image_grid(rgb, (3, 8, 8), out / "rgb.png"))


def test_image_grid_bad_dimension_names_both_numbers(out):
    with pytest.raises(ValueError, match=r"D=780 .*image_shape \(28, 28\) needs D=784"):
        plot_image_grid(np.zeros((4, 780)), SHAPE, out / "bad.png")
    assert os.listdir(out) == []


@pytest.mark.parametrize(
    ("imgs", "shape", "kwargs", "match"),
    [
        (np.full((2, D), 2.5), SHAPE, {}, r"must lie in \[0, 1\].*not logits"),
        (np.full((2, D), np.nan), SHAPE, {}, "NaN or infinite"),
        (np.zeros((0, D)), SHAPE, {}, "empty"),
        (np.zeros((2, D)), (2, 28, 28), {}, r"image_shape must be \(H, W\)"),
        (np.zeros((2, D)), SHAPE, {"nrow": 0}, "nrow"),
        (np.array([["a"] * D]), SHAPE, {}, "numeric"),
    ],
)
def test_image_grid_errors(out, imgs, shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_image_grid(imgs, shape, out / "bad.png", **kwargs)
    assert os.listdir(out) == []


def test_image_grid_tolerates_float_roundoff(out):
    x = images(4)
    x[0, 0] = 1.0 + 1e-6
    x[0, 1] = -1e-7
    assert_png(plot_image_grid(x, SHAPE, out / "ok.png"))


# ------------------------------------------------------------------ reconstructions


@pytest.mark.parametrize("n", [1, 8, 20, 25])
def test_reconstructions_png(out, n):
    img = assert_png(
        plot_reconstructions(images(n), images(n, 1), SHAPE, out / "r.png", title="Recon"),
        min_height=40,
    )
    assert img.shape[1] > img.shape[0] or n == 1


def test_reconstructions_group_layout(out):
    # 20 pairs at 10 per row: two groups of (original, reconstruction) rows.
    tall = assert_png(plot_reconstructions(images(20), images(20), SHAPE, out / "a.png"))
    (out / "a.png").unlink()
    short = assert_png(plot_reconstructions(images(10), images(10), SHAPE, out / "a.png"))
    assert tall.shape[0] > 1.8 * short.shape[0]


def test_reconstructions_errors(out):
    with pytest.raises(ValueError, match="originals has 3 images but reconstructions has 4"):
        plot_reconstructions(images(3), images(4), SHAPE, out / "bad.png")
    with pytest.raises(ValueError, match="reconstructions have D=10 .* needs D=784"):
        plot_reconstructions(images(3), np.zeros((3, 10)), SHAPE, out / "bad.png")
    with pytest.raises(ValueError, match="ncol"):
        plot_reconstructions(images(3), images(3), SHAPE, out / "bad.png", ncol=0)
    assert os.listdir(out) == []


# ---------------------------------------------------------------------------- PCA


def test_pca_points_on_a_line():
    rng = np.random.default_rng(0)
    t = rng.normal(size=200)
    direction = np.array([1.0, 2.0, -3.0, 0.0, 0.5])
    z = 3.0 + t[:, None] * direction  # offset: PCA must centre the data
    proj, ratio = pca_project(z)
    assert proj.shape == (200, 2) and ratio.shape == (2,)
    assert ratio[0] == pytest.approx(1.0, abs=1e-12)
    assert ratio[1] == pytest.approx(0.0, abs=1e-12)
    # PC 1 is the line's coordinate, up to the sign fixed by the largest loading (-3 < 0
    # is the largest in magnitude here, so the component points along -direction).
    expected = -(t - t.mean()) * np.linalg.norm(direction)
    np.testing.assert_allclose(proj[:, 0], expected, atol=1e-9)
    np.testing.assert_allclose(proj[:, 1], 0.0, atol=1e-9)


def test_pca_known_variances_and_tensor_input():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(20000, 3)) * np.array([1.0, 3.0, 2.0])
    proj, ratio = pca_project(torch.from_numpy(z).float())
    np.testing.assert_allclose(ratio, np.array([9.0, 4.0]) / 14.0, atol=0.01)
    # Projections are uncorrelated and ordered by variance.
    cov = np.cov(proj.T)
    assert cov[0, 0] > cov[1, 1]
    assert abs(cov[0, 1]) < 0.05


def test_pca_degenerate_and_errors():
    proj, ratio = pca_project(np.ones((5, 3)))
    np.testing.assert_array_equal(proj, 0.0)
    np.testing.assert_array_equal(ratio, 0.0)
    with pytest.raises(ValueError, match="at least 2 points"):
        pca_project(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="n_components must be between 1 and D=1"):
        pca_project(np.zeros((5, 1)))
    with pytest.raises(ValueError, match=r"2-D array \[N, D\]"):
        pca_project(np.zeros(5))


# --------------------------------------------------------------------- latent space


def mixture(n: int = 600, dim: int = 10, k: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    means = rng.normal(0, 3, (k, dim))
    return means[labels] + rng.normal(size=(n, dim)), labels


@pytest.mark.parametrize("dim", [1, 2, 10])
def test_latent_space_png_each_dimension(out, dim):
    z, labels = mixture(dim=dim)
    assert_png(plot_latent_space(z, labels, out / "z.png", class_names=FASHION))


def test_latent_space_variants(out):
    z, labels = mixture(n=300)
    # torch inputs, forced PCA on 2-D, no labels, dict names, many classes (colour bar)
    zt, lt = torch.tensor(z[:, :2]), torch.tensor(labels)
    assert_png(plot_latent_space(zt, lt, out / "a.png", method="pca"))
    (out / "a.png").unlink()
    assert_png(plot_latent_space(z, None, out / "a.png", title=""))
    (out / "a.png").unlink()
    names = {i: f"c{i}" for i in range(10)}
    assert_png(plot_latent_space(z, labels, out / "a.png", method="direct", class_names=names))
    (out / "a.png").unlink()
    many = np.random.default_rng(0).integers(0, 30, 300)
    assert_png(plot_latent_space(z, many, out / "a.png"))
    (out / "a.png").unlink()
    assert_png(plot_latent_space(z[:, :1], many, out / "a.png"))


@pytest.mark.parametrize(
    ("z", "labels", "kwargs", "match"),
    [
        (np.zeros((4, 2)), [0, 1, 2], {}, "labels has 3 entries but z has 4 rows"),
        (np.zeros((3, 2)), [0, 1.5, 2], {}, "integer class indices"),
        (np.zeros((3, 2)), [0, -1, 2], {}, "non-negative"),
        (np.zeros((3, 2)), [0, 1, 2], {"method": "tsne"}, "method must be"),
        (np.zeros((3, 1)), [0, 1, 2], {"method": "pca"}, "needs Dz >= 2"),
        (np.zeros((0, 2)), [], {}, "non-empty"),
        (np.full((3, 2), np.inf), [0, 1, 2], {}, "NaN or infinite"),
        (np.zeros((3, 2)), [0, 1, 5], {"class_names": ["a", "b"]}, r"labels \[5\]"),
    ],
)
def test_latent_space_errors(out, z, labels, kwargs, match):
    with pytest.raises(ValueError, match=match):
        plot_latent_space(z, labels, out / "bad.png", **kwargs)
    assert os.listdir(out) == []


# ------------------------------------------------------------------------ manifold


def toy_decode(z):
    z = np.asarray(z)
    assert z.dtype == np.float32 and z.ndim == 2 and z.shape[1] == 2
    yy, xx = np.mgrid[0:28, 0:28]
    centre_x = 14 + 4 * z[:, 0, None, None]
    centre_y = 14 - 4 * z[:, 1, None, None]
    blobs = np.exp(-((xx - centre_x) ** 2 + (yy - centre_y) ** 2) / 20.0)
    return blobs.reshape(len(z), -1)


def test_manifold_png_and_grid(out):
    seen = []

    def decode(z):
        seen.append(z.copy())
        return torch.from_numpy(toy_decode(z))  # tensors are accepted as output too

    img = assert_png(plot_manifold(decode, SHAPE, out / "m.png", n=7), min_height=200)
    (z,) = seen
    assert z.shape == (49, 2)
    # Standard-normal quantiles at p = 0.05 ... 0.95, z1 along rows, z2 decreasing down.
    q = 1.6448536269514722
    np.testing.assert_allclose(z[0], [-q, q], rtol=1e-6)
    np.testing.assert_allclose(z[-1], [q, -q], rtol=1e-6)
    np.testing.assert_allclose(z[3], [0.0, q], atol=1e-6)
    assert abs(img.shape[0] - img.shape[1]) < 0.2 * img.shape[1]


def test_manifold_span(out):
    seen = []

    def decode(z):
        seen.append(z)
        return toy_decode(z)

    plot_manifold(decode, SHAPE, out / "m.png", n=3, span=(0.5, 0.975), title="Manifold")
    np.testing.assert_allclose(seen[0][0], [0.0, 1.959964], atol=1e-5)


@pytest.mark.parametrize(
    ("decode", "kwargs", "exc", "match"),
    [
        ("not callable", {}, TypeError, "decode_mean must be a callable"),
        (toy_decode, {"n": 1}, ValueError, "n must be an integer >= 2"),
        (toy_decode, {"span": (0.0, 0.9)}, ValueError, "0 < lo < hi < 1"),
        (toy_decode, {"span": (0.9, 0.1)}, ValueError, "0 < lo < hi < 1"),
        (toy_decode, {"span": 0.9}, ValueError, "pair of probabilities"),
        (lambda z: toy_decode(z)[:-1], {}, ValueError, "returned 399 images for 400"),
        (lambda z: toy_decode(z)[:, :700], {}, ValueError, "D=700 .* needs D=784"),
        (lambda z: 10 * toy_decode(z) - 5, {}, ValueError, "not logits"),
    ],
)
def test_manifold_errors(out, decode, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        plot_manifold(decode, SHAPE, out / "bad.png", **kwargs)
    assert os.listdir(out) == []


def test_manifold_ticks_symmetric():
    for n in (2, 3, 10, 15, 20, 30):
        idx = plots._symmetric_tick_indices(n, 7)
        assert idx[0] == 0 and idx[-1] == n - 1
        assert idx == sorted(n - 1 - i for i in idx)
        assert min(np.diff(idx)) >= (1 if n < 5 else 2)
    assert plots._fmt_tick(-0.001) == "0.00"
    assert plots._fmt_tick(-1.5) == "\u22121.50"


# ------------------------------------------------------------------- atomic writes


def test_failed_save_leaves_no_file_and_no_temp(out, monkeypatch):
    def boom(self, *args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(plots.Figure, "savefig", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        plot_image_grid(images(4), SHAPE, out / "g.png")
    assert os.listdir(out) == []


def test_overwrite_replaces_file_atomically(out):
    path = out / "g.png"
    plot_image_grid(images(4), SHAPE, path)
    first = path.read_bytes()
    plot_image_grid(images(9, seed=3), SHAPE, path, title="again")
    assert path.read_bytes() != first
    assert_png(path)


def test_bad_dpi(out):
    with pytest.raises(ValueError, match="dpi must be positive"):
        plot_image_grid(images(4), SHAPE, out / "g.png", dpi=0)
    assert os.listdir(out) == []


# -------------------------------------------------------------- estimator comparisons


def _seed_histories(offset: float, n_seeds: int = 3, epochs: int = 6) -> list[list[dict]]:
    return [
        [
            {
                "epoch": e,
                "test_elbo": -150.0 + 4 * e + offset + s,
                **({"test_log_likelihood": -145.0 + 4 * e + offset + s} if e % 2 == 0 else {}),
            }
            for e in range(1, epochs + 1)
        ]
        for s in range(n_seeds)
    ]


def test_log_likelihood_curves_mean_and_band(out):
    curves = {"trace (K=1)": _seed_histories(0.0), "iwae (K=5)": _seed_histories(1.5)}
    path = plots.plot_log_likelihood_curves(curves, out / "ll.png")
    assert_png(path, min_width=600)


def test_log_likelihood_curves_single_seed_single_point_and_uneven_runs(out):
    uneven = _seed_histories(0.0, n_seeds=2)
    uneven[1] = uneven[1][:2]  # a run stopped early by a time budget
    curves = {
        "one seed": _seed_histories(0.0, n_seeds=1),
        "uneven": uneven,
        "nothing": [[{"epoch": 1, "test_log_likelihood": float("nan")}]],
    }
    assert_png(plots.plot_log_likelihood_curves(curves, out / "ll.png"))
    single = {"a": [[{"epoch": 3, "test_log_likelihood": -100.0}]]}
    assert_png(plots.plot_log_likelihood_curves(single, out / "ll.png", title=None))


def test_log_likelihood_curves_bad_input(out):
    with pytest.raises(ValueError, match="non-empty dict"):
        plots.plot_log_likelihood_curves({}, out / "ll.png")
    with pytest.raises(ValueError, match="no run in curves has a finite 'test_log_likelihood'"):
        plots.plot_log_likelihood_curves({"a": [[{"epoch": 1, "test_elbo": -1.0}]]}, out / "x.png")
    with pytest.raises(TypeError, match="list of histories"):
        plots.plot_log_likelihood_curves({"a": {"epoch": 1}}, out / "x.png")
    with pytest.raises(TypeError, match="not a dict"):
        plots.plot_log_likelihood_curves({"a": [[1.0, 2.0]]}, out / "x.png")
    assert os.listdir(out) == []


def _snr(scale: float, power: float) -> dict[int, dict[str, float]]:
    return {k: {"inference": scale * k**power, "generative": 2.0 * k**0.5} for k in (1, 5, 10, 50)}


def test_snr_vs_k_two_panels(out):
    snr = {"iwae": _snr(0.7, -0.5), "dreg": _snr(0.8, 0.2), "trace": _snr(0.6, 0.5)}
    path = plots.plot_snr_vs_k(snr, out / "snr.png")
    img = assert_png(path, min_width=900)
    assert img.shape[1] > 1.8 * img.shape[0]  # two panels side by side


def test_snr_vs_k_skips_bad_values_and_one_group(out):
    snr = {
        "iwae": {1: {"inference": 0.5}, 5: {"inference": float("nan")}, 10: {"inference": 0.0}},
        "score": {1: {"inference": 1e-3}, 50: {"inference": 2e-3}},
    }
    assert_png(plots.plot_snr_vs_k(snr, out / "snr.png", groups=("inference",), title=None))
    assert_png(plots.plot_snr_vs_k({"a": {5: {"inference": 1.0}}}, out / "snr.png"))


def test_snr_vs_k_bad_input(out):
    with pytest.raises(ValueError, match="non-empty dict"):
        plots.plot_snr_vs_k({}, out / "snr.png")
    with pytest.raises(ValueError, match="no finite positive value"):
        plots.plot_snr_vs_k({"a": {1: {"inference": float("nan")}}}, out / "snr.png")
    with pytest.raises(ValueError, match="K must be a positive number"):
        plots.plot_snr_vs_k({"a": {0: {"inference": 1.0}}}, out / "snr.png")
    with pytest.raises(TypeError, match="must be a dict"):
        plots.plot_snr_vs_k({"a": [1.0]}, out / "snr.png")
    with pytest.raises(ValueError, match="groups is empty"):
        plots.plot_snr_vs_k({"a": {1: {"inference": 1.0}}}, out / "snr.png", groups=())
    assert os.listdir(out) == []


def test_comparison_plots_are_exported():
    assert {"plot_log_likelihood_curves", "plot_snr_vs_k"} <= set(plots.__all__)
