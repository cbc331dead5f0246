"""What every backend does around sampling, so all of them agree on it: the prompt ids of a conversation,
the ids that end a turn, and a sampled row of ids turned into a `Completion`."""

import json
import weakref
from collections import OrderedDict
from dataclasses import dataclass

from transformers import GenerationConfig, PreTrainedTokenizerBase

from rlhf.backends.base import Completion

RENDERED_PER_TOKENIZER = 4096  # the latest prompt renders kept per tokenizer
_rendered: "weakref.WeakKeyDictionary[PreTrainedTokenizerBase, OrderedDict]" = weakref.WeakKeyDictionary()


def prompt_ids(tokenizer: PreTrainedTokenizerBase, conversation: list[dict]) -> list[int]:
    """The chat-template ids of `conversation` with the assistant generation prompt appended.
    The template supplies BOS itself, so the ids are not re-tokenised with special tokens added.

    The latest renders are kept per tokenizer, keyed by the conversation's JSON, the chat template and the
    vocabulary size: the K samples of a prompt, and the rollout's training sequence after them, render it
    once."""
    if not conversation or conversation[-1]["role"] != "user":
        raise ValueError(f"a conversation to continue must end with a user message, got {conversation!r}")
    try:
        key = (str(tokenizer.chat_template), len(tokenizer), json.dumps(conversation, sort_keys=True))
    except TypeError:  # content that JSON cannot write: rendered every time
        key = None
    cache = _rendered.setdefault(tokenizer, OrderedDict())
    if key is not None and key in cache:
        cache.move_to_end(key)
        return list(cache[key])
    ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True, return_dict=False)
    if key is not None:
        cache[key] = tuple(ids)
        if len(cache) > RENDERED_PER_TOKENIZER:
            cache.popitem(last=False)
    return ids


def eos_ids(generation_config: GenerationConfig, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids that end a turn: the tokenizer's eos and every eos of the model's generation config.
    Chat models often end a turn with an id other than tokenizer.eos (e.g. Qwen's <|im_end|> next to
    <|endoftext|>), listed only in the generation config."""
    config_eos = generation_config.eos_token_id
    config_eos = [] if config_eos is None else [config_eos] if isinstance(config_eos, int) else config_eos
    return sorted({tokenizer.eos_token_id, *config_eos})


@dataclass(frozen=True)
class CompletionDecoder:
    """Turns the ids a backend sampled for one row into a `Completion` (see its contract in base.py):
    trimmed to what ended the turn (the first eos, kept; else the token that completed a stop string, kept;
    anything after it is padding or overrun), decoded without special tokens, the text cut before the stop
    string. finish_reason is "stop" when eos or a stop string ended the turn, else "length"."""

    tokenizer: PreTrainedTokenizerBase
    eos_ids: list[int]
    stop_strings: list[str]

    def __call__(self, ids: list[int]) -> Completion:
        eos_at = next((i for i, token in enumerate(ids) if token in self.eos_ids), None)
        if eos_at is not None:
            ids = ids[: eos_at + 1]
            return Completion(self._cut(self._decode(ids)), ids, "stop")
        if self._has_stop(ids):
            ids = ids[: self._stop_length(ids)]
            return Completion(self._cut(self._decode(ids)), ids, "stop")
        return Completion(self._decode(ids), ids, "length")

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _has_stop(self, ids: list[int]) -> bool:
        text = self._decode(ids)
        return any(s in text for s in self.stop_strings)

    def _stop_length(self, ids: list[int]) -> int:
        """The shortest prefix of `ids` whose text contains a stop string: where generation stopped.
        Binary search, as containing one only becomes true as the prefix grows."""
        low, high = 1, len(ids)
        while low < high:
            mid = (low + high) // 2
            if self._has_stop(ids[:mid]):
                high = mid
            else:
                low = mid + 1
        return low

    def _cut(self, text: str) -> str:
        """`text` up to (excluding) the earliest stop string in it."""
        return text[: min((text.find(s) for s in self.stop_strings if s in text), default=len(text))]
