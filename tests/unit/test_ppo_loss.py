"""PPO pieces against hand-derived numbers: GAE, whitening, KL controllers, reward shaping and the loss."""

import dataclasses
import math

import pytest
import torch

from rlhf.algos.ppo import PPO, AdaptiveKLController, FixedKLController, gae, whiten


def t(*rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-12)


# --- GAE -----------------------------------------------------------------------------------------------

def test_gae_three_tokens_by_hand():
    # γ = 0.9, λ = 0.5 (γλ = 0.45); rewards (0, 0, 1), values (0.5, 0.6, 0.7), V after the last token = 0.
    #   t = 2: δ = 1 + 0.9·0 - 0.7 = 0.3                 A = 0.3
    #   t = 1: δ = 0 + 0.9·0.7 - 0.6 = 0.03              A = 0.03 + 0.45·0.3 = 0.165
    #   t = 0: δ = 0 + 0.9·0.6 - 0.5 = 0.04              A = 0.04 + 0.45·0.165 = 0.11425
    # returns = A + V = (0.61425, 0.765, 1.0)
    mask = torch.ones(1, 3, dtype=torch.bool)
    advantages, returns = gae(t([0.0, 0.0, 1.0]), t([0.5, 0.6, 0.7]), mask, 0.9, 0.5)
    close(advantages, t([0.11425, 0.165, 0.3]))
    close(returns, t([0.61425, 0.765, 1.0]))


def test_gae_skips_masked_positions():
    mask = torch.tensor([[1, 1, 0], [1, 0, 1]], dtype=torch.bool)
    # Row 0, padding at t = 2 (reward and value 100 there are ignored): t = 1 is the last token.
    #   t = 1: δ = 1 - 0.6 = 0.4, A = 0.4;  t = 0: δ = 0.9·0.6 - 0.5 = 0.04, A = 0.04 + 0.45·0.4 = 0.22
    # Row 1, a masked turn at t = 1: the step after t = 0 is t = 2, undiscounted by the gap.
    #   t = 2: δ = 1 - 0.7 = 0.3, A = 0.3;  t = 0: δ = 0.9·0.7 - 0.5 = 0.13, A = 0.13 + 0.45·0.3 = 0.265
    rewards = t([0.0, 1.0, 100.0], [0.0, 100.0, 1.0])
    values = t([0.5, 0.6, 100.0], [0.5, 100.0, 0.7])
    advantages, returns = gae(rewards, values, mask, 0.9, 0.5)
    close(advantages, t([0.22, 0.4, 0.0], [0.265, 0.0, 0.3]))
    close(returns, t([0.72, 1.0, 0.0], [0.765, 0.0, 1.0]))


def test_gae_with_unit_gamma_lambda_is_monte_carlo():
    # γ = λ = 1: A_t = Σ_{t' ≥ t} r_t' - V_t. Rewards (1, 2, 3), V (1, 1, 1) → (6 - 1, 5 - 1, 3 - 1).
    mask = torch.ones(1, 3, dtype=torch.bool)
    advantages, returns = gae(t([1.0, 2.0, 3.0]), t([1.0, 1.0, 1.0]), mask, 1.0, 1.0)
    close(advantages, t([5.0, 4.0, 2.0]))
    close(returns, t([6.0, 5.0, 3.0]))


def test_gae_matches_trl_loop_on_contiguous_responses():
    # trl's PPOTrainer loop (replicated): it runs over every position, V = 0 and r = 0 after the response.
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([5, 3, 1, 4])
    mask = torch.arange(5)[None, :] < lengths[:, None]  # (4, 5)
    rewards = torch.where(mask, torch.randn(4, 5, generator=gen, dtype=torch.float64), 0.0)
    values = torch.where(mask, torch.randn(4, 5, generator=gen, dtype=torch.float64), 0.0)
    gamma, lam = 0.99, 0.95
    lastgaelam, reversed_advantages = 0.0, []
    for i in reversed(range(5)):
        nextvalues = values[:, i + 1] if i < 4 else 0.0
        delta = rewards[:, i] + gamma * nextvalues - values[:, i]
        lastgaelam = delta + gamma * lam * lastgaelam
        reversed_advantages.append(lastgaelam)
    trl_advantages = torch.stack(reversed_advantages[::-1], dim=1)
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    close(advantages, torch.where(mask, trl_advantages, 0.0))
    close(returns, torch.where(mask, trl_advantages + values, 0.0))


