"""Shared fixtures: Pyro validation on, a clean param store and a fixed seed for every test;
``room`` for tests of the compiled Bernoulli kernel."""

import importlib.util

import pyro
import pytest
import torch


@pytest.fixture(autouse=True)
def _pyro_state():
    pyro.enable_validation(True)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


requires_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA GPU visible to torch (CI has none)"
)


def load_script(path, name: str):
    """Import the example script at ``path`` as a module named ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def room(monkeypatch):
    """Room for new shapes in the Bernoulli likelihood's compiled kernels, whatever other tests
    of this process compiled (their MAX_SHAPES), and no eager logits counted yet."""
    from pyro_vae.model import _bernoulli_kernel

    for kernel in (_bernoulli_kernel.RESIDUAL, _bernoulli_kernel.VALUE):
        monkeypatch.setattr(kernel, "signatures", set())
        monkeypatch.setattr(kernel, "eager_logits", {})
