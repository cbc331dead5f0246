"""ToxiChat's offensive classifier as A-LoL's `safe` reward: P(safe) at the reply's eos, the same batched and
alone, and equal to the head on the last hidden state computed by hand."""

import pytest
import torch
from transformers import AutoTokenizer, GPT2Model

from rlhf.rewards.toxichat import ToxiChatSafe, read_head
from tests.unit.tiny_classifier import build_toxichat


@pytest.fixture(scope="module")
def toxichat_dir(tiny_path, tmp_path_factory):
    return build_toxichat(tiny_path, tmp_path_factory.mktemp("toxichat"))


def test_safe_is_the_head_at_the_replys_eos(toxichat_dir):
    conversations = [[{"role": "user", "content": "what do you think of the new bridge?"},
                      {"role": "assistant", "content": "it looks great"}],
                     [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "go away, nobody asked you"}]]
    scores = ToxiChatSafe(toxichat_dir, batch_size=2).score(conversations)
    assert scores == pytest.approx(ToxiChatSafe(toxichat_dir, batch_size=1).score(conversations), abs=1e-6)
    tokenizer = AutoTokenizer.from_pretrained(toxichat_dir)
    model = GPT2Model.from_pretrained(toxichat_dir).eval()
    head = read_head(toxichat_dir)
    eos = tokenizer.eos_token
    for conversation, score in zip(conversations, scores, strict=True):
        text = "".join(m["content"] + eos for m in conversation)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        assert ids[0, -1].item() == tokenizer.eos_token_id
        with torch.no_grad():
            state = model(ids).last_hidden_state[0, -1]
        expected = torch.softmax(head["weight"] @ state + head["bias"], dim=-1)[0].item()
        assert score == pytest.approx(expected, abs=1e-5)
    assert 0 < min(scores) and max(scores) < 1 and scores[0] != pytest.approx(scores[1])


def test_a_checkpoint_without_the_head_is_refused(tiny_path, tmp_path):
    from tests.unit.tiny_classifier import build_classifier

    plain = build_classifier(tiny_path, tmp_path / "plain")
    with pytest.raises(ValueError, match="off_classifier"):
        read_head(plain)