# --- whitening -----------------------------------------------------------------------------------------

def test_whiten_by_hand():
    # Unmasked (1, 2, 3): mean 2, unbiased variance (1 + 0 + 1)/2 = 1 → (x - 2)/√(1 + 1e-8);
    # 1/√(1 + 1e-8) = 0.999999995. The masked 100 neither counts nor comes back (0).
    x = t([1.0, 2.0, 3.0, 100.0])
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    close(whiten(x, mask), t([-0.999999995, 0.0, 0.999999995, 0.0]))
    # shift_mean=False adds the mean back: only the scale changes.
    close(whiten(x, mask, shift_mean=False), t([1.000000005, 2.0, 2.999999995, 0.0]))
    with pytest.raises(ValueError, match="at least 2"):
        whiten(x, torch.tensor([[1, 0, 0, 0]], dtype=torch.bool))


# --- KL controllers ------------------------------------------------------------------------------------

def test_adaptive_kl_controller_by_hand():
    # β = 0.2, target 6, horizon 10 000, batches of 256 samples:
    #   KL = 9:   e = 9/6 - 1 = 0.5 → clipped to 0.2;   β ← 0.2·(1 + 0.2·256/10000) = 0.2·1.00512 = 0.201024
    #   KL = 3:   e = -0.5 → -0.2;                      β ← 0.201024·0.99488 = 0.19999475712
    #   KL = 6.6: e = 0.1 (inside the clip);            β ← 0.19999475712·1.00256
    ctl = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10000)
    ctl.update(9.0, 256)
    assert ctl.value == pytest.approx(0.201024, abs=1e-15)
    ctl.update(3.0, 256)
    assert ctl.value == pytest.approx(0.19999475712, abs=1e-15)
    ctl.update(6.6, 256)
    assert ctl.value == pytest.approx(0.19999475712 * 1.00256, abs=1e-15)
    # At the target it stays put.
    before = ctl.value
    ctl.update(6.0, 256)
    assert ctl.value == before


def test_kl_controllers_checkpoint():
    ctl = AdaptiveKLController(init_kl_coef=0.1, target=3.0, horizon=1000)
    ctl.update(10.0, 64)
    restored = AdaptiveKLController(init_kl_coef=0.1, target=3.0, horizon=1000)
    restored.load_state_dict(ctl.state_dict())
    assert restored.value == ctl.value != 0.1
    fixed = FixedKLController(0.05)
    fixed.update(100.0, 64)
    assert fixed.value == 0.05 and fixed.state_dict() == {"value": 0.05}
    fixed.load_state_dict({"value": 0.07})
    assert fixed.value == 0.07
    with pytest.raises(ValueError, match="target"):
        AdaptiveKLController(target=0.0)


# --- the loss ------------------------------------------------------------------------------------------

TARGET_KEYS = ("old_logprobs", "ref_logprobs", "old_values", "scores", "ends_with_eos", "response_mask")
LOSS_KEYS = ("logprobs", "old_logprobs", "values", "old_values", "response_mask")


def step(algo: PPO, batch: dict, kl_coef: float | None = None):
    """`targets` on the whole batch, then `loss` on it: what one PPO minibatch that is the whole rollout
    batch computes. Returns the loss and both steps' metrics."""
    targets, target_metrics = algo.targets(**{k: batch[k] for k in TARGET_KEYS}, kl_coef=kl_coef)
    loss, metrics = algo.loss(**{k: batch[k] for k in LOSS_KEYS}, **targets)
    return loss, metrics | target_metrics


