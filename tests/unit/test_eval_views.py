"""What evaluations report of a reward: a composite's components and their weighted sum, every group's gold
of a pluralistic reward (own group, or the minimum over groups), and distinct-n."""

import pytest

from rlhf.eval.views import distinct_n, scored
from rlhf.rewards.base import Invalid
from rlhf.rewards.composite import Composite
from rlhf.rewards.gold import BagOfWords, Length
from rlhf.rewards.pluralistic import GroupGold, MinOverGroups


def conv(text):
    return [{"role": "user", "content": "q"}, {"role": "assistant", "content": text}]


CONVERSATIONS = [conv("red box near"), conv("a b c d"), conv(" ")]


def test_a_composite_reports_each_component_and_the_weighted_sum():
    reward = Composite({"words": Length(), "colour": BagOfWords(words=["red", "blue"])}, {"words": 1.0, "colour": 2.0})
    main, parts, what = scored(reward, CONVERSATIONS)
    assert parts["component/words"][:2] == [3.0, 4.0] and parts["component/colour"][:2] == [1.0, 0.0]
    assert main[:2] == [3.0 + 2.0, 4.0] and isinstance(main[2], Invalid)
    assert what == "weighted sum of components"


def test_a_pluralistic_gold_reports_every_group():
    traits = {"colour": BagOfWords(words=["red", "blue"]), "place": BagOfWords(words=["near", "far"])}
    groups = [{"colour": 1.0}, {"colour": 0.5, "place": 0.5}]
    gold = GroupGold(traits, groups)
    main, parts, what = scored(gold, CONVERSATIONS[:2])  # no group_id: the minimum over groups
    assert parts == {"group_0": [1.0, 0.0], "group_1": [1.0, 0.0]} and main == [1.0, 0.0]
    assert what == "minimum over groups"
    main, parts, what = scored(gold, [conv("red far far")] * 2, [{"group_id": 0}, {"group_id": 1}])
    assert parts == {"group_0": [1.0, 1.0], "group_1": [1.0, 1.0]} and what == "each response's own group"
    main, _, _ = scored(gold, [conv("red"), conv("far")], [{"group_id": 1}, {"group_id": 0}])
    assert main == [0.5, 0.0]  # each scored under its own group
    assert scored(MinOverGroups(traits, groups), [conv("red")], [{"group_id": 0}])[0] == [0.5]


def test_distinct_n_counts_distinct_word_ngrams_over_all_responses():
    assert distinct_n(["a b a", "a b"], 1) == pytest.approx(2 / 5)
    assert distinct_n(["a b a", "a b"], 2) == pytest.approx(2 / 3)  # (a b), (b a), (a b)
    assert distinct_n(["", "x"], 2) == 0.0
