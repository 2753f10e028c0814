"""Tests for pyro_vae.data.image_data: ImageData's shape checks and repr."""

from __future__ import annotations

import pytest
import torch

from pyro_vae.data import ImageData

# --------------------------------------------------------------------------------------------------
# ImageData


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
