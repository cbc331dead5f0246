"""A-LoL's "leftover" filtering and priority sampling of the training set (pure tensor functions).

Baheti et al. 2024, §2.3 ("A-LoL ... discards data with negative advantage") and the HH script
(`lolrl_qlora_llama_hh.py`, abaheti95/LoL-RL):

- `good_priority`: draw example i with probability ∝ max(v_i, 0), where v is A = R - V(x) of the good
  response for the A-LoL family, or R for wbc, r_gold and r_lol (the caller picks v).
- `good_random`: uniform over the examples with v > 0.
- `all_priority`: like `good_priority`, on the concatenation [v_good; v_bad] of the good and the bad
  responses' values (the caller concatenates, and maps a drawn index i ≥ N to the bad response of
  example i - N).
- `None` or `uniform`: every example weighs 1 (the HH script then shuffles instead of drawing, and
  negative advantages only get zero weight inside the loss).

Examples with weight 0 are never drawn. Draws are with replacement: the "without replacement" loop of
`numba_choice` in the reference code never rejects a repeat.
"""

import torch
from torch import Tensor

STRATEGIES = ("good_priority", "good_random", "all_priority", "uniform")


def sample_weights(values: Tensor, strategy: str | None) -> Tensor:
    """Unnormalised draw weights (N,) for per-example values (N,) under a sampling strategy."""
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D (N,), got shape {tuple(values.shape)}")
    values = values if values.is_floating_point() else values.float()
    if strategy is None or strategy == "uniform":
        return torch.ones_like(values)
    if strategy in ("good_priority", "all_priority"):
        return values.clamp(min=0)
    if strategy == "good_random":
        return (values > 0).to(values.dtype)
    raise ValueError(f"sampling_strategy must be one of {STRATEGIES} or None, got {strategy!r}")


def positive_fraction(advantages: Tensor) -> float:
    """Fraction of examples with A > 0: the share of the data A-LoL keeps."""
    if advantages.numel() == 0:
        raise ValueError("positive_fraction needs at least one advantage")
    return (advantages > 0).float().mean().item()


def scaled_steps(steps: int, advantages: Tensor) -> int:
    """Training steps scaled by the kept fraction, int(steps · frac(A > 0)) as the HH script does, at least 1.

    The generic script scales by 1 - frac(A < 0) instead, which differs only by the examples with A == 0.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return max(1, int(steps * positive_fraction(advantages)))


def draw(
    weights: Tensor, num: int, generator: torch.Generator | None = None, strategy: str | None = None
) -> Tensor:
    """`num` indices (LongTensor) drawn with replacement with probability ∝ weights (N,)."""
    if weights.ndim != 1 or num < 0:
        raise ValueError(f"draw needs 1-D weights and num >= 0, got {tuple(weights.shape)} and num={num}")
    weights = weights.double()
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError("sampling weights must be finite and >= 0")
    if not bool((weights > 0).any()):
        raise ValueError(
            f"sampling strategy {strategy!r}: every weight is zero (no example with a positive value), "
            "so there is nothing to train on"
        )
    if num == 0:
        return torch.empty(0, dtype=torch.long)
    return torch.multinomial(weights, num, replacement=True, generator=generator)
