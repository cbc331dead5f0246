"""`eval=win_rate` and `eval=games`: per-turn win rates of a policy against a baseline on the same prefixes, with fake policies
whose replies are known, judged by a gold function turned into a preference (word count); 20 Questions games of scripted askers
against the exact oracle."""

import json
import math
from types import SimpleNamespace

import pytest

from rlhf.atomic import RunRefused
from rlhf.backends.base import Completion
from rlhf.eval.games import Games, mcnemar_exact
from rlhf.eval.win_rate import WinRatePerTurn, preferences, rate
from rlhf.rewards.base import Invalid
from rlhf.rewards.gold import BagOfWords, Length
from rlhf.rewards.pluralistic import GroupGold
from rlhf.rewards.twenty_questions import Guessed
from rlhf.tasks.twenty_questions import DATA_DIR
from rlhf.tasks.twenty_questions_task import TwentyQuestionsTask
from rlhf.users.base import UserTurn
from rlhf.users.dataset import DatasetUser
from rlhf.users.oracle import TwentyQuestionsOracle

OBJECTS, ATTRIBUTES = DATA_DIR / "twenty_questions" / "objects.json", DATA_DIR / "twenty_questions" / "attributes.json"


class Scripted:
    """A backend whose reply depends only on the turn: `replies[k]` at the policy's turn k + 1."""

    def __init__(self, replies: list[str]):
        self.replies, self.seeds = replies, []

    def generate(self, conversations, num_samples=1, seed=None):
        self.seeds.append(seed)
        turn = [sum(m["role"] == "assistant" for m in c) for c in conversations]
        return [[Completion(self.replies[t], [1, 2], "stop")] * num_samples for t in turn]


class Task:
    """Three held-out dialogues: two go on for three turns, the third stops after one (no user turn left)."""

    name, max_turns, reply_to_last = "scripted", 3, False

    def eval_openings(self):
        fields = [{"user_turns": ["a", "b"], "group_id": 0}, {"user_turns": ["c", "d"], "group_id": 1},
                  {"user_turns": [], "group_id": 1}]
        return [[{"role": "user", "content": f"hi {i}"}] for i in range(3)], fields

    def done(self, conversation, fields):
        return False


def policies():
    # the policy says more than the baseline at turn 2 only, as much at turn 3, less at turn 1
    backends = {"policy": Scripted(["x", "three words here", "two words"]),
                "baseline": Scripted(["two words", "two words", "two words"])}
    models = {name: SimpleNamespace(model=name, tokenizer=None, path=name) for name in backends}
    return backends, models, lambda model, tokenizer: backends[model]


