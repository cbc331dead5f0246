"""Supervised fine-tuning loss: token-mean negative log-likelihood of the assistant tokens."""

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor


@dataclass(frozen=True)
class SFT:
    """Maximum-likelihood fine-tuning on demonstrations (the SFT stage of Ouyang et al. 2022, §3.5).

        L = -(Σ_{b,t} m_bt · log π(y_bt | x_b, y_b,<t)) / Σ_{b,t} m_bt

    where m is the response mask (1 on assistant tokens, 0 on system/user/padding tokens).

    Deliberate choices:
    - Token mean over the whole batch, not a mean of per-sequence means: every assistant token weighs
      the same, so long replies weigh more than short ones (the Hugging Face causal-LM convention).
    - Each call normalises by its own token count; under gradient accumulation micro-batches are therefore
      weighed equally rather than by their token counts.
    - Masked positions are selected out rather than multiplied by 0, so a -inf or NaN log-prob at a padding
      position cannot turn the loss into NaN.
    """

    batch_kind: ClassVar[str] = "sequence"
    needs_reference: ClassVar[bool] = False

    def loss(self, logprobs: Tensor, response_mask: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """`logprobs` (B, T): log-prob of each target token; `response_mask` (B, T): bool or 0/1."""
        if logprobs.shape != response_mask.shape:
            raise ValueError(
                f"logprobs {tuple(logprobs.shape)} and response_mask {tuple(response_mask.shape)} must match"
            )
        mask = response_mask.bool()  # (B, T)
        n_tokens = mask.sum()
        # Host sync on purpose: a batch without assistant tokens would otherwise give a silent 0/0 = NaN.
        if n_tokens.item() == 0:
            raise ValueError(
                "SFT batch has no assistant tokens (response_mask is all zero): the data pipeline produced "
                "conversations whose assistant turns were all truncated or masked out"
            )
        token_logprobs = torch.where(mask, logprobs, torch.zeros_like(logprobs))  # (B, T)
        loss = -token_logprobs.sum() / n_tokens
        metrics = {"loss/nll": loss.detach(), "tokens": n_tokens.detach()}
        return loss, metrics
