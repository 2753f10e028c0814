"""The model's configuration: a small frozen dataclass that round-trips through JSON."""

from __future__ import annotations

import dataclasses
import json
import numbers
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, TypeVar

__all__ = ["ModelConfig", "JsonConfig"]


def _conforms(value: Any, hint: Any) -> tuple[bool, Any]:
    """``(ok, value to store)`` for ``value`` against a type annotation."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arm in args:
            ok, fixed = _conforms(value, arm)
            if ok:
                return True, fixed
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:  # numpy integers too, stored as ints
        ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        return ok, int(value) if ok and type(value) is not int else value
    if hint is float:
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        return ok, float(value) if ok and type(value) is not float else value
    if hint is str:
        return isinstance(value, str), value
    if origin is tuple:
        if not isinstance(value, tuple | list):
            return False, value
        parts = [_conforms(v, args[0]) for v in value]
        return all(ok for ok, _ in parts), tuple(v for _, v in parts)
    return True, value


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is tuple:
        return f"a tuple of {_describe(args[0]).split(' ', 1)[1]}s"
    names = {int: "an int", float: "a float", str: "a str", bool: "a bool", type(None): "None"}
    return names.get(hint, f"a {getattr(hint, '__name__', hint)}")


C = TypeVar("C", bound="JsonConfig")


class JsonConfig:
    """``to_dict``/``from_dict``/``to_json``/``from_json`` for a frozen dataclass, and a check
    of every field's type against its annotation (``check_types``, from ``__post_init__``)."""

    def check_types(self) -> None:
        """Raise a TypeError naming the field, the value and the expected type. Ints are
        accepted (and stored as floats) where a float is expected; bools are not ints here."""
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value, hint = getattr(self, f.name), hints[f.name]
            ok, fixed = _conforms(value, hint)
            if not ok:
                raise TypeError(
                    f"{type(self).__name__}.{f.name} must be {_describe(hint)}, got {value!r} "
                    f"({type(value).__name__})"
                )
            if fixed is not value:
                object.__setattr__(self, f.name, fixed)

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
    as ``"custom:<ClassName>"`` and must be passed again when the model is loaded. The defaults
    are the one-layer VAE's; with ``latent_layers=2`` give the sizes (``TwoLayerVAE(784)`` and
    ``--latent-layers 2`` default to Burda et al.'s 100/(200, 200)/tanh, a bare config does not).
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
    #: flow layers of a flow guide (every ``guide`` but ``"normal"``)
    num_flows: int = 2
    #: the fixed (``gaussian``) or initial (``learned_gaussian``, ``laplace``) likelihood scale
    likelihood_scale: float = 1.0
    #: the encoder trunk and the decoder: ``mlp``, ``conv`` or ``custom:<ClassName>``
    encoder: str = "mlp"
    decoder: str = "mlp"
    #: ``(C, H, W)`` of the images the conv nets see (empty: not images)
    image_shape: tuple[int, ...] = ()
    #: the conv nets' channels (encoder; the decoder mirrors them)
    conv_channels: tuple[int, ...] = (32, 64)
    #: stochastic layers: 1 (:class:`~pyro_vae.VAE`) or 2 (:class:`~pyro_vae.TwoLayerVAE`)
    latent_layers: int = 1
    #: the top layer's size and the hidden sizes of q(z2 | z1) (p(z1 | z2) mirrors them)
    z2_dim: int = 50
    hidden2_dims: tuple[int, ...] = (100, 100)

    def __post_init__(self) -> None:
        self.check_types()
        if self.x_dim < 1 or self.z_dim < 1 or self.z2_dim < 1:
            raise ValueError(
                f"x_dim, z_dim and z2_dim must be >= 1, got {self.x_dim}, {self.z_dim} and "
                f"{self.z2_dim}"
            )
        if self.latent_layers not in (1, 2):
            raise ValueError(f"latent_layers must be 1 or 2, got {self.latent_layers}")
