"""GRPO advantages and loss against hand-derived numbers (ε_low = ε_high = 0.2 unless stated).

Most cases use `scale_rewards=False` so that the advantages are exact: rewards (1, -1) in one group give
A = ±1. Log-probs are chosen through their log-ratio to the old policy, log ρ.
"""

import dataclasses
import math

import pytest
import torch

from rlhf.algos.grpo import GRPO


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def ones_mask(n: int, length: int) -> torch.Tensor:
    return torch.ones(n, length, dtype=torch.bool)


# One group of K = 2 one-token responses with rewards (1, -1): A = (+1, -1) without std scaling.
PAIR_REWARDS = t([1.0, -1.0])


@pytest.mark.parametrize(
    "log_ratio, expected_loss, expected_grad, low, high",
    [
        # log ρ = 0.5: ρ = e^0.5 = 1.6487212707001282 > 1.2.
        #   A = +1: min(1.6487, 1.2) = 1.2 (clipped)     → ℓ = -1.2, no gradient
        #   A = -1: min(-1.6487, -1.2) = -1.6487 (not)   → ℓ = 1.6487, dℓ/dlogp = ρ
        #   grpo: (-1.2 + 1.6487212707001282)/2 = 0.2243606353500641; gradient (0, ρ/2 = 0.8243606353500641)
        (0.5, 0.2243606353500641, (0.0, 0.8243606353500641), 0.0, 0.5),
        # log ρ = -0.5: ρ = e^-0.5 = 0.6065306597126334 < 0.8.
        #   A = +1: min(0.6065, 0.8) = 0.6065 (not)      → ℓ = -0.6065, dℓ/dlogp = -ρ
        #   A = -1: min(-0.6065, -0.8) = -0.8 (clipped)  → ℓ = 0.8, no gradient
        #   grpo: (-0.6065306597126334 + 0.8)/2 = 0.0967346701436833; gradient (-ρ/2 = -0.3032653298563167, 0)
        (-0.5, 0.0967346701436833, (-0.3032653298563167, 0.0), 0.5, 0.0),
    ],
)
def test_clipping_by_hand(log_ratio, expected_loss, expected_grad, low, high):
    logprobs = t([log_ratio], [log_ratio]).requires_grad_()
    loss, m = GRPO(scale_rewards=False).loss(logprobs, t([0.0], [0.0]), None, ones_mask(2, 1), PAIR_REWARDS)
    loss.backward()
    assert loss.item() == pytest.approx(expected_loss, abs=1e-12)
    torch.testing.assert_close(logprobs.grad, t(*[[g] for g in expected_grad]), rtol=0, atol=1e-12)
    # Only the clip that removes the gradient counts: ρ > 1.2 with A < 0 (or ρ < 0.8 with A > 0) does not.
    assert m["actor/clipfrac_low"].item() == low
    assert m["actor/clipfrac_high"].item() == high
    assert m["actor/clipfrac"].item() == low + high
    assert m["loss/policy"].item() == pytest.approx(expected_loss, abs=1e-12)
    assert "loss/kl" not in m


def test_asymmetric_clip_higher():
    # ε_high = 0.28 (DAPO): ρ = e^0.2 = 1.2214027581601699 is inside [0.8, 1.28], not clipped for A = +1,
    # while ε_high = 0.2 clips it to 1.2. ℓ = -1.2214027581601699 vs -1.2 (A = -1 row: ℓ = ρ both times).
    logprobs = t([0.2], [0.2])
    old, mask = t([0.0], [0.0]), ones_mask(2, 1)
    clip_higher = GRPO(epsilon_high=0.28, scale_rewards=False)
    loss_high, m_high = clip_higher.loss(logprobs, old, None, mask, PAIR_REWARDS)
    loss_sym, m_sym = GRPO(scale_rewards=False).loss(logprobs, old, None, mask, PAIR_REWARDS)
    assert loss_high.item() == pytest.approx((-1.2214027581601699 + 1.2214027581601699) / 2, abs=1e-12)
    assert loss_sym.item() == pytest.approx((-1.2 + 1.2214027581601699) / 2, abs=1e-12)
    assert m_high["actor/clipfrac_high"].item() == 0.0
    assert m_sym["actor/clipfrac_high"].item() == 0.5


