"""A latent site's unconstrained space: ``biject_to`` of its distribution's support."""

from __future__ import annotations

from torch.distributions import biject_to, constraints
from torch.distributions.transforms import Transform

__all__ = ["support_transform"]

#: a mixture's support wraps its components' (torch >= 2.6), which biject_to does not unwrap
_MIXTURE_SUPPORT = getattr(constraints, "MixtureSameFamilyConstraint", ())


def _support(fn):
    """The support of a site's distribution, a mixture's unwrapped to its components'."""
    support = fn.support
    while isinstance(support, _MIXTURE_SUPPORT):
        support = support.base_constraint
    return support


def _is_real(support) -> bool:
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


def support_transform(fn) -> Transform | None:
    """``biject_to(support)`` of the distribution ``fn``, the map from the unconstrained u to
    the site's value z; None for a real-valued site (u is z)."""
    support = _support(fn)
    return None if _is_real(support) else biject_to(support)
