"""REFUEL / REBEL squared regression loss against hand-derived numbers.

Δ = (p_c - r_c) - (p_r - r_r) (policy minus old policy), ΔR = R_c - R_r, L = mean (Δ - η·ΔR)².
"""

import dataclasses
import inspect
import math

import pytest
import torch

from rlhf.algos.refuel import REFUEL


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# Pair 0: Δ = (-1 + 2) - (-3 + 3) = 1, ΔR = 2 - 1.5 = 0.5.
# Pair 1: Δ = (-2 + 4) - (-5 + 4) = 3, ΔR = 0 - 1 = -1 (the "chosen" has the lower reward here).
TWO = dict(
    chosen_logps=t(-1.0, -2.0),
    rejected_logps=t(-3.0, -5.0),
    old_chosen_logps=t(-2.0, -4.0),
    old_rejected_logps=t(-3.0, -4.0),
    chosen_scores=t(2.0, 0.0),
    rejected_scores=t(1.5, 1.0),
)
ONE = {k: v[:1] for k, v in TWO.items()}


@pytest.mark.parametrize(
    "eta, expected",
    [
        (1.0, 0.25),  # (1 - 1·0.5)² = 0.25
        (4.0, 1.0),  # (1 - 4·0.5)² = 1
        (2.0, 0.0),  # (1 - 2·0.5)² = 0: Δ exactly regresses η·ΔR
    ],
)
def test_single_pair_by_hand(eta, expected):
    loss, m = REFUEL(eta=eta).loss(**ONE)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    assert m["loss/refuel"].item() == pytest.approx(expected, abs=1e-12)
    assert m["logratio_diff"].item() == pytest.approx(1.0, abs=1e-12)
    assert m["sign_align"].item() == 1.0


def test_batch_by_hand():
    # η = 1: pair 0 (1 - 0.5)² = 0.25, pair 1 (3 - (-1))² = 16; mean 8.125.
    # logratio_diff = (1 + 3)/2 = 2.
    # sign_align: pair 0 sign(1) = sign(0.5) yes, pair 1 sign(3) ≠ sign(-1) no -> 1/2.
    # (REFUEL's code logs mean(Δ > 0) = 1 here: it assumes the chosen is the higher-reward trajectory.)
    loss, m = REFUEL().loss(**TWO)
    assert loss.item() == pytest.approx(8.125, abs=1e-12)
    assert m["logratio_diff"].item() == pytest.approx(2.0, abs=1e-12)
    assert m["sign_align"].item() == pytest.approx(0.5, abs=1e-12)
    assert set(m) == {"loss/refuel", "sign_align", "logratio_diff"}


def test_gradient_by_hand():
    # dL/dp_c,i = 2(Δ_i - ηΔR_i)/B, dL/dp_r,i = -2(Δ_i - ηΔR_i)/B.
    # η = 1, B = 2: 2·0.5/2 = 0.5 and 2·4/2 = 4.
    chosen = TWO["chosen_logps"].clone().requires_grad_()
    rejected = TWO["rejected_logps"].clone().requires_grad_()
    loss, metrics = REFUEL().loss(**dict(TWO, chosen_logps=chosen, rejected_logps=rejected))
    loss.backward()
    torch.testing.assert_close(chosen.grad, t(0.5, 4.0), rtol=0, atol=1e-12)
    torch.testing.assert_close(rejected.grad, t(-0.5, -4.0), rtol=0, atol=1e-12)
    assert not any(v.requires_grad for v in metrics.values())


def test_tied_rewards():
    # Pair 1 tied (R = 1 both): its target is 0, loss (3 - 0)² = 9, mean (0.25 + 9)/2 = 4.625;
    # it is left out of sign_align, which is then pair 0's alone: 1.
    batch = dict(TWO, chosen_scores=t(2.0, 1.0))
    loss, m = REFUEL().loss(**batch)
    assert loss.item() == pytest.approx(4.625, abs=1e-12)
    assert m["sign_align"].item() == 1.0
    # Every pair tied: sign_align is undefined (NaN), the loss is still mean Δ² = (1 + 9)/2 = 5.
    loss, m = REFUEL().loss(**dict(TWO, chosen_scores=t(1.5, 1.0)))
    assert loss.item() == pytest.approx(5.0, abs=1e-12)
    assert math.isnan(m["sign_align"].item())


def test_zero_logratio_counts_as_misaligned():
    # Policy = old policy: Δ = 0, sign 0 ≠ sign(ΔR); the loss is (η·ΔR)² = 0.5² and 1² -> mean 0.625.
    batch = dict(TWO, old_chosen_logps=TWO["chosen_logps"], old_rejected_logps=TWO["rejected_logps"])
    loss, m = REFUEL().loss(**batch)
    assert loss.item() == pytest.approx(0.625, abs=1e-12)
    assert m["sign_align"].item() == 0.0


