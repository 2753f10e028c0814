"""Tests for pyro_vae.data.idx: reading IDX files, plain or gzipped, and their faults."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from test_data_support import idx_bytes, make_raw, write_idx_set

from pyro_vae.data import CorruptDataError, read_idx
from pyro_vae.data.idx import IMAGE_MAGIC, LABEL_MAGIC

# --------------------------------------------------------------------------------------------------
# IDX parsing


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_plain_and_gzip(tmp_path: Path, gz: bool) -> None:
    raw = make_raw(0)
    folder = write_idx_set(tmp_path, raw, gz=gz)
    suffix = ".gz" if gz else ""
    images = read_idx(folder / f"train-images-idx3-ubyte{suffix}", IMAGE_MAGIC)
    labels = read_idx(folder / f"train-labels-idx1-ubyte{suffix}", LABEL_MAGIC)
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
        read_idx(labels, expected_magic=IMAGE_MAGIC)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(b"<html>not found</html>")
    with pytest.raises(CorruptDataError, match="not an IDX file"):
        read_idx(garbage)
