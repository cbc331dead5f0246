"""Cross-check of `BradleyTerry` against trl 0.28.0's `RewardTrainer.compute_loss` on random inputs.

`compute_loss` is called unbound with a stub for `self` (it reads `model.training`, `args.center_rewards_
coefficient`, `accelerator.gather`/`gather_for_metrics`, `_total_train_tokens` and `_metrics`) and a stub
model whose `logits` are the given rewards, chosen then rejected, as (2B, 1): trl chunks them in two. trl
uses `inputs["margin"]` when the key is present and adds the centring term unless the coefficient is None;
ours switch these with `margin` and `center_rewards_coefficient > 0`.

Pinned: trl has no tanh, heads or pref-over-pref. Group routing is checked by feeding trl the routed head.
"""

import types
from collections import defaultdict

import pytest
import torch

from rlhf.algos.reward_model import BradleyTerry
from tests.unit.trl_import import trl_trainer

B = 16


@pytest.fixture(scope="module")
def trl_rm_loss():
    RewardTrainer = trl_trainer("reward_trainer", "RewardTrainer")

    def rm_loss(chosen, rejected, margin=None, center_rewards_coefficient=None):
        """(B,) rewards -> (trl's loss, trl's logged metrics)."""
        metrics = defaultdict(lambda: defaultdict(list))
        stub = types.SimpleNamespace(
            model=types.SimpleNamespace(training=True),
            args=types.SimpleNamespace(center_rewards_coefficient=center_rewards_coefficient),
            accelerator=types.SimpleNamespace(gather=lambda x: x, gather_for_metrics=lambda x: x),
            _total_train_tokens=0,
            _metrics=metrics,
        )
        logits = torch.cat([chosen, rejected])[:, None]  # (2B, 1)

        def model(**kwargs):
            return types.SimpleNamespace(logits=logits)

        inputs = {"input_ids": torch.zeros(2 * len(chosen), 3, dtype=torch.long)}
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        if margin is not None:
            inputs["margin"] = margin
        loss = RewardTrainer.compute_loss(stub, model, inputs)
        return loss, {k: v[-1] for k, v in metrics["train"].items()}

    return rm_loss


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    chosen = 2 * torch.randn(B, generator=gen, dtype=torch.float64)
    rejected = 2 * torch.randn(B, generator=gen, dtype=torch.float64)
    margins = 3 * torch.rand(B, generator=gen, dtype=torch.float64)
    return chosen, rejected, margins


@pytest.mark.parametrize("margin", [False, True])
@pytest.mark.parametrize("coefficient", [0.0, 0.01, 0.5])
def test_matches_trl(trl_rm_loss, batch, margin, coefficient):
    chosen, rejected, margins = batch
    loss, m = BradleyTerry(margin=margin, center_rewards_coefficient=coefficient).loss(
        chosen[:, None], rejected[:, None], margins, torch.zeros(B, dtype=torch.long)
    )
    theirs, trl_metrics = trl_rm_loss(
        chosen, rejected, margin=margins if margin else None, center_rewards_coefficient=coefficient or None
    )
    torch.testing.assert_close(loss, theirs, rtol=0, atol=1e-6)
    assert m["rewards/accuracy"].item() == pytest.approx(trl_metrics["accuracy"], abs=1e-6)
    assert m["rewards/margin"].item() == pytest.approx(trl_metrics["margin"], abs=1e-6)
    # The batch has wins and losses, and the margin changes the loss.
    assert 0 < m["rewards/accuracy"].item() < 1
    if margin:
        plain, _ = trl_rm_loss(chosen, rejected, center_rewards_coefficient=coefficient or None)
        assert abs(plain.item() - loss.item()) > 0.1


def test_group_routing_matches_trl_on_the_routed_head(trl_rm_loss, batch):
    # Three heads; trl sees, per example, the head of its group (what MaxMin's per-group RMs train on).
    chosen, rejected, margins = batch
    gen = torch.Generator().manual_seed(1)
    heads_c = torch.randn(B, 3, generator=gen, dtype=torch.float64)
    heads_r = torch.randn(B, 3, generator=gen, dtype=torch.float64)
    groups = torch.randint(0, 3, (B,), generator=gen)
    heads_c[torch.arange(B), groups] = chosen
    heads_r[torch.arange(B), groups] = rejected
    algo = BradleyTerry(margin=True, center_rewards_coefficient=0.01, group_routing=True)
    loss, _ = algo.loss(heads_c, heads_r, margins, groups)
    theirs, _ = trl_rm_loss(chosen, rejected, margin=margins, center_rewards_coefficient=0.01)
    torch.testing.assert_close(loss, theirs, rtol=0, atol=1e-6)
    assert len(set(groups.tolist())) == 3
