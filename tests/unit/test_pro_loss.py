"""PRO (two ranks, A-LoL's baseline) against hand-derived numbers.

Notation: s = logps / lengths (per-token scores), T = R_c - R_r (pos_T = neg_T with two ranks),
a = s_c·T, b = s_r·T, ℓ = log(ε + e^a + e^b) - a with ε = 1e-10, i.e. ℓ ≈ softplus(b - a).
"""

import dataclasses
import inspect

import pytest
import torch

from rlhf.algos.pro import PRO


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# s_c = -2/2 = -1, s_r = -6/3 = -2, T = 1.5 - 0.5 = 1: a = -1, b = -2.
ONE = dict(
    chosen_logps=t(-2.0),
    rejected_logps=t(-6.0),
    chosen_lengths=torch.tensor([2]),
    rejected_lengths=torch.tensor([3]),
    chosen_scores=t(1.5),
    rejected_scores=t(0.5),
)


def test_single_pair_by_hand():
    # ℓ = log(1e-10 + e^-1 + e^-2) + 1 = log(1 + e^-1 + 1e-10·e) = 0.3132616877169452
    #   (softplus(-1) = 0.31326168751822286, plus ε·e/(1 + e^-1) ≈ 2.0e-10).
    # SFT: NLL = 2, weight 0.05 -> 0.1. Total 0.4132616877169452.
    loss, m = PRO().loss(**ONE)
    assert m["loss/pro"].item() == pytest.approx(0.3132616877169452, abs=1e-12)
    assert m["loss/sft"].item() == pytest.approx(2.0, abs=1e-12)
    assert loss.item() == pytest.approx(0.4132616877169452, abs=1e-12)
    assert set(m) == {"loss/pro", "loss/sft"}


def test_reward_gap_is_the_temperature():
    # T = 2 (scores 2.5, 0.5): a = -2, b = -4, ℓ = log(1e-10 + e^-2 + e^-4) + 2 = 0.12692801169379853
    # (softplus(-2) = 0.1269280110429725): a larger reward gap sharpens the ranking and lowers the loss here.
    _, m = PRO().loss(**dict(ONE, chosen_scores=t(2.5)))
    assert m["loss/pro"].item() == pytest.approx(0.12692801169379853, abs=1e-12)


def test_tied_rewards_give_a_constant_ranking_loss():
    # R_c = R_r: T = 0, a = b = 0, ℓ = log(1e-10 + 1 + 1) = 0.6931471806099453 whatever the log-probs,
    # and no gradient reaches the log-probs (sft_weight = 0 isolates the ranking term).
    chosen = t(-2.0).requires_grad_()
    rejected = t(-6.0).requires_grad_()
    batch = dict(ONE, chosen_logps=chosen, rejected_logps=rejected, rejected_scores=t(1.5))
    loss, m = PRO(sft_weight=0.0).loss(**batch)
    loss.backward()
    assert m["loss/pro"].item() == pytest.approx(0.6931471806099453, abs=1e-12)
    assert chosen.grad.item() == 0.0
    assert rejected.grad.item() == 0.0
    # With the SFT term only it pushes the chosen up: d(0.05·(-p_c))/dp_c = -0.05.
    chosen.grad = None
    loss, _ = PRO().loss(**batch)
    loss.backward()
    assert chosen.grad.item() == pytest.approx(-0.05, abs=1e-12)


def test_reversed_rewards_rank_the_rejected_first():
    # R_c < R_r: T = 0.5 - 1.5 = -1, a = 1, b = 2: ℓ = log(1e-10 + e + e^2) - 1 = 1.3132616875281165
    # (softplus(1) = 1.3132616875182228): ℓ ≈ -log σ(s_r - s_c), the pair with the roles swapped.
    # pos_T = max over the lower rank only (j > 0), so it is -1, not max(0, -1) = 0. The clamped form would
    # give log(1 + 1e-10 + e^2) = 2.126928011054893 and no gradient on the chosen.
    # Gradients (sft_weight = 0): dℓ/dp_c = -σ(b - a)·T/|y_c| = σ(1)/2 = 0.36552928931500245 (pushes the
    # chosen down), dℓ/dp_r = σ(b - a)·T/|y_r| = -σ(1)/3 = -0.2436861928766683 (pushes the rejected up).
    chosen = t(-2.0).requires_grad_()
    rejected = t(-6.0).requires_grad_()
    batch = dict(ONE, chosen_logps=chosen, rejected_logps=rejected)
    batch |= dict(chosen_scores=t(0.5), rejected_scores=t(1.5))
    loss, m = PRO(sft_weight=0.0).loss(**batch)
    loss.backward()
    assert m["loss/pro"].item() == pytest.approx(1.3132616875281165, abs=1e-12)
    # (ε's share of the gradients, ~1e-12, is ignored in the hand values.)
    assert chosen.grad.item() == pytest.approx(0.36552928931500245, abs=1e-9)
    assert rejected.grad.item() == pytest.approx(-0.2436861928766683, abs=1e-9)


