"""The Bernoulli log-likelihood's compiled kernel (pyro_vae/model/_bernoulli_kernel.py): its
formulas against the eager ones, the compiled path against the eager path (value and gradient),
where it serves and where not, and the fallback when compiling fails."""

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from pyro_vae._work_ahead import work_ahead
from pyro_vae.model import _bernoulli_kernel as bk
from pyro_vae.model.likelihoods import BernoulliLikelihood


def _data(shape, dtype, seed=0, scale=6.0):
    g = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(shape, dtype=dtype, generator=g)
    x = torch.bernoulli(torch.rand(shape[-2:], dtype=dtype, generator=g), generator=g)
    return logits, x


def _eager(logits, x):
    log_p = -F.softplus(logits * (1 - 2 * x), threshold=50.0).sum(-1)
    return log_p, torch.sigmoid(logits) - x


@pytest.mark.parametrize("d", [16, 30, 784])  # a whole group, a ragged one, MNIST's 49
def test_the_formulas_equal_softplus_and_sigmoid(d):
    """Uncompiled, in float64 (where the products lose nothing), the kernel's two outputs are
    -sum softplus((1 - 2x) logit) and sigmoid(logit) - x, logits from -60 to 60 included."""
    logits, x = _data((3, 5, d), torch.float64, scale=20.0)
    logits[0, 0, :4] = torch.tensor([-60.0, 60.0, 0.0, 55.0], dtype=torch.float64)
    log_p, residual = bk.residual_kernel(logits, x)
    expected_log_p, expected_residual = _eager(logits, x)
    torch.testing.assert_close(log_p, expected_log_p, rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(residual, expected_residual, rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(bk.value_kernel(logits, x), log_p, rtol=0, atol=0)


def test_the_formulas_at_infinite_logits():
    """The limits: log p = 0 where the data agree with an infinite logit, -inf where they
    contradict it, and a residual sigmoid(logit) - x of 0 or +-1 (no NaN from inf * 0)."""
    logits = torch.tensor([float("-inf"), float("inf"), float("-inf"), float("inf")])
    x = torch.tensor([0.0, 0.0, 1.0, 1.0])
    for i, (expected, expected_residual) in enumerate(
        [(0, 0), (-math.inf, 1), (-math.inf, -1), (0, 0)]
    ):
        log_p, residual = bk.residual_kernel(logits[i : i + 1], x[i : i + 1])
        assert log_p.item() == expected and residual.item() == expected_residual
        assert bk.value_kernel(logits[i : i + 1], x[i : i + 1]).item() == expected


@pytest.mark.parametrize("scale", [0.01, 2.0, 8.0, 20.0])
def test_float32_is_as_close_to_the_exact_value_as_the_eager_path(scale):
    """In float32 both paths round their sums over 784 pixels; the products also round every
    factor 1 + e (about 1e-4 nats over 784 pixels near logit 0). Against float64's exact value
    the kernel's error stays within twice the eager path's plus 1.5e-4."""
    logits, x = _data((64, 784), torch.float64, scale=scale)
    exact, exact_residual = _eager(logits, x)
    log_p, residual = bk.residual_kernel(logits.float(), x.float())
    eager_log_p, _ = _eager(logits.float(), x.float())
    eager_error = (eager_log_p.double() - exact).abs().max()
    assert (log_p.double() - exact).abs().max() <= 2 * eager_error + 1.5e-4
    torch.testing.assert_close(residual.double(), exact_residual, rtol=0, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_compiled_path_gives_the_eager_paths_value_and_gradient(dtype, room):
    """BernoulliLikelihood.log_prob on [K, B, D] logits, compiled (any size here) against eager:
    the same value and gradient to rounding, also for a second backward of the same graph
    (retain_graph: the compiled residual serves once, then it is recomputed)."""
    like = BernoulliLikelihood(30)
    logits, x = _data((4, 8, 30), dtype)
    weights = torch.randn(4, 8, dtype=dtype)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)

    def value_and_grad(leaf, **kw):
        out = like.log_prob(leaf, x)
        out.backward(weights, **kw)
        return out.detach()

    eager_leaf = logits.clone().requires_grad_()
    with bk.settings(enabled=False):
        eager_value = value_and_grad(eager_leaf)
    compiled_leaf = logits.clone().requires_grad_()
    with bk.settings(enabled=True, min_logits=0):
        out = like.log_prob(compiled_leaf, x)
        assert len(bk.RESIDUAL.signatures) == 1 and bk.RESIDUAL.compiled is not None
        (signature,) = bk.RESIDUAL.signatures
        assert signature[:5] == (
            compiled_leaf.shape,
            compiled_leaf.stride(),
            x.shape,
            x.stride(),
            dtype,
        )
        out.backward(weights, retain_graph=True)
        first = compiled_leaf.grad.clone()
        compiled_leaf.grad = None
        out.backward(weights)
    torch.testing.assert_close(out.detach(), eager_value, **tol)
    torch.testing.assert_close(first, eager_leaf.grad, **tol)
    torch.testing.assert_close(compiled_leaf.grad, eager_leaf.grad, **tol)


def test_where_the_compiled_kernel_serves(room):
    """Large CPU tensors in float32/64 with x of the same dtype that fits the logits; not
    below COMPILE_MIN_LOGITS, in half precision, against other-dtype or wider data, with
    PYRO_VAE_COMPILE=0, or past MAX_SHAPES new shapes."""
    logits, x = _data((2, 3, 16), torch.float32)
    with bk.settings(min_logits=logits.numel() + 1):
        assert bk.fused_log_prob(logits, x) is None
    with bk.settings(enabled=True, min_logits=0):
        assert bk.fused_log_prob(logits.half(), x.half()) is None
        assert bk.fused_log_prob(logits, x.double()) is None
        assert bk.fused_log_prob(logits[0], x.expand(2, 3, 16)) is None
    with bk.settings(enabled=False, min_logits=0):
        assert bk.fused_log_prob(logits, x) is None
    with bk.settings(enabled=True, min_logits=0):
        assert bk.fused_log_prob(logits, x) is not None
        bk.RESIDUAL.signatures.update(("another shape", i) for i in range(bk.MAX_SHAPES - 1))
        assert bk.fused_log_prob(logits, x) is not None  # compiled already
        assert bk.fused_log_prob(logits[:, :2], x[:2]) is None  # one shape too many


def test_the_value_kernel_is_compiled_once_a_shape_has_run_long_enough(room):
    """Without a gradient, BernoulliLikelihood.log_prob runs eagerly and counts a signature's
    logits until they pass VALUE_COMPILE_AFTER, then runs the compiled value kernel: the same
    value to float64 rounding. Each shape counts on its own; with a gradient the pair's kernel
    serves, not this one."""
    like = BernoulliLikelihood(30)
    logits, x = _data((4, 8, 30), torch.float64)
    expected, _ = _eager(logits, x)
    n = logits.numel()
    with torch.no_grad(), bk.settings(enabled=True, min_logits=0, value_compile_after=3 * n):
        for passes in range(1, 4):
            out = like.log_prob(logits, x)
            torch.testing.assert_close(out, expected, rtol=1e-13, atol=1e-12)
            assert not bk.VALUE.signatures and list(bk.VALUE.eager_logits.values()) == [passes * n]
        out = like.log_prob(logits, x)  # past 3n: compiled
        assert len(bk.VALUE.signatures) == 1 and not bk.VALUE.eager_logits
        torch.testing.assert_close(out, expected, rtol=1e-13, atol=1e-12)
        torch.testing.assert_close(like.log_prob(logits[:2], x), expected[:2], rtol=0, atol=0)
        assert len(bk.VALUE.signatures) == 1 and list(bk.VALUE.eager_logits.values()) == [n // 2]
    with bk.settings(enabled=True, min_logits=0, value_compile_after=0):
        like.log_prob(logits.clone().requires_grad_(), x)
    assert len(bk.VALUE.signatures) == 1 and len(bk.RESIDUAL.signatures) == 1


def test_with_the_work_ahead_known_the_value_kernel_compiles_at_once_or_not_at_all(room):
    """Within a work_ahead block a signature of the plan's tile size is compiled at its first
    call where its eager logits and the logits ahead exceed the threshold (without the plan:
    only once its eager logits alone do, late), and stays eager through a block that does not;
    a later block counts what earlier ones ran eagerly; a tile of another size is not in the
    plan."""
    like = BernoulliLikelihood(30)
    logits, x = _data((4, 8, 30), torch.float64)
    expected, _ = _eager(logits, x)
    n, half = logits.numel(), logits[:2]
    with torch.no_grad(), bk.settings(enabled=True, min_logits=0, value_compile_after=3 * n):
        with work_ahead(n, 3):  # 3n in all: not past 3n
            for passes in range(1, 4):
                torch.testing.assert_close(like.log_prob(logits, x), expected, rtol=0, atol=0)
                assert not bk.VALUE.signatures
                assert bk.VALUE.eager_logits == {next(iter(bk.VALUE.eager_logits)): passes * n}
        with work_ahead(n, 7):  # tiles of n: the plan says nothing of tiles of n / 2
            like.log_prob(half, x)
            assert not bk.VALUE.signatures
        with work_ahead(n // 2, 7):  # n / 2 seen, n / 2 now, 3n ahead: past 3n at once
            out = like.log_prob(half, x)
            assert {s[0] for s in bk.VALUE.signatures} == {half.shape}
            assert list(bk.VALUE.eager_logits.values()) == [3 * n]
            torch.testing.assert_close(out, expected[:2], rtol=1e-13, atol=1e-12)
        with work_ahead(n, 1):  # 3n seen, n now and none ahead: past 3n
            out = like.log_prob(logits, x)
            assert len(bk.VALUE.signatures) == 2 and not bk.VALUE.eager_logits
            torch.testing.assert_close(out, expected, rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize(
    ("fast_path", "num_samples", "plan"),
    # the model's own tiles: 7, 7, 7, 4; the Pyro program's, validated: 1, 7, 7, 6
    [(True, 25, 2 * 3 * 1050), (False, 21, 2 * 2 * 1050)],
)
@pytest.mark.parametrize("past", [True, False])
def test_the_k_sample_log_likelihood_states_its_full_tiles(
    fast_path, num_samples, plan, past, monkeypatch, room
):
    """pv.log_likelihood states its full tiles (2 batches of 5, chunks of 7 samples, 30 pixels:
    1,050 logits a tile) on either path: past the threshold, its full tile compiles at its first
    call; at it, not at all; the ragged tiles and the first-batch checks are not in the plan."""
    import pyro_vae as pv

    calls = []

    def recorded(elements):
        ahead = take(elements)
        calls.append((elements, ahead, len(bk.VALUE.signatures)))
        return ahead

    take = bk.take
    monkeypatch.setattr(bk, "take", recorded)
    g = torch.Generator().manual_seed(1)
    data = torch.bernoulli(torch.rand(10, 30, generator=g), generator=g)
    vae = pv.VAE(30, 3, (16,))
    with bk.settings(enabled=True, min_logits=0, value_compile_after=plan - past):
        pv.log_likelihood(
            vae.model,
            vae.guide,
            data,
            num_samples=num_samples,
            batch_size=5,
            chunk_size=7,
            fast_path=fast_path,
        )
    full = [(ahead, compiled) for elements, ahead, compiled in calls if elements == 1050]
    assert [ahead for ahead, _ in full] == [plan - 1050 * i for i in range(1, len(full) + 1)]
    assert len(full) * 1050 == plan
    assert [compiled for _, compiled in full] == [0] + [int(past)] * (len(full) - 1)
    shapes = {torch.Size([7, 5, 30])} if past else set()
    assert {s[0] for s in bk.VALUE.signatures} == shapes
    assert all(ahead == 0 for elements, ahead, _ in calls if elements != 1050)


def test_the_value_kernel_compiles_at_most_max_shapes_and_counts_a_bounded_table(room):
    """Past MAX_SHAPES compiled signatures a new one stays eager; with _MAX_COUNTED signatures
    counted, a new one takes the place of the least run, and those counted go on."""
    logits, x = _data((4, 8, 30), torch.float64)
    with torch.no_grad(), bk.settings(enabled=True, min_logits=0, value_compile_after=0):
        bk.VALUE.signatures.update(("another shape", i) for i in range(bk.MAX_SHAPES - 1))
        assert bk.fused_value(logits, x) is not None
        assert bk.fused_value(logits[:2], x) is None  # one shape too many
    bk.VALUE.signatures.clear()
    n = logits.numel()
    with torch.no_grad(), bk.settings(enabled=True, min_logits=0, value_compile_after=10 * n):
        bk.VALUE.eager_logits.update({("counted", i): 2 + i for i in range(bk._MAX_COUNTED - 1)})
        assert bk.fused_value(logits, x) is None  # the table is full now
        assert bk.fused_value(logits[:2], x) is None  # ... so ("counted", 0) makes room
        assert bk.fused_value(logits, x) is None
        assert len(bk.VALUE.eager_logits) == bk._MAX_COUNTED
        assert ("counted", 0) not in bk.VALUE.eager_logits
        counts = sorted(v for k, v in bk.VALUE.eager_logits.items() if k[0] != "counted")
        assert counts == [n // 2, 2 * n]


def test_the_value_kernel_leaves_transforms_and_subclasses_to_the_eager_path(room):
    """Under torch.func.vmap, or on a tensor subclass with a __torch_function__, the value is
    the eager one and nothing is compiled (a compiled function would trace them)."""

    class Tagged(torch.Tensor):
        pass

    like = BernoulliLikelihood(30)
    logits, x = _data((4, 8, 30), torch.float64)
    expected, _ = _eager(logits, x)
    with torch.no_grad(), bk.settings(enabled=True, min_logits=0, value_compile_after=0):
        mapped = torch.func.vmap(lambda t: like.log_prob(t, x))(logits)
        tagged = like.log_prob(logits.as_subclass(Tagged), x)
    torch.testing.assert_close(mapped, expected, rtol=1e-13, atol=1e-12)
    torch.testing.assert_close(tagged.as_subclass(torch.Tensor), expected, rtol=1e-13, atol=1e-12)
    assert not bk.VALUE.signatures and not bk.VALUE.eager_logits


def test_the_k_sample_log_likelihood_with_the_compiled_value_equals_the_eager_one(room):
    """pv.log_likelihood in float64 with the value kernel compiled from the first tile on,
    against the eager path: the same estimates to float64 rounding, and the kernel really ran
    (on the tiles of 7 samples and the ragged last one of 4, among others)."""
    import pyro_vae as pv

    g = torch.Generator().manual_seed(1)
    data = torch.bernoulli(torch.rand(10, 30, generator=g), generator=g).double()
    torch.manual_seed(0)
    vae = pv.VAE(30, 3, (16,)).double()
    estimates = {}
    for compiled in (True, False):
        torch.manual_seed(2)
        with bk.settings(enabled=compiled, min_logits=0, value_compile_after=0):
            estimates[compiled] = pv.log_likelihood(
                vae.model, vae.guide, data, num_samples=25, batch_size=5, chunk_size=7
            )
    shapes = {signature[0] for signature in bk.VALUE.signatures}
    assert {torch.Size([7, 5, 30]), torch.Size([4, 5, 30])} <= shapes
    torch.testing.assert_close(estimates[True], estimates[False], rtol=1e-12, atol=1e-12)


def test_the_default_threshold_compiles_k_samples_not_one_batch():
    """At the defaults a K = 5 MNIST batch of 128 qualifies, a K = 1 batch does not."""
    assert 5 * 128 * 784 >= bk.COMPILE_MIN_LOGITS > 128 * 784


def test_the_default_value_threshold_compiles_long_evaluations_not_short_ones():
    """Work of unknown length switches after 3 x 2^30 logits: 1,000 images at K = 1000 (the
    README's quick evaluations and the tests) stay eager. With the full tiles ahead stated (10
    images x 133 samples, the default on a CPU), the test set and 1,000 images at K = 5000
    compile at their first tile; the flagship's default evaluation (10,000 images at K = 500,
    three full tiles of an image's 500 samples) stays eager throughout."""
    assert bk.VALUE_COMPILE_AFTER > 1000 * 1000 * 784
    tile = 133 * 10 * 784
    assert 133 == 2**20 // (10 * 784) and 10 == 2**20 // (784 * 128)
    assert 100 * (4999 // 133) * tile > bk.VALUE_COMPILE_AFTER  # 100 batches of 37 full tiles
    assert 1000 * (499 // 133) * tile <= bk.VALUE_COMPILE_AFTER  # 1000 batches of 3


def test_the_environment_switch_turns_compiling_off():
    code = (
        "import torch; from pyro_vae.model import _bernoulli_kernel as bk; "
        "l = torch.randn(bk.COMPILE_MIN_LOGITS // 784 + 1, 784); x = (l > 0).float(); "
        "print(bk.fused_log_prob(l, x) is None)"
    )
    env = dict(os.environ, PYRO_VAE_COMPILE="0")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"


def test_a_failed_compile_warns_once_and_the_eager_path_serves(monkeypatch, room):
    """No C++ compiler, say: a RuntimeWarning names the cause and the switch, the value is
    the eager one, and later calls do not try again."""
    calls = []

    def broken_compile(fn, **kwargs):
        def run(*args):
            calls.append(1)
            raise RuntimeError("InvalidCxxCompiler: no working C++ compiler found\nmore")

        return run

    monkeypatch.setattr(bk.RESIDUAL, "compiled", None)
    monkeypatch.setattr(bk, "_failed", False)
    monkeypatch.setattr(torch, "compile", broken_compile)
    like = BernoulliLikelihood(16)
    logits, x = _data((2, 3, 16), torch.float64)
    leaf = logits.clone().requires_grad_()
    with bk.settings(enabled=True, min_logits=0):
        with pytest.warns(RuntimeWarning, match="InvalidCxxCompiler.*PYRO_VAE_COMPILE=0"):
            out = like.log_prob(leaf, x)
        again = like.log_prob(leaf, x)
    assert bk._failed and len(calls) == 1
    with torch.no_grad(), bk.settings(enabled=True, min_logits=0, value_compile_after=0):
        assert bk.fused_value(logits, x) is None  # the value kernel does not try either
    expected, residual = _eager(logits, x)
    torch.testing.assert_close(out.detach(), expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(again.detach(), expected, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(out.sum(), leaf)
    torch.testing.assert_close(grad, -residual)


def test_the_compiled_path_passes_gradcheck(room):
    """gradcheck also runs the backward twice on one graph and wants the same bits (the
    second backward runs the kernel again), and gradgradcheck the create_graph path."""
    like = BernoulliLikelihood(20)
    logits, x = _data((3, 4, 20), torch.float64)
    leaf = logits.requires_grad_()
    with bk.settings(enabled=True, min_logits=0):
        assert torch.autograd.gradcheck(lambda t: like.log_prob(t, x), (leaf,))
        assert torch.autograd.gradgradcheck(lambda t: like.log_prob(t, x), (leaf,))
        assert len(bk.RESIDUAL.signatures) == 1


@pytest.mark.parametrize("elbo", ["iwae", "dreg"])
def test_training_with_the_compiled_kernel_ends_where_the_eager_path_does(elbo, room):
    """pv.train at K = 5 in float64 (the Pyro program on its validated steps, the VAE's own log
    weights between them), compiled against eager: the same losses and parameters to float64
    rounding after 36 steps, and the compiled kernel really ran (two shapes: the full batch and
    the last, smaller one)."""
    from dataclasses import replace

    import pyro_vae as pv

    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.rand(120, 12, generator=g), generator=g).double()
    config = pv.TrainConfig(
        epochs=3, batch_size=16, lr=0.01, elbo=elbo, num_particles=5, eval_every=0, progress=False
    )
    ends = {}
    for compiled in (True, False):
        torch.manual_seed(0)
        vae = pv.VAE(12, 3, (16,)).double()
        with bk.settings(enabled=compiled, min_logits=0):
            result = pv.train(vae, x, config=replace(config))
        ends[compiled] = vae.state_dict(), [h["train_elbo"] for h in result.history]
    assert len(bk.RESIDUAL.signatures) == 2
    (state, elbos), (ref, ref_elbos) = ends[True], ends[False]
    assert elbos == pytest.approx(ref_elbos, rel=1e-10)
    for name, p in state.items():
        torch.testing.assert_close(p, ref[name], rtol=1e-8, atol=1e-10, msg=name)


def test_broadcasts_to_says_what_torch_broadcast_shapes_says():
    import itertools

    shapes = [(), (1,), (3,), (1, 3), (2, 3), (2, 1), (4, 2, 3), (1, 2, 3), (4, 1, 3), (2, 2, 3)]
    for a, b in itertools.product(shapes, shapes):
        try:
            expected = torch.broadcast_shapes(a, b) == torch.Size(b)
        except RuntimeError:
            expected = False
        assert bk.broadcasts_to(torch.Size(a), torch.Size(b)) == expected, (a, b)
