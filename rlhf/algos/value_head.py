"""A-LoL's value estimate V(x) of the reference policy: attention pooling over the prompt's hidden states."""

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ValueHeadAttention(nn.Module):
    """V(x) = max_value · σ(w · D(MHA(q, D(h), D(h))) + b), Baheti et al. 2024 §2.3 (`utils/rl_utils.py::
    ValueHeadAttention` in abaheti95/LoL-RL): a learned query vector q attends over the frozen reference's
    last-layer hidden states h (B, T, H) of the prompt tokens; D is dropout (0.1), on the input and on the
    pooled vector as in the reference code.

    Deliberate deviations:
    - Padding positions are excluded with a key padding mask (and zeroed first, so even NaN there cannot
      leak). The reference code passes no mask, so its left padding is attended to.
    - `num_heads` must divide H for `nn.MultiheadAttention`. The reference code always uses 8; when
      H % 8 != 0 this uses the largest divisor of H that is ≤ `num_heads` (e.g. H = 12 → 6 heads).
    """

    def __init__(self, hidden_size: int, max_value: float = 1.0, num_heads: int = 8, dropout: float = 0.1):
        super().__init__()
        if hidden_size < 1 or num_heads < 1:
            raise ValueError(f"hidden_size and num_heads must be >= 1, got {hidden_size} and {num_heads}")
        if not max_value > 0:
            raise ValueError(f"value_head.max_value must be > 0, got {max_value}")
        self.max_value = max_value
        self.num_heads = max(d for d in range(1, num_heads + 1) if hidden_size % d == 0)
        self.query = nn.Parameter(torch.randn(hidden_size))  # (H,), as in the reference code
        self.attention = nn.MultiheadAttention(hidden_size, self.num_heads, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.summary = nn.Linear(hidden_size, 1)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        """`hidden` (B, T, H) prompt hidden states, `mask` (B, T) true on real tokens; returns V (B,)."""
        mask = mask.bool()
        if hidden.ndim != 3 or mask.shape != hidden.shape[:2]:
            raise ValueError(f"hidden (B, T, H) and mask (B, T) must match, got {tuple(hidden.shape)} and "
                             f"{tuple(mask.shape)}")
        if not bool(mask.any(-1).all()):
            raise ValueError("every prompt needs at least one unmasked token for the value head")
        hidden = hidden.to(self.summary.weight.dtype)  # frozen models may run in bf16; the head stays fp32
        hidden = self.dropout(torch.where(mask[..., None], hidden, torch.zeros_like(hidden)))  # (B, T, H)
        query = self.query.expand(hidden.shape[0], 1, -1)  # (B, 1, H)
        pooled, _ = self.attention(query, hidden, hidden, key_padding_mask=~mask, need_weights=False)
        logit = self.summary(self.dropout(pooled))[:, 0, 0]  # (B, 1, H) -> (B,)
        return torch.sigmoid(logit) * self.max_value


def fit_value_head(
    head: ValueHeadAttention,
    hidden: Tensor,
    mask: Tensor,
    targets: Tensor,
    epochs: int,
    lr: float,
    batch_size: int,
    generator: torch.Generator | None = None,
    weight_decay: float = 0.0,
) -> list[float]:
    """Fits `head` by MSE to `targets` (N,) with AdamW and returns each epoch's training MSE.

    As in A-LoL, an epoch's MSE is the mean of its mini-batch losses measured while training (dropout on),
    and the weights kept at the end are those after the epoch with the lowest such MSE. The order of the
    examples is shuffled each epoch with `generator`; dropout draws from the global RNG. `weight_decay`
    defaults to 0, the default of the `transformers.AdamW` the reference code uses (torch's is 0.01).
    """
    n = hidden.shape[0]
    if targets.shape != (n,) or mask.shape != hidden.shape[:2]:
        raise ValueError(f"hidden (N, T, H), mask (N, T) and targets (N,) must match, got "
                         f"{tuple(hidden.shape)}, {tuple(mask.shape)}, {tuple(targets.shape)}")
    if n == 0 or epochs < 1 or batch_size < 1:
        raise ValueError(f"need N >= 1, epochs >= 1 and batch_size >= 1, got {n}, {epochs}, {batch_size}")
    device = head.summary.weight.device
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    was_training, history = head.training, []
    best_mse, best_state = math.inf, copy.deepcopy(head.state_dict())
    head.train()
    for _ in range(epochs):
        batch_losses = []
        for idx in torch.randperm(n, generator=generator).split(batch_size):
            pred = head(hidden[idx].to(device), mask[idx].to(device))  # (b,)
            loss = F.mse_loss(pred, targets[idx].to(device, pred.dtype))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            batch_losses.append(loss.item())
        history.append(sum(batch_losses) / len(batch_losses))
        if history[-1] < best_mse:
            best_mse, best_state = history[-1], copy.deepcopy(head.state_dict())
    head.load_state_dict(best_state)
    head.train(was_training)
    return history


@torch.no_grad()
def predict(head: ValueHeadAttention, hidden: Tensor, mask: Tensor, batch_size: int) -> Tensor:
    """V(x) (N,) for `hidden` (N, T, H) and `mask` (N, T), in eval mode (no dropout), on hidden's device."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device, was_training = head.summary.weight.device, head.training
    head.eval()
    values = [
        head(hidden[i : i + batch_size].to(device), mask[i : i + batch_size].to(device))
        for i in range(0, hidden.shape[0], batch_size)
    ]
    head.train(was_training)
    return torch.cat(values).to(hidden.device) if values else hidden.new_zeros(0)
