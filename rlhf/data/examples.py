"""From validated rows to tokenised training examples for an algorithm's batch kind.

Batch kinds: "sequence" (conversations with assistant masks; a preference row contributes prompt + chosen)
and "pair" (preference rows: chosen and rejected continuations of one prompt).
"""

from collections.abc import Callable
from dataclasses import dataclass

import datasets
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from rlhf.data.batch import PairBatch, SequenceBatch, collate_pairs, collate_sequences
from rlhf.data.schema import as_messages
from rlhf.data.tokenize import TokenizedSequence, Tokenization, tokenize_conversation, tokenize_pair, truncate

SCHEMAS_FOR = {"sequence": ("conversation", "preference"), "pair": ("preference",)}


def check_supports(schema: str, batch_kind: str, source: str) -> None:
    """Fail early when an algorithm needs rows that the task's schema does not have."""
    if schema not in SCHEMAS_FOR[batch_kind]:
        needed = " or ".join(SCHEMAS_FOR[batch_kind])
        raise ValueError(f"the algorithm trains on {batch_kind} batches, which need {needed} rows, "
                         f"but {source} has {schema} rows")


@dataclass
class Examples:
    """Tokenised examples with their dataset row numbers, and a collate function to batch them."""

    items: list  # TokenizedSequence, or (chosen, rejected) pairs
    rows: list[int]
    dropped: int
    collate: Callable[[list, list[int]], SequenceBatch | PairBatch]

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, positions: list[int]) -> SequenceBatch | PairBatch:
        return self.collate([self.items[p] for p in positions], [self.rows[p] for p in positions])


def _sequence(tokenizer, row: dict, schema: str, spec: Tokenization, where: str) -> TokenizedSequence | None:
    if schema == "conversation":
        messages = row["messages"]
        return truncate(tokenize_conversation(tokenizer, messages), spec, where)
    prompt = as_messages(row["prompt"], "user")
    messages = prompt + as_messages(row["chosen"], "assistant")
    context_turns = sum(m["role"] == "assistant" for m in prompt)
    return truncate(tokenize_conversation(tokenizer, messages, context_turns), spec, where)


def build_examples(
    rows: datasets.Dataset,
    schema: str,
    batch_kind: str,
    tokenizer: PreTrainedTokenizerBase,
    spec: Tokenization,
    source: str,
) -> Examples:
    """Tokenise every row (with a progress bar); rows that truncation drops are counted, not kept."""
    check_supports(schema, batch_kind, source)
    items, kept = [], []
    for i, row in enumerate(tqdm(rows, desc=f"tokenising {source}", leave=False)):
        where = f"{source} row {i}"
        if batch_kind == "pair":
            item = tokenize_pair(tokenizer, row, spec, where)
        else:
            item = _sequence(tokenizer, row, schema, spec, where)
        if item is not None:
            items.append(item)
            kept.append(i)
    if not items:
        raise ValueError(f"no example of {source} is left after truncation to data.max_length={spec.max_length}")
    pad_id = tokenizer.pad_token_id
    if batch_kind == "pair":
        return Examples(items, kept, len(rows) - len(items), lambda b, idx: collate_pairs(b, idx, pad_id))
    return Examples(items, kept, len(rows) - len(items), lambda b, idx: collate_sequences(b, idx, pad_id))
