"""Padded tensor batches of tokenised sequences and preference pairs (right padding, for training)."""

from dataclasses import dataclass, field

import torch
from torch import Tensor

from rlhf.data.tokenize import TokenizedSequence


@dataclass
class SequenceBatch:
    """B tokenised conversations, right-padded to the longest (T tokens).

    input_ids:      (B, T) token ids, `pad_id` after the end of each sequence
    attention_mask: (B, T) 1 for real tokens
    turn_ids:       (B, T) assistant turn index of each token, -1 for all others and padding
    index:          (B,)   example position of each sequence (see `rlhf.data.examples.Examples`)
    fields:         per-example tensors (first dimension B), e.g. rewards
    """

    input_ids: Tensor
    attention_mask: Tensor
    turn_ids: Tensor
    index: Tensor
    fields: dict[str, Tensor] = field(default_factory=dict)

    @property
    def response_mask(self) -> Tensor:
        """(B, T) bool: tokens of any trained assistant turn."""
        return self.turn_ids >= 0

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def turn_mask(self, h: int) -> Tensor:
        """(B, T) bool: tokens of assistant turn h only."""
        return self.turn_ids == h

    def to(self, device: torch.device) -> "SequenceBatch":
        tensors = (self.input_ids, self.attention_mask, self.turn_ids, self.index)
        return SequenceBatch(*(t.to(device) for t in tensors), {k: v.to(device) for k, v in self.fields.items()})


@dataclass
class PairBatch:
    """B preference pairs: chosen and rejected padded to the same length T, so they run as one 2B batch.
    `fields` are per-pair tensors (first dimension B), e.g. chosen_scores."""

    chosen: SequenceBatch
    rejected: SequenceBatch
    fields: dict[str, Tensor] = field(default_factory=dict)

    @property
    def index(self) -> Tensor:
        return self.chosen.index

    @property
    def num_tokens(self) -> int:
        return self.chosen.num_tokens + self.rejected.num_tokens

    def concatenated(self) -> "SequenceBatch":
        """(2B, T): the chosen rows, then the rejected rows."""
        c, r = self.chosen, self.rejected
        return SequenceBatch(*(torch.cat(p) for p in zip(
            (c.input_ids, c.attention_mask, c.turn_ids, c.index), (r.input_ids, r.attention_mask, r.turn_ids, r.index)
        )))

    def to(self, device: torch.device) -> "PairBatch":
        return PairBatch(self.chosen.to(device), self.rejected.to(device), {k: v.to(device) for k, v in self.fields.items()})


def collate_sequences(sequences: list[TokenizedSequence], index: list[int], pad_id: int, length: int = 0) -> SequenceBatch:
    """Right-pad `sequences` to max(longest, `length`) tokens."""
    T = max(length, max(len(s.input_ids) for s in sequences))
    input_ids = torch.full((len(sequences), T), pad_id, dtype=torch.long)
    turn_ids = torch.full((len(sequences), T), -1, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), T), dtype=torch.long)
    for i, s in enumerate(sequences):
        n = len(s.input_ids)
        input_ids[i, :n] = torch.tensor(s.input_ids)
        turn_ids[i, :n] = torch.tensor(s.turn_ids)
        attention_mask[i, :n] = 1
    return SequenceBatch(input_ids, attention_mask, turn_ids, torch.tensor(index))


def collate_pairs(pairs: list[tuple[TokenizedSequence, TokenizedSequence]], index: list[int], pad_id: int) -> PairBatch:
    T = max(len(s.input_ids) for pair in pairs for s in pair)
    chosen = collate_sequences([p[0] for p in pairs], index, pad_id, T)
    rejected = collate_sequences([p[1] for p in pairs], index, pad_id, T)
    return PairBatch(chosen, rejected)
