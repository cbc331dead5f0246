"""Cross-check of our DPO variants against trl 0.28.0's `DPOTrainer.dpo_loss` on random inputs.

`dpo_loss` is called unbound with a stub for `self` (it reads beta, label_smoothing, reference_free,
f_divergence_type, f_divergence_params, accelerator.device, args); it returns per-pair losses and the
chosen/rejected rewards. Our `reduction="mean"` loss must equal trl's `losses.mean()`.

Known differences between trl 0.28 and the papers, pinned here:
- IPO: trl length-averages the log-probs upstream of `dpo_loss` (in `concatenated_forward`, for the policy
  and the reference model alike) whenever "ipo" is among the loss types; Azar et al. use sequence sums.
  To match trl as trained, feed it sums / lengths and use our `length_normalize=True` on the raw sums and
  lengths; the paper form (sums into both) is checked as well.
- reference_free: trl drops the reference from the loss but its rewards still subtract it; ours use β·p.
"""

import types

import pytest
import torch

from rlhf.algos.dpo import DPO
from tests.unit.trl_import import trl_trainer

B = 16
BETA = 0.1


@pytest.fixture(scope="module")
def trl_dpo_loss():
    DPOTrainer = trl_trainer("dpo_trainer", "DPOTrainer")

    def dpo_loss(pc, pr, rc, rr, loss_type, label_smoothing=0.0, reference_free=False):
        stub = types.SimpleNamespace(
            beta=BETA,
            label_smoothing=label_smoothing,
            reference_free=reference_free,
            # DPOConfig turns the FDivergenceType enum into this string; "reverse_kl" is plain DPO.
            f_divergence_type="reverse_kl",
            f_divergence_params={},
            accelerator=types.SimpleNamespace(device=torch.device("cpu")),
            args=types.SimpleNamespace(discopop_tau=0.05),
            loss_type=[loss_type],
        )
        return DPOTrainer.dpo_loss(stub, pc, pr, rc, rr, loss_type=loss_type)

    return dpo_loss


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    lengths_c = torch.randint(1, 40, (B,), generator=gen)
    lengths_r = torch.randint(1, 40, (B,), generator=gen)
    # Sums scale with length; the policy drifts from the reference by a few nats so βz spans both sides of 1.
    ref_c = -lengths_c * (0.5 + torch.rand(B, generator=gen, dtype=torch.float64))
    ref_r = -lengths_r * (0.5 + torch.rand(B, generator=gen, dtype=torch.float64))
    pol_c = ref_c + 8 * torch.randn(B, generator=gen, dtype=torch.float64)
    pol_r = ref_r + 8 * torch.randn(B, generator=gen, dtype=torch.float64)
    return pol_c, pol_r, ref_c, ref_r, lengths_c, lengths_r


def assert_matches(ours, theirs):
    loss, m = ours
    losses, chosen_rewards, rejected_rewards = theirs
    close = dict(rtol=0, atol=1e-6)
    torch.testing.assert_close(loss, losses.mean(), **close)
    torch.testing.assert_close(m["rewards/chosen"], chosen_rewards.mean(), **close)
    torch.testing.assert_close(m["rewards/rejected"], rejected_rewards.mean(), **close)
    torch.testing.assert_close(m["rewards/margin"], (chosen_rewards - rejected_rewards).mean(), **close)
    accuracy = (chosen_rewards > rejected_rewards).double().mean()
    torch.testing.assert_close(m["rewards/accuracy"], accuracy, **close)


@pytest.mark.parametrize("loss_type, eps", [("sigmoid", 0.0), ("sigmoid", 0.1), ("ipo", 0.0), ("hinge", 0.0)])
def test_paper_form_matches_trl(trl_dpo_loss, batch, loss_type, eps):
    pc, pr, rc, rr, lc, lr = batch
    theirs = trl_dpo_loss(pc, pr, rc, rr, loss_type, label_smoothing=eps)
    ours = DPO(beta=BETA, loss_type=loss_type, label_smoothing=eps).loss(pc, pr, rc, rr, lc, lr)
    assert_matches(ours, theirs)
    # The batch must exercise both sides of the hinge, and the rewards must not be all one way.
    if loss_type == "hinge":
        assert (theirs[0] == 0).any() and (theirs[0] > 0).any()
    assert 0 < ours[1]["rewards/accuracy"].item() < 1


def test_reduction_sum_matches_trl_sum(trl_dpo_loss, batch):
    pc, pr, rc, rr, lc, lr = batch
    losses, _, _ = trl_dpo_loss(pc, pr, rc, rr, "sigmoid")
    loss, _ = DPO(beta=BETA, reduction="sum").loss(pc, pr, rc, rr, lc, lr)
    torch.testing.assert_close(loss, losses.sum(), rtol=0, atol=1e-6)


def test_ipo_as_trained_by_trl(trl_dpo_loss, batch):
    pc, pr, rc, rr, lc, lr = batch
    theirs = trl_dpo_loss(pc / lc, pr / lr, rc / lc, rr / lr, "ipo")
    ours = DPO(beta=BETA, loss_type="ipo", length_normalize=True).loss(pc, pr, rc, rr, lc, lr)
    assert_matches(ours, theirs)
    # Length averaging is a real change of objective, not a no-op on this batch.
    paper, _ = DPO(beta=BETA, loss_type="ipo").loss(pc, pr, rc, rr, lc, lr)
    assert abs(paper.item() - ours[0].item()) > 1.0


def test_reference_free_matches_trl(trl_dpo_loss, batch):
    pc, pr, rc, rr, lc, lr = batch
    ours = DPO(beta=BETA, reference_free=True).loss(pc, pr, None, None, lc, lr)
    # trl's loss ignores the reference it is given...
    losses, chosen_rewards, _ = trl_dpo_loss(pc, pr, rc, rr, "sigmoid", reference_free=True)
    torch.testing.assert_close(ours[0], losses.mean(), rtol=0, atol=1e-6)
    # ...but its rewards still subtract it, so they only agree with ours given a zero reference.
    assert not torch.allclose(ours[1]["rewards/chosen"], chosen_rewards.mean())
    zero = torch.zeros_like(pc)
    assert_matches(ours, trl_dpo_loss(pc, pr, zero, zero, "sigmoid", reference_free=True))
