"""HFBackend on the tiny model: chat-template prompts, left-padded batching, seeding, stopping."""

import pytest
import torch

from rlhf.backends.base import Completion
from rlhf.backends.hf import HFBackend
from rlhf.models.policy import Policy, load_policy

# Prompts of different token lengths, one of them multi-turn, so batches need padding.
CONVERSATIONS = [
    [{"role": "user", "content": "Why would someone want a ocean?"}],
    [{"role": "user", "content": "Hi"}],
    [
        {"role": "user", "content": "Tell me about the tree."},
        {"role": "assistant", "content": "Happy to help: the tree is tall."},
        {"role": "user", "content": "Can you give another detail about the box?"},
    ],
]


@pytest.fixture
def policy(tiny_path) -> Policy:
    """A fresh model per test, as tests switch its mode and hook its head."""
    return load_policy(tiny_path)


def greedy(policy: Policy, **kwargs) -> HFBackend:
    return HFBackend(policy.model, policy.tokenizer, temperature=0.0, **kwargs)


def test_prompt_ids_are_the_chat_template_with_one_bos(policy):
    tokenizer = policy.tokenizer
    backend = greedy(policy)
    ids = backend.prompt_ids(CONVERSATIONS[2])
    text = tokenizer.apply_chat_template(CONVERSATIONS[2], add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|assistant|>\n")
    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1
    with pytest.raises(ValueError, match="end with a user message"):
        backend.prompt_ids(CONVERSATIONS[2][:2])


def test_batched_greedy_matches_one_at_a_time(policy):
    backend = greedy(policy, max_new_tokens=10, batch_size=2)  # chunks of 2 and 1 prompts
    assert len({len(backend.prompt_ids(c)) for c in CONVERSATIONS}) == 3  # padding is exercised
    batched = backend.generate(CONVERSATIONS)
    alone = [greedy(policy, max_new_tokens=10).generate([c])[0] for c in CONVERSATIONS]
    assert batched == alone
    for [completion] in batched:
        assert completion.token_ids and completion.text == policy.tokenizer.decode(completion.token_ids)


def test_num_samples_are_grouped_per_conversation(policy):
    single = greedy(policy, max_new_tokens=4).generate(CONVERSATIONS)
    # batch_size 4 splits the 3 x 2 rows across conversation boundaries
    grouped = greedy(policy, max_new_tokens=4, batch_size=4).generate(CONVERSATIONS, num_samples=2)
    assert [len(samples) for samples in grouped] == [2, 2, 2]
    assert all(isinstance(c, Completion) for samples in grouped for c in samples)
    # greedy samples of a conversation are all its single greedy completion, in conversation order
    assert grouped == [[one, one] for [one] in single]


def test_seeded_sampling_is_reproducible_and_varies_by_seed_and_call(policy):
    def sample(seed: int, calls: int) -> list[list[list[Completion]]]:
        backend = HFBackend(policy.model, policy.tokenizer, max_new_tokens=8, temperature=1.0, seed=seed)
        return [backend.generate(CONVERSATIONS[:2], num_samples=3) for _ in range(calls)]

    first, second = sample(seed=0, calls=2)
    assert sample(seed=0, calls=2) == [first, second]
    assert first != second
    assert sample(seed=1, calls=1)[0] != first
    # different samples of one prompt differ under sampling
    assert len({tuple(c.token_ids) for c in first[0]}) > 1


def test_caller_rng_stream_is_untouched(policy):
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    HFBackend(policy.model, policy.tokenizer, max_new_tokens=4, seed=7).generate(CONVERSATIONS)
    assert torch.equal(torch.rand(4), expected)


def test_max_new_tokens_ends_with_length(policy):
    backend = HFBackend(policy.model, policy.tokenizer, max_new_tokens=5, temperature=1.0)
    completions = [c for samples in backend.generate(CONVERSATIONS, num_samples=4) for c in samples]
    eos = policy.tokenizer.eos_token_id
    for c in completions:
        assert len(c.token_ids) <= 5
        if c.finish_reason == "length":
            assert len(c.token_ids) == 5 and eos not in c.token_ids
    assert any(c.finish_reason == "length" for c in completions)


def test_eos_ends_with_stop_and_min_new_tokens_delays_it(policy):
    eos = policy.tokenizer.eos_token_id

    def favour_eos_in_first_row(module, inputs, logits):  # logits (B, T, V)
        logits = logits.clone()
        logits[0, :, eos] += 1e4
        return logits

    handle = policy.model.lm_head.register_forward_hook(favour_eos_in_first_row)
    try:
        backend = greedy(policy, max_new_tokens=8, min_new_tokens=3)
        [[stopped], [running]] = backend.generate(CONVERSATIONS[:2])
    finally:
        handle.remove()
    # eos is masked for 3 tokens, then taken; the cut keeps it but the text drops it
    assert len(stopped.token_ids) == 4 and stopped.token_ids[-1] == eos
    assert stopped.finish_reason == "stop"
    assert stopped.text == policy.tokenizer.decode(stopped.token_ids[:-1])
    # the other row ran on past the first row's end; no padding leaks into its ids
    assert running.finish_reason == "length" and len(running.token_ids) == 8
    assert policy.tokenizer.pad_token_id not in running.token_ids


def test_stop_string_ends_generation_and_cuts_text(policy):
    tokenizer = policy.tokenizer
    [[full], [other]] = greedy(policy, max_new_tokens=12).generate(CONVERSATIONS[:2])
    # stop at the first half of the last generated token's text, so it ends inside a token
    last_piece = tokenizer.decode(full.token_ids[-1:])
    stop = last_piece[: len(last_piece) // 2 + 1]
    assert len(last_piece) >= 2 and full.text.index(stop) > 0 and stop not in other.text

    backend = greedy(policy, max_new_tokens=12, stop_strings=["never-generated", stop])
    [[cut], [uncut]] = backend.generate(CONVERSATIONS[:2])
    n = len(cut.token_ids)
    assert cut.finish_reason == "stop" and n < len(full.token_ids)
    assert cut.token_ids == full.token_ids[:n]  # the model's ids, no padding after the stop
    assert stop in tokenizer.decode(cut.token_ids) and stop not in tokenizer.decode(cut.token_ids[:-1])
    assert cut.text == full.text[: full.text.index(stop)]
    assert uncut == other


def test_model_mode_is_restored_and_eval_during_generation(policy):
    modes = []
    handle = policy.model.register_forward_hook(lambda module, inputs, output: modes.append(module.training))
    try:
        for training in (True, False):
            policy.model.train(training)
            greedy(policy, max_new_tokens=2).generate(CONVERSATIONS[:1])
            assert policy.model.training is training
    finally:
        handle.remove()
    assert modes and not any(modes)


def test_negative_temperature_is_rejected(policy):
    with pytest.raises(ValueError, match="temperature"):
        HFBackend(policy.model, policy.tokenizer, temperature=-1.0)


def test_prompt_renders_are_kept_and_follow_the_template(policy, monkeypatch):
    from rlhf.backends import completions

    tokenizer, calls = policy.tokenizer, []
    render = tokenizer.apply_chat_template
    monkeypatch.setattr(tokenizer, "apply_chat_template", lambda *a, **k: calls.append(1) or render(*a, **k))
    first = completions.prompt_ids(tokenizer, CONVERSATIONS[0])
    again = completions.prompt_ids(tokenizer, [dict(m) for m in CONVERSATIONS[0]])  # equal, not the same object
    assert again == first and len(calls) == 1
    again.append(0)  # the caller's copy: the kept render is untouched
    assert completions.prompt_ids(tokenizer, CONVERSATIONS[0]) == first and len(calls) == 1
    monkeypatch.setattr(tokenizer, "chat_template", tokenizer.chat_template.replace("<|assistant|>", "<|bot|>"))
    changed = completions.prompt_ids(tokenizer, CONVERSATIONS[0])  # a new template renders anew
    assert len(calls) == 2 and changed != first
