"""Cross-check of `GRPO` against trl 0.28.0's `GRPOTrainer._compute_loss` on random inputs.

`_compute_loss(self, model, inputs)` is called unbound with a stub for `self`. The stub's
`_get_per_token_logps_and_entropies` returns fixed (log-probs, entropies), so no model runs; the other
attributes it reads are set to the values of a plain GRPOConfig run (token-level importance sampling, no
entropy mask, no off-policy mask, no vLLM correction, no `delta`, no bias-corrected KL), with one process
and `current_gradient_accumulation_steps = 1` (trl divides grpo/bnpo/dr_grpo by it; ours never does).
trl is fed the advantages our `advantages()` computes; for dapo `num_items_in_batch` is the batch's
response-token count, which is what ours divides by.

trl computes advantages inline in `_generate_and_score_completions`, which needs a model, reward functions
and a tokenizer, so `trl_advantages` below replicates its formula line by line (trl 0.28,
`multi_objective_aggregation="sum_then_normalize"`, `scale_rewards` "group" or "none").
"""

import types
from collections import defaultdict

import pytest
import torch

from rlhf.algos.grpo import GRPO
from tests.unit.trl_import import trl_trainer

B, K, T = 4, 4, 12
N = B * K


@pytest.fixture(scope="module")
def trl_compute_loss():
    GRPOTrainer = trl_trainer("grpo_trainer", "GRPOTrainer")

    def compute_loss(algo: GRPO, logprobs, old_logprobs, ref_logprobs, mask, advantages):
        entropies = torch.ones_like(logprobs)

        def per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep, **kwargs):
            assert logits_to_keep == logprobs.shape[1]
            return logprobs, entropies

        stub = types.SimpleNamespace(
            _get_per_token_logps_and_entropies=per_token_logps_and_entropies,
            top_entropy_quantile=1.0,
            off_policy_mask_threshold=None,
            importance_sampling_level="token",
            beta=algo.beta,
            loss_type=algo.loss_type,
            epsilon_low=algo.epsilon_low,
            epsilon_high=algo.epsilon_high,
            args=types.SimpleNamespace(use_bias_correction_kl=False, delta=None),
            use_vllm=False,
            vllm_importance_sampling_correction=False,
            model=types.SimpleNamespace(training=True),
            current_gradient_accumulation_steps=1,
            max_completion_length=algo.max_completion_length or logprobs.shape[1],
            accelerator=types.SimpleNamespace(num_processes=1, gather=lambda x: x.reshape(1)),
            _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        )
        n = logprobs.shape[0]
        inputs = {
            "prompt_ids": torch.zeros(n, 3, dtype=torch.long),
            "prompt_mask": torch.ones(n, 3, dtype=torch.long),
            "completion_ids": torch.zeros(n, logprobs.shape[1], dtype=torch.long),
            "completion_mask": mask.long(),  # trl's completion masks are integer tensors
            "advantages": advantages,
            "old_per_token_logps": old_logprobs,
            "num_items_in_batch": mask.sum(),
        }
        if ref_logprobs is not None:
            inputs["ref_per_token_logps"] = ref_logprobs
        loss = GRPOTrainer._compute_loss(stub, None, inputs)
        return loss, {key: values[-1] for key, values in stub._metrics["train"].items()}

    return compute_loss


