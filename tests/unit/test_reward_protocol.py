"""`score_checked`: unscoreable responses and non-finite rewards become `Invalid` with a reason."""

import math

import pytest

import logging
from types import SimpleNamespace

from rlhf.backends.base import Completion
from rlhf.eval.reward_eval import RewardEvaluator, summarize
from rlhf.rewards.base import Invalid, as_columns, invalid_counts, score_checked, screen_response
from rlhf.rewards.composite import Composite
from rlhf.rewards.gold import Length


def turn(response: str) -> list[dict]:
    return [{"role": "user", "content": "q"}, {"role": "assistant", "content": response}]


class Table:
    """Returns the given values in order and records what it was asked to score."""

    def __init__(self, values):
        self.values, self.seen = list(values), []

    def score(self, conversations, fields=None):
        self.seen += [c[-1]["content"] for c in conversations]
        return [self.values.pop(0) for _ in conversations]


@pytest.mark.parametrize("text, reason", [
    ("", "empty response"), ("  \n\t", "empty response"),
    ("caf\udce9", "response is not valid UTF-8"),  # b"caf\xe9" decoded with surrogateescape
    ("x" * 11, "response longer than 10 characters"),
])
def test_screen_names_the_problem(text, reason):
    assert screen_response(text, max_chars=10) == Invalid(reason)


def test_screen_accepts_ordinary_text_and_replacement_characters():
    assert screen_response("fine", max_chars=10) is None
    assert screen_response("half \ufffd", max_chars=None) is None


def test_screened_responses_never_reach_the_reward():
    reward = Table([1.0, 2.0])
    scores = score_checked(reward, [turn("a b"), turn(""), turn("c\udc80"), turn("d")])
    assert reward.seen == ["a b", "d"]
    assert scores == [1.0, Invalid("empty response"), Invalid("response is not valid UTF-8"), 2.0]


def test_non_finite_rewards_and_reward_side_invalids_are_kept_with_reasons():
    scores = score_checked(Table([math.nan, Invalid("judge replied with prose"), math.inf, 3]),
                           [turn("a"), turn("b"), turn("c"), turn("d")])
    assert scores == [Invalid("reward is nan"), Invalid("judge replied with prose"), Invalid("reward is inf"), 3.0]
    assert invalid_counts(scores) == {"reward is nan": 1, "judge replied with prose": 1, "reward is inf": 1}
    assert as_columns(scores) == ([None, None, None, 3.0], ["reward is nan", "judge replied with prose",
                                                             "reward is inf", None])


def test_fields_follow_the_conversations_that_are_scored():
    class Echo:
        def score(self, conversations, fields=None):
            return [row["value"] for row in fields]

    scores = score_checked(Echo(), [turn("a"), turn(""), turn("c")], [{"value": 1}, {"value": 2}, {"value": 3}])
    assert scores == [1.0, Invalid("empty response"), 3.0]


def test_a_reward_returning_the_wrong_number_of_scores_is_an_error():
    class Short:
        def score(self, conversations, fields=None):
            return [1.0]

    with pytest.raises(ValueError, match="Short.score returned 1 scores for 2 conversations"):
        score_checked(Short(), [turn("a"), turn("b")])


def test_summary_counts_invalid_scores_and_averages_the_rest():
    result = summarize(score_checked(Length(), [turn("one two"), turn(""), turn("four")]))
    assert result["reward_mean"] == 1.5 and result["n"] == 2 and result["reward_invalid"] == 1
    empty = summarize([Invalid("empty response")])
    assert math.isnan(empty["reward_mean"]) and empty["n"] == 0 and empty["reward_invalid"] == 1


class ScriptedBackend:
    """Replies with the given texts, one per prompt."""

    def __init__(self, texts):
        self.texts = texts

    def generate(self, conversations, num_samples=1, seed=None):
        return [[Completion(t, [1], "stop")] for t in self.texts[:len(conversations)]]


def test_evaluator_counts_invalid_samples_and_logs_their_reasons(caplog):
    prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(3)]
    evaluate = RewardEvaluator(lambda model, tokenizer: ScriptedBackend(["abc", "", "abcde"]), Length(), prompts)
    with caplog.at_level(logging.INFO, logger="rlhf.eval.reward_eval"):
        result = evaluate(SimpleNamespace(model=None, tokenizer=None))
    assert result["n"] == 2 and result["reward_invalid"] == 1
    [message] = [r.getMessage() for r in caplog.records if "could not be scored" in r.getMessage()]
    assert message.startswith("1 of 3 evaluation samples could not be scored: ") and "(1)" in message


def test_evaluator_reports_each_component_of_a_composite():
    prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(3)]
    reward = Composite({"words": Length(), "chars": Length(unit="chars")}, {"words": 1.0, "chars": 0.5})
    evaluate = RewardEvaluator(lambda model, tokenizer: ScriptedBackend(["a b", "abc", "ab cd e"]), reward, prompts)
    result = evaluate(SimpleNamespace(model=None, tokenizer=None))
    # words 2, 1, 3; characters 3, 3, 7
    assert result["component/words_mean"] == pytest.approx(2.0) and result["component/chars_mean"] == pytest.approx(13 / 3)
    assert result["reward_mean"] == pytest.approx(2.0 + 0.5 * 13 / 3)