def test_a_policy_that_wins_at_turn_two_only(tmp_path):
    backends, models, factory = policies()
    evaluation = WinRatePerTurn(models["baseline"], by="group_id")
    result = evaluation(lambda: models["policy"], Task(), Length(), factory, DatasetUser(), str(tmp_path), seed=3)
    turns = result["per_turn"]
    # turn 1: three dialogues, all lost; turns 2 and 3: the two dialogues that go on, won and then tied
    assert [(p["n"], p["wins"], p["ties"], p["losses"]) for p in turns] == [(3, 0, 0, 3), (2, 2, 0, 0), (2, 0, 2, 0)]
    assert [p["win_rate"] for p in turns] == [0.0, 1.0, 0.5]
    assert turns[2]["stderr"] == pytest.approx(math.sqrt(0.25 / 2))
    assert result["win_rate"] == pytest.approx(0.5)
    assert result["win_rate_stderr"] == pytest.approx(math.sqrt(0 + 0 + 0.125) / 3)
    assert turns[0]["group_id=1"]["n"] == 2 and turns[1]["group_id=0"]["win_rate"] == 1.0
    assert (result["win_rate/h=2"], result["win_rate/group_id=1"]) == (1.0, 0.5)
    # both sides answer each turn under the same seed
    assert backends["policy"].seeds == [3001, 3002, 3003] and backends["baseline"].seeds[-3:] == [3001, 3002, 3003]
    table = (tmp_path / "eval.md").read_text()
    assert "| policy | h=1 | h=2 | H=3 | avg |" in table
    assert "| policy | 0.0 ± 0.0 | 100.0 ± 0.0 | 50.0 ± 35.4 | 50.0 ± 11.8 |" in table
    assert "| group_id=1 | 0.0 ± 0.0 | 100.0 ± 0.0 | 50.0 ± 50.0 |  |" in table
    compared = [json.loads(line) for line in (tmp_path / "comparisons.jsonl").read_text().splitlines()]
    second = [c for c in compared if c["turn"] == 2]
    # turn 2's prefix is the baseline's first turn and the user's reply
    assert second[0]["prefix"] == [{"role": "user", "content": "hi 0"}, {"role": "assistant", "content": "two words"},
                                   {"role": "user", "content": "a"}]
    assert (second[0]["policy"], second[0]["baseline"], second[0]["outcome"]) == ("three words here", "two words", 1.0)
    png = (tmp_path / "win_rate.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000


class FlakyUser(DatasetUser):
    """The dataset's user turns, except that the simulator fails in the dialogues whose opening is in `fails`."""

    def __init__(self, fails: set[str]):
        super().__init__()
        self.fails = fails

    def respond(self, conversations, fields, seed=None):
        replies = super().respond(conversations, fields, seed)
        return [UserTurn.failed("HTTP 503 after 3 attempts") if c[0]["content"] in self.fails else r
                for c, r in zip(conversations, replies)]


def test_a_dialogue_whose_user_failed_is_left_out_at_every_turn(tmp_path):
    _, models, factory = policies()
    evaluation = WinRatePerTurn(models["baseline"])
    result = evaluation(lambda: models["policy"], Task(), Length(), factory, FlakyUser({"hi 1"}), str(tmp_path), seed=3)
    # dialogue 1 failed after its first turn: not at turn 1 either, so every turn compares the same dialogues
    assert [p["n"] for p in result["per_turn"]] == [2, 1, 1] and result["failed_prefixes"] == 1
    assert {c["dialogue"] for c in map(json.loads, (tmp_path / "comparisons.jsonl").read_text().splitlines())} == {0, 2}
    played = [json.loads(line) for line in (tmp_path / "prefixes.jsonl").read_text().splitlines()]
    assert [d["end"] for d in played] == ["max_turns", "failed", "user"]
    assert "1 dialogues left out: their user simulator failed" in (tmp_path / "eval.md").read_text()


def test_an_evaluation_whose_user_simulator_is_down_is_refused_before_judging(tmp_path):
    backends, models, factory = policies()
    with pytest.raises(RunRefused, match=r"win-rate evaluation's prefixes: 2 of 3 scores failed, more than half"):
        WinRatePerTurn(models["baseline"])(lambda: models["policy"], Task(), Length(), factory,
                                           FlakyUser({"hi 0", "hi 1"}), str(tmp_path), seed=3)
    assert backends["policy"].seeds == []  # nothing was judged
    assert len((tmp_path / "prefixes.jsonl").read_text().splitlines()) == 3  # the baseline's dialogues are kept


def test_preferences_from_scores_and_undecided_outcomes():
    prefix = [{"role": "user", "content": "q"}]
    outcomes, parts = preferences(Length(), [prefix] * 3, ["a b", "a", "   "], ["a", "a", "a"], [{}] * 3)
    assert parts == {}
    assert outcomes[:2] == [1.0, 0.5] and isinstance(outcomes[2], Invalid)
    assert rate(outcomes) == {"win_rate": 0.75, "stderr": pytest.approx(math.sqrt(0.75 * 0.25 / 2)), "n": 2,
                              "wins": 1, "ties": 1, "losses": 0, "invalid": 1}


def test_a_missing_breakdown_field_is_named(tmp_path):
    _, models, factory = policies()
    with pytest.raises(ValueError, match="eval.by='topic': held-out dialogue 0 of task 'scripted' has no such field"):
        WinRatePerTurn(models["baseline"], by="topic")(lambda: models["policy"], Task(), Length(), factory,
                                                      DatasetUser(), str(tmp_path), seed=0)


# ---- eval=games -----------------------------------------------------------------------------------------


def test_mcnemar_exact_p_values():
    # 5 discordant games all won by one side: 2 * 0.5^5; 3 vs 1: 2 * (1 + 4) / 16; none: 1
    assert mcnemar_exact(5, 0) == pytest.approx(2 / 32)
    assert mcnemar_exact(1, 3) == pytest.approx(10 / 16)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(4, 4) == 1.0


def test_games_of_a_policy_that_guesses_one_object_against_one_that_guesses_another(tmp_path):
    # held-out games hide Screwdriver, Cow, Lion, Battery: the policy asks one question, then guesses a
    # screwdriver; the baseline guesses a cow at once and then asks the same invalid question over and over
    task = TwentyQuestionsTask(num_eval_prompts=4, max_turns=3)
    assert task.eval_objects[:4] == ["Screwdriver", "Cow", "Lion", "Battery"]
    backends = {"policy": Scripted(["Is it alive?", "Is it a screwdriver?", "Is it a lion?"]),
                "baseline": Scripted(["Is it a cow?", "What?", "What?"])}
    models = {name: SimpleNamespace(model=name, tokenizer=None, path=name) for name in backends}
    oracle = TwentyQuestionsOracle(OBJECTS, ATTRIBUTES)
    result = Games(models["baseline"])(lambda: models["policy"], task, Guessed(OBJECTS, ATTRIBUTES),
                                       lambda model, tokenizer: backends[model], oracle, str(tmp_path), seed=0)
    # policy: Screwdriver in 2 questions, Lion in 3, Cow and Battery lost (3 questions each)
    assert result["policy"]["success"] == 0.5 and result["policy"]["questions_to_success"] == 2.5
    assert result["policy"]["return"] == pytest.approx((-1 - 2 - 3 - 3) / 4)
    # baseline: Cow at the first question, the rest lost
    assert result["baseline"]["success"] == 0.25 and result["baseline"]["questions_to_success"] == 1.0
    assert (result["only_policy_won"], result["only_baseline_won"]) == (2, 1)
    assert result["mcnemar_p"] == pytest.approx(1.0)  # 2 * (1 + 3) / 8, capped at 1
    table = (tmp_path / "eval.md").read_text()
    assert "| policy | 4 | 0.500 ± 0.289 | 2.500 ± 0.500 | -2.250 ± 0.479 |" in table
    assert "won only by the policy 2, only by the baseline 1; McNemar exact p = 1.0000" in table
    assert len((tmp_path / "games.jsonl").read_text().splitlines()) == 8
    assert (tmp_path / "games.png").read_bytes().startswith(b"\x89PNG")


def test_a_pluralistic_gold_judges_under_every_group(tmp_path):
    # group 0 likes "red", group 1 "near": the policy says "red" where the baseline says "near"
    gold = GroupGold({"colour": BagOfWords(words=["red"]), "place": BagOfWords(words=["near"])},
                     [{"colour": 1.0}, {"place": 1.0}])
    backends = {"policy": Scripted(["red"]), "baseline": Scripted(["near"])}
    models = {name: SimpleNamespace(model=name, tokenizer=None, path=name) for name in backends}
    task = Task()
    task.max_turns = 1
    result = WinRatePerTurn(models["baseline"])(lambda: models["policy"], task, gold,
                                                lambda model, tokenizer: backends[model], DatasetUser(), str(tmp_path), 0)
    (turn,) = result["per_turn"]
    # overall, each dialogue is judged under its own group_id (one of group 0, two of group 1)
    assert (turn["group_0"]["win_rate"], turn["group_1"]["win_rate"], turn["win_rate"]) == (1.0, 0.0, 1 / 3)
    assert (result["win_rate/group_0"], result["win_rate/group_1"]) == (1.0, 0.0)
    assert "| group_0 | 100.0 ± 0.0 |  |" in (tmp_path / "eval.md").read_text()
