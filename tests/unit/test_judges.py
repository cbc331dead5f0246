"""LLM judges against the fake chat server (JSON, fenced JSON, prose and retries, out-of-range scores, the
combine rule, position-swapped pairwise verdicts), and once end to end on the tiny local model."""

import json
import re

import pytest
from hydra import compose, initialize_config_dir

from rlhf.config import CONF_DIR, build
from rlhf.eval.views import scored
from rlhf.rewards.base import Invalid, score_checked
from rlhf.rewards.judge import PairwiseJudge, PointwiseJudge, parse_scores
from rlhf.rollout.engine import marked_failure
from tests.fake_chat_server import Reply, Status, last_content

GAMES = [
    [{"role": "user", "content": "Let's play 20 questions!"}, {"role": "assistant", "content": "Is it alive?"},
     {"role": "user", "content": "Yes."}, {"role": "assistant", "content": f"Is it a {guess}?"}]
    for guess in ("cat", "dog", "tree")
]
FIELDS = [{"object": "cat", "names": ["cat"]}] * 3


def reward_config(option: str, overrides: list[str]):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("eval", [f"reward={option}", *overrides]).reward


def api_judge(server, tmp_path, option: str, extra: tuple[str, ...] = ()):
    overrides = [f"reward.client.base_url={server.base_url}", f"reward.client.cache_dir={tmp_path / 'chat'}",
                 "++reward.client.max_retries=0", *extra]
    return build(reward_config(option, overrides))


def judge_20q_reply(body: dict, seen: int):
    """A judge that reads the game: accuracy 1 for the right guess, else 0."""
    prompt = last_content(body)
    right = "The object: cat" in prompt and "Is it a cat?" in prompt
    return Reply(json.dumps({"thought": "fine", "interactivity": 0.5, "accuracy": 1 if right else 0,
                             "information_gain": 0.25}))


def test_20q_judge_scores_from_the_json_reply(chat_server, tmp_path):
    chat_server.script = judge_20q_reply
    judge = api_judge(chat_server, tmp_path, "judge_20q")
    assert isinstance(judge, PointwiseJudge)
    # default combine: 2 * information_gain + accuracy
    assert judge.score(GAMES[:2], FIELDS[:2]) == [2 * 0.25 + 1, 2 * 0.25 + 0]
    assert judge.rate(GAMES[:1], FIELDS[:1]) == [{"interactivity": 0.5, "accuracy": 1.0, "information_gain": 0.25}]
    # requests go out concurrently, so the server may have seen the two games in either order
    prompts = [last_content(body) for body in chat_server.bodies]
    assert any("The object: cat" in p and "### assistant: Is it a cat?" in p for p in prompts)
    assert all(body["model"] == "gpt-4o-mini" and body["temperature"] == 0.2 for body in chat_server.bodies)


def test_fenced_json_with_prose_around_it_is_read(chat_server, tmp_path):
    chat_server.script = lambda body, seen: Reply(
        'Here is my verdict.\n```json\n{"thought": "asks {well}", "interactivity": 0.75}\n```\nLet me know!')
    judge = api_judge(chat_server, tmp_path, "judge_interactivity")
    assert judge.score([GAMES[0]]) == [0.75]
    prompt = last_content(chat_server.bodies[0])
    assert "The conversation so far:\n### user: Let's play 20 questions!" in prompt
    assert "The assistant's reply:\nIs it a cat?" in prompt and "### assistant: Is it a cat?" not in prompt


def test_prose_is_asked_again_then_invalid(chat_server, tmp_path):
    chat_server.script = lambda body, seen: Reply("The assistant did well, I would say quite interactive.")
    judge = api_judge(chat_server, tmp_path, "judge_interactivity")
    assert judge.score([GAMES[0]]) == [Invalid("judge reply has no JSON object")]
    assert chat_server.count == 3  # max_attempts (default 3), each a new sample
    chat_server.script = lambda body, seen: Reply("Good." if seen == 0 else '{"interactivity": 1}')
    assert api_judge(chat_server, tmp_path, "judge_interactivity").score([GAMES[1]]) == [1.0]


