"""Rewards from models that ship their own code (Eurus-RM-7b's layout): the score the model's forward returns,
per sequence, the same batched and alone; the code runs only when the config opts in."""

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from rlhf.rewards.scalar_model import ScalarModelReward, fill_template, sequence_scores
from tests.unit.tiny_classifier import build_remote_code_rm

TEMPLATE = "[INST] {question} [\\INST] {response}"


@pytest.fixture(scope="module")
def rm_dir(tiny_path, tmp_path_factory):
    return build_remote_code_rm(tiny_path, tmp_path_factory.mktemp("remote-rm"))


def conversation(question, response):
    return [{"role": "user", "content": question}, {"role": "assistant", "content": response}]


def test_scores_are_the_model_output_at_the_last_token_batched_or_not(rm_dir):
    conversations = [conversation("What is 2+2?", "4"), conversation("Name a colour.", "Blue, or perhaps a deep red."),
                     conversation("Hi", "Hello there, how can I help you today?")]
    batched = ScalarModelReward(rm_dir, TEMPLATE, trust_remote_code=True, batch_size=3, dtype="float32")
    alone = ScalarModelReward(rm_dir, TEMPLATE, trust_remote_code=True, batch_size=1, dtype="float32")
    scores = batched.score(conversations)
    assert scores == pytest.approx(alone.score(conversations), abs=1e-6)
    weights = load_file(f"{rm_dir}/model.safetensors")
    tokenizer = AutoTokenizer.from_pretrained(rm_dir)
    for c, score in zip(conversations, scores, strict=True):
        last = tokenizer(fill_template(c, TEMPLATE))["input_ids"][-1]
        assert score == pytest.approx((weights["embed.weight"][last] @ weights["head.weight"][0]).item(), abs=1e-5)
    assert fill_template(conversations[0], TEMPLATE) == "[INST] What is 2+2? [\\INST] 4"


def test_remote_code_runs_only_when_the_config_opts_in(rm_dir):
    with pytest.raises(ValueError, match="trust_remote_code"):
        ScalarModelReward(rm_dir, TEMPLATE, dtype="float32")


def test_bad_templates_outputs_and_conversations_are_refused(rm_dir):
    with pytest.raises(ValueError, match="must contain"):
        ScalarModelReward(rm_dir, "[INST] {question}", trust_remote_code=True)
    with pytest.raises(ValueError, match="single-turn"):
        fill_template(conversation("a", "b") + conversation("c", "d"), TEMPLATE)
    with pytest.raises(ValueError, match=r"shape \(2, 5\)"):
        sequence_scores(torch.zeros(2, 5), 2)
    assert sequence_scores(torch.tensor([[1.0], [2.0]]), 2).tolist() == [1.0, 2.0]
