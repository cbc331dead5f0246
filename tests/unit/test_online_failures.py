"""The online loop stops on an update whose scores mostly failed for want of the user simulator or the reward
endpoint (not on verdicts such as an unparsable judge reply), naming the failures."""

from types import SimpleNamespace

import pytest

from rlhf.atomic import RunRefused
from rlhf.rewards.base import Invalid, unavailable
from rlhf.rollout.experience import _score_stats as stats
from rlhf.trainers.online_update import merged_rollout_metrics, refuse_failed_rollouts

ONE = SimpleNamespace(num_processes=1)


def test_scores_count_failures_apart_from_verdicts():
    scores = [1.0, unavailable("HTTP 503 after 3 attempts: busy"),
              Invalid("user simulator failed: timeout after 2 attempts"), Invalid("judge reply has no JSON object"),
              Invalid("empty response")]
    s = stats(scores)
    assert (s["rollout/scored"], s["rollout/invalid"], s["rollout/failed"]) == (5, 4, 2)


def test_a_mostly_failed_update_is_refused_with_its_reasons():
    down = stats([unavailable("connection error after 3 attempts: [Errno 111] Connection refused")] * 3 + [2.0])
    with pytest.raises(RunRefused, match=r"update 7: 3 of 4 scores failed, more than "
                                         r"trainer.max_failed_fraction=0.5.*\"reward connection error\": 3"):
        refuse_failed_rollouts(ONE, down, 0.5, step=6)
    refuse_failed_rollouts(ONE, down, 0.75, step=6)  # 3 of 4 is not more than 0.75


def test_verdicts_and_a_few_failures_are_not_refused():
    refuse_failed_rollouts(ONE, stats([Invalid("judge reply has no JSON object")] * 4), 0.0, step=0)
    refuse_failed_rollouts(ONE, stats([unavailable("timeout after 3 attempts"), 1.0, 2.0]), 0.5, step=0)
    refuse_failed_rollouts(ONE, stats([]), 0.0, step=0)
    with pytest.raises(RunRefused, match="1 of 3"):
        refuse_failed_rollouts(ONE, stats([unavailable("timeout after 3 attempts"), 1.0, 2.0]), 0.0, step=0)


def test_the_counts_are_summed_over_processes(monkeypatch):
    parts = [stats([unavailable("timeout after 3 attempts"), 1.0]) | {"rollout/dialogues": 2.0},
             stats([1.0, 2.0]) | {"rollout/dialogues": 2.0}]
    monkeypatch.setattr("rlhf.trainers.online_update.gather_object", lambda _: parts)
    merged = merged_rollout_metrics(SimpleNamespace(num_processes=2), parts[0])
    assert (merged["rollout/failed"], merged["rollout/scored"]) == (1, 4)


def test_an_evaluation_of_mostly_failed_scores_is_refused_and_one_of_verdicts_is_not():
    from rlhf.eval.reward_eval import refuse_unscored

    with pytest.raises(RunRefused, match=r"evaluation: 2 of 3 scores failed, more than half.*\"HTTP 500\": 2"):
        refuse_unscored(["user simulator failed: HTTP 500 after 3 attempts", None,
                         "user simulator failed: HTTP 500 after 3 attempts"], "evaluation")
    refuse_unscored(["judge reply has no JSON object"] * 3, "evaluation")  # verdicts: a result, reported
    refuse_unscored([unavailable("timeout after 3 attempts").reason, None], "evaluation")  # half is not more