@pytest.mark.parametrize("reply, reason", [
    ({"interactivity": 7, "accuracy": 1, "information_gain": 0}, "judge score interactivity=7 outside [0, 1]"),
    ({"interactivity": 0.5, "accuracy": -0.1, "information_gain": 0}, "judge score accuracy=-0.1 outside [0, 1]"),
    ({"interactivity": 0.5, "information_gain": 0}, "judge reply has no 'accuracy' score"),
    ({"interactivity": 0.5, "accuracy": "high", "information_gain": 0}, "judge score accuracy='high' is not a number"),
    ({"interactivity": 0.5, "accuracy": True, "information_gain": 0}, "judge score accuracy=True is not a number"),
])
def test_invalid_scores_are_retried_then_reported(chat_server, tmp_path, reply, reason):
    chat_server.script = lambda body, seen: Reply(json.dumps(reply))
    judge = api_judge(chat_server, tmp_path, "judge_20q", ("++reward.max_attempts=2",))
    assert judge.score([GAMES[0]], [FIELDS[0]]) == [Invalid(reason)]
    assert chat_server.count == 2


def test_transport_failure_is_invalid_and_the_rest_is_scored(chat_server, tmp_path):
    chat_server.script = lambda body, seen: (Status(503, "busy") if "Is it a dog?" in last_content(body)
                                             else judge_20q_reply(body, seen))
    judge = api_judge(chat_server, tmp_path, "judge_20q")
    games = [*GAMES[:2], [*GAMES[2][:3], {"role": "assistant", "content": "  "}]]
    scores = score_checked(judge, games, FIELDS)
    assert scores == [1.5, Invalid("reward unavailable: HTTP 503 after 1 attempt: busy"), Invalid("empty response")]
    assert chat_server.count == 2  # the empty response never reached the judge
    assert [marked_failure(s.reason) for s in scores[1:]] == ["reward HTTP 503", None]  # a failure, not a verdict


def test_pairwise_transport_failure_is_unavailable_not_a_tie(chat_server, tmp_path):
    chat_server.script = lambda body, seen: (Status(500, "down") if "C" in positions(last_content(body))
                                             else Reply('{"winner": 1}'))
    judge = api_judge(chat_server, tmp_path, "judge_pairwise", ("++reward.client.max_retries=0",))
    a_wins, failed = judge.compare(PREFIXES[:2], ["A", "C"], ["B", "D"])
    assert a_wins == 0.5 and failed == Invalid("reward unavailable: HTTP 500 after 1 attempt: down")


def test_combine_is_an_affine_map_of_the_keys(chat_server, tmp_path):
    # The fork's evaluation rescale (x - 2.5) * 2 of interactivity, plus accuracy: 2 * 0.5 - 5 + 1 = -3.
    chat_server.script = judge_20q_reply
    judge = api_judge(chat_server, tmp_path, "judge_20q", (
        "reward.weights.information_gain=0", "+reward.weights.interactivity=2", "++reward.bias=-5"))
    assert judge.score([GAMES[0]], [FIELDS[0]]) == [pytest.approx(-3.0)]


def test_parse_scores_takes_the_first_object_and_any_range():
    assert parse_scores('{"a": 4} and {"a": 1}', ["a"], 1, 5) == {"a": 4.0}
    with pytest.raises(ValueError, match=r"judge score a=nan outside \[1, 5\]"):
        parse_scores('{"a": NaN}', ["a"], 1, 5)


def test_bad_judge_settings_name_the_key():
    with pytest.raises(ValueError, match=r"reward.weights names \['accuracy'\], which are not in reward.keys"):
        PointwiseJudge("{response}", ["interactivity"], {"accuracy": 1.0}, client={"base_url": "http://x", "model": "m"})
    with pytest.raises(ValueError, match="set exactly one of reward.client"):
        PointwiseJudge("{response}", ["a"], {"a": 1.0})
    with pytest.raises(ValueError, match=r"reward.score_range=\[1, 1\]"):
        PointwiseJudge("{response}", ["a"], {"a": 1.0}, score_range=(1, 1), client={"base_url": "http://x", "model": "m"})


def test_missing_field_names_the_placeholder_and_conversation(chat_server, tmp_path):
    judge = api_judge(chat_server, tmp_path, "judge_20q")
    with pytest.raises(ValueError, match=r"\{object\} has no value for reward.template in conversation 1"):
        judge.score(GAMES[:2], [FIELDS[0], {"names": ["cat"]}])


# ---- pairwise ---------------------------------------------------------------------------------------------


def positions(prompt: str) -> tuple[str, str]:
    first, second = re.search(r"Reply 1:\n(.*)\n\nReply 2:\n(.*)\n\nWhich", prompt, re.DOTALL).groups()
    return first, second


def fair_judge(body: dict, seen: int):
    """Prefers the reply that says "good", wherever it is shown."""
    first, second = positions(last_content(body))
    winner = "tie" if ("good" in first) == ("good" in second) else 1 if "good" in first else 2
    return Reply(json.dumps({"thought": "content", "winner": winner}))


