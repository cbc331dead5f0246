"""Offline pairwise preference losses: DPO (with cDPO smoothing), IPO and the SLiC hinge."""

from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from rlhf.algos.shapes import require_same_shape

LossType = Literal["sigmoid", "ipo", "hinge"]
Reduction = Literal["mean", "sum"]


@dataclass(frozen=True)
class DPO:
    """Pairwise preference loss on sequence log-probs of a chosen (w) and a rejected (l) response.

    With policy log-probs p_w, p_l and reference log-probs r_w, r_l (sums over response tokens),

        z = (p_w - r_w) - (p_l - r_l)

    - sigmoid: DPO, Rafailov et al. 2023, eq. 7, with the conservative smoothing ε of cDPO (Mitchell 2023):
          ℓ = -(1 - ε) log σ(β z) - ε log σ(-β z)
    - ipo: IPO, Azar et al. 2023, eq. 17 (β plays the role of τ):  ℓ = (z - 1/(2β))²
    - hinge: SLiC calibration loss (Zhao et al. 2023):  ℓ = max(0, 1 - β z)

    The loss is the mean (or, `reduction="sum"`, the sum, as D2PO uses) of ℓ over pairs. With
    `sft_weight` α > 0 it adds α times the mean over pairs of the chosen reply's per-token NLL,
    -p_w / |y_w| (RPO, Pang et al. 2024, "Iterative Reasoning Preference Optimization", eq. 2), which keeps
    the chosen likelihood up while the margin grows (trl's `rpo_alpha`; trl averages over the batch's
    tokens rather than per sequence).

    Deliberate deviations:
    - hinge: SLiC's loss is max(0, δ - (p_w - p_l)) without a reference. Here it is taken on the reference
      log-ratio z and scaled by β (δ = 1/β), the "hinge-norm" form of Liu et al. 2023 (RSO) that trl uses.
    - `length_normalize`: each sequence log-prob, policy and reference alike, is divided by its response
      length before z is formed. Not in the papers; trl 0.28 does this for IPO (in `concatenated_forward`).
      The rewards and `logps/*` metrics are then also per token.
    - `reference_free`: r_w = r_l = 0 in the loss *and* in the rewards, which become β p. trl 0.28 drops
      the reference from the loss only and still reports rewards against the reference model.
    """

    batch_kind: ClassVar[str] = "pair"
    # a pair of equal reward is no preference: online, such pairs are dropped
    keeps_ties: ClassVar[bool] = False

    beta: float = 0.1
    loss_type: LossType = "sigmoid"
    label_smoothing: float = 0.0
    reference_free: bool = False
    length_normalize: bool = False
    reduction: Reduction = "mean"
    sft_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.loss_type not in get_args(LossType):
            raise ValueError(f"algo.loss_type must be one of {get_args(LossType)}, got {self.loss_type!r}")
        if not self.beta > 0:
            raise ValueError(f"algo.beta must be > 0, got {self.beta}")
        if not 0.0 <= self.label_smoothing < 0.5:
            # ε = 0.5 makes the loss constant in z; above it the labels are flipped.
            raise ValueError(f"algo.label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if self.label_smoothing and self.loss_type != "sigmoid":
            raise ValueError(
                f"algo.label_smoothing (cDPO) only applies to loss_type 'sigmoid', not {self.loss_type!r}"
            )
        if self.sft_weight < 0:
            raise ValueError(f"algo.sft_weight must be >= 0, got {self.sft_weight}")
        if self.reduction not in get_args(Reduction):
            raise ValueError(f"algo.reduction must be one of {get_args(Reduction)}, got {self.reduction!r}")

    @property
    def needs_reference(self) -> bool:
        return not self.reference_free

    def loss(
        self,
        chosen_logps: Tensor,
        rejected_logps: Tensor,
        ref_chosen_logps: Tensor | None,
        ref_rejected_logps: Tensor | None,
        chosen_lengths: Tensor,
        rejected_lengths: Tensor,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """All inputs (B,): log-probs are sums over response tokens, lengths are response-token counts."""
        if self.reference_free:
            ref_chosen_logps = ref_rejected_logps = torch.zeros_like(chosen_logps)
        elif ref_chosen_logps is None or ref_rejected_logps is None:
            raise ValueError("DPO needs reference log-probs unless algo.reference_free is set")
        require_same_shape("DPO inputs", 1, chosen_logps, rejected_logps, ref_chosen_logps,
                           ref_rejected_logps, chosen_lengths, rejected_lengths)

        pc, pr, rc, rr = chosen_logps, rejected_logps, ref_chosen_logps, ref_rejected_logps  # (B,)
        if self.length_normalize:
            if bool((chosen_lengths <= 0).any() | (rejected_lengths <= 0).any()):
                raise ValueError("algo.length_normalize needs every response length > 0")
            pc, rc = pc / chosen_lengths, rc / chosen_lengths
            pr, rr = pr / rejected_lengths, rr / rejected_lengths

        chosen_logratios = pc - rc  # (B,)
        rejected_logratios = pr - rr  # (B,)
        z = chosen_logratios - rejected_logratios  # (B,)

        if self.loss_type == "sigmoid":
            eps = self.label_smoothing
            losses = -(1 - eps) * F.logsigmoid(self.beta * z) - eps * F.logsigmoid(-self.beta * z)
        elif self.loss_type == "ipo":
            losses = (z - 1 / (2 * self.beta)) ** 2
        else:
            losses = F.relu(1 - self.beta * z)
        loss = losses.mean() if self.reduction == "mean" else losses.sum()
        metrics = {"loss/dpo": loss.detach()}
        if self.sft_weight:
            nll = (-chosen_logps / chosen_lengths.clamp(min=1)).mean()  # (B,) -> scalar, per-token NLL
            loss = loss + self.sft_weight * nll
            metrics["loss/sft"] = nll.detach()

        chosen_rewards = (self.beta * chosen_logratios).detach()  # (B,)
        rejected_rewards = (self.beta * rejected_logratios).detach()  # (B,)
        metrics |= {
            "rewards/chosen": chosen_rewards.mean(),
            "rewards/rejected": rejected_rewards.mean(),
            "rewards/margin": (chosen_rewards - rejected_rewards).mean(),
            "rewards/accuracy": (chosen_rewards > rejected_rewards).to(chosen_rewards.dtype).mean(),
            "logps/chosen": pc.detach().mean(),
            "logps/rejected": pr.detach().mean(),
        }
        return loss, metrics
