"""Guides: shapes under a particle plate, normalised flow densities, names."""

import pytest
import torch

import pyro_vae as pv


def test_the_registry_has_every_flow_of_issue_15():
    flows = {"planar", "radial", "householder", "sylvester", "naf", "spline", "iaf"}
    assert set(pv.GUIDES) == flows | {"normal"} and set(pv.guides.FLOW_GUIDES) == flows
    for name, cls in pv.guides.FLOW_GUIDES.items():
        assert cls.flow == name and issubclass(cls, pv.guides.FlowGuide)


@pytest.mark.parametrize("name", sorted(pv.GUIDES))
def test_guide_shapes(name):
    g = pv.make_guide(name, 6, 3, (16,), "tanh")
    q = g(torch.rand(5, 6))
    assert q.batch_shape == (5,) and q.event_shape == (3,)
    z = q.rsample((4,))
    assert z.shape == (4, 5, 3)
    assert q.log_prob(z).shape == (4, 5)


@torch.no_grad()
def test_iaf_density_integrates_to_one():
    torch.manual_seed(0)
    g = pv.guides.IAFGuide(3, 2, (8,), num_flows=2).double()
    q = g(torch.rand(1, 3, dtype=torch.float64))
    t = torch.linspace(-8, 8, 401, dtype=torch.float64)
    zz = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 1, 2)
    p = q.log_prob(zz).exp().reshape(401, 401)  # inverts the flow: no cached sample here
    assert abs(float(torch.trapezoid(torch.trapezoid(p, t, dim=1), t)) - 1) < 1e-3


def test_iaf_is_more_expressive_than_its_gaussian_stage():
    g = pv.guides.IAFGuide(3, 2, (8,))
    assert set(dict(g.named_parameters())) > set(
        dict(pv.guides.NormalGuide(3, 2, (8,)).named_parameters())
    )


def test_unknown_guide_and_bad_flows():
    with pytest.raises(ValueError, match="unknown guide 'flow'.*iaf.*normal"):
        pv.make_guide("flow", 3, 2)
    for cls in pv.guides.FLOW_GUIDES.values():
        with pytest.raises(ValueError, match="num_flows must be >= 1"):
            cls(3, 2, num_flows=0)
    with pytest.raises(ValueError, match="unknown activation 'sigmoid'"):
        pv.make_guide("normal", 3, 2, activation="sigmoid")
