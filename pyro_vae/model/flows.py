"""Normalizing flows for the guides: Pyro's conditional transforms, conditioned on the encoder's
features ``h(x)``, by name.

A flow guide draws ``z0 ~ N(mu(h), sigma(h))`` and pushes it through ``num_flows`` transforms
``z_t = f_t(z_(t-1); h)``, so that ``log q(z | x) = log N(z0) - sum_t log |det df_t / dz_(t-1)|``.
Every flow here is amortized: its parameters are outputs of a small network of ``h``.

===============  ==============================================  ======================
name             transform (conditioned on ``h``)                inverse
===============  ==============================================  ======================
``planar``       Pyro's ``ConditionalPlanar``                    none
``radial``       Pyro's ``ConditionalRadial``                    none
``sylvester``    :class:`ConditionalSylvester` (this module)     none
``naf``          Pyro's ``ConditionalNeuralAutoregressive``      none
``householder``  Pyro's ``ConditionalHouseholder``               closed form (cheap)
``spline``       Pyro's ``ConditionalSplineAutoregressive``      z_dim network passes
``iaf``          Pyro's ``ConditionalAffineAutoregressive``      z_dim network passes
===============  ==============================================  ======================

A flow without an inverse knows ``log q`` only at its own draws (Pyro caches each transform's
input and output when it samples). Asked for ``log q`` at any other ``z`` (what STL, DReG and the
score-function estimator do: they evaluate it at a detached copy of ``z``) it raises
:class:`FlowNotInvertible`, which names the fix, rather than Pyro's bare ``KeyError``.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransformModule
from pyro.distributions.transforms import (
    ConditionalHouseholder,
    ConditionalNeuralAutoregressive,
    ConditionalPlanar,
    ConditionalRadial,
    conditional_affine_autoregressive,
    conditional_spline_autoregressive,
)
from pyro.distributions.transforms.neural_autoregressive import NeuralAutoregressive
from pyro.distributions.transforms.planar import ConditionedPlanar
from pyro.distributions.transforms.radial import ConditionedRadial
from pyro.nn import ConditionalAutoRegressiveNN, DenseNN
from torch import nn
from torch.distributions import Transform

__all__ = [
    "FlowNotInvertible",
    "ConditionalSylvester",
    "ConditionedSylvester",
    "FLOWS",
    "FlowSpec",
    "NEEDS_INVERSE",
    "build_flows",
]

#: the estimators that evaluate log q at a z the guide did not draw (a detached copy)
NEEDS_INVERSE = ("stl", "dreg", "score")


class FlowNotInvertible(ValueError):
    """``log q(z | x)`` was asked of a flow without an inverse at a ``z`` it did not draw."""

    def __init__(self, flow: str) -> None:
        invertible = ", ".join(n for n, s in FLOWS.items() if s.invertible)
        super().__init__(
            f"the {flow} flow has no inverse, so its log q(z | x) is known only at the guide's "
            f"own draws, and it was asked at another z. The STL, DReG and score estimators "
            f"evaluate log q at a detached copy of z; use an invertible flow (--guide "
            f"{invertible}) or another estimator (trace, meanfield, tracegraph, iwae, renyi, "
            f"tail_adaptive)"
        )


def _hidden(z_dim: int) -> list[int]:
    """The hidden sizes of every flow's conditioning network (the IAF's since it was added)."""
    return [max(2 * z_dim, 32)]


# -- Pyro's flows without an inverse, made to say so -------------------------------------------
class _ConditionedPlanar(ConditionedPlanar):
    def _inverse(self, y):
        raise FlowNotInvertible("planar")


class _ConditionalPlanar(ConditionalPlanar):
    def condition(self, context):
        return _ConditionedPlanar(partial(self._params, context))


class _ConditionedRadial(ConditionedRadial):
    def _inverse(self, y):
        raise FlowNotInvertible("radial")


class _ConditionalRadial(ConditionalRadial):
    def condition(self, context):
        return _ConditionedRadial(partial(self._params, context))


class _NeuralAutoregressive(NeuralAutoregressive):
    def _inverse(self, y):
        raise FlowNotInvertible("naf")


class _ConditionalNeuralAutoregressive(ConditionalNeuralAutoregressive):
    def condition(self, context):
        # Pyro's condition(), with the transform that names its missing inverse.
        cond_nn = partial(self.nn, context=context)
        cond_nn.permutation = cond_nn.func.permutation
        cond_nn.get_permutation = cond_nn.func.get_permutation
        return _NeuralAutoregressive(cond_nn, **self.kwargs)


# -- Sylvester: Pyro has no conditional version ------------------------------------------------
class ConditionedSylvester(Transform):
    """One Householder-Sylvester flow with given parameters (van den Berg et al. 2018)::

        y = x + Q R tanh(S Q^T x + b),      log |det dy/dx| = sum_i log(1 + tanh'(.)_i R_ii S_ii)

    ``params()`` returns ``(R, S, b, u)``: upper-triangular ``R``, ``S`` ``[..., D, D]`` with
    diagonals in (-1, 1) (so R_ii S_ii > -1: invertible), ``b [..., D]`` and unit vectors
    ``u [..., M, D]`` whose reflections ``Q = H_1 ... H_M``, ``H_m = I - 2 u_m u_m^T``, make the
    orthogonal ``Q``. The inverse has no closed form.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, params) -> None:
        super().__init__(cache_size=1)
        self._params = params
        self._cached_logDetJ = None

    @staticmethod
    def _reflect(v: torch.Tensor, u: torch.Tensor, order) -> torch.Tensor:
        for m in order:
            um = u[..., m, :]
            v = v - 2.0 * (v * um).sum(-1, keepdim=True) * um
        return v

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        r, s, b, u = self._params()
        steps = range(u.shape[-2])
        qt_x = self._reflect(x, u, steps)  # Q^T x = H_M ... H_1 x
        pre = (s @ qt_x.unsqueeze(-1)).squeeze(-1) + b
        act = torch.tanh(pre)
        y = x + self._reflect((r @ act.unsqueeze(-1)).squeeze(-1), u, reversed(steps))
        diag = (1.0 - act.pow(2)) * r.diagonal(dim1=-2, dim2=-1) * s.diagonal(dim1=-2, dim2=-1)
        self._cached_logDetJ = torch.log1p(diag).sum(-1)
        return y

    def _inverse(self, y):
        raise FlowNotInvertible("sylvester")

    def log_abs_det_jacobian(self, x, y):
        x_old, y_old = self._cached_x_y
        if x is not x_old or y is not y_old:
            self(x)  # recompute (and recache) at this x
        return self._cached_logDetJ