def one_token_batch(**overrides):
    # Two one-token responses, scores (1, -1), V_old = 0, π_old = π_ref (no KL reward).
    # GAE over one token: A = R = score - V_old = (1, -1). Whitening: mean 0, unbiased variance 2,
    # a = 1/√(2 + 1e-8) = 0.7071067794187805 → A = (a, -a).
    batch = dict(
        logprobs=t([0.5], [0.5]),
        old_logprobs=t([0.0], [0.0]),
        ref_logprobs=t([0.0], [0.0]),
        values=t([0.5], [-0.1]),
        old_values=t([0.0], [0.0]),
        scores=torch.tensor([1.0, -1.0], dtype=torch.float64),
        ends_with_eos=torch.tensor([True, True]),
        response_mask=torch.ones(2, 1, dtype=torch.bool),
    )
    return batch | overrides


def test_loss_by_hand():
    # Policy: ρ = e^0.5 = 1.6487212707001282 on both tokens, clip range 0.2.
    #   A = +a: max(-1.6487a, -1.2a) = -1.2a (clipped, no gradient)
    #   A = -a: max(1.6487a, 1.2a) = 1.6487a (not clipped; dL/dlogp = aρ/2 = 0.5829109939420035)
    #   L_pg = (1.6487212707001282 - 1.2)·a/2 = 0.15864692629073524
    # Value: returns (1, -1), V = (0.5, -0.1), V_old = 0, clip ±0.2 → clipped V = (0.2, -0.1).
    #   row 0: max((0.5 - 1)², (0.2 - 1)²) = max(0.25, 0.64) = 0.64 (clipped, no gradient)
    #   row 1: max((-0.1 + 1)², same) = 0.81 (not clipped; dL_vf/dV = ½·2·0.9/2 = 0.45)
    #   L_vf = ½·(0.64 + 0.81)/2 = 0.3625
    # L = 0.15864692629073524 + 0.1·0.3625 = 0.19489692629073524; dL/dV_1 = 0.1·0.45 = 0.045
    logprobs = t([0.5], [0.5]).requires_grad_()
    values = t([0.5], [-0.1]).requires_grad_()
    loss, m = step(PPO(), one_token_batch(logprobs=logprobs, values=values))
    loss.backward()
    assert loss.item() == pytest.approx(0.19489692629073524, abs=1e-12)
    assert m["loss/policy"].item() == pytest.approx(0.15864692629073524, abs=1e-12)
    assert m["loss/value"].item() == pytest.approx(0.3625, abs=1e-12)
    close(logprobs.grad, t([0.0], [0.5829109939420035]))
    close(values.grad, t([0.0], [0.045]))
    assert m["actor/clipfrac"].item() == 0.5
    assert m["critic/clipfrac"].item() == 0.5
    # ½ (log ρ)² = ½·0.25; no KL between old and reference; returns and raw advantages average to 0.
    assert m["actor/approx_kl"].item() == pytest.approx(0.125, abs=1e-12)
    assert m["kl"].item() == 0.0
    assert m["returns/mean"].item() == pytest.approx(0.0, abs=1e-12)
    assert m["advantages/mean"].item() == pytest.approx(0.0, abs=1e-12)
    assert not any(v.requires_grad for v in m.values())


# Reward shaping: γ = λ = 1 and V_old = 0, so returns are sums of future token rewards.
# Row 0: 3 tokens, old - ref = (0.5, 0.2, -0.1), score 2, ends with EOS.
# Row 1: 2 tokens, old - ref = (0.3, 0.4), score 1, no EOS; position 2 is padding (old - ref = 9 ignored).
# kl metric: mean of per-sequence sums (0.6 + 0.7)/2 = 0.65.
SHAPING = dict(
    logprobs=torch.zeros(2, 3, dtype=torch.float64),
    old_logprobs=t([0.5, 0.2, -0.1], [0.3, 0.4, 9.0]),
    ref_logprobs=torch.zeros(2, 3, dtype=torch.float64),
    values=torch.zeros(2, 3, dtype=torch.float64),
    old_values=torch.zeros(2, 3, dtype=torch.float64),
    scores=torch.tensor([2.0, 1.0], dtype=torch.float64),
    ends_with_eos=torch.tensor([True, False]),
    response_mask=torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool),
)


