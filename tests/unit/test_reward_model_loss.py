"""Bradley-Terry reward-model loss (margin, centring, pref-over-pref, tanh, group routing) by hand.

softplus(x) = log(1 + e^x) = -log σ(-x); values used below:
softplus(-2) = 0.1269280110429725, softplus(-1) = 0.31326168751822286, softplus(-0.5) = 0.4740769841801067,
softplus(0) = log 2 = 0.6931471805599453, softplus(1) = 1.3132616875182228.
"""

import dataclasses
import inspect
import math

import pytest
import torch

from rlhf.algos.reward_model import BradleyTerry, min_over_heads


def col(*values: float) -> torch.Tensor:
    """A (B, 1) reward tensor: one head."""
    return torch.tensor(values, dtype=torch.float64)[:, None]


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# Two pairs, one head: Δ = 2 - 1 = 1 and 0.5 - 1.5 = -1.
TWO = dict(
    chosen_rewards=col(2.0, 0.5),
    rejected_rewards=col(1.0, 1.5),
    margins=t(0.5, 0.0),
    group_ids=torch.tensor([0, 0]),
)


def test_plain_bradley_terry_by_hand():
    # ℓ = softplus(-Δ): (softplus(-1) + softplus(1))/2 = (0.31326168751822286 + 1.3132616875182228)/2
    #   = 0.8132616875182228. The margins column is ignored unless `margin` is set.
    loss, m = BradleyTerry().loss(**TWO)
    assert loss.item() == pytest.approx(0.8132616875182228, abs=1e-12)
    assert m["loss/rm"].item() == pytest.approx(0.8132616875182228, abs=1e-12)
    # Metrics: chosen (2 + 0.5)/2 = 1.25, rejected (1 + 1.5)/2 = 1.25, margin (1 - 1)/2 = 0, accuracy 1/2.
    assert m["rewards/chosen"].item() == pytest.approx(1.25, abs=1e-12)
    assert m["rewards/rejected"].item() == pytest.approx(1.25, abs=1e-12)
    assert m["rewards/margin"].item() == pytest.approx(0.0, abs=1e-12)
    assert m["rewards/accuracy"].item() == 0.5
    assert set(m) == {"loss/rm", "rewards/chosen", "rewards/rejected", "rewards/margin", "rewards/accuracy"}


def test_margin():
    # m = (0.5, 0): softplus(-(1 - 0.5)) = softplus(-0.5) = 0.4740769841801067 and
    # softplus(-(-1 - 0)) = 1.3132616875182228 -> mean 0.8936693358491647.
    loss, _ = BradleyTerry(margin=True).loss(**TWO)
    assert loss.item() == pytest.approx(0.8936693358491647, abs=1e-12)
    # Zero margins (the column absent) give plain Bradley-Terry; so does margins=None.
    zero, _ = BradleyTerry(margin=True).loss(**dict(TWO, margins=t(0.0, 0.0)))
    assert zero.item() == pytest.approx(0.8132616875182228, abs=1e-12)
    none, _ = BradleyTerry(margin=True).loss(TWO["chosen_rewards"], TWO["rejected_rewards"])
    assert none.item() == pytest.approx(0.8132616875182228, abs=1e-12)


def test_center_rewards_coefficient():
    # mean((r_c + r_r)²) = (3² + 2²)/2 = 6.5; c = 0.01: 0.8132616875182228 + 0.065 = 0.8782616875182228.
    loss, m = BradleyTerry(center_rewards_coefficient=0.01).loss(**TWO)
    assert loss.item() == pytest.approx(0.8782616875182228, abs=1e-12)
    assert m["loss/center"].item() == pytest.approx(6.5, abs=1e-12)
    assert m["loss/rm"].item() == pytest.approx(0.8132616875182228, abs=1e-12)


def test_tanh():
    # tanh(1) = 0.7615941559557649, tanh(-1) = -tanh(1): Δ = 1.5231883119115297,
    # ℓ = softplus(-1.5231883119115297) = 0.19722303923521484. Metrics report the squashed rewards.
    loss, m = BradleyTerry(tanh=True).loss(col(1.0), col(-1.0))
    assert loss.item() == pytest.approx(0.19722303923521484, abs=1e-12)
    assert m["rewards/chosen"].item() == pytest.approx(0.7615941559557649, abs=1e-12)
    assert m["rewards/margin"].item() == pytest.approx(1.5231883119115297, abs=1e-12)
    # Bounded: however large the raw gap, tanh caps Δ at 2, so ℓ ≥ softplus(-2) = 0.1269280110429725.
    big, _ = BradleyTerry(tanh=True).loss(col(100.0), col(-100.0))
    assert big.item() == pytest.approx(0.1269280110429725, abs=1e-12)