PREFIXES = [[{"role": "user", "content": f"Question {i}?"}] for i in range(4)]


def test_pairwise_consistent_verdicts_win_or_lose(chat_server, tmp_path):
    chat_server.script = fair_judge
    judge = api_judge(chat_server, tmp_path, "judge_pairwise")
    assert isinstance(judge, PairwiseJudge)
    results = judge.compare(PREFIXES[:3], ["good a", "bad a", "good a"], ["bad b", "good b", "good b"])
    assert results == [1.0, 0.0, 0.5]
    shown = sorted(positions(last_content(b)) for b in chat_server.bodies)
    assert shown == sorted([("good a", "bad b"), ("bad b", "good a"), ("bad a", "good b"), ("good b", "bad a"),
                            ("good a", "good b"), ("good b", "good a")])  # each pair in both orders
    assert any("### user: Question 0?" in last_content(b) for b in chat_server.bodies)


@pytest.mark.parametrize("verdict, expected", [
    (lambda first, second: 1, 0.5),  # always the first position: inconsistent, a tie
    (lambda first, second: 2, 0.5),
    (lambda first, second: 1 if first == "A" else "tie", 0.5),  # a win one way, a tie the other
    (lambda first, second: "2" if first == "A" else "1", 0.0),  # string positions are read too
])
def test_pairwise_position_bias_is_a_tie(chat_server, tmp_path, verdict, expected):
    chat_server.script = lambda body, seen: Reply(json.dumps({"winner": verdict(*positions(last_content(body)))}))
    judge = api_judge(chat_server, tmp_path, "judge_pairwise")
    assert judge.compare(PREFIXES[:1], ["A"], ["B"]) == [expected]


def test_pairwise_unreadable_verdict_is_invalid(chat_server, tmp_path):
    chat_server.script = lambda body, seen: Reply('{"winner": 3}' if "A" == positions(last_content(body))[0]
                                                  else '{"winner": 1}')
    judge = api_judge(chat_server, tmp_path, "judge_pairwise", ("++reward.max_attempts=1",))
    assert judge.compare(PREFIXES[:2], ["A", "C"], ["B", "D"]) == [Invalid("judge winner=3 is not 1, 2 or 'tie'"), 0.5]


def test_pairwise_reward_compares_with_the_reference_field(chat_server, tmp_path):
    chat_server.script = fair_judge
    judge = api_judge(chat_server, tmp_path, "judge_pairwise")
    conversations = [[*p, {"role": "assistant", "content": r}] for p, r in zip(PREFIXES, ["good", "bad", "bad"])]
    fields = [{"reference": "bad ref"}, {"reference": "good ref"}, {"reference": "bad ref"}]
    assert score_checked(judge, conversations[:3], fields) == [1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="`reference` field, which conversation 1 lacks"):
        judge.score(conversations[:2], [{"reference": "x"}, {}])


# ---- the local transport ------------------------------------------------------------------------------------


def test_local_judge_runs_end_to_end_on_the_tiny_model(tiny_path):
    cfg = reward_config("judge_interactivity", [
        "~reward.client", f"+reward.local.path={tiny_path}", "+reward.local.max_new_tokens=8",
        "+reward.local.temperature=0", "++reward.max_attempts=2"])
    judge = build(cfg)
    scores = judge.score(GAMES[:2])
    # A random tiny model writes no JSON: each conversation is Invalid with the reason, after both attempts.
    assert scores == [Invalid("judge reply has no JSON object")] * 2
    assert judge.chat.backend.calls == 2


def test_an_evaluation_keeps_each_score_of_the_judge(chat_server, tmp_path):
    chat_server.script = judge_20q_reply
    judge = api_judge(chat_server, tmp_path, "judge_20q")
    empty = GAMES[2][:-1] + [{"role": "assistant", "content": "  "}]
    main, parts, what = scored(judge, [GAMES[0], GAMES[1], empty], FIELDS)
    assert main[:2] == [2 * 0.25 + 1, 2 * 0.25 + 0] and main[2] == Invalid("empty response")
    assert parts["judge/accuracy"][:2] == [1.0, 0.0] and parts["judge/interactivity"][:2] == [0.5, 0.5]
    assert parts["judge/information_gain"][2] == Invalid("empty response")
    assert what == "the judge's weighted scores" and len(chat_server.bodies) == 2  # the empty reply is not asked
