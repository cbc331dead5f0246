"""`trainer.length_buckets`: batches of similar lengths, from an order that depends only on seed and epoch."""

import math
import random
from pathlib import Path

import pytest

from rlhf.algos.dpo import DPO
from rlhf.data.tokenize import Tokenization
from rlhf.logging import NoLogger
from rlhf.models.policy import load_policy
from rlhf.tasks.dataset import DatasetTask
from rlhf.trainers.offline import epoch_order, example_lengths, fit_offline, tokenised

PAIRS = str(Path(__file__).resolve().parents[2] / "data" / "synthetic" / "preferences_train.jsonl")


def padded(order: list[int], lengths: list[int], batch: int) -> int:
    """Positions the model runs on: per full batch, its size times its longest example."""
    return sum(batch * max(lengths[i] for i in order[s:s + batch]) for s in range(0, len(order) - batch + 1, batch))


@pytest.fixture(scope="module")
def lengths() -> list[int]:
    rng = random.Random(0)
    return [rng.randint(10, 200) for _ in range(203)]  # 203 = 25 batches of 8 and 3 left over


def test_same_examples_less_padding_same_order_every_time(lengths):
    plain = epoch_order(len(lengths), 0, 1)
    bucketed = epoch_order(len(lengths), 0, 1, lengths=lengths, batch=8, window=5)
    assert sorted(bucketed) == list(range(len(lengths)))  # every example once
    assert bucketed == epoch_order(len(lengths), 0, 1, lengths=lengths, batch=8, window=5)  # resume sees this
    assert bucketed != epoch_order(len(lengths), 0, 2, lengths=lengths, batch=8, window=5)
    assert padded(bucketed, lengths, 8) < 0.8 * padded(plain, lengths, 8)
    # a window sorts only its own examples: the 40 examples of each window are those of the plain order's
    windows = [sorted(plain[s:s + 40]) for s in range(0, 200, 40)]
    batches = [sorted(bucketed[s:s + 8]) for s in range(0, 200, 8)]
    assert all(any(set(b) <= set(w) for w in windows) for b in batches)
    assert sorted(bucketed[200:]) == sorted(plain[200:])  # the partial batch stays last


def test_priority_draws_are_kept(lengths):
    import torch

    weights = torch.rand(len(lengths))
    drawn = epoch_order(len(lengths), 3, 0, weights)
    assert sorted(epoch_order(len(lengths), 3, 0, weights, lengths, 8, 4)) == sorted(drawn)


def test_off_is_the_plain_order(lengths):
    assert epoch_order(len(lengths), 0, 0, lengths=lengths, batch=8, window=0) == epoch_order(len(lengths), 0, 0)


def test_dpo_run_with_length_buckets(tiny_path, tmp_path):
    task = DatasetTask("pairs", "preference", train_path=PAIRS, train_limit=48)
    policy = load_policy(tiny_path)
    train = tokenised(task, DPO(), policy, Tokenization(max_length=128, truncation="left"))["train"]
    lengths = example_lengths(train)
    assert lengths == [max(len(c.input_ids), len(r.input_ids)) for c, r in train.items]
    assert padded(epoch_order(48, 0, 0, lengths=lengths, batch=4, window=6), lengths, 4) < padded(
        epoch_order(48, 0, 0), lengths, 4)
    metrics = fit_offline(policy=policy, algo=DPO(beta=0.1), task=task, logger=NoLogger(), run_dir=tmp_path, seed=0,
                          tokenization=Tokenization(max_length=128, truncation="left"), config={}, max_steps=14,
                          batch_size=4, log_every=1, length_buckets=6)  # 12 batches an epoch: into epoch 2
    assert math.isfinite(metrics["train/loss"]) and metrics["train/loss"] > 0
    with pytest.raises(ValueError, match="trainer.length_buckets=-1 must be >= 0"):
        fit_offline(policy=policy, algo=None, task=None, tokenization=None, logger=None, run_dir="unused", seed=0,
                    config={}, length_buckets=-1)