def test_clip_boundaries_are_not_clipped():
    # ρ exactly at 1 + ε_high and 1 - ε_low: take ρ = e^±0.25 and ε from it, ε_high = e^0.25 - 1 and
    # ε_low = 1 - e^-0.25. Both subtractions and 1 ± ε are exact in float64, so ρ sits on the boundary.
    # The token is not clipped (strict inequalities) and keeps its full gradient (clamp passes its boundary
    # and min splits a tie): ℓ = (-e^0.25 + e^-0.25)/2 = (-1.2840254166877414 + 0.7788007830714049)/2,
    # gradient (-ρ_0 A_0/2, -ρ_1 A_1/2) = (-0.6420127083438707, 0.38940039153570244).
    ratios = torch.exp(t([0.25], [-0.25]))
    algo = GRPO(epsilon_low=1 - ratios[1].item(), epsilon_high=ratios[0].item() - 1, scale_rewards=False)
    assert 1 + algo.epsilon_high == ratios[0].item() and 1 - algo.epsilon_low == ratios[1].item()
    logprobs = torch.log(ratios).requires_grad_()
    loss, m = algo.loss(logprobs, t([0.0], [0.0]), None, ones_mask(2, 1), PAIR_REWARDS)
    loss.backward()
    assert loss.item() == pytest.approx((-1.2840254166877414 + 0.7788007830714049) / 2, abs=1e-12)
    expected_grad = t([-0.6420127083438707], [0.38940039153570244])
    torch.testing.assert_close(logprobs.grad, expected_grad, rtol=0, atol=1e-12)
    assert m["actor/clipfrac"].item() == 0.0


# Aggregations. One group of K = 3 with rewards (3, 0, 0), no std scaling: mean 1, A = (2, -1, -1).
# Response lengths 1, 2, 4 (T = 4); π = π_old so ρ = 1 and ℓ = -A on every response token:
#   row 0: [-2]   row 1: [1, 1]   row 2: [1, 1, 1, 1]        Σ ℓ = -2 + 2 + 4 = 4 over 7 tokens
AGG_REWARDS = t([3.0, 0.0, 0.0])
AGG_MASK = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)


@pytest.mark.parametrize(
    "kwargs, expected_loss, per_row_grad",
    [
        # grpo: mean of the row means (-2, 1, 1) = 0. Gradient per token -A_i/(N·L_i) with N = 3:
        #   -2/3, 1/6, 1/12 (a token of a short response weighs more).
        (dict(loss_type="grpo"), 0.0, (-2 / 3, 1 / 6, 1 / 12)),
        # bnpo and dapo: Σ ℓ / 7 = 4/7, gradient -A_i/7: -2/7, 1/7, 1/7.
        (dict(loss_type="bnpo"), 4 / 7, (-2 / 7, 1 / 7, 1 / 7)),
        (dict(loss_type="dapo"), 4 / 7, (-2 / 7, 1 / 7, 1 / 7)),
        # dr_grpo, L = 4: Σ ℓ / (3·4) = 1/3, gradient -A_i/12: -1/6, 1/12, 1/12.
        (dict(loss_type="dr_grpo", max_completion_length=4), 1 / 3, (-1 / 6, 1 / 12, 1 / 12)),
        # dr_grpo with max_completion_length 8: 4/24 = 1/6, gradient -A_i/24.
        (dict(loss_type="dr_grpo", max_completion_length=8), 1 / 6, (-1 / 12, 1 / 24, 1 / 24)),
    ],
)
def test_aggregations_by_hand(kwargs, expected_loss, per_row_grad):
    logprobs = torch.full((3, 4), -1.0, dtype=torch.float64, requires_grad=True)
    old = torch.full((3, 4), -1.0, dtype=torch.float64)
    loss, _ = GRPO(scale_rewards=False, **kwargs).loss(logprobs, old, None, AGG_MASK, AGG_REWARDS)
    loss.backward()
    assert loss.item() == pytest.approx(expected_loss, abs=1e-12)
    expected_grad = torch.tensor(per_row_grad, dtype=torch.float64)[:, None] * AGG_MASK
    torch.testing.assert_close(logprobs.grad, expected_grad, rtol=0, atol=1e-12)


