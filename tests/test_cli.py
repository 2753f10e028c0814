"""The examples' shared command-line pieces."""

import argparse

import pytest

from pyro_vae.experiments.cli import (
    add_architecture_arguments,
    add_optimiser_arguments,
    add_run_arguments,
    apply_preset,
    architecture_kwargs,
    device,
    distributed_session,
    exit_on_errors,
    explicit_dests,
    int_list,
    new_parser,
    non_negative_int,
    parse_args,
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


def test_new_parser_spells_flags_out_and_shows_defaults(capsys):
    p = new_parser("One line.\n\nMore text.")
    add_optimiser_arguments(p, batch_size=64)
    add_run_arguments(p, out="runs/x")
    assert p.description == "One line." and p.allow_abbrev is False
    with pytest.raises(SystemExit):
        p.parse_args(["--batch", "3"])  # no abbreviations
    args, explicit = parse_args(p, ["--lr=0.5", "--cuda"])
    assert (args.batch_size, args.lr, args.out, device(args)) == (64, 0.5, "runs/x", "cuda")
    assert explicit == {"lr", "cuda"}
    p.print_help()
    assert "(default: 64)" in capsys.readouterr().out


def test_architecture_kwargs_are_the_architecture_flags():
    p = new_parser(None)
    add_architecture_arguments(p)
    args = p.parse_args(["--hidden-dims", "32,16", "--z-dim", "2"])
    assert architecture_kwargs(args) == dict(
        z_dim=2,
        hidden_dims=(32, 16),
        activation="relu",
        encoder="mlp",
        decoder="mlp",
        latent_layers=1,
    )


def test_two_latent_layers_default_to_burdas_architecture_unless_flags_say_otherwise():
    p = argparse.ArgumentParser()
    add_architecture_arguments(p)
    kw = architecture_kwargs(p.parse_args(["--latent-layers", "2", "--net", "conv"]))
    assert kw == dict(
        z_dim=100,
        hidden_dims=(200, 200),
        activation="tanh",
        encoder="conv",
        decoder="conv",
        latent_layers=2,
        z2_dim=50,
        hidden2_dims=(100, 100),
    )
    kw = architecture_kwargs(p.parse_args(["--latent-layers", "2", "--z-dim", "8"]))
    assert kw["z_dim"] == 8 and kw["activation"] == "tanh"


def test_errors_exit_with_status_2_and_one_line(capsys):
    p = new_parser(None)
    with pytest.raises(SystemExit) as e, exit_on_errors(p, where=" (rank 1 of 2)"):
        raise ValueError("bad value")
    assert e.value.code == 2 and capsys.readouterr().err == "error (rank 1 of 2): bad value\n"
    with pytest.raises(KeyError), exit_on_errors(p):
        raise KeyError("not a usage error: a traceback")


def test_session_without_distributed_only_turns_errors_into_an_exit(capsys):
    args = argparse.Namespace(distributed=False)
    with distributed_session(new_parser(None), args):
        pass
    with pytest.raises(SystemExit) as e, distributed_session(new_parser(None), args):
        raise FileNotFoundError("no such file")
    assert e.value.code == 2 and "error: no such file" in capsys.readouterr().err
