"""A-LoL and its reward-weighted baselines: offline policy gradients on single sequences."""

from dataclasses import dataclass
from typing import ClassVar, Literal, get_args

import torch
from torch import Tensor

Variant = Literal["nll", "wbc", "r_gold", "r_lol", "a_lol", "a_lol_ref_free", "a_lol_seq", "a_lol_kl"]
_ADVANTAGE_VARIANTS = ("a_lol", "a_lol_ref_free", "a_lol_seq", "a_lol_kl")


@dataclass(frozen=True)
class ALoL:
    """Advantage Leftover Lunch RL, Baheti et al. 2024 ("Leftover Lunch: Advantage-based Offline RL for
    Language Models", ICLR 2024; arXiv 2305.14718), with the whole response as one action:

        ∇J = -E[(R - V(x)) · π_θ(y|x)/π_ref(y|x) · ∇ log π_θ(y|x)]

    With NLL_θ = -Σ_t log π_θ(y_t|·) summed over response tokens, A⁺ = max(A, 0) for A = R - V(x),
    ρ = exp(Σ log π_θ - Σ log π_ref) detached, clip(ρ) = clamp(ρ, 1-ε, 1+ε) (no clamp if ε is None):

        nll             NLL_θ
        wbc             R · NLL_θ
        r_gold          R · Σ_t max(sg(π_θ(y_t|·)), u) · (-log π_θ(y_t|·))          (GOLD, Pang & He 2021)
        r_lol           R · clip(ρ) · NLL_θ;   with β > 0:  R · NLL_θ + β (NLL_ref - NLL_θ), no ratio
        a_lol           A⁺ · clip(ρ) · NLL_θ
        a_lol_seq       A⁺ · Σ_t clip(ρ_t) · (-log π_θ(y_t|·)),   ρ_t = sg(π_θ(y_t|·) / π_ref(y_t|·))
        a_lol_ref_free  A⁺ · NLL_θ
        a_lol_kl        A⁺ · NLL_θ + β (NLL_ref - NLL_θ)

    The batch loss is the mean over examples. β (NLL_ref - NLL_θ) = β (log π_θ(y) - log π_ref(y)) is a
    sequence-level KL penalty on the training sample itself, as in both reference scripts (abaheti95/LoL-RL).

    Deliberate choices:
    - NLL is a per-example sum over tokens, not a mean (the code: "Consistently sum is better than mean").
    - `needs_reference` is False for nll, wbc, r_gold and a_lol_ref_free: they never read `ref_logprobs`.
    - a_lol_ref_free clamps A at 0, like the generic script (`train_generation_task_with_off_policy_PG.py`).
      The HH script (`lolrl_qlora_llama_hh.py`) multiplies by the cached, unclamped advantage, so negative
      advantages push likelihood down when it samples uniformly; with priority sampling both agree.
    - `ppo_clip=None` means no clipping (the HH script spells this `--ppo_clip 0`; 0 is rejected here
      because clamp(ρ, 1, 1) would silently mean "no ratio"). Variants without ρ ignore `ppo_clip`,
      except r_lol with β > 0, which needs it null, as the HH script asserts.
    - Advantages come precomputed (A = R - V(x) once before training). The HH script recomputes V on the
      fly from the frozen reference's hidden states, which gives the same number for a frozen value head.
    - Masked positions are selected out, so -inf or NaN log-probs there cannot reach the loss.
    """

    batch_kind: ClassVar[str] = "sequence"

    variant: Variant
    ppo_clip: float | None = 0.9
    kl_beta: float = 0.0
    gold_lower_bound: float = 0.1

    def __post_init__(self) -> None:
        if self.variant not in get_args(Variant):
            raise ValueError(f"algo.variant must be one of {get_args(Variant)}, got {self.variant!r}")
        if self.ppo_clip is not None and not self.ppo_clip > 0:
            raise ValueError(f"algo.ppo_clip must be > 0, or null for no clipping, got {self.ppo_clip}")
        if not self.kl_beta >= 0:
            raise ValueError(f"algo.kl_beta must be >= 0, got {self.kl_beta}")
        if self.kl_beta and self.variant not in ("r_lol", "a_lol_kl"):
            raise ValueError(f"algo.kl_beta only applies to r_lol and a_lol_kl, not {self.variant!r}")
        if self.variant == "a_lol_kl" and not self.kl_beta > 0:
            raise ValueError("algo.kl_beta must be > 0 for a_lol_kl (with 0 it is a_lol_ref_free)")
        if self.variant == "r_lol" and self.kl_beta and self.ppo_clip is not None:
            # The HH script asserts ppo_clip == 0 here: the KL form of r_lol has no ratio to clip.
            raise ValueError("algo.ppo_clip must be null for r_lol with algo.kl_beta > 0")
        if not 0 <= self.gold_lower_bound <= 1:
            raise ValueError(f"algo.gold_lower_bound must be in [0, 1], got {self.gold_lower_bound}")

    @property
    def uses_advantages(self) -> bool:
        return self.variant in _ADVANTAGE_VARIANTS

    @property
    def _kl(self) -> bool:
        return self.kl_beta > 0

    @property
    def needs_reference(self) -> bool:
        return self._kl or self.variant in ("r_lol", "a_lol", "a_lol_seq")

    def loss(
        self,
        logprobs: Tensor,
        response_mask: Tensor,
        rewards: Tensor | None = None,
        advantages: Tensor | None = None,
        ref_logprobs: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """`logprobs`, `ref_logprobs`, `response_mask` (B, T); `rewards` R and `advantages` A (B,)."""
        mask = response_mask.bool()  # (B, T)
        weight = self._example_weight(logprobs, mask, rewards, advantages, ref_logprobs)  # (B,)
        logp = _select(logprobs, mask)  # (B, T)
        ref = _select(ref_logprobs, mask).detach() if self.needs_reference else None  # (B, T)
        token_weight, example_ratio, ratio, clipped = self._importance(logp.detach(), ref, mask)
        nll = -logp.sum(-1)  # (B,)
        losses = weight * -(token_weight * logp).sum(-1)  # (B,)
        metrics = {}
        if self._kl:
            logratio = -ref.sum(-1) - nll  # (B,) NLL_ref - NLL_θ = log π_θ(y) - log π_ref(y)
            losses = losses + self.kl_beta * logratio
            metrics["kl/mean"] = logratio.detach().mean()
        loss = losses.mean()
        metrics |= {
            "loss/alol": loss.detach(),
            "weights/mean": (weight * example_ratio).detach().mean(),
            "ratio/mean": ratio.mean(),
            "ratio/clipfrac": clipped.to(nll.dtype).mean(),
            "nll/mean": nll.detach().mean(),
        }
        return loss, metrics

    def _example_weight(self, logprobs, mask, rewards, advantages, ref_logprobs) -> Tensor:
        """Checks the inputs the variant needs and returns its per-example weight: 1, R or A⁺, (B,)."""
        if logprobs.ndim != 2 or mask.shape != logprobs.shape:
            shapes = f"logprobs {tuple(logprobs.shape)} and response_mask {tuple(mask.shape)}"
            raise ValueError(f"{shapes} must match and be (B, T)")
        if self.needs_reference and (ref_logprobs is None or ref_logprobs.shape != logprobs.shape):
            got = None if ref_logprobs is None else tuple(ref_logprobs.shape)
            want = tuple(logprobs.shape)
            raise ValueError(f"ALoL {self.variant!r} needs ref_logprobs of shape {want}, got {got}")
        if self.variant == "nll":
            return torch.ones(logprobs.shape[0], dtype=logprobs.dtype, device=logprobs.device)
        name, values = ("advantages", advantages) if self.uses_advantages else ("rewards", rewards)
        if values is None or values.shape != logprobs.shape[:1]:
            got = None if values is None else tuple(values.shape)
            raise ValueError(f"ALoL {self.variant!r} needs {name} of shape ({logprobs.shape[0]},), got {got}")
        values = values.to(logprobs.dtype)
        return values.clamp(min=0) if self.uses_advantages else values

    def _importance(self, logp: Tensor, ref: Tensor | None, mask: Tensor) -> tuple[Tensor, ...]:
        """Detached token weights c (B, T) in -Σ_t c·log π, the example's (clipped) ratio (B,) for the
        weight metric, and the unclipped ratios with a flag for those that were clipped (per example or
        per response token)."""
        ones = torch.ones(logp.shape[0], dtype=logp.dtype, device=logp.device)  # (B,)
        if self.variant == "a_lol_seq":
            ratio = torch.exp(logp - ref)  # (B, T) ρ_t; 1 at masked positions
            clipped_ratio = _clip(ratio, self.ppo_clip)
            mean_ratio = (clipped_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # (B,)
            return clipped_ratio, mean_ratio, ratio[mask], (clipped_ratio != ratio)[mask]
        if self.variant in ("r_lol", "a_lol") and not self._kl:
            ratio = torch.exp(logp.sum(-1) - ref.sum(-1))  # (B,) ρ
            clipped_ratio = _clip(ratio, self.ppo_clip)
            return clipped_ratio[:, None].expand_as(logp), clipped_ratio, ratio, clipped_ratio != ratio
        if self.variant == "r_gold":  # GOLD's token weight is not a ratio: it stays out of the ratio metrics
            return logp.exp().clamp(min=self.gold_lower_bound), ones, ones, ones == 0
        return torch.ones_like(logp), ones, ones, ones == 0


def _select(x: Tensor, mask: Tensor) -> Tensor:
    """x (B, T) with masked-out positions set to 0 (selected, not multiplied: -inf·0 would be NaN)."""
    return torch.where(mask, x, torch.zeros_like(x))


def _clip(ratio: Tensor, eps: float | None) -> Tensor:
    return ratio if eps is None else ratio.clamp(1 - eps, 1 + eps)
