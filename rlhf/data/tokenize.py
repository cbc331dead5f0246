"""Tokenisation with the model's chat template and per-turn assistant masks.

A tokenised conversation is `input_ids` plus `turn_ids`: for each token, the index h of the assistant turn
it belongs to (counting assistant turns from 0 over the whole conversation), or -1 for system/user tokens,
template tokens between turns and context turns that get no loss. `turn_ids >= 0` is the assistant-only loss
mask; `turn_ids == h` is the per-turn mask of assistant turn h. Spans are found by tokenising growing
prefixes of the conversation, so any chat template works as long as it renders a prefix of a conversation
as a prefix of its tokens (checked, with a clear error when a template does not).
"""

import json
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from rlhf.data.schema import as_messages

TRUNCATION = ("left", "right", "drop", "error")


@dataclass(frozen=True)
class Tokenization:
    """How conversations become token sequences.

    max_length: longest sequence kept, in tokens.
    truncation: what happens to a longer one: "left" drops its first tokens (keeps the latest turns and the
        response), "right" drops its last tokens, "drop" skips the row, "error" stops with the row named.
    proportion: the minority share of group-labelled data (`data.proportion`, the key sweeps set). Only a task
        that labels groups adds it to the `data` node, with its default, and reads it (`task.groups.proportion:
        ${data.proportion}`); tokenisation does not use it.
    """

    max_length: int = 512
    truncation: str = "left"
    proportion: float | None = None

    def __post_init__(self):
        if self.truncation not in TRUNCATION:
            raise ValueError(f"data.truncation={self.truncation!r} is not one of {TRUNCATION}")
        if self.max_length < 2:
            raise ValueError(f"data.max_length={self.max_length} must be at least 2")


@dataclass
class TokenizedSequence:
    input_ids: list[int]
    turn_ids: list[int]  # same length; assistant turn index or -1


def _template(tokenizer: PreTrainedTokenizerBase, messages: list[dict], generation_prompt: bool) -> list[int]:
    return list(
        tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=generation_prompt, return_dict=False
        )
    )


class Renders:
    """Chat-template renders of conversation prefixes, kept for the sequences of one row: a preference pair's
    chosen and rejected share their prompt's renders, so each is rendered once."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.tokenizer, self.kept = tokenizer, {}

    def __call__(self, messages: list[dict], generation_prompt: bool) -> list[int]:
        key = (json.dumps(messages, sort_keys=True, default=str), generation_prompt)
        if key not in self.kept:
            self.kept[key] = _template(self.tokenizer, messages, generation_prompt)
        return self.kept[key]


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict], train_from_turn: int = 0,
    renders: Renders | None = None,
) -> TokenizedSequence:
    """Tokens of `messages` with the turn index of every assistant token.

    Assistant turns numbered below `train_from_turn` are context (turn id -1), e.g. the earlier assistant
    turns of a preference pair's prompt. A turn's span is its content and the end-of-turn (eos) token;
    template tokens after the eos (such as a newline) are not part of it. `renders`: prefix renders shared
    with other sequences of the same row.
    """
    render = renders or Renders(tokenizer)
    input_ids = list(render(messages, generation_prompt=False))
    turn_ids = [-1] * len(input_ids)
    turn = 0
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(messages[:i], generation_prompt=True)
        upto = render(messages[: i + 1], generation_prompt=False)
        # Both the prompt (with the generation prompt) and the conversation up to this reply must be prefixes,
        # or the span start is silently off (e.g. a generation prompt "<|assistant|>\n" over a reply rendered
        # as "<|assistant|>{content}" would cut the reply's first token from the mask).
        if input_ids[: len(upto)] != upto or upto[: len(prompt)] != prompt:
            raise ValueError(
                f"the chat template of {tokenizer.name_or_path!r} does not render a conversation prefix as a "
                f"prefix of its tokens (at message {i}); per-turn masks need a prefix-consistent template"
            )
        start, end = len(prompt), len(upto)
        span = upto[start:end]
        if tokenizer.eos_token_id in span:  # cut template tokens that follow the end-of-turn token
            end = start + len(span) - span[::-1].index(tokenizer.eos_token_id)
        if turn >= train_from_turn:
            turn_ids[start:end] = [turn] * (end - start)
        turn += 1
    return TokenizedSequence(input_ids, turn_ids)


def truncate(sequence: TokenizedSequence, spec: Tokenization, where: str) -> TokenizedSequence | None:
    """Apply `spec` to a sequence; None when the row is to be dropped. `where` names the row in errors."""
    n = len(sequence.input_ids)
    if n <= spec.max_length:
        return sequence
    if spec.truncation == "error":
        raise ValueError(f"{where} has {n} tokens, more than data.max_length={spec.max_length}")
    if spec.truncation == "drop":
        return None
    keep = slice(n - spec.max_length, n) if spec.truncation == "left" else slice(0, spec.max_length)
    truncated = TokenizedSequence(sequence.input_ids[keep], sequence.turn_ids[keep])
    return truncated if max(truncated.turn_ids) >= 0 else None  # nothing left to train on


def tokenize_pair(
    tokenizer: PreTrainedTokenizerBase, row: dict, spec: Tokenization, where: str
) -> tuple[TokenizedSequence, TokenizedSequence] | None:
    """The chosen and rejected sequences of a preference row (prompt turns are context), or None if dropped."""
    prompt = as_messages(row["prompt"], "user")
    context_turns = sum(m["role"] == "assistant" for m in prompt)
    pair, renders = [], Renders(tokenizer)
    for column in ("chosen", "rejected"):
        messages = prompt + as_messages(row[column], "assistant")
        sequence = truncate(tokenize_conversation(tokenizer, messages, context_turns, renders), spec,
                            f"{where} ({column})")
        if sequence is None:
            return None
        pair.append(sequence)
    return pair[0], pair[1]
