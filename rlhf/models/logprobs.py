"""Per-token and per-sequence log-probabilities of a causal LM on a padded batch."""

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import PreTrainedModel

from rlhf.data.batch import SequenceBatch


def response_window(batch: SequenceBatch) -> int:
    """How many final positions of the (right-padded) batch hold logits that predict a response token: from
    the position before the earliest response token of any row to the end. Only their logits are computed
    (`logits_to_keep`): the LM head and its softmax over the vocabulary skip the prompts' first positions."""
    mask = batch.response_mask  # (B, T)
    rows = mask.any(dim=1)
    if not bool(rows.any()):
        return mask.shape[1]
    first = int(mask.float().argmax(dim=1)[rows].min())
    return mask.shape[1] - max(first - 1, 0)


def windowed_logprobs(logits: Tensor, batch: SequenceBatch, temperature: float = 1.0) -> Tensor:
    """(B, T-1) log-probs from the logits (B, W, V) of the batch's last W positions (`response_window`):
    zero before the window."""
    T, W = batch.input_ids.shape[1], logits.shape[1]
    return F.pad(logprobs_of(logits, batch.input_ids[:, T - W:], temperature), (T - W, 0))


def token_logprobs(model: PreTrainedModel, batch: SequenceBatch, temperature: float = 1.0) -> Tensor:
    """(B, T-1) log p(token t+1 | tokens <= t), with logits divided by `temperature` (REFUEL samples at
    a temperature and scores with the same one); 0 where no response token is predicted before the first
    one of the batch (its log-probs are not computed)."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                   logits_to_keep=response_window(batch)).logits  # (B, W, V)
    return windowed_logprobs(logits, batch, temperature)


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
