"""The one-pass data checks and their memo (pyro_vae/data/checks.py)."""

import pytest
import torch

from pyro_vae.data import checks
from pyro_vae.data.checks import check_data, is_integral, value_range
from pyro_vae.model.likelihoods import BernoulliLikelihood, ContinuousBernoulliLikelihood


def test_value_range_sees_nan_and_infinities_anywhere() -> None:
    for bad in (float("nan"), float("inf"), float("-inf")):
        x = torch.zeros(3, 100_001)
        x[2, -1] = bad
        with pytest.raises(ValueError, match="non-finite"):
            check_data(x)
    assert value_range(torch.tensor([[0.5, -2.0, 3.0]])) == (-2.0, 3.0)


@pytest.mark.parametrize("where", [0, checks._BLOCK - 1, checks._BLOCK, 3 * checks._BLOCK + 7])
def test_integrality_finds_one_fraction_in_any_block(where: int) -> None:
    x = torch.ones(3 * checks._BLOCK + 8)
    assert is_integral(x)
    y = x.clone()
    y[where] = 1e-30  # a tiny fraction, which any sum-based shortcut would lose
    assert not is_integral(y)


def test_binary_check_is_exact() -> None:
    like = BernoulliLikelihood(4)
    like.check(torch.tensor([[0.0, 1.0, -0.0, 1.0]]))
    for bad in (0.5, 2.0, -1.0, 1e-38):
        with pytest.raises(ValueError, match="needs binary"):
            like.check(torch.tensor([[0.0, 1.0, bad, 1.0]]))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        ContinuousBernoulliLikelihood(2).check(torch.tensor([[0.5, 1.5]]))


def test_the_memo_forgets_a_tensor_modified_in_place() -> None:
    x = torch.zeros(4, 5)
    BernoulliLikelihood(5).check(x)
    assert value_range(x) == (0.0, 0.0)
    x[1, 2] = 0.5  # bumps x's version counter
    assert value_range(x) == (0.0, 0.5)
    with pytest.raises(ValueError, match="needs binary"):
        BernoulliLikelihood(5).check(x)
    view = x[1]
    view.fill_(float("nan"))  # a write through a view moves the shared version counter too
    with pytest.raises(ValueError, match="NaN"):
        check_data(x)


def test_the_memo_does_not_outlive_its_tensor() -> None:
    before = len(checks._memo)
    x = torch.rand(3, 3)
    value_range(x)
    assert len(checks._memo) == before + 1
    del x
    assert len(checks._memo) == before


def test_a_view_of_a_checked_tensor_is_answered_from_the_memo(monkeypatch) -> None:
    x = torch.bernoulli(torch.rand(50, 8))
    BernoulliLikelihood(8).check(x)
    calls = []
    monkeypatch.setattr(
        torch,
        "aminmax",
        lambda *a: calls.append(1) or (_ for _ in ()).throw(AssertionError("recomputed")),
    )
    BernoulliLikelihood(8).check(x.reshape(50, 8))  # as_tensor's alias: same memory and layout
    assert not calls
    x.reshape(50, 8)[0, 0] = 0.5  # a write through an alias is seen by the original too
    monkeypatch.undo()
    with pytest.raises(ValueError, match="needs binary"):
        BernoulliLikelihood(8).check(x)


def test_inference_tensors_are_checked_every_time() -> None:
    with torch.inference_mode():
        x = torch.zeros(3, 4)
    BernoulliLikelihood(4).check(x)  # no version counter: no memo, and no error
    with torch.inference_mode():
        x[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        check_data(x)


def test_forget_clears_the_memo_after_a_write_behind_torchs_back() -> None:
    import numpy as np

    arr = np.zeros((3, 4), dtype=np.float32)
    x = torch.from_numpy(arr)
    check_data(x)
    arr[0, 0] = np.nan  # torch's version counter does not see this
    checks.forget()
    with pytest.raises(ValueError, match="NaN"):
        check_data(x)
