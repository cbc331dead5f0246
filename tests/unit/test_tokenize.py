"""Chat-template tokenisation with per-turn assistant masks, truncation policies, and padded batches.

The tiny tokenizer's template renders "<|bos|>" then "<|role|>\\n{content}<|end|>\\n" per message (and
"<|assistant|>\\n" as the generation prompt); <|end|> is eos. So assistant turn h must cover exactly
"{content_h}<|end|>": not the "<|assistant|>\\n" header before it, not the "\\n" after it.
"""

import pytest
import torch
from transformers import AutoTokenizer

from rlhf.data.batch import collate_pairs, collate_sequences
from rlhf.data.tokenize import (
    TokenizedSequence,
    Tokenization,
    tokenize_conversation,
    tokenize_pair,
    truncate,
)

END = "<|end|>"


@pytest.fixture(scope="module")
def tok(tiny_path):
    return AutoTokenizer.from_pretrained(tiny_path)


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def conversation(system: bool, assistant_turns: int) -> list[dict]:
    """user/assistant alternating, `assistant_turns` replies, optionally opened by a system message."""
    messages = [msg("system", "You are a careful helper.")] if system else []
    for h in range(assistant_turns):
        messages.append(msg("user", f"Tell me about the tree number {h}?"))
        messages.append(msg("assistant", f"Happy to help: the tree {h} is tall and green."))
    return messages


def decode_where(tok, sequence: TokenizedSequence, predicate) -> str:
    return tok.decode([i for i, t in zip(sequence.input_ids, sequence.turn_ids) if predicate(t)])


CASES = [(system, turns) for system in (False, True) for turns in (1, 2, 3)]


@pytest.mark.parametrize("system,turns", CASES)
def test_each_assistant_turn_is_exactly_its_content_and_end_token(tok, system, turns):
    messages = conversation(system, turns)
    seq = tokenize_conversation(tok, messages)
    assert len(seq.input_ids) == len(seq.turn_ids)
    # The token ids are the chat template's, unchanged.
    assert seq.input_ids == list(tok.apply_chat_template(messages, tokenize=True, return_dict=False))
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    assert sorted(set(seq.turn_ids)) == [-1, *range(turns)]
    for h, content in enumerate(replies):
        assert decode_where(tok, seq, lambda t: t == h) == content + END
        # one contiguous span per turn
        positions = [i for i, t in enumerate(seq.turn_ids) if t == h]
        assert positions == list(range(positions[0], positions[-1] + 1))
    context = decode_where(tok, seq, lambda t: t == -1)
    for m in messages:
        if m["role"] == "assistant":
            assert m["content"] not in context
        else:
            assert m["content"] in context
    # The context is everything else: bos, role headers, user/system turns, the newline after each <|end|>.
    assert context.startswith("<|bos|>") and context.count("<|assistant|>\n") == turns
    assert context.endswith(f"{END}\n<|assistant|>\n\n")  # last header, then the newline after the reply


def test_train_from_turn_makes_earlier_assistant_turns_context(tok):
    messages = conversation(system=True, assistant_turns=3)
    full = tokenize_conversation(tok, messages)
    later = tokenize_conversation(tok, messages, train_from_turn=2)
    assert later.input_ids == full.input_ids
    # turns 0 and 1 become -1; turn 2 keeps its index (numbered over the whole conversation) and its span
    assert sorted(set(later.turn_ids)) == [-1, 2]
    assert later.turn_ids == [t if t == 2 else -1 for t in full.turn_ids]
    assert decode_where(tok, later, lambda t: t >= 0) == messages[-1]["content"] + END


def test_pair_shares_the_prompt_prefix_and_masks_only_the_reply(tok):
    prompt = [msg("user", "Tell me about the box."), msg("assistant", "The box is red."), msg("user", "More?")]
    row = {"prompt": prompt, "chosen": "Happy to help: the box is big.", "rejected": "Cat hmm blah."}
    chosen, rejected = tokenize_pair(tok, row, Tokenization(max_length=512), "t row 0")
    prefix = list(tok.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=False))
    n = len(prefix)
    assert chosen.input_ids[:n] == prefix and rejected.input_ids[:n] == prefix
    assert chosen.input_ids[n] != rejected.input_ids[n]  # they differ right after the shared prompt
    # the prompt's own assistant turn (turn 0) is context; the reply is turn 1
    assert chosen.turn_ids[:n] == [-1] * n and rejected.turn_ids[:n] == [-1] * n
    assert decode_where(tok, chosen, lambda t: t >= 0) == row["chosen"] + END
    assert decode_where(tok, rejected, lambda t: t >= 0) == row["rejected"] + END
    assert set(chosen.turn_ids) == set(rejected.turn_ids) == {-1, 1}
    # reply span then one trailing "\n" of context
    assert chosen.turn_ids[-1] == -1 and chosen.turn_ids[-2] == 1


