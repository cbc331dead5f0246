"""Summed response log-probs of a batch of preference pairs, three ways (`trainer.pair_forward`).

- "joint":  chosen and rejected as one batch of 2B sequences (one forward; the activations of all 2B rows
            are kept for the backward pass).
- "split":  chosen, then rejected, each forward under activation checkpointing: the backward pass recomputes
            one half at a time, so the activations held at once are those of B sequences (as SFT at the same
            batch size) for the price of a second forward. Without gradients it is "joint".
- "shared_prompt": the ids the two replies of a pair share (the prompt, up to its last id) run once, in a
            forward of B rows that keeps their keys and values; chosen and rejected continue from them in one
            forward of 2B rows. The prompt's projections and MLPs run once instead of twice, and gradients
            reach its positions through both replies. Models or settings where a training forward cannot be
            continued from a cache (gradient checkpointing, which drops it; attention other than eager / sdpa;
            caches that are not plain full-attention layers) run "joint", and the log says so once.

All three give the same log-probs up to float rounding.
"""

import logging

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint
from transformers import DynamicCache

from rlhf.data.batch import PairBatch, SequenceBatch
from rlhf.models.kv import GAP_MASK_ATTENTION, attention_implementation, cache_arg, plain_layers
from rlhf.models.logprobs import logprobs_of, sequence_logps

log = logging.getLogger(__name__)

PAIR_FORWARDS = ("joint", "split", "shared_prompt")
_warned: set[str] = set()


def pair_logps(model, batch: PairBatch, temperature: float, forward: str = "joint") -> tuple[Tensor, Tensor]:
    """(2B,) summed response log-probs, chosen rows first, and (2B,) response token counts."""
    if forward not in PAIR_FORWARDS:
        raise ValueError(f"trainer.pair_forward={forward!r}: expected one of {', '.join(PAIR_FORWARDS)}")
    if forward == "split" and torch.is_grad_enabled():
        halves = [checkpoint(_half_logps, model, half.input_ids, half.attention_mask, half.turn_ids, half.index,
                             temperature, use_reentrant=False) for half in (batch.chosen, batch.rejected)]
        return torch.cat([h[0] for h in halves]), torch.cat([h[1] for h in halves])
    if forward == "shared_prompt":
        why = _no_shared_prompt(model)
        if why is None:
            out = _shared_prompt_logps(model, batch, temperature)
            if out is not None:
                return out
            why = "its cache is not made of full-attention layers only, or its forward does not take one"
        if why not in _warned:
            _warned.add(why)
            log.info("trainer.pair_forward=shared_prompt runs as joint: %s", why)
    return sequence_logps(model, batch.concatenated(), temperature)


def _half_logps(model, input_ids, attention_mask, turn_ids, index, temperature):
    return sequence_logps(model, SequenceBatch(input_ids, attention_mask, turn_ids, index), temperature)


def _no_shared_prompt(model) -> str | None:
    """Why a training forward of `model` cannot continue from a cache, or None when it can."""
    if _checkpointing(model) and model.training and torch.is_grad_enabled():
        return "gradient checkpointing drops the cache in training"
    attention = attention_implementation(model)
    if attention not in GAP_MASK_ATTENTION:
        return f"attention implementation {attention!r} (needs eager or sdpa)"
    return None


def _checkpointing(model) -> bool:
    """Whether activation checkpointing is on (`is_activation_checkpointing` from transformers 5.x, before it
    `is_gradient_checkpointing`)."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name) or hasattr(model, name):
            return bool(getattr(model, name))
    return False


def _shared_prompt_logps(model, batch: PairBatch, temperature: float) -> tuple[Tensor, Tensor] | None:
    c, r = batch.chosen, batch.rejected
    B, T = c.input_ids.shape
    device = c.input_ids.device
    positions = torch.arange(T, device=device)
    # ids both rows have, up to the earliest response token of either; the prompt's last id is fed with the
    # replies, so that the logits predicting each reply's first token come from the continuation forward
    same = (c.input_ids == r.input_ids) & c.attention_mask.bool() & r.attention_mask.bool()
    common = same.long().cumprod(dim=1).sum(dim=1)  # (B,)
    first = torch.where(c.response_mask | r.response_mask, positions, T).min(dim=1).values  # (B,)
    shared = (torch.minimum(common, first) - 1).clamp(min=0)  # (B,)
    P = int(shared.max())
    if P == 0:
        return sequence_logps(model, batch.concatenated(), temperature)
    prefix_mask = (positions[:P] < shared[:, None]).long()  # (B, P), right-padded
    prefix = model(input_ids=c.input_ids[:, :P], attention_mask=prefix_mask, use_cache=True, logits_to_keep=1)
    cache = getattr(prefix, cache_arg(), None)
    layers = plain_layers(cache)
    if layers is None:
        return None
    both = batch.concatenated()  # (2B, T)
    start = shared.repeat(2)  # (2B,)
    ends = both.attention_mask.sum(dim=1)  # (2B,)
    R = int((ends - start).max())
    index = start[:, None] + torch.arange(R, device=device)  # (2B, R): each continuation id's position
    keep = index < ends[:, None]  # (2B, R): real ids of the continuation
    index = index.clamp(max=T - 1)
    ids = torch.where(keep, both.input_ids.gather(1, index), both.input_ids[0, 0])
    response = both.response_mask.gather(1, index) & keep  # (2B, R)
    doubled = DynamicCache([(torch.cat([layer.keys] * 2), torch.cat([layer.values] * 2)) for layer in layers])
    mask = torch.cat([prefix_mask.repeat(2, 1), keep.long()], dim=1)  # (2B, P + R), a gap after short prompts
    out = model(input_ids=ids, attention_mask=mask, position_ids=index, use_cache=True,
                **{cache_arg(): doubled})
    if doubled.get_seq_length() != P + R:  # the forward did not continue from the cache it was given
        return None
    logprobs = logprobs_of(out.logits, ids, temperature)  # (2B, R-1)
    response = response[:, 1:]
    return (logprobs * response).sum(-1), response.sum(-1)