def test_gradient_by_hand():
    # ONE (T = 1, a = -1, b = -2), ε's share ~1e-10 ignored:
    # dℓ/dp_c = -σ(b - a)·T/|y_c| = -σ(-1)/2 = -0.13447071068499755, plus SFT -0.05 -> -0.18447071068499755
    # dℓ/dp_r = σ(b - a)·T/|y_r| = σ(-1)/3 = 0.08964714045666504
    chosen = t(-2.0).requires_grad_()
    rejected = t(-6.0).requires_grad_()
    loss, metrics = PRO().loss(**dict(ONE, chosen_logps=chosen, rejected_logps=rejected))
    loss.backward()
    assert chosen.grad.item() == pytest.approx(-0.18447071068499755, abs=1e-9)
    assert rejected.grad.item() == pytest.approx(0.08964714045666504, abs=1e-9)
    assert not any(v.requires_grad for v in metrics.values())


def test_batch_mean():
    # Pair 0 = ONE: ℓ = 0.3132616877169452, NLL 2. Pair 1 tied (T = 0): ℓ = 0.6931471806099453, NLL 4.
    # loss/pro = (0.3132616877169452 + 0.6931471806099453)/2 = 0.50320443416344525; NLL mean 3;
    # total = 0.50320443416344525 + 0.05·3 = 0.65320443416344525.
    batch = dict(
        chosen_logps=t(-2.0, -4.0),
        rejected_logps=t(-6.0, -1.0),
        chosen_lengths=torch.tensor([2, 4]),
        rejected_lengths=torch.tensor([3, 1]),
        chosen_scores=t(1.5, 0.7),
        rejected_scores=t(0.5, 0.7),
    )
    loss, m = PRO().loss(**batch)
    assert m["loss/pro"].item() == pytest.approx(0.50320443416344525, abs=1e-12)
    assert m["loss/sft"].item() == pytest.approx(3.0, abs=1e-12)
    assert loss.item() == pytest.approx(0.65320443416344525, abs=1e-12)


def test_epsilon_dominates_when_both_exponents_are_tiny():
    # s_c = s_r = -3, T = 10: a = b = -30, 2e^-30 = 1.87e-13 << ε = 1e-10:
    # ℓ = log(1e-10 + 2e^-30) + 30 = 6.976018845533165 (log 2 = 0.693 without ε).
    batch = dict(ONE, chosen_logps=t(-6.0), rejected_logps=t(-9.0))
    batch |= dict(chosen_scores=t(10.0), rejected_scores=t(0.0))
    _, m = PRO().loss(**batch)
    assert m["loss/pro"].item() == pytest.approx(6.976018845533165, abs=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_overflow_for_large_exponents(dtype):
    # s_c = -100, s_r = -1, T = -10: a = 1000, b = 10. Naively e^1000 = inf; here ℓ = softplus(-990) ≈ 0.
    batch = dict(
        chosen_logps=torch.tensor([-200.0], dtype=dtype, requires_grad=True),
        rejected_logps=torch.tensor([-1.0], dtype=dtype, requires_grad=True),
        chosen_lengths=torch.tensor([2]),
        rejected_lengths=torch.tensor([1]),
        chosen_scores=torch.tensor([0.0]),
        rejected_scores=torch.tensor([10.0]),
    )
    loss, m = PRO(sft_weight=0.0).loss(**batch)
    loss.backward()
    assert m["loss/pro"].item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(batch["chosen_logps"].grad).all()
    assert torch.isfinite(batch["rejected_logps"].grad).all()
    assert loss.dtype == dtype


def test_invalid_hyperparameters():
    with pytest.raises(ValueError, match="algo.sft_weight"):
        PRO(sft_weight=-0.1)
    with pytest.raises(ValueError, match="algo.sft_weight"):
        PRO(sft_weight=float("nan"))


def test_invalid_inputs():
    with pytest.raises(ValueError, match="shape"):
        PRO().loss(**dict(ONE, chosen_scores=t(1.0, 2.0)))
    with pytest.raises(ValueError, match="shape"):
        PRO().loss(**dict(ONE, chosen_logps=ONE["chosen_logps"][:, None]))
    with pytest.raises(ValueError, match="length"):
        PRO().loss(**dict(ONE, rejected_lengths=torch.tensor([0])))


def test_class_attributes_and_argument_names():
    assert PRO.batch_kind == "pair"
    assert PRO().needs_reference is False
    assert PRO().sft_weight == 0.05  # 0.05·(2 - 1)²
    assert not hasattr(PRO(), "temperature")  # log-probs at temperature 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRO().sft_weight = 0.1
    # The trainer binds the batch tensors by these names.
    assert list(inspect.signature(PRO.loss).parameters)[1:] == [
        "chosen_logps", "rejected_logps", "chosen_lengths", "rejected_lengths", "chosen_scores",
        "rejected_scores",
    ]
