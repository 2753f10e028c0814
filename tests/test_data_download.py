"""Tests for pyro_vae.data.download: the mirrors, served from memory, and their checksums."""

from __future__ import annotations

import gzip

import pytest
import test_data_support
from test_data_support import Tiny, assert_matches, fake_server, idx_bytes, mirror_files

from pyro_vae.data import DatasetNotFoundError, load_dataset

# The shared fixtures of the data tests, made visible to this module's tests.
isolated = test_data_support.isolated
tiny = test_data_support.tiny


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
