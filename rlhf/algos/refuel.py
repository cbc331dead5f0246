"""REFUEL (and REBEL): regress the difference of policy log-ratios onto the difference of rewards."""

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from rlhf.algos.shapes import require_same_shape


@dataclass(frozen=True)
class REFUEL:
    """Squared-loss regression of relative log-ratios on relative rewards.

    REFUEL (Gao et al. 2024, "Regressing the Relative Future: Efficient Policy Optimization for Multi-turn
    RLHF"), whose loss is REBEL's (Gao et al. 2024, "REBEL: Reinforcement Learning via Regressing
    Relative Rewards"). For two trajectories a (chosen) and b (rejected) sharing a prefix, with
    policy log-probs p and old-policy log-probs r (sums over the regressed response tokens), and rewards
    R_a, R_b:

        Δ   = (p_a - r_a) - (p_b - r_b)
        L   = mean_B (Δ - η·(R_a - R_b))²

    η convention: the code (`refuel.py`, `REFUELHParams.eta`) multiplies the reward difference by η; the
    paper writes (Δ/η - ΔR)². Since (Δ - ηΔR)² = η²(Δ/η - ΔR)², the minimiser and η are the same, and the
    code's loss is the paper's times η². This class follows the code. (Their READMEs pass the flag as
    `--rebel.eta`, which the REFUEL script does not read; there is one `eta` here.)

    The log-probs r are the *old policy's* (`old_*`): the policy that sampled the pairs, not a fixed SFT
    model. Offline that is the policy the data was generated with (the trainer's reference pass); online,
    the policy of the rollout (REFUEL's setting two takes them at rollout time). The trainer computes all
    log-probs from logits / (temperature + 1e-7), the `temperature` field (the sampling temperature, 0.8
    in REFUEL's setting one), as the code does.

    Reward shaping of setting two (`setting_two/*/refuel.py`), applied to R_a and R_b in this order:
    - `penalty_reward_value`: the score of a response that was cut at the length limit (did not end with
      EOS) is replaced by this value (REFUEL: -10 on HH, -4 on UltraInteract);
    - `kl_coef` β: R ← R - β Σ_t (r_t - q_t), the old policy's KL to the reference q (the initial policy)
      over the regressed tokens (REFUEL: 0.05 on HH, 0 on UltraInteract).

    The labels are symmetric: swapping a and b flips the signs of Δ and ΔR and leaves the loss unchanged.

    Metrics:
    - `sign_align`: the fraction of pairs whose log-ratio gap points the same way as their reward gap,
      mean(sign(Δ) = sign(R_a - R_b)) over the pairs with R_a ≠ R_b; NaN when the batch has none. The
      code logs mean(Δ > 0), which is the same number when a is always the higher-reward trajectory (as
      REFUEL's data guarantees); this form stays meaningful for data where it is not, and leaves out ties,
      where any Δ ≠ 0 would count as a miss.
    - `logratio_diff`: mean Δ.
    """

    batch_kind: ClassVar[str] = "pair"
    # a pair of equal reward is a target too (a gap of 0): online, it is trained on, as in REFUEL's code
    keeps_ties: ClassVar[bool] = True
    needs_reference: ClassVar[bool] = True

    eta: float = 1.0
    temperature: float = 1.0
    kl_coef: float = 0.0
    penalty_reward_value: float | None = None

    def __post_init__(self) -> None:
        if not (self.eta > 0 and math.isfinite(self.eta)):
            raise ValueError(f"algo.eta must be a finite number > 0, got {self.eta}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"algo.temperature must be a finite number > 0, got {self.temperature}")
        if not (self.kl_coef >= 0 and math.isfinite(self.kl_coef)):
            raise ValueError(f"algo.kl_coef must be a finite number >= 0, got {self.kl_coef}")
        if self.penalty_reward_value is not None and not math.isfinite(self.penalty_reward_value):
            raise ValueError(f"algo.penalty_reward_value must be a finite number or null, got "
                             f"{self.penalty_reward_value}")

    def loss(
        self,
        chosen_logps: Tensor,
        rejected_logps: Tensor,
        old_chosen_logps: Tensor | None,
        old_rejected_logps: Tensor | None,
        chosen_scores: Tensor,
        rejected_scores: Tensor,
        ref_chosen_logps: Tensor | None = None,
        ref_rejected_logps: Tensor | None = None,
        chosen_ends_with_eos: Tensor | None = None,
        rejected_ends_with_eos: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """All inputs (B,): log-probs are sums over response tokens (policy, old policy and, for `kl_coef`,
        the reference), scores the rewards R_a, R_b of the two trajectories, `*_ends_with_eos` (bool) whether
        each regressed response ended with EOS (for `penalty_reward_value`)."""
        if old_chosen_logps is None or old_rejected_logps is None:
            raise ValueError("REFUEL needs the old policy's log-probs")
        require_same_shape("REFUEL inputs", 1, chosen_logps, rejected_logps, old_chosen_logps,
                           old_rejected_logps, chosen_scores, rejected_scores)
        rewards_a, rewards_b = chosen_scores.to(chosen_logps.dtype), rejected_scores.to(chosen_logps.dtype)
        if self.penalty_reward_value is not None:
            if chosen_ends_with_eos is None or rejected_ends_with_eos is None:
                raise ValueError("algo.penalty_reward_value needs to know which responses ended with EOS "
                                 "(the online loop's pairs say so)")
            penalty = torch.full_like(rewards_a, self.penalty_reward_value)
            rewards_a = torch.where(chosen_ends_with_eos.bool(), rewards_a, penalty)
            rewards_b = torch.where(rejected_ends_with_eos.bool(), rewards_b, penalty)
        metrics: dict[str, Tensor] = {}
        if self.kl_coef > 0:
            if ref_chosen_logps is None or ref_rejected_logps is None:
                raise ValueError("algo.kl_coef > 0 needs the reference policy's log-probs")
            kl_a = (old_chosen_logps - ref_chosen_logps).detach()  # (B,)
            kl_b = (old_rejected_logps - ref_rejected_logps).detach()  # (B,)
            rewards_a, rewards_b = rewards_a - self.kl_coef * kl_a, rewards_b - self.kl_coef * kl_b
            metrics["kl"] = torch.cat([kl_a, kl_b]).mean()

        delta = (chosen_logps - old_chosen_logps) - (rejected_logps - old_rejected_logps)  # (B,)
        reward_diff = (rewards_a - rewards_b).detach()  # (B,)
        loss = ((delta - self.eta * reward_diff) ** 2).mean()

        delta = delta.detach()
        untied = reward_diff != 0  # (B,)
        aligned = (torch.sign(delta) == torch.sign(reward_diff)) & untied  # (B,)
        # 0/0 = NaN on purpose when every pair is tied: the metric is undefined, not 0.
        sign_align = aligned.to(delta.dtype).sum() / untied.to(delta.dtype).sum()
        metrics |= {"loss/refuel": loss.detach(), "sign_align": sign_align, "logratio_diff": delta.mean()}
        return loss, metrics