@pytest.mark.parametrize(
    "algo, batch, kl_coef, expected_returns_mean",
    [
        # β = 0.1, penalty 1 (row 1 only: score 1 → 0):
        #   row 0 rewards (-0.05, -0.02, 0.01 + 2) → returns (1.94, 1.99, 2.01)
        #   row 1 rewards (-0.03, -0.04 + 0)       → returns (-0.07, -0.04)
        #   mean over 5 tokens: (5.94 - 0.11)/5 = 1.166
        (PPO(gamma=1.0, lam=1.0, missing_eos_penalty=1.0), SHAPING, 0.1, 1.166),
        # No penalty: row 1 returns (0.93, 0.96); mean (5.94 + 1.89)/5 = 1.566
        (PPO(gamma=1.0, lam=1.0), SHAPING, 0.1, 1.566),
        # Penalty set but every response ended with EOS: nothing subtracted, 1.566 again.
        (PPO(gamma=1.0, lam=1.0, missing_eos_penalty=1.0),
         SHAPING | dict(ends_with_eos=torch.tensor([True, True])), 0.1, 1.566),
        # kl_coef from the loop = 0: returns are the (penalised) scores, (2, 2, 2) and (0, 0): 6/5 = 1.2
        (PPO(gamma=1.0, lam=1.0, missing_eos_penalty=1.0), SHAPING, 0.0, 1.2),
        # kl_coef None: the field, 0.05. Row 0 (-0.025, -0.01, 2.005) → (1.97, 1.995, 2.005);
        #   row 1 (-0.015, -0.02) → (-0.035, -0.02); mean (5.97 - 0.055)/5 = 1.183
        (PPO(gamma=1.0, lam=1.0, missing_eos_penalty=1.0), SHAPING, None, 1.183),
    ],
)
def test_reward_shaping_by_hand(algo, batch, kl_coef, expected_returns_mean):
    _, m = step(algo, batch, kl_coef)
    assert m["returns/mean"].item() == pytest.approx(expected_returns_mean, abs=1e-12)
    # V_old = 0: the raw advantages are the returns.
    assert m["advantages/mean"].item() == pytest.approx(expected_returns_mean, abs=1e-12)
    assert m["kl"].item() == pytest.approx(0.65, abs=1e-12)


def test_whiten_rewards_keeps_the_mean():
    # Scores (1, 3), one token each, V = V_old = 0, no KL: returns = scores, L_vf = ½ mean(R²).
    #   raw:      ½·(1 + 9)/2 = 2.5
    #   whitened: mean 2, unbiased variance 2 → R = 2 ∓ a with a = 1/√(2 + 1e-8);
    #             ½·((2 - a)² + (2 + a)²)/2 = 2 + a²/2 = 2 + 1/(2·(2 + 1e-8)) = 2.24999999875
    batch = one_token_batch(
        logprobs=t([0.0], [0.0]), values=t([0.0], [0.0]), scores=torch.tensor([1.0, 3.0], dtype=torch.float64)
    )
    _, raw = step(PPO(), batch)
    _, whitened = step(PPO(whiten_rewards=True), batch)
    assert raw["loss/value"].item() == pytest.approx(2.5, abs=1e-12)
    assert whitened["loss/value"].item() == pytest.approx(2.24999999875, abs=1e-12)
    assert raw["returns/mean"].item() == whitened["returns/mean"].item() == pytest.approx(2.0, abs=1e-12)


