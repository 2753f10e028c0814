"""pyro_vae.experiments.compare.budget: the equal-time budget callback."""

import pytest

from pyro_vae.experiments.compare.budget import Budget, BudgetExhausted


def test_budget_callback_stops_after_the_epoch_that_exhausts_it():
    budget = Budget(1.0)
    budget({"epoch": 1, "seconds": 0.4})
    budget({"epoch": 2, "seconds": 0.4})
    with pytest.raises(BudgetExhausted):
        budget({"epoch": 3, "seconds": 0.4})
    assert [r["epoch"] for r in budget.history] == [1, 2, 3]
    unlimited = Budget(None)
    for e in range(5):
        unlimited({"epoch": e, "seconds": 100.0})
