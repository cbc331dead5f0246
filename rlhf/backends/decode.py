"""The HF backend's own decoding loop (`backend.decode=loop`): the model's forward with its KV cache, one token
per step, without `generate`'s per-step machinery (input preparation, logits-processor and stopping-criteria
lists, kwargs bookkeeping).

It computes what `generate` computes for the settings the backend exposes, in the same order: positions from
the attention mask's running count (padding at 0), the last position's logits in float32, min_new_tokens
(eos masked out before it), temperature, top-k, top-p (HF's own warpers), then softmax and a draw; rows that
have finished get the pad token, a row finishes at any eos id, and the loop ends when all rows have finished
or after max_new_tokens. `draw="inverse_cdf"` (the backend's default) draws one uniform per row and takes the
first token whose cumulative probability exceeds it: the distribution `generate` samples, with other ids, and
on CPU about 20x cheaper than `torch.multinomial`, which draws one exponential per vocabulary entry. With
`draw="multinomial"` the draws are `torch.multinomial`'s, so the sampled ids are `generate`'s own for the same
seed (the tests check both).

With `synced` (DeepSpeed ZeRO-3 across processes, whose every forward gathers the weights with the other
processes), a process whose rows have all finished keeps calling the model, on one token and without its
cache or a draw, until every process has finished: `generate`'s synced GPUs, with the same ids as alone.

`generate` stays the path for what this loop does not do (stop strings, processors that the model's
generation config turns on: `unsupported` names them).
"""

import torch
from transformers import GenerationConfig
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from rlhf.backends.lean_step import LeanStep
from rlhf.models.kv import cache_arg

DRAWS = ("multinomial", "inverse_cdf")
# generation-config fields that add logits processors or stopping rules; the loop runs only at their defaults
PROCESSOR_FIELDS = ("repetition_penalty", "encoder_repetition_penalty", "no_repeat_ngram_size", "bad_words_ids",
                    "suppress_tokens", "begin_suppress_tokens", "forced_bos_token_id", "forced_eos_token_id",
                    "sequence_bias", "exponential_decay_length_penalty", "typical_p", "epsilon_cutoff",
                    "eta_cutoff", "min_p", "top_h", "renormalize_logits", "remove_invalid_values", "guidance_scale",
                    "watermarking_config", "min_length", "max_time", "penalty_alpha", "num_beams",
                    "num_return_sequences", "low_memory", "prompt_lookup_num_tokens", "assistant_model")


def unsupported(generation_config) -> list[str]:
    """The fields of `generation_config` set away from their defaults that this loop does not apply."""
    default = GenerationConfig()
    return [name for name in PROCESSOR_FIELDS
            if getattr(generation_config, name, None) != getattr(default, name, None)]


def inverse_cdf(probs: torch.Tensor) -> torch.Tensor:
    """One id per row of `probs` (B, V), drawn by inverting its cumulative distribution (float64 sums; a zero-
    probability id is never drawn). Computed on the CPU for an MPS device, which has no float64."""
    if probs.device.type == "mps":
        return inverse_cdf(probs.cpu()).to(probs.device)
    cdf = probs.double().cumsum(-1)  # (B, V)
    u = torch.rand(probs.shape[0], 1, dtype=torch.float64, device=probs.device) * cdf[:, -1:]
    drawn = torch.searchsorted(cdf, u, right=True).squeeze(1)  # first id whose cdf exceeds u
    last = (probs > 0).cumsum(-1).argmax(-1)  # the last id of positive probability: u rounding up to the total
    return torch.minimum(drawn, last)


class Sampling:
    """The per-step scores-to-ids rule: greedy at temperature 0, else temperature, top-k, top-p and a draw."""

    def __init__(self, temperature: float, top_k: int, top_p: float, draw: str):
        if draw not in DRAWS:
            raise ValueError(f"backend.draw={draw!r} is not one of {DRAWS}")
        self.temperature, self.draw = temperature, draw
        self.warpers = []
        if temperature > 0 and top_k and top_k > 0:
            self.warpers.append(TopKLogitsWarper(top_k=top_k))
        if temperature > 0 and top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=top_p))

    def __call__(self, scores: torch.Tensor) -> torch.Tensor:
        if self.temperature == 0:
            return scores.argmax(-1)
        if self.temperature != 1.0:
            scores = scores / self.temperature
        for warp in self.warpers:
            scores = warp(None, scores)  # HF's top-k and top-p read the scores only
        probs = torch.softmax(scores, dim=-1)
        if self.draw == "multinomial":
            return torch.multinomial(probs, num_samples=1).squeeze(1)
        return inverse_cdf(probs)


@torch.no_grad()
def sample_tokens(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, cache, *, max_new_tokens: int,
           min_new_tokens: int, eos_ids: list[int], pad_id: int, sampling: Sampling, lean: bool = False,
           synced: bool = False):
    """Sample up to `max_new_tokens` ids after each row of `input_ids` (B, T), left-padded (`attention_mask`
    (B, T), gaps allowed); `cache` holds keys and values of the first `cache.get_seq_length()` positions (or
    is None). Returns the (B, T + N) sequences and the cache, which, as `generate`'s, holds every position but
    the last sampled one. With `lean`, the steps after the first run `rlhf.backends.lean_step.LeanStep` (its
    logits are the model's own; the caller checks `lean_step.why_not` first); `synced`: module docstring."""
    past = cache.get_seq_length() if cache is not None else 0
    positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    eos = torch.tensor(eos_ids, device=input_ids.device)
    unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    step_ids, step_positions, new = input_ids[:, past:], positions[:, past:], []
    mask = attention_mask
    step = LeanStep(model) if lean else None
    idle = False  # synced, with this process's rows finished and another process's not
    for index in range(max_new_tokens):
        if idle:
            model(input_ids=step_ids, use_cache=False, logits_to_keep=1)  # the others' gathers need this one's
            if index + 1 == max_new_tokens or _all_finished(True, input_ids.device):
                break
            continue
        if index == 0 or step is None:
            out = model(input_ids=step_ids, attention_mask=mask, position_ids=step_positions, use_cache=True,
                        logits_to_keep=1, **({cache_arg(): cache} if cache is not None else {}))
            cache, logits = getattr(out, cache_arg()), out.logits
            del out
        else:
            logits = step(step_ids, step_positions, mask, cache)
        scores = logits[:, -1].to(dtype=torch.float32, copy=True)  # (B, V)
        del logits
        if index < min_new_tokens:
            scores[:, eos] = -torch.inf
        drawn = sampling(scores)
        drawn = torch.where(unfinished, drawn, pad_id)
        new.append(drawn[:, None])
        unfinished &= ~torch.isin(drawn, eos)
        if index + 1 == max_new_tokens:
            break
        finished = not unfinished.any()
        if synced:
            if _all_finished(finished, input_ids.device):
                break
            idle = finished
        elif finished:
            break
        step_ids, step_positions = drawn[:, None], step_positions[:, -1:] + 1
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    return torch.cat([input_ids] + new, dim=1), cache


def _all_finished(finished: bool, device: torch.device) -> bool:
    """Whether every process has finished its rows (a collective: each process calls it once per step)."""
    import torch.distributed as dist
    flag = torch.tensor([1 if finished else 0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())