def test_prefoverpref_by_hand():
    # Δ = (2, 1, 0.5) (rejected rewards 0), m = (1, 0, 0). Ordered pairs with m_i > m_j: (0, 1) and (0, 2):
    #   (0, 1): softplus(-((2 - 1) - (1 - 0))) = softplus(0) = 0.6931471805599453
    #   (0, 2): softplus(-((2 - 0.5) - 1)) = softplus(-0.5) = 0.4740769841801067
    #   L_pop = (0.6931471805599453 + 0.4740769841801067)/2 = 0.5836120823700259
    # Pair term without `margin`: (softplus(-2) + softplus(-1) + softplus(-0.5))/3 = 0.3047555609137674.
    # Total 0.8883676432837933.
    batch = dict(chosen_rewards=col(2.0, 1.0, 0.5), rejected_rewards=col(0.0, 0.0, 0.0))
    batch |= dict(margins=t(1.0, 0.0, 0.0))
    loss, m = BradleyTerry(prefoverpref=True).loss(**batch)
    assert m["loss/prefoverpref"].item() == pytest.approx(0.5836120823700259, abs=1e-12)
    assert m["loss/rm"].item() == pytest.approx(0.3047555609137674, abs=1e-12)
    assert loss.item() == pytest.approx(0.8883676432837933, abs=1e-12)


def test_prefoverpref_with_equal_margins_adds_nothing():
    # No ordered pair has m_i > m_j: L_pop = 0 and the loss is plain Bradley-Terry, gradient included.
    rewards = col(2.0, 0.5).requires_grad_()
    loss, m = BradleyTerry(prefoverpref=True, margin=True).loss(rewards, TWO["rejected_rewards"], t(0.0, 0.0))
    loss.backward()
    assert m["loss/prefoverpref"].item() == 0.0
    assert loss.item() == pytest.approx(0.8132616875182228, abs=1e-12)
    assert torch.isfinite(rewards.grad).all()


