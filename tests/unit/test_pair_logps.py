"""`trainer.pair_forward`: joint, split and shared-prompt forwards of preference pairs give the same log-probs
and the same gradients; shared-prompt falls back to joint where a forward cannot continue from a cache."""

import copy
from pathlib import Path

import pytest
import torch

from rlhf.algos.dpo import DPO
from rlhf.data.batch import collate_pairs
from rlhf.data.tokenize import Tokenization, TokenizedSequence
from rlhf.logging import NoLogger
from rlhf.models.pair_logps import pair_logps
from rlhf.models.policy import load_policy
from rlhf.tasks.dataset import DatasetTask
from rlhf.trainers.offline import fit_offline, tokenised

PAIRS = str(Path(__file__).resolve().parents[2] / "data" / "synthetic" / "preferences_train.jsonl")


@pytest.fixture(scope="module")
def policy(tiny_path):
    return load_policy(tiny_path)


@pytest.fixture(scope="module")
def batch(policy):
    task = DatasetTask("pairs", "preference", train_path=PAIRS, train_limit=12)
    examples = tokenised(task, DPO(), policy, Tokenization(max_length=96, truncation="left"))["train"]
    return examples.batch(list(range(12)))


def logps_and_grads(model, batch, forward):
    model.train()
    model.zero_grad()
    logps, lengths = pair_logps(model, batch, 1.0, forward)
    B = len(logps) // 2
    (logps[:B] - 0.5 * logps[B:]).sum().backward()  # chosen and rejected enter the loss differently
    grads = torch.cat([p.grad.flatten() for p in model.parameters()])
    return logps.detach(), lengths, grads


@pytest.mark.parametrize("forward", ["split", "shared_prompt"])
def test_same_logps_and_gradients_as_joint(policy, batch, forward):
    prompts = (batch.chosen.turn_ids < 0).logical_and(batch.chosen.attention_mask.bool()).sum(1)
    assert len(set(prompts.tolist())) > 1  # prompts of different lengths: the cache has gaps
    joint = logps_and_grads(policy.model, batch, "joint")
    other = logps_and_grads(policy.model, batch, forward)
    torch.testing.assert_close(other[0], joint[0], rtol=0, atol=1e-4)
    assert torch.equal(other[1], joint[1])
    torch.testing.assert_close(other[2], joint[2], rtol=1e-4, atol=1e-5)
    assert joint[2].abs().max() > 1e-3  # there are gradients to compare


def sequence(ids, reply_from):
    return TokenizedSequence(ids, [-1] * reply_from + [0] * (len(ids) - reply_from))


def test_replies_with_a_common_start_share_only_the_prompt(policy):
    """The shared ids stop before the first reply token, even where both replies begin alike; a pair whose
    sequences differ from their second id shares only the first."""
    pairs = [
        (sequence([1, 5, 6, 7, 8, 9, 10], 3), sequence([1, 5, 6, 7, 8, 11], 3)),  # replies share 7, 8
        (sequence([1, 12, 13, 14], 2), sequence([1, 15, 13, 14, 16], 2)),  # prompts differ at the 2nd id
        (sequence([1, 17, 18, 19, 20, 21, 22, 23], 6), sequence([1, 17, 18, 19, 20, 21, 24], 6)),
    ]
    batch = collate_pairs(pairs, [0, 1, 2], policy.tokenizer.pad_token_id)
    joint = logps_and_grads(policy.model, batch, "joint")
    shared = logps_and_grads(policy.model, batch, "shared_prompt")
    torch.testing.assert_close(shared[0], joint[0], rtol=0, atol=1e-4)
    assert shared[1].tolist() == [4, 2, 2, 3, 3, 1]
    torch.testing.assert_close(shared[2], joint[2], rtol=1e-4, atol=1e-5)


def test_gradient_checkpointing_runs_joint_and_says_so(tiny_path, batch, caplog):
    model = load_policy(tiny_path).model
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    with caplog.at_level("INFO", logger="rlhf.models.pair_logps"):
        shared = logps_and_grads(model, batch, "shared_prompt")
    assert "runs as joint: gradient checkpointing" in caplog.text
    joint = logps_and_grads(model, batch, "joint")
    assert torch.equal(shared[0], joint[0])


def test_without_gradients_every_way_is_available(policy, batch):
    with torch.no_grad():
        joint = pair_logps(policy.model, batch, 1.0, "joint")[0]
        for forward in ("split", "shared_prompt"):
            torch.testing.assert_close(pair_logps(policy.model, batch, 1.0, forward)[0], joint, rtol=0, atol=1e-4)


def test_unknown_pair_forward_is_refused_before_any_work():
    with pytest.raises(ValueError, match="trainer.pair_forward='both': expected one of joint, split, shared_prompt"):
        fit_offline(policy=None, algo=None, task=None, tokenization=None, logger=None, run_dir="unused", seed=0,
                    config={}, pair_forward="both")


def test_dpo_training_is_the_same_with_every_pair_forward(tiny_path, tmp_path):
    task = DatasetTask("pairs", "preference", train_path=PAIRS, train_limit=16)
    base = load_policy(tiny_path)
    finals = {}
    for forward in ("joint", "split", "shared_prompt"):
        policy = copy.deepcopy(base)
        metrics = fit_offline(policy=policy, algo=DPO(beta=0.1), task=task, logger=NoLogger(),
                              tokenization=Tokenization(max_length=96, truncation="left"), run_dir=tmp_path / forward,
                              seed=0, config={}, learning_rate=1e-3, max_steps=4, batch_size=4, log_every=1,
                              pair_forward=forward)
        finals[forward] = (metrics["train/loss"], torch.cat([p.detach().flatten() for p in policy.model.parameters()]))
    start = torch.cat([p.flatten() for p in base.model.parameters()])
    assert (finals["joint"][1] - start).abs().max() > 1e-3  # training moved the weights
    for forward in ("split", "shared_prompt"):
        assert finals[forward][0] == pytest.approx(finals["joint"][0], abs=1e-4)
        torch.testing.assert_close(finals[forward][1], finals["joint"][1], rtol=0, atol=1e-4)


def test_a_forward_that_ignores_the_cache_runs_joint(tiny_path, batch, caplog, monkeypatch):
    """Never log-probs of replies without their prompt: a model whose forward drops the cache is detected."""
    from rlhf.models.kv import cache_arg

    model = load_policy(tiny_path).model
    forward = model.forward

    def dropping(*args, **kwargs):
        kwargs.pop(cache_arg(), None)
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", dropping)
    with caplog.at_level("INFO", logger="rlhf.models.pair_logps"):
        shared = logps_and_grads(model, batch, "shared_prompt")
    assert "does not take one" in caplog.text
    torch.testing.assert_close(shared[0], logps_and_grads(model, batch, "joint")[0], rtol=0, atol=1e-5)
