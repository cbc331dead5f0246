"""Per-token and per-sequence log-probabilities of a causal LM on a padded batch."""

import torch
from torch import Tensor
from transformers import PreTrainedModel

from rlhf.data.batch import SequenceBatch


def token_logprobs(model: PreTrainedModel, batch: SequenceBatch, temperature: float = 1.0) -> Tensor:
    """(B, T-1) log p(token t+1 | tokens <= t), with logits divided by `temperature` (REFUEL samples at
    a temperature and scores with the same one)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits  # (B, T, V)
    return logprobs_of(logits, batch.input_ids, temperature)


def logprobs_of(logits: Tensor, input_ids: Tensor, temperature: float = 1.0) -> Tensor:
    """(B, T-1) log-probs of tokens 1..T-1 of `input_ids` under `logits` (B, T, V)."""
    logits = logits[:, :-1].float()
    if temperature != 1.0:
        logits = logits / (temperature + 1e-7)  # REFUEL's epsilon keeps temperature 0 finite
    targets = input_ids[:, 1:].unsqueeze(-1)  # (B, T-1, 1)
    return torch.gather(logits, 2, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def sequence_logps(model: PreTrainedModel, batch: SequenceBatch, temperature: float = 1.0) -> tuple[Tensor, Tensor]:
    """Sum of log-probs over each sequence's response tokens (B,), and the number of those tokens (B,)."""
    mask = batch.response_mask[:, 1:]  # (B, T-1): a token's log-prob sits one position before it
    logprobs = token_logprobs(model, batch, temperature)
    return (logprobs * mask).sum(-1), mask.sum(-1)
