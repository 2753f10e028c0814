"""Build a built-in model from its :class:`~pyro_vae.ModelConfig` (what checkpoints record)."""

from __future__ import annotations

from .config import ModelConfig
from .two_layer import TwoLayerVAE
from .vae import VAE

__all__ = ["build_model"]


def build_model(config: ModelConfig, **objects) -> VAE:
    """:class:`~pyro_vae.VAE` or :class:`~pyro_vae.TwoLayerVAE` (``config.latent_layers``);
    user-written components recorded as ``custom:...`` are passed again by keyword."""
    cls = TwoLayerVAE if config.latent_layers == 2 else VAE
    return cls.from_config(config, **objects)
