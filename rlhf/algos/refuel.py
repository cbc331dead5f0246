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

    The "reference" log-probs r are the *old policy's*: the policy that sampled this iteration's pairs, not
    a fixed SFT model. The trainer computes all log-probs from logits / (temperature + 1e-7), the
    `temperature` field (the sampling temperature, 0.8 in REFUEL's setting one), as the code does.

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
    needs_reference: ClassVar[bool] = True

    eta: float = 1.0
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if not (self.eta > 0 and math.isfinite(self.eta)):
            raise ValueError(f"algo.eta must be a finite number > 0, got {self.eta}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"algo.temperature must be a finite number > 0, got {self.temperature}")

    def loss(
        self,
        chosen_logps: Tensor,
        rejected_logps: Tensor,
        ref_chosen_logps: Tensor | None,
        ref_rejected_logps: Tensor | None,
        chosen_scores: Tensor,
        rejected_scores: Tensor,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """All inputs (B,): log-probs are sums over response tokens (policy and old policy), scores are the
        rewards R_a, R_b of the two trajectories."""
        if ref_chosen_logps is None or ref_rejected_logps is None:
            raise ValueError("REFUEL needs the old policy's (reference) log-probs")
        require_same_shape("REFUEL inputs", 1, chosen_logps, rejected_logps, ref_chosen_logps,
                           ref_rejected_logps, chosen_scores, rejected_scores)

        delta = (chosen_logps - ref_chosen_logps) - (rejected_logps - ref_rejected_logps)  # (B,)
        reward_diff = (chosen_scores - rejected_scores).to(delta.dtype)  # (B,)
        loss = ((delta - self.eta * reward_diff) ** 2).mean()

        delta = delta.detach()
        untied = reward_diff != 0  # (B,)
        aligned = (torch.sign(delta) == torch.sign(reward_diff)) & untied  # (B,)
        # 0/0 = NaN on purpose when every pair is tied: the metric is undefined, not 0.
        sign_align = aligned.to(delta.dtype).sum() / untied.to(delta.dtype).sum()
        metrics = {"loss/refuel": loss.detach(), "sign_align": sign_align, "logratio_diff": delta.mean()}
        return loss, metrics
