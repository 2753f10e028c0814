"""The examples' shared command-line pieces."""

import argparse

import pytest

from pyro_vae.experiments.cli import (
    apply_preset,
    explicit_dests,
    int_list,
    non_negative_int,
    positive,
)


def _parser():
    p = argparse.ArgumentParser(allow_abbrev=False)
    p.add_argument("--epochs", type=positive(int), default=10)
    p.add_argument("--lr", type=positive(float), default=1e-3)
    p.add_argument("--z-dim", type=int, default=20)
    return p


def test_explicit_dests_sees_both_spellings():
    p = _parser()
    assert explicit_dests(p, ["--epochs", "3", "--lr=0.1"]) == {"epochs", "lr"}
    assert explicit_dests(p, []) == set()


def test_apply_preset_keeps_explicit_flags():
    model, train = {"z_dim": 20}, {"epochs": 3, "lr": 0.1}
    preset = ({"z_dim": 50}, {"epochs": 3280, "lr": 1e-3, "batch_size": 20})
    apply_preset(preset, model, train, explicit={"epochs"}, train_keys={"epochs", "lr"})
    assert model == {"z_dim": 50} and train == {"epochs": 3, "lr": 1e-3}


def test_argument_types_say_what_is_wrong():
    with pytest.raises(argparse.ArgumentTypeError, match="must be > 0, got 0"):
        positive(int)("0")
    with pytest.raises(argparse.ArgumentTypeError, match="must be >= 0, got -1"):
        non_negative_int("-1")
    parse = int_list("--hidden-dims", 1, example="200,200")
    assert parse("200, 200") == (200, 200) and parse("400") == (400,)
    with pytest.raises(argparse.ArgumentTypeError, match="takes integers like '200,200'"):
        parse("a,b")
    with pytest.raises(argparse.ArgumentTypeError, match="is empty"):
        parse(" ")
    with pytest.raises(argparse.ArgumentTypeError, match="values must be >= 1"):
        parse("0,4")
