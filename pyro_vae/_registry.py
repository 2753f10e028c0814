"""Name-to-factory lookup with errors that list the valid names."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

T = TypeVar("T")


def lookup(kind: str, name: str, registry: Mapping[str, T], hint: str = "") -> T:
    """Return ``registry[name]`` or raise a ValueError naming ``kind`` and every valid name."""
    if not isinstance(name, str):
        raise TypeError(f"{kind} must be given by name (a str), got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    if key not in registry:
        valid = ", ".join(sorted(registry))
        raise ValueError(f"unknown {kind} {name!r}; valid {kind}s are: {valid}.{hint}")
    return registry[key]
