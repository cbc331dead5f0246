"""From validated rows to tokenised training examples for an algorithm's batch kind.

Batch kinds and the rows they take:
- "sequence": conversations with assistant masks; a preference row gives prompt + chosen (and, with
  `responses=("chosen", "rejected")`, a second example with the rejected reply), a scored row prompt +
  response (its `score` the example's reward);
- "pair" and "reward_pair": preference rows, chosen and rejected continuations of one prompt;
- "group" and "rollout": group rows, K responses to one prompt (`rollout` also flags which responses end
  with the end-of-turn token, for PPO's missing-EOS penalty).

Numeric columns travel with the examples as per-example fields named like the loss arguments that use
them (`FIELDS`); a field is kept only when every row has it.
"""

from collections.abc import Callable
from dataclasses import dataclass

import datasets
import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from rlhf.data.batch import PairBatch, SequenceBatch, collate_pairs, collate_sequences
from rlhf.data.schema import as_messages
from rlhf.data.tokenize import TokenizedSequence, Tokenization, tokenize_conversation, tokenize_pair, truncate

SCHEMAS_FOR = {
    "sequence": ("conversation", "preference", "scored"),
    "pair": ("preference",),
    "reward_pair": ("preference",),
    "group": ("group",),
    "rollout": ("group",),
}
# dataset column -> field name (= loss argument)
FIELDS = {"score_chosen": "chosen_scores", "score_rejected": "rejected_scores", "magnitude": "margins",
          "group_id": "group_ids"}


def check_columns(task, algo, rewards: bool = False) -> None:
    """Fail at load, not at step 1, when the train rows lack a column the algorithm's loss reads (REFUEL's
    score_chosen / score_rejected, group ids) or, with `rewards`, the reward a loop weights examples by."""
    import inspect

    rows = getattr(task, "train", None)
    if rows is None or not hasattr(rows, "column_names"):
        return
    required = {name for name, p in inspect.signature(algo.loss).parameters.items()
                if p.default is inspect.Parameter.empty}
    needed = [column for column, field in FIELDS.items() if field in required]
    if rewards:
        needed.append("score" if task.schema in ("conversation", "scored") else "score_chosen")
    missing = [c for c in needed if c not in rows.column_names]
    if missing:
        raise ValueError(f"{type(algo).__name__} needs the {missing} column{'s' if len(missing) > 1 else ''} in "
                         f"task {task.name!r}'s train rows, which have {sorted(rows.column_names)} (score them "
                         "with rlhf-generate, or choose an algorithm that trains on unscored pairs such as algo=dpo)")


def check_supports(schema: str, batch_kind: str, source: str) -> None:
    """Fail early when an algorithm needs rows that the task's schema does not have."""
    if schema not in SCHEMAS_FOR[batch_kind]:
        kinds = SCHEMAS_FOR[batch_kind]
        needed = kinds[0] if len(kinds) == 1 else f"{', '.join(kinds[:-1])} or {kinds[-1]}"
        raise ValueError(f"the algorithm trains on {batch_kind} batches, which need {needed} rows, "
                         f"but {source} has {schema} rows")


@dataclass
class Examples:
    """Tokenised examples, their per-example fields (first dimension = example), and how to batch them.

    `rows[i]` is the dataset row example i came from. A batch's `index` holds example positions, so
    anything computed per example (reference log-probs, advantages) is looked up by position.
    """

    items: list  # TokenizedSequence | (chosen, rejected) | list of K TokenizedSequence
    rows: list[int]
    fields: dict[str, Tensor]
    dropped: int
    collate: Callable[[list, list[int]], SequenceBatch | PairBatch]

    def __len__(self) -> int:
        return len(self.items)

    def batch(self, positions: list[int]) -> SequenceBatch | PairBatch:
        batch = self.collate([self.items[p] for p in positions], positions)
        batch.fields = {k: v[positions] for k, v in self.fields.items()}
        return batch

    def with_fields(self, **fields: Tensor) -> "Examples":
        return Examples(self.items, self.rows, {**self.fields, **fields}, self.dropped, self.collate)


def _conversation(tokenizer, messages: list[dict], spec: Tokenization, where: str) -> TokenizedSequence | None:
    return truncate(tokenize_conversation(tokenizer, messages), spec, where)