def test_pair_with_string_prompt_is_one_user_turn(tok):
    row = {"prompt": "Hi", "chosen": "Hello there.", "rejected": "Go away."}
    as_list = {**row, "prompt": [msg("user", "Hi")]}
    spec = Tokenization()
    assert tokenize_pair(tok, row, spec, "w") == tokenize_pair(tok, as_list, spec, "w")


# ---- truncation ----------------------------------------------------------------------------------------

LONG_USER = "Tell me about the tree and the box and the ocean and the harbor and the museum, please. " * 3


def test_left_truncation_keeps_the_end(tok):
    seq = tokenize_conversation(tok, [msg("user", LONG_USER), msg("assistant", "The tree is tall.")])
    n = len(seq.input_ids)
    max_length = n - 10
    out = truncate(seq, Tokenization(max_length=max_length, truncation="left"), "w")
    assert out.input_ids == seq.input_ids[10:] and out.turn_ids == seq.turn_ids[10:]
    assert out.input_ids[0] != tok.bos_token_id  # the start is gone
    assert decode_where(tok, out, lambda t: t == 0) == "The tree is tall." + END  # the response is whole


def test_right_truncation_keeps_the_start(tok):
    seq = tokenize_conversation(tok, [msg("user", "Hi"), msg("assistant", LONG_USER)])
    max_length = len(seq.input_ids) - 10
    out = truncate(seq, Tokenization(max_length=max_length, truncation="right"), "w")
    assert out.input_ids == seq.input_ids[:max_length] and out.turn_ids == seq.turn_ids[:max_length]
    assert out.input_ids[0] == tok.bos_token_id
    assert END not in decode_where(tok, out, lambda t: t == 0)  # the reply's end is cut


def test_short_sequences_are_untouched_for_every_policy(tok):
    seq = tokenize_conversation(tok, conversation(False, 1))
    for policy in ("left", "right", "drop", "error"):
        assert truncate(seq, Tokenization(max_length=len(seq.input_ids), truncation=policy), "w") is seq


def test_drop_returns_none_and_error_names_row_and_setting(tok):
    seq = tokenize_conversation(tok, conversation(False, 2))
    n = len(seq.input_ids)
    assert truncate(seq, Tokenization(max_length=n - 1, truncation="drop"), "w") is None
    with pytest.raises(ValueError, match=rf"data\.jsonl row 7 has {n} tokens, more than data\.max_length={n - 1}"):
        truncate(seq, Tokenization(max_length=n - 1, truncation="error"), "data.jsonl row 7")


def test_error_through_tokenize_pair_names_the_column(tok):
    row = {"prompt": LONG_USER, "chosen": "Yes.", "rejected": "No."}
    with pytest.raises(ValueError, match=r"prefs row 4 \(chosen\) has \d+ tokens.*data\.max_length=16"):
        tokenize_pair(tok, row, Tokenization(max_length=16, truncation="error"), "prefs row 4")
    assert tokenize_pair(tok, row, Tokenization(max_length=16, truncation="drop"), "prefs row 4") is None


def test_truncation_that_removes_every_assistant_token_drops_the_row(tok):
    # A conversation ending in a long user turn: keeping its last 20 tokens keeps only user tokens.
    messages = [msg("user", "Hi"), msg("assistant", "Hello."), msg("user", LONG_USER)]
    seq = tokenize_conversation(tok, messages)
    assert max(seq.turn_ids[-20:]) == -1
    assert truncate(seq, Tokenization(max_length=20, truncation="left"), "w") is None
    # Right truncation of a long prompt loses the reply just the same.
    seq = tokenize_conversation(tok, [msg("user", LONG_USER), msg("assistant", "Hello.")])
    assert truncate(seq, Tokenization(max_length=20, truncation="right"), "w") is None
    # A pair with a context-only left part: left truncation keeps the reply, so it is kept.
    row = {"prompt": LONG_USER, "chosen": "Yes.", "rejected": "No."}
    pair = tokenize_pair(tok, row, Tokenization(max_length=20, truncation="left"), "w")
    assert pair is not None and all(len(s.input_ids) == 20 for s in pair)


def test_tokenization_rejects_bad_settings():
    with pytest.raises(ValueError, match=r"data\.truncation='bogus' is not one of"):
        Tokenization(truncation="bogus")
    with pytest.raises(ValueError, match=r"data\.max_length=1 must be at least 2"):
        Tokenization(max_length=1)


