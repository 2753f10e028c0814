"""pyro_vae.experiments.run: the split of a run's wall time (results.json's wall_seconds)."""

import pytest

from pyro_vae.experiments.run import _wall_seconds


def test_wall_seconds_moves_the_evaluations_in_training_to_evaluation():
    # data 0-2 s, model and train() 2-12 s (3 s of it test evaluations), final evaluation
    # 12-15 s, figures 15-16 s
    clock = {"start": 100.0, "data": 102.0, "trained": 112.0, "evaluated": 115.0, "end": 116.0}
    wall = _wall_seconds(clock, eval_in_training=3.0)
    assert wall == pytest.approx(
        {"data": 2.0, "training": 7.0, "evaluation": 6.0, "figures": 1.0, "total": 16.0}
    )
    assert sum(v for k, v in wall.items() if k != "total") == pytest.approx(wall["total"])


def test_wall_seconds_without_evaluations_in_training():
    clock = {"start": 0.0, "data": 0.5, "trained": 4.5, "evaluated": 5.0, "end": 5.25}
    wall = _wall_seconds(clock, eval_in_training=0.0)
    assert wall == pytest.approx(
        {"data": 0.5, "training": 4.0, "evaluation": 0.5, "figures": 0.25, "total": 5.25}
    )