def _reply(tokenizer, row: dict, column: str, spec: Tokenization, where: str) -> TokenizedSequence | None:
    prompt = as_messages(row["prompt"], "user")
    messages = prompt + as_messages(row[column], "assistant")
    context_turns = sum(m["role"] == "assistant" for m in prompt)
    return truncate(tokenize_conversation(tokenizer, messages, context_turns), spec, where)


def _group(tokenizer, row: dict, spec: Tokenization, where: str) -> list[TokenizedSequence] | None:
    sequences = [_reply(tokenizer, {"prompt": row["prompt"], "r": r}, "r", spec, f"{where} response {k}")
                 for k, r in enumerate(row["responses"])]
    return None if any(s is None for s in sequences) else sequences


def _ends_with_eos(sequence: TokenizedSequence, eos_id: int) -> bool:
    last = max(i for i, turn in enumerate(sequence.turn_ids) if turn >= 0)
    return sequence.input_ids[last] == eos_id


def collate_groups(groups: list[list[TokenizedSequence]], positions: list[int], pad_id: int) -> SequenceBatch:
    """(B*K, T) sequences, prompt-major; the index of sequence k of example p is p*K + k."""
    K = len(groups[0])
    return collate_sequences([s for g in groups for s in g], [p * K + k for p in positions for k in range(K)], pad_id)


def build_examples(
    rows: datasets.Dataset,
    schema: str,
    batch_kind: str,
    tokenizer: PreTrainedTokenizerBase,
    spec: Tokenization,
    source: str,
    responses: tuple[str, ...] = ("chosen",),
) -> Examples:
    """Tokenise every row (with a progress bar); rows that truncation drops are counted, not kept."""
    check_supports(schema, batch_kind, source)
    items, kept, values = [], [], {}
    for i, row in enumerate(tqdm(rows, desc=f"tokenising {source}", leave=False)):
        where = f"{source} row {i}"
        if batch_kind in ("pair", "reward_pair"):
            new = [(tokenize_pair(tokenizer, row, spec, where), {})]
        elif batch_kind in ("group", "rollout"):
            group = _group(tokenizer, row, spec, where)
            extra = {"rewards": row["scores"]}
            if batch_kind == "rollout" and group is not None:
                extra["ends_with_eos"] = [_ends_with_eos(s, tokenizer.eos_token_id) for s in group]
            new = [(group, extra)]
        elif schema == "conversation":
            new = [(_conversation(tokenizer, row["messages"], spec, where), {"rewards": row.get("score")})]
        elif schema == "scored":
            new = [(_reply(tokenizer, row, "response", spec, where), {"rewards": row.get("score")})]
        else:
            new = [(_reply(tokenizer, row, column, spec, f"{where} ({column})"),
                    {"rewards": row.get(f"score_{column}")}) for column in responses]
        for item, extra in new:
            if item is None:
                continue
            items.append(item)
            kept.append(i)
            for name, value in ({FIELDS[c]: row.get(c) for c in FIELDS} | extra).items():
                values.setdefault(name, []).append(value)
    if not items:
        raise ValueError(f"no example of {source} is left after truncation to data.max_length={spec.max_length}")
    if batch_kind in ("group", "rollout") and len({len(g) for g in items}) > 1:
        raise ValueError(f"{source}: every row of a group dataset needs the same number of responses")
    dtypes = {"group_ids": torch.long, "ends_with_eos": torch.bool}
    fields = {name: torch.tensor(v, dtype=dtypes.get(name, torch.float))
              for name, v in values.items() if all(x is not None for x in v)}
    dropped = len(rows) * (len(responses) if batch_kind == "sequence" and schema == "preference" else 1) - len(items)
    return Examples(items, kept, fields, dropped, collate_for(batch_kind, tokenizer.pad_token_id))


def collate_for(batch_kind: str, pad_id: int) -> Callable[[list, list[int]], SequenceBatch | PairBatch]:
    """How examples of `batch_kind` are batched, padded with `pad_id`."""
    if batch_kind in ("group", "rollout"):
        return lambda b, p: collate_groups(b, p, pad_id)
    if batch_kind in ("pair", "reward_pair"):
        return lambda b, p: collate_pairs(b, p, pad_id)
    return lambda b, p: collate_sequences(b, p, pad_id)
