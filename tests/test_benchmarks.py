"""CI runs the benchmarks only in their seconds-long smoke mode: they must run and report ratios."""

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _smoke(script: str) -> str:
    """Run ``benchmarks/<script> --smoke`` on one thread; its stdout, after it exited 0."""
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("script", ["bench_train.py", "bench_eval.py"])
def test_benchmark_smoke_mode(script):
    out = _smoke(script)
    assert "| reference |" in out and "stock" in out
    if script == "bench_train.py":  # the tuned reference and both ratios, each estimator
        assert out.count("| reference, fused Adam |") >= 8
        assert out.count("| the step's matrix products alone |") >= 8
        # the library in its own process (train()'s allocator setting), the references not
        assert out.count("| reference, fused Adam, in the library's process |") >= 8
        assert "page faults a step" in out
        assert "set there: True" in out or platform.libc_ver()[0] != "glibc"
    else:  # the 3 MB-tile reference, the Pyro program on every tile, the value kernel's A/B
        assert "reference, 3 MB tiles" in out and "| program |" in out
        assert "| stock, compiled value |" in out and "| stock, eager value |" in out


@pytest.mark.slow
def test_setup_cost_smoke_mode():
    out = _smoke("bench_setup.py")
    assert "binarize='dynamic'" in out and "Bernoulli support check" in out


@pytest.mark.slow
def test_full_test_set_smoke_mode():
    out = _smoke("full_test_set.py")
    assert "64 images at K = 50:" in out and "mean log-likelihood -" in out


@pytest.mark.slow
def test_ais_benchmark_smoke_mode():
    out = _smoke("bench_ais.py")
    assert "| reference |" in out and "| stock |" in out


@pytest.mark.slow
def test_parts_benchmark_smoke_mode():
    """The draw, batch, likelihood and evaluation-value rows, each with its reference; the
    script itself asserts that train()'s batch is the hand-written one, every likelihood's
    gradient is the cross-entropy's, and every value on the evaluation tile is too."""
    out = _smoke("bench_parts.py")
    assert out.count("| reference |") == 5 and out.count("| library |") == 4
    assert "| batch [16, 64] of 512 rows |" in out
    assert "softplus under autograd" in out
    assert out.count("| library, eager path |") == 3
    assert out.count("| library, compiled kernel |") == 2
    assert "| log-likelihood value, evaluation tile [128, 128, 64] |" in out
    assert out.count("| library, compiled value kernel |") == 1


@pytest.mark.slow
def test_gemm_floor_smoke_mode():
    """The rates (aten, and oneDNN where torch has it), the floors of target 2 and of the K = 5
    step, and the in-step A/B. The script itself asserts that oneDNN's products equal aten's and
    that its oneDNN layer gives nn.Linear's output and gradients."""
    out = _smoke("gemm_floor.py")
    assert out.count("| aten |") == 4 and "s of matrix products alone" in out
    if "oneDNN's linear op: available" in out:
        assert out.count("| oneDNN |") == 4
        assert "aten for the weight gradient: **" in out
        assert "| stock, Linear layers through oneDNN |" in out
