"""The COMET critic reward: text pairs as the critic reads them, and scores equal to the encoder's pooler
through the converted head, computed by hand."""

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, RobertaModel

from rlhf.rewards.comet_critic import HEAD_FILE, CometCriticReward, comet_prompt, critic_pair, parse_prompt
from tests.unit.tiny_classifier import build_comet_critic


@pytest.fixture(scope="module")
def critic_dir(tiny_path, tmp_path_factory):
    return Path(build_comet_critic(tiny_path, tmp_path_factory.mktemp("comet-critic")))


def conversation(head, relation, tail):
    return [{"role": "user", "content": comet_prompt(head, relation)}, {"role": "assistant", "content": tail}]


def test_prompt_round_trip_and_pair():
    assert parse_prompt(comet_prompt("PersonX goes to the store", "xWant")) == ("PersonX goes to the store", "xWant")
    assert critic_pair("PersonX meets PersonY", "xWant", " to talk to PersonY ", ("Ana", "Ben")) == (
        "Ana meets Ben", "as a result, Ana wants to talk to Ben")


def test_bad_prompts_are_refused_with_what_is_wrong():
    with pytest.raises(ValueError, match="relations"):
        parse_prompt(comet_prompt("PersonX runs", "oWant"))
    with pytest.raises(ValueError, match="<head>"):
        parse_prompt("PersonX runs, so")


def test_score_is_the_head_on_the_pooler(critic_dir):
    reward = CometCriticReward(str(critic_dir), batch_size=2)
    conversations = [conversation("PersonX goes to the store", "xWant", "to buy milk"),
                     conversation("PersonX helps PersonY", "xAttr", "kind and generous and thoughtful"),
                     conversation("PersonX falls", "HinderedBy", "PersonX is careful")]
    scores = reward.score(conversations)
    tokenizer = AutoTokenizer.from_pretrained(critic_dir)
    encoder = RobertaModel.from_pretrained(critic_dir).eval()
    head = torch.load(critic_dir / HEAD_FILE, weights_only=True)
    for c, score in zip(conversations, scores, strict=True):
        head_text, relation = parse_prompt(c[0]["content"])
        first, second = critic_pair(head_text, relation, c[1]["content"], ("Alex", "Jordan"))
        ids = tokenizer(first, second, return_tensors="pt")
        with torch.no_grad():
            pooled = encoder(**ids).pooler_output[0]
            hidden = torch.nn.functional.gelu(head["dense.weight"] @ pooled + head["dense.bias"])
            expected = torch.sigmoid(head["out_proj.weight"] @ hidden + head["out_proj.bias"]).item()
        assert score == pytest.approx(expected, abs=1e-5)
    assert len(set(round(s, 6) for s in scores)) == 3  # the three triples score differently


def test_a_missing_or_mismatched_head_is_refused(critic_dir, tmp_path):
    with pytest.raises(ValueError, match="middle_size"):
        CometCriticReward(str(critic_dir), middle_size=256)
    with pytest.raises(FileNotFoundError, match="head_file"):
        CometCriticReward(str(critic_dir), head_file="absent.pt")
    with pytest.raises(ValueError, match="names"):
        CometCriticReward(str(critic_dir), names=["Ana", "Ana"])
