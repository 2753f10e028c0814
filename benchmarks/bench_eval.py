"""K-sample log-likelihood evaluation of pyro_vae against a hand-written PyTorch reference.

Throughput (images x samples per second) of ``pyro_vae.log_likelihood(vae.model, vae.guide, x,
K)`` with its default batching and chunking, against the reference estimate with the same batch
and chunk shapes, interleaved over rounds in one process; peak memory of each, one fresh
subprocess per (implementation, K); and the seconds for the whole 10,000-image MNIST test set at
K = 5000, extrapolated from a probe with the full run's batch and chunk shapes.

    python benchmarks/bench_eval.py            # full (about 2 min on a 2-core CPU)
    python benchmarks/bench_eval.py --smoke    # seconds, for CI
    python benchmarks/bench_eval.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    RefVAE,
    add_timing_args,
    environment,
    fmt_num,
    fmt_ratio,
    interleaved,
    load_images,
    markdown_table,
    quartiles,
    setup_clock,
    sync,
    timed,
)

import pyro_vae  # noqa: E402
from pyro_vae import VAE, log_likelihood  # noqa: E402
from pyro_vae.infer.evaluate import CPU_TILE_ELEMENTS, MIN_CHUNK  # noqa: E402
from pyro_vae.model import _bernoulli_kernel as bernoulli_kernel  # noqa: E402

#: whole batches of the full run's batch size that the whole-test-set probe evaluates
FULL_PROBE_BATCHES = 2
#: whole chunks of the full run's chunk size per image in that probe (unless --full-probe-k)
FULL_PROBE_CHUNKS = 4


def library_shapes(n: int, d: int, k: int, max_elements: int = CPU_TILE_ELEMENTS):
    """(batch_size, chunk_size) that ``log_likelihood`` picks by default for ``n`` datapoints of
    ``d`` elements and K = ``k`` (evaluate.py) on a CPU: a batch that leaves room for tiles of
    at least min(K, MIN_CHUNK) samples, then as many samples per tile as keep one ``[tile,
    batch, d]`` tensor under ``max_elements`` (``tile_elements``: about 4 MB of float32)."""
    d = max(1, d)
    batch = max(1, min(n, max_elements // (d * min(k, MIN_CHUNK))))
    chunk = max(1, min(k, max_elements // (batch * d)))
    return batch, chunk


#: the hand-written evaluations (batch of images, samples per chunk): the issue's "decent" loop
#: (the encoder once per batch of 100, K in chunks of 100: [100, 100, 784] logits, 31 MB) and the
#: same loop with 3 MB tiles
REFERENCE_SHAPES = {"reference": (100, 100), "reference, 3 MB tiles": (100, 10)}


def build(cfg, device, seed=0):
    torch.manual_seed(seed)
    pyro.set_rng_seed(seed)
    vae = VAE(**cfg).to(device).eval()
    return vae, RefVAE.from_pyro(vae).eval()


def binarized_test(smoke, device):
    _, test_x = load_images(smoke, device)
    g = torch.Generator(device=test_x.device).manual_seed(123)
    return torch.bernoulli(test_x, generator=g)


#: ``stock`` with the Bernoulli likelihood's value kernel compiled from the first tile on, or
#: kept eager (pyro_vae/model/_bernoulli_kernel.py): ``stock`` compiles it where the work
#: ahead or the logits run so far pay for the compile, which a measurement here may not reach
VALUE_VARIANTS = {
    "stock, compiled value": dict(enabled=True, value_compile_after=0),
    "stock, eager value": dict(enabled=False),
}


def candidates(vae, ref, x, k, variants):
    """Callables over the same data: the hand-written references (REFERENCE_SHAPES), ``stock``
    (``log_likelihood`` with its defaults: the VAE's own tiles, the encoder once per batch),
    ``program`` (``fast_path=False``: the Pyro program on every tile, the same shapes) and
    VALUE_VARIANTS."""
    d = x[0].numel()
    batch, chunk = library_shapes(len(x), d, k)
    out = {}
    for name, (b, c) in REFERENCE_SHAPES.items():
        if name == "reference" or name in variants:
            out[name] = lambda b=b, c=c: ref.log_likelihood(x, k, min(b, len(x)), min(c, k))
    if "stock" in variants:
        out["stock"] = lambda: log_likelihood(vae.model, vae.guide, x, k)
    if "program" in variants:
        out["program"] = lambda: log_likelihood(vae.model, vae.guide, x, k, fast_path=False)
    for name, settings in VALUE_VARIANTS.items():
        if name in variants:

            def run(settings=settings):
                with bernoulli_kernel.settings(**settings):
                    return log_likelihood(vae.model, vae.guide, x, k)

            out[name] = run
    return out, (batch, chunk)


# -- peak memory in a fresh process --------------------------------------------------------------
def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def memory_child(impl: str, k: int, n: int, cfg: dict, device_name: str, smoke: bool) -> dict:
    """Run one evaluation and report its peak memory increase in MiB.

    CPU: peak RSS. The kernel's high-water mark (VmHWM) is reset by writing 5 to
    /proc/self/clear_refs right before the evaluation (after imports, model, data and a small
    warm-up), so peak - RSS-before is the evaluation's own peak; without /proc (not Linux) the
    fallback is ru_maxrss after - before, which misses a peak lower than the process's earlier
    high-water mark. CUDA: torch.cuda.max_memory_allocated after reset_peak_memory_stats, minus
    the memory allocated before.
    """
    device = torch.device(device_name)
    vae, ref = build(cfg, device)
    x = binarized_test(smoke, device)[:n]
    cands, shapes = candidates(vae, ref, x, k, [impl])
    fn = cands[impl]
    cands_small, _ = candidates(vae, ref, x[:2], 2, [impl])
    cands_small[impl]()  # warm-up: lazy initialisation is not the evaluation's memory
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        t = timed(fn, device)
        peak = torch.cuda.max_memory_allocated(device) - before
        method = "cuda max_memory_allocated"
    else:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            before = _status_kb("VmRSS") * 1024
            t = timed(fn, device)
            peak = _status_kb("VmHWM") * 1024 - before
            method = "VmHWM reset via clear_refs"
        except OSError:
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            t = timed(fn, device)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
            method = "ru_maxrss delta"
    return {
        "impl": impl,
        "K": k,
        "n": len(x),
        "batch": shapes[0],
        "chunk": shapes[1],
        "peak_mib": peak / 2**20,
        "seconds": t,
        "method": method,
    }


def measure_memory(impl, k, n, cfg, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--_memory-child",
        json.dumps(
            {"impl": impl, "k": k, "n": n, "cfg": cfg, "device": args.device, "smoke": args.smoke}
        ),
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the benchmark -------------------------------------------------------------------------------
def bench_ks(args, device, cfg, vae, ref, test):
    rows, raw = [], {}
    for k in args.ks:
        n = max(1, min(len(test), args.work // k))
        x = test[:n]
        cands, (batch, chunk) = candidates(vae, ref, x, k, args.variants)
        if args.warmup:
            for fn in cands.values():
                fn()
        times = interleaved(cands, args.rounds, device)
        # the two estimates agree within Monte Carlo error (a check on the reference)
        torch.manual_seed(1)
        ll_lib = float(log_likelihood(vae.model, vae.guide, x, k).mean())
        torch.manual_seed(1)
        ll_ref = float(ref.log_likelihood(x, k, min(100, n), min(100, k)).mean())
        lls = {"reference": ll_ref, "stock": ll_lib}
        mem = {}
        if args.memory and (not args.smoke or k == args.ks[-1]):
            for impl in ("reference", "reference, 3 MB tiles", "stock"):
                if impl in cands:
                    mem[impl] = measure_memory(impl, k, n, cfg, args)
        raw[k] = {
            "n": n,
            "batch": batch,
            "chunk": chunk,
            "seconds": times,
            "mean_log_likelihood": lls,
            "memory": mem,
        }
        for name, ts in times.items():
            tput = quartiles([n * k / t for t in ts])[1]
            ratio = (
                "1"
                if name == "reference"
                else fmt_ratio([a / b for a, b in zip(times["reference"], ts, strict=True)])
            )
            peak = f"{mem[name]['peak_mib']:.0f}" if name in mem else ""
            ll = f"{lls[name]:.2f}" if name in lls else ""
            b, c = REFERENCE_SHAPES.get(name, (batch, chunk))
            shape = f"[{min(c, k)}, {min(b, n)}, {x.shape[1]}]"
            rows.append([k, n, shape, name, fmt_num(tput), ratio, peak, ll])
        print(f"  K={k}: done", file=sys.stderr, flush=True)
    table = markdown_table(
        [
            "K",
            "images",
            "chunk tensor [k, B, D]",
            "implementation",
            "images x samples / s",
            "ratio pyro/ref: median [q1, q3]",
            "peak memory MiB",
            "mean log p(x)",
        ],
        rows,
    )
    return table, raw


def bench_full(args, device, vae, ref, test):
    """The whole test set at K = args.full_k, extrapolated from a probe with the full run's own
    shapes. For 10,000 MNIST images at K = 5000 the library's defaults on a CPU are batches of
    10 images and tiles of 133 samples (a [133, 10, 784] tile, 4 MB): 1000 batches, each of 37
    tiles of 133 and one of 79, the encoder once per batch; the first batch's first sample is
    also computed by the Pyro program (the run-time check). The references: batches of 100.

    The probe is ``FULL_PROBE_BATCHES`` whole batches x ``full_probe_k`` samples, rounded down to
    whole tiles (default ``FULL_PROBE_CHUNKS`` tiles) and at least 100 images, so its tiles are
    the full run's; its time x (images / probe images) x (full K / probe K) is the full run's.
    ``benchmarks/full_test_set.py`` measures the whole run itself."""
    n, d = test.shape[0], test.shape[1]
    rows, raw = [], {}
    k_full = args.full_k
    b, c = library_shapes(n, d, k_full)
    # whole batches of the library's and of the reference's (100 images)
    pn = min(n, max(FULL_PROBE_BATCHES * b, -(-100 // b) * b))
    probe_k = FULL_PROBE_CHUNKS * c if args.full_probe_k is None else args.full_probe_k
    probe_k = min(k_full, max(c, probe_k - probe_k % c))
    # a probe K >= the chunk >= min(full K, MIN_CHUNK) keeps the batch, and so the chunk, as is
    assert library_shapes(pn, d, probe_k) == (b, c), (library_shapes(pn, d, probe_k), (b, c))
    x = test[:pn]
    scale = (n / pn) * (k_full / probe_k)
    configs = {  # label: implementation
        "reference (batches of 100, chunks of 100)": "reference",
        "reference, 3 MB tiles (batches of 100, chunks of 10)": "reference, 3 MB tiles",
        "stock (library default shapes)": "stock",
    }
    fns = {}
    for label, impl in configs.items():
        cands, _ = candidates(vae, ref, x, probe_k, [impl])
        fns[label] = cands[impl]
    times = interleaved(fns, args.full_rounds, device)
    for label, ts in times.items():
        med = quartiles(ts)[1]
        full = med * scale
        rb, rc = REFERENCE_SHAPES.get(configs[label], (b, c))
        rows.append(
            [
                label,
                f"[{min(rc, k_full)}, {min(rb, pn)}, {d}]",
                f"{pn} images x K={probe_k}",
                f"{med:.2f}",
                f"{full:,.1f} s ({full / 60:.1f} min)",
            ]
        )
        raw[label] = {
            "probe_seconds": ts,
            "probe_images": pn,
            "probe_k": probe_k,
            "batch": b,
            "chunk": c,
            "scale": scale,
        }
    table = markdown_table(
        [
            "implementation",
            "chunk tensor [k, B, D]",
            "probe",
            "probe seconds (median)",
            f"EXTRAPOLATED: {n} images at K={k_full}",
        ],
        rows,
    )
    return table, raw


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 1-2 rounds (CI, < 20 s)")
    add_timing_args(p)
    p.add_argument("--ks", type=int, nargs="+", default=None)
    p.add_argument(
        "--work",
        type=int,
        default=None,
        help="images x samples per measurement: images = work // K",
    )
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument(
        "--variants",
        nargs="+",
        default=None,
        choices=["stock", "program", "reference, 3 MB tiles", *VALUE_VARIANTS],
    )
    p.add_argument("--no-memory", dest="memory", action="store_false")
    p.add_argument("--full-k", type=int, default=5000)
    p.add_argument(
        "--full-probe-k",
        type=int,
        default=None,
        help="samples per image in the full-set probe, rounded down to whole chunks of the full "
        f"run (default {FULL_PROBE_CHUNKS} chunks)",
    )
    p.add_argument("--full-rounds", type=int, default=None, help="0 skips the full-set estimate")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--_memory-child", dest="memory_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    device = pyro_vae.resolve_device(args.device)
    if args.memory_child:
        if args.threads:
            torch.set_num_threads(args.threads)
        spec = json.loads(args.memory_child)
        cfg = dict(spec["cfg"], hidden_dims=tuple(spec["cfg"]["hidden_dims"]))
        print(
            json.dumps(
                memory_child(spec["impl"], spec["k"], spec["n"], cfg, spec["device"], spec["smoke"])
            )
        )
        return None
    setup_clock(args, device)
    smoke = args.smoke
    args.ks = args.ks or ([10, 100] if smoke else [100, 1000, 5000])
    args.work = args.work or (2000 if smoke else 50_000)
    args.rounds = args.rounds or (1 if smoke else 4)
    args.full_rounds = (1 if smoke else 2) if args.full_rounds is None else args.full_rounds
    args.warmup = not smoke
    args.variants = args.variants or (
        ["stock", "program", *VALUE_VARIANTS]
        if smoke
        else ["stock", "program", "reference, 3 MB tiles", "stock, compiled value"]
    )
    if smoke:
        args.full_k, args.full_probe_k = 100, None
    cfg = dict(x_dim=784, z_dim=8 if smoke else 20, hidden_dims=[32] if smoke else [400])
    vae, ref = build(dict(cfg, hidden_dims=tuple(cfg["hidden_dims"])), device)
    test = binarized_test(smoke, device)

    t0 = time.perf_counter()
    print(f"# Log-likelihood evaluation benchmark\n\n{environment(device)}\n")
    print(
        f"Model {cfg['x_dim']}-{cfg['hidden_dims']}-{cfg['z_dim']} ReLU, Bernoulli, N(0, I) "
        f"prior, untrained weights (timing does not depend on them); "
        f"{'random stand-in' if smoke else 'MNIST test'} images binarized once; each "
        f"measurement evaluates about {args.work:,} images x samples; {args.rounds} "
        f"interleaved rounds; library tiles of {CPU_TILE_ELEMENTS:,} elements on a CPU, "
        f"MIN_CHUNK = {MIN_CHUNK}; the reference: batches of 100 images, chunks of 100 samples.\n"
    )
    table, raw = bench_ks(args, device, cfg, vae, ref, test)
    print("## Throughput and peak memory per K\n\n" + table + "\n")
    full_raw = None
    if args.full_rounds > 0:
        full_table, full_raw = bench_full(args, device, vae, ref, test)
        print(
            f"## Whole test set at K={args.full_k} (extrapolated from probes)\n\n"
            + full_table
            + "\n"
        )
    print(f"total benchmark time: {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"ks": raw, "full": full_raw}, indent=1, default=str))
    for k, r in raw.items():
        ratios = [a / b for a, b in zip(r["seconds"]["reference"], r["seconds"]["stock"])]
        assert ratios and all(math.isfinite(v) and v > 0 for v in ratios), k
        assert all(m["peak_mib"] >= 0 for m in r["memory"].values()), k
    return raw


if __name__ == "__main__":
    main()