def trl_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: bool) -> torch.Tensor:
    """trl 0.28 `_generate_and_score_completions`, flat rewards (B·K,) → advantages (B·K,)."""
    mean_grouped_rewards = rewards.view(-1, num_generations).mean(dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if num_generations > 1:
        std_rewards = rewards.view(-1, num_generations).std(dim=1)
        std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
    else:
        std_rewards = torch.zeros_like(rewards)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards:
        advantages = advantages / (std_rewards + 1e-4)
    return advantages


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, T + 1, (N,), generator=gen)
    lengths[0] = T  # one response fills the padded length
    mask = torch.arange(T)[None, :] < lengths[:, None]  # (N, T)
    old = -2 * torch.rand(N, T, generator=gen, dtype=torch.float64)
    # ratios e^{±0.3σ}: a good share of tokens fall outside [0.8, 1.28] on both sides
    logprobs = old + 0.3 * torch.randn(N, T, generator=gen, dtype=torch.float64)
    ref = old + 0.2 * torch.randn(N, T, generator=gen, dtype=torch.float64)
    rewards = torch.randn(B, K, generator=gen, dtype=torch.float64)
    rewards[1] = rewards[1, 0]  # a group with equal rewards: advantage 0
    return logprobs, old, ref, mask, rewards


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
@pytest.mark.parametrize("epsilon_high", [0.2, 0.28])
def test_loss_matches_trl(trl_compute_loss, batch, loss_type, beta, epsilon_high):
    logprobs, old, ref, mask, rewards = batch
    # dr_grpo's constant: the padded length, what trl divides by when max_completion_length is T
    algo = GRPO(epsilon_low=0.2, epsilon_high=epsilon_high, beta=beta, loss_type=loss_type,
                max_completion_length=T if loss_type == "dr_grpo" else None)
    ours_in = logprobs.clone().requires_grad_()
    theirs_in = logprobs.clone().requires_grad_()
    ref_or_none = ref if beta > 0 else None

    loss, m = algo.loss(ours_in, old, ref_or_none, mask, rewards)
    advantages = algo.advantages(rewards).reshape(-1)  # (N,)
    trl_loss, trl_m = trl_compute_loss(algo, theirs_in, old, ref_or_none, mask, advantages)
    close = dict(rtol=0, atol=1e-6)
    torch.testing.assert_close(loss, trl_loss, **close)
    loss.backward()
    trl_loss.backward()
    torch.testing.assert_close(ours_in.grad, theirs_in.grad, **close)

    # trl's clip_ratio/* are the same token means as ours (its logging casts them to float32).
    assert m["actor/clipfrac_low"].item() == pytest.approx(trl_m["clip_ratio/low_mean"], abs=1e-6)
    assert m["actor/clipfrac_high"].item() == pytest.approx(trl_m["clip_ratio/high_mean"], abs=1e-6)
    assert m["actor/clipfrac"].item() == pytest.approx(trl_m["clip_ratio/region_mean"], abs=1e-6)
    # The batch clips on both sides, so the clip metrics are tested non-trivially.
    assert m["actor/clipfrac_low"].item() > 0 and m["actor/clipfrac_high"].item() > 0
    if beta > 0:
        # loss = loss/policy + β·loss/kl; trl's "kl" metric is the token mean, which our bnpo/dapo kl is.
        torch.testing.assert_close(loss.detach(), m["loss/policy"] + beta * m["loss/kl"], **close)
        if loss_type in ("bnpo", "dapo"):
            assert m["loss/kl"].item() == pytest.approx(trl_m["kl"], abs=1e-6)
    else:
        torch.testing.assert_close(loss.detach(), m["loss/policy"], **close)


def test_dr_grpo_constant_matches_trl(trl_compute_loss, batch):
    # An explicit max_completion_length (> T) reaches trl as its `max_completion_length`.
    logprobs, old, ref, mask, rewards = batch
    algo = GRPO(loss_type="dr_grpo", scale_rewards=False, max_completion_length=64, beta=0.1)
    loss, _ = algo.loss(logprobs, old, ref, mask, rewards)
    trl_loss, _ = trl_compute_loss(algo, logprobs, old, ref, mask, algo.advantages(rewards).reshape(-1))
    torch.testing.assert_close(loss, trl_loss, rtol=0, atol=1e-6)


@pytest.mark.parametrize("scale_rewards", [True, False])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_advantages_match_trl_formula(scale_rewards, k):
    gen = torch.Generator().manual_seed(k)
    rewards = torch.randn(6, k, generator=gen, dtype=torch.float64)
    if k > 1:
        rewards[2] = 0.5  # equal rewards: std 0, advantage 0
    ours = GRPO(scale_rewards=scale_rewards).advantages(rewards)
    theirs = trl_advantages(rewards.reshape(-1), k, scale_rewards).reshape(6, k)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
