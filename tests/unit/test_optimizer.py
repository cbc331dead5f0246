"""The trainers' AdamW is fused where the parameters allow, and its updates are torch's per-parameter loop's up
to float rounding."""

import torch

from rlhf.trainers.offline import make_optimizer


def test_fused_adamw_matches_the_loop():
    torch.manual_seed(0)
    start = [torch.randn(64, 32), torch.randn(32)]
    grads = [[torch.randn_like(s) for s in start] for _ in range(5)]
    fused_params = [torch.nn.Parameter(s.clone()) for s in start]
    loop_params = [torch.nn.Parameter(s.clone()) for s in start]
    fused = make_optimizer(fused_params, 1e-2, 0.01)
    loop = torch.optim.AdamW(loop_params, lr=1e-2, weight_decay=0.01, foreach=False)
    assert fused.defaults["fused"] is True
    for step in grads:
        for params, optimizer in ((fused_params, fused), (loop_params, loop)):
            for p, g in zip(params, step):
                p.grad = g.clone()
            optimizer.step()
    for a, b, s in zip(fused_params, loop_params, start):
        assert not torch.equal(a.detach(), s)  # it moved
        torch.testing.assert_close(a.detach(), b.detach(), rtol=0, atol=1e-6)