def test_k3_kl_by_hand():
    # All rewards equal → A = 0, so only the KL term is left. ref - logp = log 2 on the one token:
    #   k3 = e^{log 2} - log 2 - 1 = 1 - 0.6931471805599453 = 0.3068528194400547
    #   loss = β·k3 = 0.1·0.3068528194400547; dk3/dlogp = -e^{ref - logp} + 1 = -1 → gradient -β = -0.1
    logprobs = t([-1.0], [-1.0]).requires_grad_()
    ref = t([-1.0 + math.log(2)], [-1.0 + math.log(2)])
    algo = GRPO(beta=0.1)
    loss, m = algo.loss(logprobs, t([-1.0], [-1.0]), ref, ones_mask(2, 1), t([0.5, 0.5]))
    loss.backward()
    assert loss.item() == pytest.approx(0.1 * 0.3068528194400547, abs=1e-12)
    assert m["loss/kl"].item() == pytest.approx(0.3068528194400547, abs=1e-12)
    assert m["loss/policy"].item() == 0.0
    torch.testing.assert_close(logprobs.grad, t([-0.05], [-0.05]), rtol=0, atol=1e-12)  # -0.1 / N (grpo)
    # ref - logp = -log 2: k3 = 1/2 + log 2 - 1 = 0.1931471805599453 (k3 ≥ 0 either way)
    loss, m = algo.loss(t([-1.0]), t([-1.0]), t([-1.0 - math.log(2)]), ones_mask(1, 1), t([0.0]))
    assert m["loss/kl"].item() == pytest.approx(0.1931471805599453, abs=1e-12)


def test_kl_reported_but_not_added_when_beta_is_zero():
    loss, m = GRPO().loss(t([-1.0]), t([-1.0]), t([0.0]), ones_mask(1, 1), t([0.0]))
    assert loss.item() == 0.0
    assert m["loss/kl"].item() == pytest.approx(math.exp(1) - 2, abs=1e-12)  # e^1 - 1 - 1


def test_equal_rewards_give_zero_policy_gradient():
    # Rewards (1, 1, 1, 1): mean 1, every A = 0 exactly (scaled: 0 / (0 + 1e-4) = 0), whatever the ratios.
    gen = torch.Generator().manual_seed(0)
    logprobs = torch.randn(4, 5, generator=gen, dtype=torch.float64).requires_grad_()
    old = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    for algo in (GRPO(), GRPO(scale_rewards=False), GRPO(loss_type="dr_grpo", max_completion_length=5)):
        loss, m = algo.loss(logprobs, old, None, ones_mask(4, 5), torch.ones(1, 4, dtype=torch.float64))
        (grad,) = torch.autograd.grad(loss, logprobs)
        assert loss.item() == 0.0
        assert torch.equal(grad, torch.zeros_like(grad))
        assert m["advantages/mean"].item() == 0.0 and m["rewards/std"].item() == 0.0


@pytest.mark.parametrize("scale_rewards", [True, False])
def test_singleton_groups_have_zero_advantage(scale_rewards):
    # K = 1: r - mean(r) = 0; with scaling the std is taken as 0 (trl), 0 / 1e-4 = 0. The loss is 0.
    algo = GRPO(scale_rewards=scale_rewards)
    rewards = t([3.0], [-2.0])  # B = 2 prompts, K = 1
    assert torch.equal(algo.advantages(rewards), torch.zeros(2, 1, dtype=torch.float64))
    logprobs = t([0.3, -0.2], [0.1, 0.4]).requires_grad_()
    loss, _ = algo.loss(logprobs, torch.zeros(2, 2, dtype=torch.float64), None, ones_mask(2, 2), rewards)
    (grad,) = torch.autograd.grad(loss, logprobs)
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


def test_advantages_by_hand():
    algo = GRPO()
    # Group (1, 2, 3): mean 2, Bessel std √((1 + 0 + 1)/2) = 1 → A = ±1/(1 + 1e-4) = ±0.9999000099990001, 0.
    # Group (1, 0): mean 0.5, std √((0.25 + 0.25)/1) = √0.5 = 0.7071067811865476
    #   → A = ±0.5 / (0.7071067811865476 + 1e-4) = ±0.7070067953266834 (the ε is visible at 1e-4)
    torch.testing.assert_close(
        algo.advantages(t([1.0, 2.0, 3.0])),
        t([-0.9999000099990001, 0.0, 0.9999000099990001]),
        rtol=0,
        atol=1e-12,
    )
    torch.testing.assert_close(
        algo.advantages(t([1.0, 0.0])), t([0.7070067953266834, -0.7070067953266834]), rtol=0, atol=1e-12
    )
    # Groups are the rows: a second prompt is normalised on its own. Dr. GRPO only centres: (1, 0) → ±0.5.
    torch.testing.assert_close(
        GRPO(scale_rewards=False).advantages(t([1.0, 0.0], [10.0, 14.0])), t([0.5, -0.5], [-2.0, 2.0])
    )
    # std_epsilon is used: ε = 1 → (1, 2, 3) gives ±1/2.
    torch.testing.assert_close(GRPO(std_epsilon=1.0).advantages(t([1.0, 2.0, 3.0])), t([-0.5, 0.0, 0.5]))


