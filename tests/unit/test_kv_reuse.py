"""`backend.reuse_cache`: the HF backend keeps each dialogue's KV cache between the turns of a rollout.

Reusing the cache must change nothing but the work: the same dialogues and sampled ids as prefilling the
whole conversation every turn, greedy and sampled, with append-only templates and with ones that are not."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf.backends.hf import HFBackend
from rlhf.backends.kv_reuse import common_prefix, continuation_key, conversation_key
from rlhf.rollout.engine import rollout
from rlhf.tasks.twenty_questions_task import TwentyQuestionsTask
from rlhf.users.dataset import DatasetUser
from rlhf.users.oracle import TwentyQuestionsOracle

# Every message's header names how many messages the conversation has, so each new turn re-renders all
# earlier ones: nothing after the first id is a prefix of the next turn's prompt.
RERENDERING = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ messages | length }}\n{{ m['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@pytest.fixture(scope="module")
def model(tiny_path):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_path)


def backends(model, tiny_path, template=None, **kwargs):
    """Two backends on the same weights, one keeping caches and one prefilling everything."""
    pair = []
    for reuse in (True, False):
        tokenizer = AutoTokenizer.from_pretrained(tiny_path)
        if template is not None:
            tokenizer.chat_template = template
        pair.append(HFBackend(model, tokenizer, reuse_cache=reuse, seed=3, **kwargs))
    return pair


def twenty_questions(backend, n=6, turns=4, seed=0):
    task = TwentyQuestionsTask()
    openings, fields = task.openings("train", n)
    return rollout(backend, TwentyQuestionsOracle(), openings, fields, max_turns=turns, done=task.done,
                   reply_to_last=True, seed=seed, progress=False)


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_reused_caches_give_the_same_dialogues_as_prefilling_again(model, tiny_path, temperature):
    reusing, prefilling = backends(model, tiny_path, temperature=temperature, max_new_tokens=12, batch_size=4)
    a, b = twenty_questions(reusing), twenty_questions(prefilling)
    assert [d.messages for d in a] == [d.messages for d in b]
    assert [d.token_ids for d in a] == [d.token_ids for d in b]
    assert all(d.num_turns == 4 for d in a)
    stats = reusing.last_session
    assert prefilling.last_session is None
    # 6 dialogues x 4 turns; turns 2-4 continue a kept row
    assert stats["rows"] == 24 and stats["reused"] > stats["prefilled"] > 0
    prompts = sum(len(reusing.prompt_ids(d.prefix_before(t))) for d in a for t in range(d.num_turns))
    assert stats["reused"] + stats["prefilled"] == prompts


def test_rows_with_and_without_a_kept_cache_share_a_batch(model, tiny_path):
    """A continued dialogue next to new ones, in batches that split the num_samples repeats."""
    reusing, prefilling = backends(model, tiny_path, temperature=1.0, max_new_tokens=6, batch_size=3)
    first = [{"role": "user", "content": "Is it an animal?"}]
    with reusing.continuing() as counts:
        [[reply, _]] = reusing.generate([first], num_samples=2)
        followed = first + [{"role": "assistant", "content": reply.text}, {"role": "user", "content": "No."}]
        fresh = [{"role": "user", "content": "Hi"}]
        second = reusing.generate([fresh, followed, fresh], num_samples=2, seed=11)
    assert prefilling.generate([[{"role": "user", "content": "Is it an animal?"}]], num_samples=2)[0][0] == reply
    assert second == prefilling.generate([fresh, followed, fresh], num_samples=2, seed=11)
    # the two repeats of `followed` continue the first sample's kept row: its prompt plus the reply's ids, as
    # far as the reply's text re-renders to them (a sampled id that decodes to part of a character does not)
    kept, again = reusing.prompt_ids(first) + reply.token_ids, reusing.prompt_ids(followed)
    common = next((i for i, (x, y) in enumerate(zip(kept, again)) if x != y), min(len(kept), len(again)))
    assert common > len(reusing.prompt_ids(first))
    assert counts["reused"] >= 2 * (common - 1)


def test_a_template_that_re_renders_earlier_turns_reuses_less_and_stays_right(model, tiny_path, caplog):
    reusing, prefilling = backends(model, tiny_path, template=RERENDERING, temperature=1.0, max_new_tokens=8)
    with caplog.at_level("INFO", logger="rlhf.backends.kv_reuse"):
        a = twenty_questions(reusing, n=4, turns=3)
    b = twenty_questions(prefilling, n=4, turns=3)
    assert [d.messages for d in a] == [d.messages for d in b]
    assert [d.token_ids for d in a] == [d.token_ids for d in b]
    stats = reusing.last_session
    assert stats["diverged"] == 8  # turns 2 and 3 of 4 dialogues
    assert stats["reused"] <= 8 * 2  # bos and at most the first header id
    assert "not a prefix of its next prompt" in caplog.text


def test_reuse_off_and_outside_a_session_nothing_is_kept(model, tiny_path):
    reusing, prefilling = backends(model, tiny_path, temperature=0.0, max_new_tokens=4)
    with prefilling.continuing() as counts:
        assert counts is None and prefilling.store is None
    conversation = [{"role": "user", "content": "Hi"}]
    reusing.generate([conversation])
    assert reusing.store is None and reusing.last_session is None
    with reusing.continuing() as outer:
        with reusing.continuing() as inner:  # the rollout inside a caller's session
            reusing.generate([conversation])
        assert inner is outer and reusing.store is not None and len(reusing.store.kept) == 1
    assert reusing.store is None and outer["rows"] == 1


def test_keys_and_prefixes():
    prompt = [{"role": "user", "content": "a"}]
    assert continuation_key(prompt) is None
    followed = prompt + [{"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    assert continuation_key(followed) == conversation_key(prompt, "b") != conversation_key(prompt)
    assert continuation_key(prompt + [{"role": "user", "content": "b"}, {"role": "user", "content": "c"}]) is None
    assert common_prefix([1, 2, 3], [1, 2, 3, 4]) == 3
    assert common_prefix([1, 2, 3], [1, 5, 3]) == 1
    assert common_prefix([], [1]) == 0


def test_dataset_user_dialogues_match(model, tiny_path):
    """Fixed user turns (the REFUEL replay): every turn's prompt continues the last."""
    reusing, prefilling = backends(model, tiny_path, temperature=1.0, max_new_tokens=10, batch_size=2)
    openings = [[{"role": "user", "content": f"question {i}"}] for i in range(5)]
    fields = [{"user_turns": ["why?", "and then?", "thanks"]}] * 5
    a = rollout(reusing, DatasetUser(), openings, fields, 4, seed=2, progress=False)
    b = rollout(prefilling, DatasetUser(), openings, fields, 4, seed=2, progress=False)
    assert [d.token_ids for d in a] == [d.token_ids for d in b]
    assert reusing.last_session["reused"] > 0


def test_other_attention_implementations_prefill_everything(model, tiny_path, caplog, monkeypatch):
    reusing, prefilling = backends(model, tiny_path, temperature=1.0, max_new_tokens=6)
    monkeypatch.setattr(model.config, "_attn_implementation", "flash_attention_2")
    with caplog.at_level("INFO", logger="rlhf.backends.kv_reuse"):
        with reusing.continuing():
            assert not reusing.store.enabled
    assert "off for attention implementation 'flash_attention_2'" in caplog.text


def test_a_value_head_policy_keeps_its_caches(model, tiny_path):
    """The attention implementation is found through wrappers (PPO's value-head policy holds the model)."""
    from rlhf.models.kv import attention_implementation
    from rlhf.models.value_model import PolicyWithValueHead

    wrapped = PolicyWithValueHead(model, 0)
    assert attention_implementation(wrapped) == attention_implementation(model) in ("eager", "sdpa")
    backend = HFBackend(wrapped, AutoTokenizer.from_pretrained(tiny_path), max_new_tokens=4)
    with backend.continuing():
        assert backend.store.enabled