def test_masked_tokens_contribute_nothing():
    gen = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)

    def randn():
        return torch.randn(4, 4, generator=gen, dtype=torch.float64)

    base = dict(
        logprobs=randn() * 0.3, old_logprobs=randn() * 0.3, ref_logprobs=randn() * 0.3, values=randn(),
        old_values=randn(), scores=torch.randn(4, generator=gen, dtype=torch.float64),
        ends_with_eos=torch.tensor([True, False, True, False]), response_mask=mask,
    )
    algo = PPO(missing_eos_penalty=0.5, whiten_rewards=True)

    def run(batch):
        leaves = {k: batch[k].clone().requires_grad_() for k in ("logprobs", "values")}
        loss, m = step(algo, batch | leaves, kl_coef=0.1)
        loss.backward()
        return loss, m, leaves["logprobs"].grad, leaves["values"].grad

    loss, m, grad_lp, grad_v = run(base)
    nan = torch.full((4, 4), float("nan"), dtype=torch.float64)
    token_keys = ("logprobs", "old_logprobs", "ref_logprobs", "values", "old_values")
    garbage = {k: torch.where(mask, base[k], nan) for k in token_keys}
    loss2, m2, grad_lp2, grad_v2 = run(base | garbage)
    assert loss2.item() == loss.item()
    assert torch.equal(grad_lp2, grad_lp) and torch.equal(grad_v2, grad_v)
    assert torch.equal(grad_lp[~mask], torch.zeros_like(grad_lp[~mask]))
    assert all(m2[key].item() == m[key].item() for key in m)


def test_policy_and_value_gradients_stop_at_rollout_tensors():
    # old_logprobs, ref_logprobs, old_values and scores are treated as constants even if they carry grad.
    batch = one_token_batch()
    const_keys = ("old_logprobs", "ref_logprobs", "old_values", "scores")
    consts = {k: batch[k].clone().requires_grad_() for k in const_keys}
    loss, _ = step(PPO(), batch | consts | {"logprobs": batch["logprobs"].clone().requires_grad_()})
    loss.backward()
    assert all(v.grad is None for v in consts.values())


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(clip_range=0.0), "algo.clip_range"),
        (dict(clip_range_value=0.0), "algo.clip_range_value"),
        (dict(value_coef=-1.0), "algo.value_coef"),
        (dict(gamma=1.5), "algo.gamma"),
        (dict(lam=-0.1), "algo.lam"),
        (dict(kl_coef=-0.1), "algo.kl_coef"),
        (dict(missing_eos_penalty=-1.0), "algo.missing_eos_penalty"),
    ],
)
def test_invalid_hyperparameters(kwargs, field):
    with pytest.raises(ValueError, match=field):
        PPO(**kwargs)


def test_input_errors():
    batch = one_token_batch()
    with pytest.raises(ValueError, match="same shape"):
        step(PPO(), batch | dict(values=batch["values"][:, 0]))
    with pytest.raises(ValueError, match="same shape"):
        step(PPO(), batch | dict(old_values=batch["old_values"][:, 0]))
    with pytest.raises(ValueError, match=r"\(N,\)"):
        step(PPO(), batch | dict(scores=batch["scores"][:, None]))
    with pytest.raises(ValueError, match="at least one response token"):
        step(PPO(), batch | dict(response_mask=torch.tensor([[True], [False]])))


def test_minibatches_use_the_targets_of_the_whole_batch():
    """Advantages are whitened over the rollout batch, so a minibatch's loss takes them from `targets` of
    the whole batch: row 1 alone would whiten to nothing (one token), with row 0 its advantage is -a."""
    batch = one_token_batch()
    targets, _ = PPO().targets(**{k: batch[k] for k in TARGET_KEYS})
    a = 0.7071067794187805  # 1/√(2 + 1e-8): scores (1, -1) whitened
    close(targets["advantages"], t([a], [-a]))
    close(targets["returns"], t([1.0], [-1.0]))
    half = {k: batch[k][1:] for k in LOSS_KEYS}
    loss, m = PPO().loss(**half, advantages=targets["advantages"][1:], returns=targets["returns"][1:])
    # row 1: ρ = e^0.5, A = -a: max(1.6487a, 1.2a) = 1.6487a; V = -0.1 vs R = -1, V_old = 0 clipped to -0.1
    assert m["loss/policy"].item() == pytest.approx(1.6487212707001282 * a, abs=1e-12)
    assert m["loss/value"].item() == pytest.approx(0.5 * 0.81, abs=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        PPO().targets(**{k: batch[k][1:] for k in TARGET_KEYS})


def test_class_attributes():
    assert PPO.batch_kind == "rollout"
    assert PPO().needs_reference is True
    with pytest.raises(dataclasses.FrozenInstanceError):
        PPO().kl_coef = 0.1
    assert math.isclose(PPO().kl_coef, 0.05)