def test_rows_are_prompt_major():
    # rewards (B = 2, K = 2) = [[1, -1], [5, 5]]: rows 0, 1 are prompt 0 (A = ±1), rows 2, 3 prompt 1 (A = 0).
    # With ρ = 1 and one token each, ℓ = -A = (-1, 1, 0, 0); the gradient of the grpo mean is -A/4.
    logprobs = torch.zeros(4, 1, dtype=torch.float64, requires_grad=True)
    loss, _ = GRPO(scale_rewards=False).loss(logprobs, torch.zeros(4, 1, dtype=torch.float64), None,
                                             ones_mask(4, 1), t([1.0, -1.0], [5.0, 5.0]))
    loss.backward()
    torch.testing.assert_close(logprobs.grad, t([-0.25], [0.25], [0.0], [0.0]), rtol=0, atol=1e-12)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_masked_tokens_contribute_nothing(loss_type):
    gen = torch.Generator().manual_seed(1)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    logprobs = -torch.rand(4, 4, generator=gen, dtype=torch.float64)
    old = logprobs + 0.4 * torch.randn(4, 4, generator=gen, dtype=torch.float64)
    ref = logprobs + 0.4 * torch.randn(4, 4, generator=gen, dtype=torch.float64)
    rewards = t([1.0, 0.0], [0.3, 2.0])
    algo = GRPO(beta=0.05, loss_type=loss_type, epsilon_high=0.28, max_completion_length=4)

    def run(lp, old, ref):
        lp = lp.clone().requires_grad_()
        loss, m = algo.loss(lp, old, ref, mask, rewards)
        loss.backward()
        return loss, m, lp.grad

    loss, m, grad = run(logprobs, old, ref)
    # Garbage at the masked positions, even -inf and NaN, changes nothing.
    garbage = torch.full_like(logprobs, float("nan"))
    garbage[0] = float("-inf")
    loss2, m2, grad2 = run(*(torch.where(mask, x, garbage) for x in (logprobs, old, ref)))
    assert loss2.item() == loss.item()
    assert torch.equal(grad2, grad)
    assert torch.equal(grad[~mask], torch.zeros_like(grad[~mask]))
    assert all(m2[key].item() == m[key].item() for key in m)


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("scale_rewards", [True, False])
def test_invalid_rewards_are_left_out(loss_type, scale_rewards):
    """A NaN reward (a response that could not be scored) is as if the response were not there: groups
    (1, NaN, -1, 4) and (2, 2) give the loss and gradients of groups (1, -1, 4) and (2, 2), and the
    invalid row gets no gradient, whatever its log-probs."""
    gen = torch.Generator().manual_seed(2)
    algo = GRPO(beta=0.05, loss_type=loss_type, scale_rewards=scale_rewards, max_completion_length=3)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.bool)
    logprobs = -torch.rand(6, 3, generator=gen, dtype=torch.float64)
    old = logprobs + 0.3 * torch.randn(6, 3, generator=gen, dtype=torch.float64)
    ref = logprobs + 0.3 * torch.randn(6, 3, generator=gen, dtype=torch.float64)
    nan = float("nan")
    with_invalid = t([1.0, nan, -1.0, 4.0], [2.0, 2.0, nan, nan])  # (B = 2, K = 4): rows 0-3, then 4-5 (+2 absent)
    keep = [0, 2, 3, 4, 5]
    full = torch.cat([logprobs, torch.zeros(2, 3, dtype=torch.float64)])
    full_old, full_ref = (torch.cat([x, torch.zeros(2, 3, dtype=torch.float64)]) for x in (old, ref))
    full_mask = torch.cat([mask, torch.ones(2, 3, dtype=torch.bool)])
    lp = full.clone().requires_grad_()
    loss, m = algo.loss(lp, full_old, full_ref, full_mask, with_invalid)
    loss.backward()
    # the same responses without the invalid one: groups (1, -1, 4) and (2, 2), K padded with NaN to 3
    lp2 = logprobs[keep].clone().requires_grad_()
    alone = GRPO(beta=0.05, loss_type=loss_type, scale_rewards=scale_rewards, max_completion_length=3)
    loss2, m2 = alone.loss(torch.cat([lp2, torch.zeros(1, 3, dtype=torch.float64)]),
                           torch.cat([old[keep], torch.zeros(1, 3, dtype=torch.float64)]),
                           torch.cat([ref[keep], torch.zeros(1, 3, dtype=torch.float64)]),
                           torch.cat([mask[keep], torch.ones(1, 3, dtype=torch.bool)]),
                           t([1.0, -1.0, 4.0], [2.0, 2.0, nan]))
    loss2.backward()
    assert loss.item() == pytest.approx(loss2.item(), abs=1e-12)
    torch.testing.assert_close(lp.grad[keep], lp2.grad, rtol=0, atol=1e-12)
    assert torch.equal(lp.grad[[1, 6, 7]], torch.zeros(3, 3, dtype=torch.float64))
    assert m["rewards/mean"].item() == pytest.approx(8 / 5, abs=1e-12)
    # the group (1, -1, 4) alone: mean 4/3, so (1 - 4/3, -1 - 4/3, 4 - 4/3) unscaled; 2, 2 → 0
    expected = GRPO(scale_rewards=scale_rewards).advantages(t([1.0, -1.0, 4.0]))[0]
    torch.testing.assert_close(algo.advantages(with_invalid)[0, [0, 2, 3]], expected, rtol=0, atol=1e-12)
    assert algo.advantages(with_invalid)[0, 1].item() == 0.0


