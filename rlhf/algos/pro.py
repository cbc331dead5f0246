"""Preference Ranking Optimization (PRO) on ranked pairs, as A-LoL's PRO baseline."""

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from rlhf.algos.shapes import require_same_shape

# ε inside the log of the PRO loss: the constant 1e-10 of the PRO and A-LoL code (see `PRO`).
EPS = 1e-10


@dataclass(frozen=True)
class PRO:
    """PRO (Song et al. 2023, "Preference Ranking Optimization for Human Alignment") with 2 ranks.

    A-LoL's baseline (Baheti et al. 2024, `pro_qlora_llama_hh.py`, training_stage_num = 2) ranks the
    chosen response (k = 0) above the rejected one (k = 1), each with a dataset reward R_c, R_r. With
    length-normalised scores s_k = logπ(y_k|x) / |y_k| (response-token mean log-prob) and the reward gaps
    as inverse temperatures,

        neg_T = R_c - R_r                         (gap to the response ranked below, j = 1)
        pos_T = max_{j > 0} (R_c - R_j) = R_c - R_r
        ℓ     = log(ε + exp(s_c·pos_T) + exp(s_r·neg_T)) - s_c·pos_T
        L     = mean_B ℓ + sft_weight · mean_B(-logπ(y_c|x))

    With two ranks ℓ ≈ -log σ((R_c - R_r)(s_c - s_r)): a Bradley-Terry loss on the per-token log-probs
    whose temperature is the reward gap. Only the top rank (k = 0) has a term: the last rank has nothing
    below it.

    The temperature degenerates with the reward gap:
    - R_c = R_r: pos_T = neg_T = 0, so ℓ = log(2 + ε), a constant: the pair contributes no ranking
      gradient, only the SFT term.
    - R_c < R_r: the temperature is negative, and ℓ ≈ -log σ(|R_c - R_r|·(s_r - s_c)) ranks the *rejected*
      response first. The dataset rewards, not the chosen/rejected labels, decide the direction.
    The max in pos_T runs over the ranks below k only (j > k), as in the PRO paper (1/T_k^k =
    max_{i>k} 1/T_k^i) and in the PRO and A-LoL code, not over j ≥ k: that would clamp pos_T at 0 and,
    for R_c < R_r, leave ℓ = log(1 + ε + exp(s_r·neg_T)), which only pushes the rejected log-prob up.

    Implementation notes:
    - ℓ is evaluated as logsumexp(log ε, s_c·pos_T, s_r·neg_T) - s_c·pos_T. That is the code's
      log(ε + e^a + e^b) exactly, without overflow for large a or b. ε = 1e-10 (`EPS`) only matters when
      both exponents are below about log ε ≈ -23; ℓ then tends to log ε - s_c·pos_T, a pos_T-weighted
      per-token NLL of the chosen reply that no longer involves the rejected one.
    - SFT term: the code's `sft_weight · (stages - 1)² · mean(-Σ_t log π(y_sft))` with the SFT response at
      rank 0 (the chosen, A-LoL's `sft_index`), so the default sft_weight = 0.05·(2 - 1)² = 0.05.
      The NLL is the sequence *sum* of token log-probs, not the per-token mean that `DPO.sft_weight` uses.
    - `loss/sft` reports the unweighted NLL, like `DPO`'s.
    """

    batch_kind: ClassVar[str] = "pair"
    # a ranking needs different rewards: online, pairs of equal reward are dropped
    keeps_ties: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False

    sft_weight: float = 0.05

    def __post_init__(self) -> None:
        if not (self.sft_weight >= 0 and math.isfinite(self.sft_weight)):
            raise ValueError(f"algo.sft_weight must be a finite number >= 0, got {self.sft_weight}")

    def loss(
        self,
        chosen_logps: Tensor,
        rejected_logps: Tensor,
        chosen_lengths: Tensor,
        rejected_lengths: Tensor,
        chosen_scores: Tensor,
        rejected_scores: Tensor,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """All inputs (B,): log-probs are sums over response tokens, lengths are response-token counts,
        scores are the dataset rewards R_c, R_r of the two responses."""
        require_same_shape("PRO inputs", 1, chosen_logps, rejected_logps, chosen_lengths, rejected_lengths,
                           chosen_scores, rejected_scores)
        if bool((chosen_lengths <= 0).any() | (rejected_lengths <= 0).any()):
            raise ValueError("PRO needs every response length > 0 (its scores are per-token log-probs)")

        s_c = chosen_logps / chosen_lengths  # (B,)
        s_r = rejected_logps / rejected_lengths  # (B,)
        neg_t = (chosen_scores - rejected_scores).to(s_c.dtype)  # (B,)
        pos_t = neg_t  # (B,) max over the single lower rank
        a = s_c * pos_t  # (B,)
        b = s_r * neg_t  # (B,)
        log_eps = torch.full_like(a, math.log(EPS))  # (B,)
        losses = torch.logsumexp(torch.stack([log_eps, a, b]), dim=0) - a  # (B,)
        pro = losses.mean()
        nll = (-chosen_logps).mean()
        loss = pro + self.sft_weight * nll
        return loss, {"loss/pro": pro.detach(), "loss/sft": nll.detach()}