class ConditionalSylvester(ConditionalTransformModule):
    """A Householder-Sylvester flow whose parameters are outputs of a network of the context, as
    van den Berg et al. (2018) amortize them; Pyro ships only a non-conditional ``Sylvester``
    (whose log-determinant ignores Q: it is exact only for Q = I). ``num_reflections`` defaults to
    Pyro's ``input_dim // 2 + 1``."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(
        self,
        input_dim: int,
        context_dim: int,
        hidden_dims: list[int],
        num_reflections: int | None = None,
    ) -> None:
        super().__init__()
        d = int(input_dim)
        self.input_dim = d
        self.num_reflections = d // 2 + 1 if num_reflections is None else int(num_reflections)
        tri = d * (d - 1) // 2
        self.nn = DenseNN(
            context_dim, hidden_dims, param_dims=[tri, tri, d, d, d, self.num_reflections * d]
        )
        rows, cols = torch.triu_indices(d, d, offset=1)
        self.register_buffer("_rows", rows, persistent=False)
        self.register_buffer("_cols", cols, persistent=False)

    def _triangular(self, strict: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
        m = torch.diag_embed(torch.tanh(diag))
        m[..., self._rows, self._cols] = strict
        return m

    def _params(self, context: torch.Tensor):
        r_up, s_up, r_diag, s_diag, b, u = self.nn(context)
        u = u.reshape(*u.shape[:-1], self.num_reflections, self.input_dim)
        u = u / u.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return self._triangular(r_up, r_diag), self._triangular(s_up, s_diag), b, u

    def condition(self, context: torch.Tensor) -> ConditionedSylvester:
        return ConditionedSylvester(partial(self._params, context))


# -- the table ---------------------------------------------------------------------------------
def _planar(z_dim: int, context: int) -> nn.Module:
    return _ConditionalPlanar(DenseNN(context, _hidden(z_dim), param_dims=[1, z_dim, z_dim]))


def _radial(z_dim: int, context: int) -> nn.Module:
    return _ConditionalRadial(DenseNN(context, _hidden(z_dim), param_dims=[z_dim, 1, 1]))


def _householder(z_dim: int, context: int) -> nn.Module:
    return ConditionalHouseholder(z_dim, DenseNN(context, _hidden(z_dim), param_dims=[z_dim]))


def _sylvester(z_dim: int, context: int) -> nn.Module:
    return ConditionalSylvester(z_dim, context, _hidden(z_dim))


def _naf(z_dim: int, context: int, width: int = 16) -> nn.Module:
    arn = ConditionalAutoRegressiveNN(z_dim, context, _hidden(z_dim), param_dims=[width] * 3)
    return _ConditionalNeuralAutoregressive(arn, hidden_units=width, activation="sigmoid")


def _spline(z_dim: int, context: int) -> nn.Module:
    return conditional_spline_autoregressive(z_dim, context, hidden_dims=_hidden(z_dim))


def _iaf(z_dim: int, context: int) -> nn.Module:
    return conditional_affine_autoregressive(z_dim, context, hidden_dims=_hidden(z_dim))


class FlowSpec(NamedTuple):
    """How to build one conditional flow layer ``(z_dim, context_dim) -> module``, and whether
    it can evaluate log q at any z (``invertible``)."""

    build: object
    invertible: bool


FLOWS: dict[str, FlowSpec] = {
    "planar": FlowSpec(_planar, False),
    "radial": FlowSpec(_radial, False),
    "householder": FlowSpec(_householder, True),
    "sylvester": FlowSpec(_sylvester, False),
    "naf": FlowSpec(_naf, False),
    "spline": FlowSpec(_spline, True),
    "iaf": FlowSpec(_iaf, True),
}


def build_flows(name: str, z_dim: int, context_dim: int, num_flows: int) -> nn.ModuleList:
    """``num_flows`` layers of flow ``name``, each conditioned on a context of ``context_dim``."""
    if int(num_flows) < 1:
        raise ValueError(f"num_flows must be >= 1, got {num_flows}")
    build = FLOWS[name].build
    return nn.ModuleList(build(int(z_dim), int(context_dim)) for _ in range(int(num_flows)))
