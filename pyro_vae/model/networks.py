"""The encoder and decoder networks: multi-layer perceptrons and convolutional nets for images.

Contracts (checked by :class:`~pyro_vae.VAE` at construction):

* an **encoder trunk** maps data ``x [B, x_dim]`` (flattened) to features ``[B, F]``; a guide's
  head (:mod:`pyro_vae.guides`) turns the features into q(z | x);
* a **decoder** maps ``z [..., z_dim]`` with *any* leading dimensions (a particle dimension
  ``[K, B, z_dim]`` included) to the likelihood's parameters ``[..., num_params * x_dim]``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence

import torch
from torch import nn

from .._registry import lookup

__all__ = ["ACTIVATIONS", "MLP", "Trunk", "ConvEncoder", "ConvDecoder", "NETS", "feature_dim"]

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}

#: the built-in network families (``VAE(net=...)``, ``--net``)
NETS = ("mlp", "conv")


def _sizes(*dims: int) -> list[int]:
    dims_ = [int(d) for d in dims]
    if any(d <= 0 for d in dims_):
        raise ValueError(f"layer sizes must be positive, got {dims_}")
    return dims_


class MLP(nn.Module):
    """``in_dim -> hidden_dims... -> out_dim`` with an activation after every hidden layer.

    Input ``[..., in_dim]``, output ``[..., out_dim]``; any leading batch dimensions pass through,
    which is what lets a vectorized particle dimension ``[K, B, in_dim]`` flow through unchanged.
    ``hidden`` is the trunk (features), ``out`` the last linear layer.
    """

    def __init__(
        self, in_dim: int, hidden_dims: Sequence[int], out_dim: int, activation: str = "relu"
    ) -> None:
        super().__init__()
        act = lookup("activation", activation, ACTIVATIONS)
        dims = _sizes(in_dim, *hidden_dims)
        _sizes(out_dim)
        layers: list[nn.Module] = []
        for a, b in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(a, b), act()]
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(dims[-1], int(out_dim))
        self.feature_dim = dims[-1]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The last hidden layer ``[..., hidden_dims[-1]]`` (context for conditional flows)."""
        return self.hidden(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x))


def dtype_device(module: nn.Module) -> dict:
    """``{"dtype", "device"}`` of ``module``'s first floating parameter or buffer (empty, i.e.
    the default dtype on the CPU, when it has none): what a dummy input must match."""
    for t in (*module.parameters(), *module.buffers()):
        if t.is_floating_point():
            return {"dtype": t.dtype, "device": t.device}
    return {}


@contextlib.contextmanager
def probing(module: nn.Module):
    """A dummy pass through ``module``: eval mode (no batch-norm statistics from a dummy batch)
    and no gradients, with every submodule's mode restored afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode


def feature_dim(trunk: nn.Module, in_dim: int) -> int:
    """``F`` of a trunk ``[B, in_dim] -> [B, F]``: its ``feature_dim`` attribute, else found by
    one dummy pass (:func:`probing`)."""
    declared = getattr(trunk, "feature_dim", None)
    if declared is not None:
        return int(declared)
    with probing(trunk):
        h = trunk(torch.zeros(2, in_dim, **dtype_device(trunk)))
    if not isinstance(h, torch.Tensor) or h.dim() != 2 or h.shape[0] != 2:
        got = list(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
        raise ValueError(
            f"an encoder trunk must map x [B, {in_dim}] to features [B, F]; "
            f"{type(trunk).__name__} gave {got} for B = 2"
        )
    return int(h.shape[1])


class Trunk(nn.Module):
    """A user's trunk ``[B, in_dim] -> [B, F]`` under a linear layer ``F -> out_dim``: the same
    ``features``/``out`` attributes as :class:`MLP`, so a guide's head treats both alike."""

    def __init__(self, trunk: nn.Module, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.hidden = trunk
        self.feature_dim = feature_dim(trunk, in_dim)
        self.out = nn.Linear(self.feature_dim, int(out_dim))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x))


def check_image_shape(image_shape: Sequence[int], x_dim: int) -> tuple[int, int, int]:
    """``(C, H, W)`` from ``(H, W)`` or ``(C, H, W)`` whose product is ``x_dim``."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) == 2:
        shape = (1, *shape)
    if len(shape) != 3 or any(s < 1 for s in shape) or math.prod(shape) != x_dim:
        raise ValueError(
            f"image_shape must be (H, W) or (C, H, W) with C*H*W = x_dim = {x_dim}, got "
            f"{tuple(image_shape)}; e.g. image_shape=(1, 28, 28) for MNIST"
        )
    return shape  # type: ignore[return-value]


def _up_from(size: int, layers: int) -> int:
    """The side to start from so that ``layers`` doublings (4x4, stride 2, padding 1) reach at
    least ``size``; the excess is cropped."""
    return -(-size // 2**layers)


class ConvEncoder(nn.Module):
    """A convolutional trunk for images: ``x [B, C*H*W] -> features [B, feature_dim]``.

    Stride-2 4x4 convolutions (``channels``) and a dense layer, as in the DCGAN-style encoders
    of the VAE literature.
    """

    def __init__(
        self,
        image_shape: Sequence[int],
        channels: Sequence[int] = (32, 64),
        feature_dim: int = 256,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        c, h, w = check_image_shape(image_shape, math.prod(int(s) for s in image_shape))
        act = lookup("activation", activation, ACTIVATIONS)
        chans = _sizes(c, *channels)
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), act()]
        self.image_shape = (c, h, w)
        self.conv = nn.Sequential(*layers)
        with torch.no_grad():
            flat = self.conv(torch.zeros(1, c, h, w)).numel()
        self.dense = nn.Sequential(nn.Linear(flat, _sizes(feature_dim)[0]), act())
        self.feature_dim = int(feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        h = self.conv(x.reshape(-1, *self.image_shape))
        return self.dense(h.flatten(1)).reshape(*lead, self.feature_dim)


class ConvDecoder(nn.Module):
    """A transposed-convolutional decoder: ``z [..., z_dim] -> [..., out_channels * C*H*W]``.

    A dense layer to a ``channels[0] x H/4 x W/4`` map, then stride-2 4x4 transposed
    convolutions up to the image (cropped to ``H x W``), with ``out_channels`` parameter maps per
    image channel (the likelihood's ``num_params``). Leading dimensions pass through.
    """

    def __init__(
        self,
        z_dim: int,
        image_shape: Sequence[int],
        channels: Sequence[int] = (64, 32),
        hidden_dim: int = 256,
        activation: str = "relu",
        out_channels: int = 1,
    ) -> None:
        super().__init__()
        c, h, w = check_image_shape(image_shape, math.prod(int(s) for s in image_shape))
        act = lookup("activation", activation, ACTIVATIONS)
        chans = _sizes(*channels)
        n = len(chans)
        self.start = (chans[0], _up_from(h, n), _up_from(w, n))
        self.image_shape = (c, h, w)
        self.out_dim = int(out_channels) * c * h * w
        self.dense = nn.Sequential(
            nn.Linear(int(z_dim), _sizes(hidden_dim)[0]),
            act(),
            nn.Linear(int(hidden_dim), math.prod(self.start)),
            act(),
        )
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1), act()]
        layers.append(nn.ConvTranspose2d(chans[-1], int(out_channels) * c, 4, stride=2, padding=1))
        self.deconv = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        lead = z.shape[:-1]
        y = self.deconv(self.dense(z).reshape(-1, *self.start))
        _, h, w = self.image_shape
        return y[..., :h, :w].reshape(*lead, self.out_dim)
