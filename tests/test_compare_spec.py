"""pyro_vae.experiments.compare.spec: estimator specs from ``"trace,iwae:5,dreg"`` text."""

import pytest

from pyro_vae.experiments.compare import EstimatorSpec, parse_estimators


def test_parse_estimators_name_k_and_k_lists():
    specs = parse_estimators("trace, IWAE:5,dreg", "1,5")
    assert specs == [
        EstimatorSpec("trace", 1),
        EstimatorSpec("trace", 5),
        EstimatorSpec("iwae", 5),
        EstimatorSpec("dreg", 1),
        EstimatorSpec("dreg", 5),
    ]
    assert parse_estimators(["iwae:5", "iwae:5", "tail-adaptive:3"]) == [
        EstimatorSpec("iwae", 5),
        EstimatorSpec("tail_adaptive", 3),
    ]
    assert parse_estimators("stl", 2) == [EstimatorSpec("stl", 2)]
    assert EstimatorSpec("dreg", 5).label == "dreg (K=5)"


@pytest.mark.parametrize(
    "estimators, ks, message",
    [
        ("trace,iwea", "1", r"unknown estimator 'iwea'; valid estimators are: .*dreg.*iwae"),
        ("iwae:0", "1", r"K in 'iwae:0'.*positive integer"),
        ("iwae:five", "1", r"K in 'iwae:five'.*positive integer"),
        ("iwae", "1,0", r"--num-particles must be a positive integer"),
        ("iwae", "", r"--num-particles is empty"),
        ("tail_adaptive:1", "1", r"tail_adaptive.*K=1.*K >= 2"),
        (",", "1", r"no estimators given; choose from: .*trace"),
    ],
)
def test_parse_estimators_errors(estimators, ks, message):
    with pytest.raises(ValueError, match=message):
        parse_estimators(estimators, ks)
