"""Tests for pyro_vae.data.validate against the real specs and tiny ones."""

from __future__ import annotations

import numpy as np
import pytest
import test_data_support
from test_data_support import Tiny

from pyro_vae.data import CorruptDataError
from pyro_vae.data.idx import RawData
from pyro_vae.data.specs import SPECS
from pyro_vae.data.validate import validate

# The shared fixtures of the data tests, made visible to this module's tests.
isolated = test_data_support.isolated
tiny = test_data_support.tiny


# --------------------------------------------------------------------------------------------------
# Validation against the real specs (full-size arrays of zeros: cheap to build)


def full_size_raw(train_first: tuple[int, ...], test_first: tuple[int, ...]) -> RawData:
    train_labels = np.zeros(60000, dtype=np.uint8)
    test_labels = np.zeros(10000, dtype=np.uint8)
    train_labels[:10], test_labels[:10] = train_first, test_first
    return RawData(
        np.zeros((60000, 28, 28), np.uint8),
        train_labels,
        np.zeros((10000, 28, 28), np.uint8),
        test_labels,
    )


def test_validate_real_specs() -> None:
    mnist = SPECS["mnist"]
    fashion = SPECS["fashion-mnist"]
    zeros = full_size_raw((0,) * 10, (0,) * 10)
    with pytest.raises(CorruptDataError, match=r"train labels start \[0, 0"):
        validate(zeros, mnist, "mnist", "test")
    with pytest.raises(CorruptDataError, match="look like fashion-mnist"):
        validate(full_size_raw(fashion.train_first, fashion.test_first), mnist, "mnist", "t")
    # Right first labels, wrong class counts.
    with pytest.raises(CorruptDataError, match="class counts"):
        validate(full_size_raw(mnist.train_first, mnist.test_first), mnist, "mnist", "t")
    short = zeros._replace(test_images=zeros.test_images[:-1], test_labels=zeros.test_labels[:-1])
    with pytest.raises(CorruptDataError, match=r"test images have shape \(9999, 28, 28\)"):
        validate(short, mnist, "mnist", "t")
    bad_label = zeros.train_labels.copy()
    bad_label[7] = 10
    with pytest.raises(CorruptDataError, match="labels must be 0..9"):
        validate(zeros._replace(train_labels=bad_label), mnist, "mnist", "t")


def test_validate_checks_content_md5(tiny: Tiny) -> None:
    spec = SPECS["mnist"]
    validate(tiny.mnist, spec, "mnist", "ok")
    images = tiny.mnist.train_images.copy()
    images[3, 14, 14] ^= 1
    with pytest.raises(CorruptDataError, match="md5"):
        validate(tiny.mnist._replace(train_images=images), spec, "mnist", "flipped")
