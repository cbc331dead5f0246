"""Bradley-Terry reward-model loss, with the margin, centring, pref-over-pref and per-group-head variants."""

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor


def min_over_heads(rewards: Tensor) -> Tensor:
    """(B, H) rewards of H group heads -> (B,) their minimum: the MaxMin / SharedRep reward at RL time.

    MaxMin-RLHF takes min(r_majority, r_minority) over its per-group reward models; SharedRep takes the min
    over the heads of one shared model (Mukherjee et al. 2025). Apply it to the raw head scores: SharedRep's
    tanh is monotone, so it commutes with the min anyway.
    """
    if rewards.ndim != 2 or rewards.shape[1] == 0:
        raise ValueError(f"min_over_heads expects rewards of shape (B, H), H >= 1, got {list(rewards.shape)}")
    return rewards.min(dim=1).values


@dataclass(frozen=True)
class BradleyTerry:
    """Pairwise reward-model loss on the rewards r_c, r_r of a chosen and a rejected response.

    Per pair i (Ouyang et al. 2022, eq. 1; trl's `RewardTrainer`):

        Δ_i = r_c,i - r_r,i
        ℓ_i = -log σ(Δ_i - m_i)          m_i = margins_i if `margin` else 0
        L   = mean_i ℓ_i  +  c · mean_i (r_c,i + r_r,i)²  +  [prefoverpref] L_pop

    - `margin`: the dataset `magnitude` column as a margin (D2PO's "mag" loss; trl's `margin` column;
      Llama 2's margin loss, Touvron et al. 2023, eq. 2).
    - `center_rewards_coefficient` c: trl's auxiliary term pushing rewards towards zero mean
      (Eisenstein et al. 2023). 0 switches it off (trl's None).
    - `prefoverpref` (D2PO, Singhal et al. 2024, `rmcode.py`): a preference over preferences. For every
      ordered pair of examples (i, j) in the batch with m_i > m_j, the pair with the larger magnitude should
      also have the larger reward gap, by the magnitude difference:
          L_pop = mean_{(i, j): m_i > m_j} -log σ((Δ_i - Δ_j) - (m_i - m_j))
      The mean runs over those ordered pairs, so a batch with all magnitudes equal adds 0. L_pop always
      reads `margins`, whatever `margin` says; D2PO's "prefoverpref" runs use the margin in ℓ_i too, so set
      both to reproduce them.
    - `tanh` (SharedRep, Mukherjee et al. 2025): r ← tanh(r) before everything above (loss, centring and
      metrics), bounding rewards to (-1, 1).

    Rewards come as (B, H) from a model with H heads (H = 1 for a plain reward model):
    - `group_routing` (MaxMin per-group heads, SharedRep training mode): example i uses only head
      group_ids[i]. Every head then learns from its own group's pairs only, and the other heads of the
      example get no gradient, whatever their values. Group ids must lie in [0, H).
    - otherwise every head is fitted to every pair: ℓ, the centring and L_pop are averaged over heads
      (the pair loss and centring over all (i, h) entries; L_pop per head, then over heads).
    Metrics use the same entries: the routed head, or all heads.

    Deliberate deviations:
    - D2PO *sums* the pref-over-pref terms into the loss (so their weight grows as B²) and compares
      `mg[i][0] > [j][0]` (the magnitude with the *index* j, a typo) in one of its two branches. Here the
      terms are averaged over the pairs with m_i > m_j, as intended and as specified for this framework.
    - SharedRep and MaxMin feed trl's trainer a (B, 1) reward; here routing happens inside the loss.
    """

    batch_kind: ClassVar[str] = "reward_pair"
    needs_reference: ClassVar[bool] = False

    margin: bool = False
    prefoverpref: bool = False
    center_rewards_coefficient: float = 0.0
    tanh: bool = False
    group_routing: bool = False

    def __post_init__(self) -> None:
        if not self.center_rewards_coefficient >= 0:
            raise ValueError(
                f"algo.center_rewards_coefficient must be >= 0, got {self.center_rewards_coefficient}"
            )

    def loss(
        self,
        chosen_rewards: Tensor,
        rejected_rewards: Tensor,
        margins: Tensor | None = None,
        group_ids: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """`chosen_rewards`, `rejected_rewards` (B, H); `margins` (B,) float, 0 where absent (None = all 0);
        `group_ids` (B,) long, 0 where absent (None = all 0, only allowed with H = 1 when routing)."""
        if chosen_rewards.ndim != 2 or chosen_rewards.shape != rejected_rewards.shape:
            shapes = [tuple(chosen_rewards.shape), tuple(rejected_rewards.shape)]
            raise ValueError(f"BradleyTerry rewards must both have shape (B, H), got {shapes}")
        n, heads = chosen_rewards.shape
        if margins is None:
            margins = torch.zeros(n, dtype=chosen_rewards.dtype, device=chosen_rewards.device)
        if margins.shape != (n,):
            raise ValueError(f"BradleyTerry margins must have shape (B,) = ({n},), got {list(margins.shape)}")
        margins = margins.to(chosen_rewards.dtype)  # (B,)

        rc, rr = chosen_rewards, rejected_rewards  # (B, H)
        if self.tanh:
            rc, rr = torch.tanh(rc), torch.tanh(rr)
        if self.group_routing:
            if group_ids is None:
                if heads != 1:
                    raise ValueError(f"algo.group_routing with {heads} heads needs group_ids")
                group_ids = torch.zeros(n, dtype=torch.long, device=rc.device)
            if group_ids.shape != (n,):
                shape = tuple(group_ids.shape)
                raise ValueError(f"BradleyTerry group_ids must have shape (B,) = ({n},), got {shape}")
            group_ids = group_ids.long()
            # Host sync on purpose: an out-of-range id would otherwise be a device-side assert in gather.
            if bool(((group_ids < 0) | (group_ids >= heads)).any()):
                raise ValueError(
                    f"algo.group_routing: group_ids must lie in [0, {heads}) for {heads} reward heads, "
                    f"got {sorted(set(group_ids.tolist()))}"
                )
            rc = rc.gather(1, group_ids[:, None])  # (B, 1)
            rr = rr.gather(1, group_ids[:, None])  # (B, 1)
        # From here on K = 1 (routed) or H (all heads): every (i, k) entry is one pair on one head.

        delta = rc - rr  # (B, K)
        m = margins[:, None] if self.margin else torch.zeros_like(delta)  # (B, 1) or (B, K)
        bt = -F.logsigmoid(delta - m).mean()
        loss = bt
        metrics = {"loss/rm": bt.detach()}
        if self.prefoverpref:
            pop = self._pref_over_pref(delta, margins)
            loss = loss + pop
            metrics["loss/prefoverpref"] = pop.detach()
        if self.center_rewards_coefficient:
            center = ((rc + rr) ** 2).mean()
            loss = loss + self.center_rewards_coefficient * center
            metrics["loss/center"] = center.detach()

        rc, rr, delta = rc.detach(), rr.detach(), delta.detach()
        metrics |= {
            "rewards/chosen": rc.mean(),
            "rewards/rejected": rr.mean(),
            "rewards/margin": delta.mean(),
            "rewards/accuracy": (rc > rr).to(rc.dtype).mean(),
        }
        return loss, metrics

    @staticmethod
    def _pref_over_pref(delta: Tensor, margins: Tensor) -> Tensor:
        """`delta` (B, K) reward gaps, `margins` (B,): mean over (i, j) with m_i > m_j and over the K heads of
        -log σ((Δ_i - Δ_j) - (m_i - m_j)); 0 (still attached to the graph) when no such pair exists."""
        gap_diff = delta[:, None, :] - delta[None, :, :]  # (B, B, K): Δ_i - Δ_j
        margin_diff = margins[:, None] - margins[None, :]  # (B, B): m_i - m_j
        ordered = margin_diff > 0  # (B, B)
        terms = -F.logsigmoid(gap_diff - margin_diff[:, :, None])  # (B, B, K)
        # Selecting with where (not multiplying by 0) keeps an inf/NaN term of an unordered pair out.
        total = torch.where(ordered[:, :, None], terms, torch.zeros_like(terms)).sum()
        count = ordered.sum() * delta.shape[1]
        return total / count.clamp(min=1)
