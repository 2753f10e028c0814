"""CI runs the benchmarks only in their seconds-long smoke mode: they must run and report ratios."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
@pytest.mark.parametrize("script", ["bench_train.py", "bench_eval.py"])
def test_benchmark_smoke_mode(script):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| reference |" in proc.stdout and "stock" in proc.stdout


@pytest.mark.slow
def test_full_test_set_smoke_mode():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(BENCH / "full_test_set.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "64 images at K = 50:" in proc.stdout and "mean log-likelihood -" in proc.stdout
