"""pyro_vae.experiments.compare: the package's public names, and their lazy top-level aliases."""

import importlib

import pyro_vae as pv
from pyro_vae.experiments import compare


def test_public_names_are_exported_and_importable():
    assert sorted(compare.__all__) == sorted(
        [
            "COMPARISON_FILES",
            "CompareConfig",
            "ComparisonResult",
            "EstimatorSpec",
            "compare_estimators",
            "format_markdown_table",
            "parse_estimators",
            "summarize_runs",
        ]
    )
    for name in compare.__all__:
        value = getattr(compare, name)
        module = importlib.import_module(getattr(value, "__module__", compare.__name__))
        assert module.__name__.startswith("pyro_vae.experiments.compare")


def test_top_level_aliases_are_the_package_objects():
    assert pv.compare_estimators is compare.compare_estimators
    assert pv.CompareConfig is compare.CompareConfig
