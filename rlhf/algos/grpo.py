"""Group Relative Policy Optimisation: a clipped policy gradient with group-normalised outcome rewards."""

from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

import torch
from torch import Tensor

from rlhf.algos.shapes import require_same_shape

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]


@dataclass(frozen=True)
class GRPO:
    """GRPO (Shao et al. 2024, "DeepSeekMath", §4.1, eq. 3) with the loss aggregations of trl 0.28.

    K responses y_i are sampled for each prompt and scored with one scalar reward r_i each. Every token of
    y_i gets the same advantage (outcome supervision, §4.1.2)

        A_i = (r_i - mean(r)) / (std(r) + ε)        (group of K; `scale_rewards=False`: A_i = r_i - mean(r))

    and with ρ_it = π(y_it) / π_old(y_it) the per-token loss is

        ℓ_it = -min(ρ_it A_i, clip(ρ_it, 1 - ε_low, 1 + ε_high) A_i) + β k3_it,
        k3_it = exp(r_it - p_it) - (r_it - p_it) - 1        (p, r: policy and reference log-probs)

    the k3 estimator of KL(π || π_ref) (Schulman 2020, "Approximating KL divergence"), which is eq. 4 of
    the paper. ε_high > ε_low is DAPO's "clip-higher" (Yu et al. 2025). ℓ is aggregated over the response
    tokens (mask m) of the N = B·K responses according to `loss_type`:

    - grpo: mean over responses of each response's token mean, (1/N) Σ_i Σ_t m ℓ / Σ_t m (the paper's eq. 3).
    - bnpo: token mean over the batch, Σ m ℓ / Σ m.
    - dr_grpo: Σ m ℓ / (N · L), L = `max_completion_length` (Dr. GRPO, Liu et al. 2025, "Understanding
      R1-Zero-Like Training", §3.1); removes the length bias of per-response means. L must be a constant
      (the configs take the backend's generation budget, `backend.max_new_tokens`): it is required.
    - dapo: Σ m ℓ / (tokens), DAPO's token-level loss (Yu et al. 2025, eq. 10).

    When the policy decides how long a response (or a dialogue, whose policy turns are one response here)
    is, only dr_grpo's constant normaliser keeps the estimator an unbiased policy gradient of the expected
    reward: grpo's 1/|y_i| gives the tokens of short responses more weight, and bnpo/dapo's 1/Σ|y| makes
    each response's weight depend on the lengths of the others.

    Invalid rewards: a response whose reward could not be had (NaN in `rewards`) is left out. Its group's
    mean and std are taken over the group's valid responses, and the response gets no gradient and is not
    counted in N (nor in the token counts), exactly as if its group had one response fewer.

    Deliberate choices and deviations:
    - bnpo and dapo are the same formula here. trl 0.28 divides dapo by `num_items_in_batch`, the response
      tokens of the whole gradient-accumulated (global) batch, and bnpo by the micro-batch's tokens and then
      by the number of accumulation steps; here both divide by the response tokens of the tensors passed to
      one call, and scaling for gradient accumulation is the training loop's job (trl divides grpo, bnpo and
      dr_grpo by the accumulation steps inside the loss; this class never does).
    - A response (or a batch) without response tokens contributes 0: token counts are clamped at 1, as in
      trl. Masked positions are selected out rather than multiplied by 0, so a -inf or NaN log-prob at a
      padding position cannot make the loss NaN (in trl it would).
    - Singleton groups (K = 1, or one valid response) have std 0 by convention and hence advantage 0, as trl
      does for `num_generations == 1`; see `advantages` for verl and OpenRLHF.
    - The paper's KL term is β·KL in the objective; like trl it is added per token before the aggregation.

    Metrics: `loss/policy` and `loss/kl` are the clipped surrogate and the k3 KL aggregated like the loss,
    so loss = loss/policy + β·loss/kl (`loss/kl` is reported whenever `ref_logprobs` is given). The clip
    fractions are token means of the tokens whose gradient the clip removes, as trl's `clip_ratio/*`:
    low = ρ < 1 - ε_low with A < 0, high = ρ > 1 + ε_high with A > 0.
    """

    batch_kind: ClassVar[str] = "group"

    epsilon_low: float = 0.2
    epsilon_high: float = 0.2
    beta: float = 0.0
    scale_rewards: bool = True
    loss_type: LossType = "grpo"
    max_completion_length: int | None = None
    std_epsilon: float = 1e-4

    def __post_init__(self) -> None:
        if self.loss_type not in get_args(LossType):
            raise ValueError(f"algo.loss_type must be one of {get_args(LossType)}, got {self.loss_type!r}")
        if not 0.0 <= self.epsilon_low <= 1.0:
            raise ValueError(f"algo.epsilon_low must be in [0, 1], got {self.epsilon_low}")
        if not self.epsilon_high >= 0.0:
            raise ValueError(f"algo.epsilon_high must be >= 0, got {self.epsilon_high}")
        if not self.beta >= 0.0:
            raise ValueError(f"algo.beta must be >= 0, got {self.beta}")
        if not self.std_epsilon > 0.0:
            raise ValueError(f"algo.std_epsilon must be > 0, got {self.std_epsilon}")
        if self.max_completion_length is not None and self.max_completion_length < 1:
            raise ValueError(
                f"algo.max_completion_length must be >= 1 or null, got {self.max_completion_length}"
            )
        if self.loss_type == "dr_grpo" and self.max_completion_length is None:
            raise ValueError("algo.loss_type=dr_grpo divides by a constant: set algo.max_completion_length "
                             "(the generation budget, e.g. ${backend.max_new_tokens})")

    @property
    def needs_reference(self) -> bool:
        return self.beta > 0

    def advantages(self, rewards: Tensor) -> Tensor:
        """Group-normalised advantages (B, K) of rewards (B, K), one group of K responses per prompt (row).

        (r - mean) / (std + ε) with the Bessel-corrected std over the group and ε = `std_epsilon`, as trl 0.28
        (`_generate_and_score_completions`, ε = 1e-4); r - mean when `scale_rewards` is False (Dr. GRPO).
        NaN rewards (invalid) are left out of their group's mean and std and get advantage 0.
        Other implementations differ:
        - verl (`compute_grpo_outcome_advantage`): ε = 1e-6, unbiased `torch.std`; a singleton group gets
          mean 0 and std 1, so its advantage is its raw reward (here and in trl: 0).
        - OpenRLHF (`advantage_estimator="group_norm"`): ε = 1e-9, unbiased `torch.std` (a singleton group
          gives NaN); the result is then treated as a reward at the last token and turned into returns.
        """
        if rewards.ndim != 2:
            raise ValueError(f"rewards must have shape (B, K), got {tuple(rewards.shape)}")
        valid = ~torch.isnan(rewards)  # (B, K)
        values = torch.where(valid, rewards, torch.zeros_like(rewards))  # (B, K)
        count = valid.sum(dim=1, keepdim=True)  # (B, 1)
        mean = values.sum(dim=1, keepdim=True) / count.clamp(min=1)  # (B, 1)
        centred = torch.where(valid, values - mean, torch.zeros_like(values))  # (B, K)
        if not self.scale_rewards:
            return centred
        # Bessel-corrected std over the valid members; 0 for a group with fewer than two
        var = (centred**2).sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)  # (B, 1)
        return centred / (var.sqrt() + self.std_epsilon)

    def _aggregate(self, per_token: Tensor, mask: Tensor, responses: Tensor) -> Tensor:
        """Reduce per-token values (N, T) over the response tokens according to `loss_type`; `responses` is
        the number of (valid) responses the per-response means are taken over."""
        masked = torch.where(mask, per_token, torch.zeros_like(per_token))  # (N, T)
        if self.loss_type == "grpo":
            return (masked.sum(dim=1) / mask.sum(dim=1).clamp(min=1)).sum() / responses.clamp(min=1)
        if self.loss_type == "dr_grpo":
            return masked.sum() / (responses.clamp(min=1) * self.max_completion_length)
        return masked.sum() / mask.sum().clamp(min=1)  # bnpo, dapo

    def loss(
        self,
        logprobs: Tensor,
        old_logprobs: Tensor,
        ref_logprobs: Tensor | None,
        response_mask: Tensor,
        rewards: Tensor,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Log-probs and mask (N, T), rewards (B, K) with N = B·K, row i·K + k = sample k of prompt i; a NaN
        reward marks an invalid response (left out, see the class docstring)."""
        others = [old_logprobs, response_mask] + ([] if ref_logprobs is None else [ref_logprobs])
        require_same_shape("GRPO token inputs", 2, logprobs, *others)
        if rewards.ndim != 2 or rewards.numel() != logprobs.shape[0]:
            raise ValueError(
                f"rewards must have shape (B, K) with B·K = N = {logprobs.shape[0]}, "
                f"got {tuple(rewards.shape)}"
            )
        if self.beta > 0 and ref_logprobs is None:
            raise ValueError("GRPO with algo.beta > 0 needs reference log-probs")

        rewards = rewards.detach()
        valid = ~torch.isnan(rewards).reshape(-1)  # (N,)
        mask = response_mask.bool() & valid[:, None]  # (N, T)
        responses = valid.sum()
        advantages = self.advantages(rewards).reshape(-1, 1)  # (N, 1)
        log_ratio = torch.where(mask, logprobs - old_logprobs.detach(), torch.zeros_like(logprobs))  # (N, T)
        ratio = torch.exp(log_ratio)  # (N, T)
        clipped = torch.clamp(ratio, 1 - self.epsilon_low, 1 + self.epsilon_high)  # (N, T)
        policy_loss = -torch.min(ratio * advantages, clipped * advantages)  # (N, T)
        per_token = policy_loss
        if ref_logprobs is not None:
            ref_log_ratio = torch.where(mask, ref_logprobs.detach() - logprobs, torch.zeros_like(logprobs))
            kl = torch.exp(ref_log_ratio) - ref_log_ratio - 1  # (N, T), k3
            if self.beta > 0:
                per_token = per_token + self.beta * kl
        loss = self._aggregate(per_token, mask, responses)

        with torch.no_grad():
            n_tokens = mask.sum().clamp(min=1)
            low = (ratio < 1 - self.epsilon_low) & (advantages < 0) & mask  # (N, T)
            high = (ratio > 1 + self.epsilon_high) & (advantages > 0) & mask  # (N, T)
            metrics = {"loss/policy": self._aggregate(policy_loss, mask, responses)}
            if ref_logprobs is not None:
                metrics["loss/kl"] = self._aggregate(kl, mask, responses)
            metrics |= {
                "actor/clipfrac": (low | high).sum() / n_tokens,
                "actor/clipfrac_low": low.sum() / n_tokens,
                "actor/clipfrac_high": high.sum() / n_tokens,
                "rewards/mean": rewards[~torch.isnan(rewards)].mean(),
                "rewards/std": rewards[~torch.isnan(rewards)].std() if int(responses) > 1
                else torch.zeros_like(rewards.sum()),
                "advantages/mean": advantages[valid].mean(),
            }
        return loss, metrics