# ---- templates that are not prefix-consistent ----------------------------------------------------------


def with_template(tiny_path, template: str):
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    tokenizer.chat_template = template
    return tokenizer


def test_template_rendering_the_last_message_differently_is_rejected(tiny_path):
    # " FINAL" is added to the last assistant message only: rendering [u, a] (a is last) differs from how
    # the same a renders inside [u, a, u, a], so prefixes of the conversation are not token prefixes.
    template = (
        "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}"
        "{% if loop.last and message['role'] == 'assistant' %} FINAL{% endif %}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    tokenizer = with_template(tiny_path, template)
    with pytest.raises(ValueError, match=r"prefix.*at message 1"):
        tokenize_conversation(tokenizer, conversation(False, 2))
    # A single reply is its own last message, so there is nothing inconsistent to detect.
    seq = tokenize_conversation(tokenizer, conversation(False, 1))
    assert tokenizer.decode([i for i, t in zip(seq.input_ids, seq.turn_ids) if t == 0]).endswith(" FINAL" + END)


def test_generation_prompt_that_is_not_a_prefix_of_the_reply_is_rejected(tiny_path):
    # The generation prompt is "<|assistant|>\n" but a rendered reply is "<|assistant|>{content}" (no newline):
    # taking the span start from the generation prompt's length would silently cut the reply's first token.
    template = (
        "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    tokenizer = with_template(tiny_path, template)
    with pytest.raises(ValueError, match=r"prefix.*at message 1"):
        tokenize_conversation(tokenizer, conversation(False, 1))


# ---- collation -----------------------------------------------------------------------------------------


def seq(ids: list[int], turns: list[int]) -> TokenizedSequence:
    return TokenizedSequence(ids, turns)


def test_collate_sequences_right_pads():
    a = seq([5, 6, 7, 8], [-1, 0, 0, -1])
    b = seq([9, 10], [-1, 1])
    batch = collate_sequences([a, b], index=[3, 11], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8], [9, 10, 0, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch.turn_ids.tolist() == [[-1, 0, 0, -1], [-1, 1, -1, -1]]  # -1 on padding
    assert batch.index.tolist() == [3, 11]
    assert batch.input_ids.dtype == batch.turn_ids.dtype == torch.long
    assert batch.response_mask.tolist() == [[False, True, True, False], [False, True, False, False]]
    assert batch.turn_mask(0).tolist() == [[False, True, True, False], [False] * 4]
    assert batch.turn_mask(1).tolist() == [[False] * 4, [False, True, False, False]]
    assert batch.num_tokens == 6
    # `length` pads beyond the longest
    assert collate_sequences([b], [0], pad_id=2, length=5).input_ids.tolist() == [[9, 10, 2, 2, 2]]


def test_collate_pairs_pads_chosen_and_rejected_to_one_length():
    pairs = [
        (seq([1, 2, 3], [-1, 0, 0]), seq([1, 2, 3, 4, 5, 6], [-1, 0, 0, 0, 0, -1])),  # longest: rejected, 6
        (seq([1, 7], [-1, 0]), seq([1, 8, 9], [-1, 0, 0])),
    ]
    batch = collate_pairs(pairs, index=[4, 2], pad_id=99)
    assert batch.chosen.input_ids.shape == batch.rejected.input_ids.shape == (2, 6)
    assert batch.chosen.input_ids.tolist() == [[1, 2, 3, 99, 99, 99], [1, 7, 99, 99, 99, 99]]
    assert batch.rejected.input_ids.tolist() == [[1, 2, 3, 4, 5, 6], [1, 8, 9, 99, 99, 99]]
    assert batch.chosen.attention_mask.sum(1).tolist() == [3, 2]
    assert batch.rejected.turn_ids.tolist() == [[-1, 0, 0, 0, 0, -1], [-1, 0, 0, -1, -1, -1]]
    assert batch.index.tolist() == [4, 2] and batch.num_tokens == 3 + 2 + 6 + 3
    both = batch.concatenated()  # (2B, T): chosen rows first, then rejected rows
    assert both.input_ids.shape == (4, 6)
    assert torch.equal(both.input_ids[:2], batch.chosen.input_ids)
    assert torch.equal(both.input_ids[2:], batch.rejected.input_ids)
    assert torch.equal(both.attention_mask[2:], batch.rejected.attention_mask)
    assert both.turn_mask(0).sum(1).tolist() == [2, 1, 4, 2]
    assert both.index.tolist() == [4, 2, 4, 2]
