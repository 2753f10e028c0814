"""Which estimators a comparison runs: :class:`EstimatorSpec` and the ``"trace,iwae:5,dreg"``
text that :func:`parse_estimators` reads."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..._registry import lookup
from ...infer.estimators import ESTIMATORS, make_elbo

__all__ = ["EstimatorSpec", "parse_estimators", "positive_int"]


@dataclass(frozen=True)
class EstimatorSpec:
    """One row of the comparison: an estimator name of :data:`~pyro_vae.ESTIMATORS` and its K."""

    name: str
    num_particles: int = 1

    @property
    def label(self) -> str:
        return f"{self.name} (K={self.num_particles})"


def positive_int(text: Any, what: str) -> int:
    """``text`` as an integer >= 1; a ValueError naming ``what`` otherwise."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError(f"{what} must be a positive integer, got {text!r}") from None
    if value < 1:
        raise ValueError(f"{what} must be a positive integer (>= 1), got {value}")
    return value


def _canonical(name: str) -> str:
    lookup("estimator", name, ESTIMATORS)  # raises, listing the valid names
    return name.strip().lower().replace("-", "_")


def _split(items: str | Sequence[Any]) -> list[str]:
    if isinstance(items, str):
        items = items.split(",")
    return [str(t).strip() for t in items if str(t).strip()]


def _particle_counts(num_particles: int | str | Sequence[int]) -> list[int]:
    if isinstance(num_particles, int):
        ks = [positive_int(num_particles, "--num-particles")]
    else:
        ks = [positive_int(k, "--num-particles") for k in _split(num_particles)]
    if not ks:
        raise ValueError("--num-particles is empty; give at least one K, e.g. '1' or '1,5'")
    return ks


def _tokens(estimators: str | Sequence[str | EstimatorSpec]) -> list[str | EstimatorSpec]:
    """The items of ``estimators``, comma-separated text split into its names."""
    items = [estimators] if isinstance(estimators, EstimatorSpec) else estimators
    tokens: list[str | EstimatorSpec] = []
    for item in [items] if isinstance(items, str) else items:
        tokens += [item] if isinstance(item, EstimatorSpec) else _split(item)
    return tokens


def _specs_of(token: str | EstimatorSpec, ks: Sequence[int]) -> list[EstimatorSpec]:
    """The specs one token stands for: its own K (``name:K``, a spec) or one per K of ``ks``."""
    if isinstance(token, EstimatorSpec):
        return [EstimatorSpec(_canonical(token.name), token.num_particles)]
    if ":" in token:
        name, k = token.split(":", 1)
        what = f"K in {token!r} (write name:K, e.g. iwae:5)"
        return [EstimatorSpec(_canonical(name), positive_int(k, what))]
    return [EstimatorSpec(_canonical(token), k) for k in ks]


def _check_buildable(specs: Sequence[EstimatorSpec]) -> None:
    for spec in specs:
        try:
            make_elbo(spec.name, spec.num_particles)
        except ValueError as e:
            raise ValueError(f"estimator {spec.name!r} with K={spec.num_particles}: {e}") from e


def parse_estimators(
    estimators: str | Sequence[str | EstimatorSpec],
    num_particles: int | str | Sequence[int] = (1,),
) -> list[EstimatorSpec]:
    """Estimator specs from ``"trace,iwae:5,dreg"``-style text (or a list of such items).

    An item ``name:K`` fixes its own K; a bare ``name`` gets one spec per K in ``num_particles``
    (so ``"iwae,dreg"`` with ``num_particles="1,5,50"`` gives six rows). Names are checked
    against :data:`~pyro_vae.ESTIMATORS` (an unknown one raises a ValueError listing the valid
    ones), every K must be a positive integer, and each (name, K) must build with
    :func:`~pyro_vae.make_elbo` (e.g. ``tail_adaptive`` needs K >= 2). Duplicates are dropped.
    """
    ks = _particle_counts(num_particles)
    specs: list[EstimatorSpec] = []
    for token in _tokens(estimators):
        for spec in _specs_of(token, ks):
            if spec not in specs:
                specs.append(spec)
    if not specs:
        valid = ", ".join(sorted(ESTIMATORS))
        raise ValueError(f"no estimators given; choose from: {valid}")
    _check_buildable(specs)
    return specs
