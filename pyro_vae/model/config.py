"""The model's configuration: a small frozen dataclass that round-trips through JSON."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from typing import Any, TypeVar

__all__ = ["ModelConfig", "JsonConfig"]

C = TypeVar("C", bound="JsonConfig")


class JsonConfig:
    """``to_dict``/``from_dict``/``to_json``/``from_json`` for a frozen dataclass."""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any]) -> C:
        names = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} field(s) {unknown}; valid fields are {sorted(names)}"
            )
        kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class ModelConfig(JsonConfig):
    """Everything needed to rebuild a :class:`~pyro_vae.VAE`'s architecture.

    ``prior``, ``likelihood`` and ``guide`` are registry names; a user-written object is recorded
    as ``"custom:<ClassName>"`` and must be passed again when the model is loaded.
    """

    x_dim: int
    z_dim: int = 20
    hidden_dims: tuple[int, ...] = (400,)
    activation: str = "relu"
    prior: str = "normal"
    likelihood: str = "bernoulli"
    guide: str = "normal"
    #: mixture components (``mixture``) or pseudo-inputs (``vamp``)
    num_components: int = 10
    #: number of IAF layers (``guide="iaf"``)
    num_flows: int = 2
    #: the fixed (``gaussian``) or initial (``learned_gaussian``, ``laplace``) likelihood scale
    likelihood_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.x_dim < 1 or self.z_dim < 1:
            raise ValueError(f"x_dim and z_dim must be >= 1, got {self.x_dim} and {self.z_dim}")
