"""D2PO's live discriminator on the tiny reward model with an exact gold (reply length): which pairs get gold
labels, the scores it returns, its window and budget, when it trains, and that its state round-trips."""

import copy
import math

import pytest
import torch

from rlhf.models.reward_model import load_reward_model
from rlhf.rewards.discriminator import Discriminator
from rlhf.rewards.gold import Length


def conversation(prompt: str, reply: str) -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}]


def pairs(n: int, start: int = 0):
    """n pairs whose gold (words in the reply) prefers side a by i % 3 words (0: a tie)."""
    first = [conversation(f"question {i}", "word " * (2 + (i + start) % 3)) for i in range(n)]
    second = [conversation(f"question {i}", "word " * 2) for i in range(n)]
    return first, second, [{} for _ in range(n)]


class CountingGold(Length):
    def __init__(self):
        super().__init__("words")
        self.asked = 0

    def score(self, conversations, fields=None):
        self.asked += len(conversations)
        return super().score(conversations, fields)


@pytest.fixture
def discriminator(tiny_path):
    return Discriminator(load_reward_model(tiny_path, seed=0), window=8, relabels=3, update_epochs=2,
                         learning_rate=1e-3, batch_size=4, seed=0)


def test_the_least_certain_pairs_get_gold_labels_and_agree_with_them(discriminator):
    gold = CountingGold()
    first, second, fields = pairs(6)
    ra, rb = discriminator.scores(first), discriminator.scores(second)
    scores_a, scores_b, metrics = discriminator.label(first, second, fields, gold)
    chosen = torch.argsort((ra - rb).abs(), stable=True)[:3].tolist()  # "conf": the smallest margins
    assert gold.asked == 6  # both sides of the 3 chosen pairs, nothing else
    for i in range(6):
        margin = (2 + i % 3) - 2  # gold words of a minus b
        if i in chosen and margin != 0:  # relabelled: the larger score goes to the gold winner
            assert (scores_a[i] > scores_b[i]) == (margin > 0)
            assert {scores_a[i], scores_b[i]} == {float(ra[i]), float(rb[i])}
        else:  # the discriminator's own scores (a gold tie is skipped)
            assert (scores_a[i], scores_b[i]) == (pytest.approx(float(ra[i])), pytest.approx(float(rb[i])))
    ties = sum((2 + i % 3) == 2 for i in chosen)
    assert metrics["d2po/gold_labels"] == 3 and metrics["d2po/gold_ties"] == ties
    assert metrics["d2po/train_pairs"] == 3 - ties
    # the training pairs are (gold winner, loser)
    assert all(len(w[-1]["content"].split()) > len(lo[-1]["content"].split()) for w, lo in discriminator.pairs)


def test_budget_windows_and_updates(discriminator):
    """Windows of 8 pairs, 3 labels each; calls of 4 pairs: the first call of a window spends the budget,
    the second gets none; the discriminator trains once per window, from the second window on."""
    gold = CountingGold()
    labels, updates = [], []
    before = copy.deepcopy(discriminator.model.state_dict())
    for call in range(6):
        first, second, fields = pairs(4, start=call)
        _, _, metrics = discriminator.label(first, second, fields, gold)
        labels.append(metrics["d2po/gold_labels"])
        updates.append(metrics["d2po/updates"])
    assert labels == [3, 3, 6, 6, 9, 9]
    assert updates == [0, 0, 1, 1, 2, 2]
    after = discriminator.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_max_labels_stops_gold_and_updates(tiny_path):
    d = Discriminator(load_reward_model(tiny_path, seed=0), window=4, relabels=3, max_labels=4, batch_size=4)
    gold = CountingGold()
    seen = []
    for call in range(4):
        first, second, fields = pairs(4, start=call)
        _, _, metrics = d.label(first, second, fields, gold)
        seen.append((metrics["d2po/gold_labels"], metrics["d2po/updates"]))
    # 3 labels, then 1 (the last of the 4 allowed; the budget of that window is not spent: no update), then 0
    assert seen == [(3, 0), (4, 0), (4, 0), (4, 0)]
    assert gold.asked == 2 * 4


def test_state_round_trip_continues_identically(tiny_path):
    """A discriminator restored from another's state after 3 calls gives the same scores and state as the
    original on every later call (what resuming a D2PO run relies on)."""
    def make():
        return Discriminator(load_reward_model(tiny_path, seed=0), window=8, relabels=3, criteria="rand",
                             update_epochs=2, learning_rate=1e-3, batch_size=4, seed=3)

    a, gold = make(), CountingGold()
    for call in range(3):
        a.label(*pairs(4, start=call), gold)
    b = make()
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    for call in range(3, 6):
        out_a, out_b = a.label(*pairs(4, start=call), gold), b.label(*pairs(4, start=call), gold)
        assert out_a[0] == out_b[0] and out_a[1] == out_b[1]
        assert {k: v for k, v in out_a[2].items() if not math.isnan(v)} == \
            {k: v for k, v in out_b[2].items() if not math.isnan(v)}
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
    assert sa["pairs"] == sb["pairs"] and sa["counters"] == sb["counters"]


def test_bad_settings(tiny_path):
    model = load_reward_model(tiny_path, seed=0)
    with pytest.raises(ValueError, match="discriminator.criteria='best' is not one of"):
        Discriminator(model, criteria="best")
    with pytest.raises(ValueError, match="discriminator.window=0 must be >= 1"):
        Discriminator(model, window=0)


def test_reward_models_take_lora(tiny_path):
    lora = load_reward_model(tiny_path, seed=0, lora={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]})
    trainable = {n for n, p in lora.model.named_parameters() if p.requires_grad}
    assert any("lora_" in n for n in trainable) and any("score" in n for n in trainable)
    assert not any("mlp" in n for n in trainable)
    with pytest.raises(ValueError, match="policy.lora adapts a plain reward model"):
        load_reward_model(tiny_path, num_groups=2, freeze_backbone=True, lora={"r": 4})
