"""pyro_vae.experiments.compare.config: CompareConfig says what is out of range."""

import pytest
from test_compare_runner import tiny_config

from pyro_vae.experiments.compare import EstimatorSpec


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(epochs=None, seconds=None), "give a budget"),
        (dict(seconds=0.0), "seconds must be a positive number"),
        (dict(seeds=(0, 0)), "seeds must be distinct"),
        (dict(seeds=()), "seeds is empty"),
        (dict(snr_repeats=1), "snr_repeats"),
        (dict(snr_k=(0, 5)), "snr_k must be a positive integer"),
        (dict(estimators=(EstimatorSpec("nope", 1),)), "unknown estimator 'nope'"),
    ],
)
def test_config_errors(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**changes)