def test_swapping_the_labels_changes_nothing():
    # Swapping chosen and rejected (log-probs and rewards) flips Δ and ΔR: same loss, same sign_align.
    swapped = dict(
        chosen_logps=TWO["rejected_logps"],
        rejected_logps=TWO["chosen_logps"],
        old_chosen_logps=TWO["old_rejected_logps"],
        old_rejected_logps=TWO["old_chosen_logps"],
        chosen_scores=TWO["rejected_scores"],
        rejected_scores=TWO["chosen_scores"],
    )
    loss, m = REFUEL().loss(**TWO)
    loss_swapped, m_swapped = REFUEL().loss(**swapped)
    assert loss_swapped.item() == pytest.approx(loss.item(), abs=1e-12)
    assert m_swapped["sign_align"].item() == m["sign_align"].item()
    assert m_swapped["logratio_diff"].item() == pytest.approx(-2.0, abs=1e-12)


def test_eta_convention():
    # The code's (Δ - ηΔR)² is η² times the paper's (Δ/η - ΔR)²: pair 0 with η = 4: (1 - 2)² = 1 and
    # 16·(1/4 - 0.5)² = 16·0.0625 = 1.
    eta = 4.0
    loss, _ = REFUEL(eta=eta).loss(**ONE)
    assert loss.item() == pytest.approx(eta**2 * (1.0 / eta - 0.5) ** 2, abs=1e-12)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(eta=0.0), "algo.eta"),
        (dict(eta=-1.0), "algo.eta"),
        (dict(eta=float("inf")), "algo.eta"),
        (dict(temperature=0.0), "algo.temperature"),
        (dict(temperature=float("nan")), "algo.temperature"),
        (dict(kl_coef=-0.1), "algo.kl_coef"),
        (dict(penalty_reward_value=float("inf")), "algo.penalty_reward_value"),
    ],
)
def test_invalid_hyperparameters(kwargs, field):
    with pytest.raises(ValueError, match=field):
        REFUEL(**kwargs)


def test_invalid_inputs():
    with pytest.raises(ValueError, match="old policy's log-probs"):
        REFUEL().loss(**dict(TWO, old_chosen_logps=None))
    with pytest.raises(ValueError, match="kl_coef > 0 needs the reference"):
        REFUEL(kl_coef=0.1).loss(**TWO)
    with pytest.raises(ValueError, match="penalty_reward_value needs to know which responses ended with EOS"):
        REFUEL(penalty_reward_value=-10.0).loss(**TWO)
    with pytest.raises(ValueError, match="shape"):
        REFUEL().loss(**dict(TWO, chosen_logps=TWO["chosen_logps"][:, None]))
    with pytest.raises(ValueError, match="shape"):
        REFUEL().loss(**dict(TWO, chosen_scores=t(1.0)))


def test_class_attributes_and_argument_names():
    assert REFUEL.batch_kind == "pair"
    assert REFUEL().needs_reference is True
    # The trainer takes log-probs at `algo.temperature`.
    assert REFUEL(temperature=0.8).temperature == 0.8
    with pytest.raises(dataclasses.FrozenInstanceError):
        REFUEL().eta = 2.0
    assert list(inspect.signature(REFUEL.loss).parameters)[1:] == [
        "chosen_logps", "rejected_logps", "old_chosen_logps", "old_rejected_logps", "chosen_scores",
        "rejected_scores", "ref_chosen_logps", "ref_rejected_logps", "chosen_ends_with_eos",
        "rejected_ends_with_eos",
    ]


def test_setting_two_reward_shaping_by_hand():
    """Pair 0 of TWO (Δ = 1, R = (2, 1.5)) with the chosen response cut at the length limit and a KL to
    the reference of old - ref = (0.5, -1.0):
    - penalty -10 replaces R_c: R = (-10, 1.5);
    - β = 0.1: R_c = -10 - 0.1·0.5 = -10.05, R_r = 1.5 - 0.1·(-1) = 1.6; ΔR = -11.65;
    - L = (1 - (-11.65))² = 12.65² = 160.0225; sign_align: Δ > 0 against ΔR < 0 → 0; kl = mean(0.5, -1) = -0.25."""
    shaped = REFUEL(kl_coef=0.1, penalty_reward_value=-10.0)
    inputs = dict(ONE, ref_chosen_logps=ONE["old_chosen_logps"] - 0.5,
                  ref_rejected_logps=ONE["old_rejected_logps"] + 1.0,
                  chosen_ends_with_eos=torch.tensor([False]), rejected_ends_with_eos=torch.tensor([True]))
    loss, m = shaped.loss(**inputs)
    assert loss.item() == pytest.approx(160.0225, abs=1e-9)
    assert m["sign_align"].item() == 0.0 and m["kl"].item() == pytest.approx(-0.25, abs=1e-12)
    # with both responses ending with EOS and β = 0 the shaping does nothing: (1 - 0.5)² = 0.25
    loss, _ = REFUEL(penalty_reward_value=-10.0).loss(**dict(inputs, chosen_ends_with_eos=torch.tensor([True])))
    assert loss.item() == pytest.approx(0.25, abs=1e-12)