def test_dr_grpo_needs_its_constant():
    with pytest.raises(ValueError, match="algo.loss_type=dr_grpo divides by a constant: set algo.max_completion_length"):
        GRPO(loss_type="dr_grpo")


def test_reward_metrics_by_hand():
    # rewards (3, 0, 0): mean 1, unbiased std √((4 + 1 + 1)/2) = √3 = 1.7320508075688772; advantages mean 0.
    _, m = GRPO().loss(torch.zeros(3, 4, dtype=torch.float64), torch.zeros(3, 4, dtype=torch.float64), None,
                       AGG_MASK, AGG_REWARDS)
    assert m["rewards/mean"].item() == pytest.approx(1.0, abs=1e-12)
    assert m["rewards/std"].item() == pytest.approx(1.7320508075688772, abs=1e-12)
    assert m["advantages/mean"].item() == pytest.approx(0.0, abs=1e-12)
    assert not any(v.requires_grad for v in m.values())


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(loss_type="ppo"), "algo.loss_type"),
        (dict(epsilon_low=-0.1), "algo.epsilon_low"),
        (dict(epsilon_low=1.5), "algo.epsilon_low"),
        (dict(epsilon_high=-0.1), "algo.epsilon_high"),
        (dict(beta=-0.01), "algo.beta"),
        (dict(std_epsilon=0.0), "algo.std_epsilon"),
        (dict(max_completion_length=0), "algo.max_completion_length"),
    ],
)
def test_invalid_hyperparameters(kwargs, field):
    with pytest.raises(ValueError, match=field):
        GRPO(**kwargs)


def test_loss_type_error_names_allowed_values():
    with pytest.raises(ValueError, match="'grpo', 'bnpo', 'dr_grpo', 'dapo'"):
        GRPO(loss_type="sapo")


def test_shape_and_reference_errors():
    lp, mask = torch.zeros(4, 3), ones_mask(4, 3)
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        GRPO().loss(lp, lp, None, mask, torch.zeros(4))  # rewards flat, not (B, K)
    with pytest.raises(ValueError, match=r"\(B, K\)"):
        GRPO().loss(lp, lp, None, mask, torch.zeros(2, 3))  # B·K = 6 ≠ N = 4
    with pytest.raises(ValueError, match="same shape"):
        GRPO().loss(lp, lp[:, :2], None, mask, torch.zeros(2, 2))
    with pytest.raises(ValueError, match="reference"):
        GRPO(beta=0.1).loss(lp, lp, None, mask, torch.zeros(2, 2))


def test_class_attributes():
    assert GRPO.batch_kind == "group"
    assert GRPO().needs_reference is False
    assert GRPO(beta=0.04).needs_reference is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        GRPO().beta = 0.1
