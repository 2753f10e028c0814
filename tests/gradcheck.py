"""A shared helper for tests that compare two computations of one loss."""

import torch


def loss_grads_and_rng(fn, module, seed=7):
    """``(loss, {name: grad}, rng state after)`` of ``fn()`` under ``torch.manual_seed(seed)``;
    the module's gradients are left cleared."""
    module.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = fn()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad(set_to_none=True)
    return loss.detach(), grads, torch.get_rng_state()