def test_group_routing_uses_only_each_examples_head():
    # Two heads; example 0 is group 0, example 1 group 1. Routed Δ: 2 - 1 = 1 and 0 - 1 = -1, as TWO:
    # loss 0.8132616875182228, accuracy 1/2. The other heads hold NaN and ±inf: they must not leak into the
    # loss, the metrics or the gradient.
    nan, inf = math.nan, math.inf
    chosen = torch.tensor([[2.0, nan], [inf, 0.0]], dtype=torch.float64, requires_grad=True)
    rejected = torch.tensor([[1.0, -inf], [nan, 1.0]], dtype=torch.float64, requires_grad=True)
    loss, m = BradleyTerry(group_routing=True).loss(chosen, rejected, t(0.0, 0.0), torch.tensor([0, 1]))
    loss.backward()
    assert loss.item() == pytest.approx(0.8132616875182228, abs=1e-12)
    assert m["rewards/accuracy"].item() == 0.5
    assert m["rewards/chosen"].item() == pytest.approx(1.0, abs=1e-12)  # (2 + 0)/2
    # Gradient -σ(-Δ)/B on the routed entries (see test_gradient_by_hand), exactly 0 elsewhere.
    expected = torch.tensor([[-0.13447071068499755, 0.0], [0.0, -0.36552928931500245]], dtype=torch.float64)
    torch.testing.assert_close(chosen.grad, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(rejected.grad, -expected, rtol=0, atol=1e-12)


def test_sharedrep_routing_with_tanh_and_centring():
    # SharedRep: tanh, then route. Example 0 -> head 1: tanh(1) - tanh(-1) = 1.5231883119115297;
    # ℓ = softplus(-1.5231883119115297) = 0.19722303923521484. Centring: (tanh(1) + tanh(-1))² = 0.
    chosen = torch.tensor([[5.0, 1.0]], dtype=torch.float64)
    rejected = torch.tensor([[-5.0, -1.0]], dtype=torch.float64)
    algo = BradleyTerry(tanh=True, group_routing=True, center_rewards_coefficient=0.5)
    loss, m = algo.loss(chosen, rejected, t(0.0), torch.tensor([1]))
    assert loss.item() == pytest.approx(0.19722303923521484, abs=1e-12)
    assert m["loss/center"].item() == pytest.approx(0.0, abs=1e-12)


def test_without_routing_every_head_fits_every_pair():
    # Δ = [[1, 0], [0, -1]]: ℓ = softplus(-1), log 2, log 2, softplus(1), mean
    #   (0.31326168751822286 + 2·0.6931471805599453 + 1.3132616875182228)/4 = 0.753204434039084.
    # Accuracy: only entry (0, 0) is a strict win -> 1/4. group_ids are ignored.
    chosen = torch.tensor([[2.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
    rejected = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    loss, m = BradleyTerry().loss(chosen, rejected, t(0.0, 0.0), torch.tensor([1, 1]))
    assert loss.item() == pytest.approx(0.753204434039084, abs=1e-12)
    assert m["rewards/accuracy"].item() == 0.25


def test_prefoverpref_per_head_without_routing():
    # Head 0 carries the prefoverpref example above (L_pop = 0.5836120823700259); head 1 has Δ_i - Δ_j equal
    # to the margin gap for both ordered pairs, so each term is log 2: L_pop over heads =
    # (0.5836120823700259 + 0.6931471805599453)/2 = 0.6383796314649856.
    chosen = torch.tensor([[2.0, 1.0], [1.0, 0.0], [0.5, 0.0]], dtype=torch.float64)
    rejected = torch.zeros(3, 2, dtype=torch.float64)
    _, m = BradleyTerry(prefoverpref=True).loss(chosen, rejected, t(1.0, 0.0, 0.0), torch.zeros(3).long())
    assert m["loss/prefoverpref"].item() == pytest.approx(0.6383796314649856, abs=1e-12)


def test_gradient_by_hand():
    # dℓ/dr_c,i = -σ(-(Δ_i - m_i))/B: Δ = (1, -1), B = 2 -> -σ(-1)/2 = -0.13447071068499755,
    # -σ(1)/2 = -0.36552928931500245; the rejected rewards get the opposite.
    # Centring c adds 2c(r_c + r_r)/B: c = 0.01, r_c + r_r = (3, 2) -> +0.03, +0.02.
    chosen = TWO["chosen_rewards"].clone().requires_grad_()
    rejected = TWO["rejected_rewards"].clone().requires_grad_()
    loss, metrics = BradleyTerry(center_rewards_coefficient=0.01).loss(chosen, rejected, TWO["margins"])
    loss.backward()
    bt = col(-0.13447071068499755, -0.36552928931500245)
    center = col(0.03, 0.02)
    torch.testing.assert_close(chosen.grad, bt + center, rtol=0, atol=1e-12)
    torch.testing.assert_close(rejected.grad, -bt + center, rtol=0, atol=1e-12)
    assert not any(v.requires_grad for v in metrics.values())


def test_min_over_heads():
    rewards = torch.tensor([[1.0, 2.0], [3.0, -1.0], [0.5, 0.5]])
    torch.testing.assert_close(min_over_heads(rewards), torch.tensor([1.0, -1.0, 0.5]))
    torch.testing.assert_close(min_over_heads(torch.tensor([[4.0], [2.0]])), torch.tensor([4.0, 2.0]))
    with pytest.raises(ValueError, match="shape"):
        min_over_heads(torch.tensor([1.0, 2.0]))


def test_routing_errors():
    two_heads = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="group_ids"):
        BradleyTerry(group_routing=True).loss(two_heads, two_heads, torch.zeros(2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="group_ids"):
        BradleyTerry(group_routing=True).loss(two_heads, two_heads, torch.zeros(2), torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="group_ids"):
        BradleyTerry(group_routing=True).loss(two_heads, two_heads, torch.zeros(2), None)
    # A single head with no group ids routes everything to head 0: plain Bradley-Terry.
    loss, _ = BradleyTerry(group_routing=True).loss(TWO["chosen_rewards"], TWO["rejected_rewards"])
    assert loss.item() == pytest.approx(0.8132616875182228, abs=1e-12)


def test_shape_errors():
    with pytest.raises(ValueError, match="shape"):
        BradleyTerry().loss(t(1.0, 2.0), t(0.0, 0.0))  # (B,) instead of (B, H)
    with pytest.raises(ValueError, match="shape"):
        BradleyTerry().loss(col(1.0, 2.0), torch.zeros(2, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="margins"):
        BradleyTerry(margin=True).loss(col(1.0, 2.0), col(0.0, 0.0), col(0.5, 0.5))


def test_invalid_hyperparameters():
    with pytest.raises(ValueError, match="algo.center_rewards_coefficient"):
        BradleyTerry(center_rewards_coefficient=-0.1)
    with pytest.raises(ValueError, match="algo.center_rewards_coefficient"):
        BradleyTerry(center_rewards_coefficient=float("nan"))


def test_class_attributes_and_argument_names():
    assert BradleyTerry.batch_kind == "reward_pair"
    assert BradleyTerry().needs_reference is False
    with pytest.raises(dataclasses.FrozenInstanceError):
        BradleyTerry().margin = True
    # The trainer binds the batch tensors by these names.
    assert list(inspect.signature(BradleyTerry.loss).parameters)[1:] == [
        "chosen_rewards", "rejected_rewards", "margins", "group_ids",
    ]
