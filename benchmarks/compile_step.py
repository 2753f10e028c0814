"""Does torch.compile pay for the training step on this machine? The fast-path objective
(``elbo.objective(vae.log_weights(...))``, plain torch) compiled against eager, with fused Adam,
784-400-20, batch 128, one thread, CPU time (median of 8 rounds of 20 steps).

    python benchmarks/compile_step.py 5 iwae    # K, estimator

2026-12-02 on the project's 2-core CPU (shared): iwae K = 5 eager 15.36 ms a step, compiled
19.50 ms (compiling 10.3 s): slower, so training stays eager (RESULTS.md, issue 13).
"""

import sys
import time

import torch

import pyro_vae as pv

torch.set_num_threads(1)
torch.manual_seed(0)
K = int(sys.argv[1]) if len(sys.argv) > 1 else 5
est = sys.argv[2] if len(sys.argv) > 2 else "iwae"
x_all = torch.bernoulli(torch.rand(4096, 784))


def make(compiled):
    torch.manual_seed(0)
    vae = pv.VAE(784, 20, (400,))
    elbo = pv.make_elbo(est, K)
    opt = torch.optim.Adam(vae.parameters(), 1e-3, fused=True)

    def objective(x):
        return elbo.objective(vae.log_weights(x, 60000, **elbo.request()))

    f = torch.compile(objective) if compiled else objective

    def step(i):
        x = x_all[(i * 128) % 3968 : (i * 128) % 3968 + 128]
        opt.zero_grad(set_to_none=True)
        loss = f(x)
        loss.backward()
        opt.step()

    return step


steps = {"eager": make(False)}
t0 = time.perf_counter()
steps["compiled"] = make(True)
steps["compiled"](0)
print("compile s", round(time.perf_counter() - t0, 1))
for s in steps.values():
    for i in range(5):
        s(i)
res = {k: [] for k in steps}
for _ in range(8):
    for k, s in steps.items():
        c = time.process_time()
        for i in range(20):
            s(i)
        res[k].append((time.process_time() - c) / 20 * 1e3)
for k, v in res.items():
    v.sort()
    print(k, f"{v[4]:.2f} ms/step")
