"""eval=games: a game whose user simulator failed is neither won nor lost, on either side; a run of mostly such
games is refused, with the games written."""

import json
from functools import partial

import pytest

from rlhf.atomic import RunRefused
from rlhf.backends.hf import HFBackend
from rlhf.eval.games import Games
from rlhf.models.policy import load_policy
from rlhf.rewards.twenty_questions import Guessed
from rlhf.tasks.twenty_questions_task import TwentyQuestionsTask
from rlhf.users.base import UserTurn
from rlhf.users.oracle import TwentyQuestionsOracle


class FailingFor(TwentyQuestionsOracle):
    """The oracle, except that it fails (as a down endpoint does) in the games of these objects."""

    def __init__(self, objects):
        super().__init__()
        self.objects = set(objects)

    def respond(self, conversations, fields, seed=None):
        answers = super().respond(conversations, fields, seed)
        return [UserTurn.failed("HTTP 500 after 3 attempts") if f["object"] in self.objects else a
                for a, f in zip(answers, fields)]


@pytest.fixture(scope="module")
def policy(tiny_path):
    return load_policy(tiny_path)


def play(policy, tmp_path, failing):
    task = TwentyQuestionsTask(max_turns=2, num_eval_prompts=3)
    user = FailingFor(task.eval_objects[i] for i in failing)
    backend = partial(HFBackend, max_new_tokens=6, min_new_tokens=1)
    return task, Games(policy)(lambda: policy, task, Guessed(), backend, user, str(tmp_path), seed=0)


def test_a_failed_game_is_left_out_on_both_sides(policy, tmp_path):
    task, result = play(policy, tmp_path, failing=[1])
    assert result["failed_games"] == 1
    assert result["policy"]["games"] == result["baseline"]["games"] == 2
    games = [json.loads(line) for line in (tmp_path / "games.jsonl").read_text().splitlines()]
    assert len(games) == 6 and sum(g["end"] == "failed" for g in games) == 2  # written, as played
    assert "1 games left out on both sides (user simulator failed)" in (tmp_path / "eval.md").read_text()


def test_mostly_failed_games_are_refused_with_the_games_written(policy, tmp_path):
    with pytest.raises(RunRefused, match=r"games of the policy: 2 of 3 scores failed, more than half"):
        play(policy, tmp_path, failing=[0, 2])
    assert len((tmp_path / "games.jsonl").read_text().splitlines()) == 6
    assert not (tmp_path / "eval.json").exists()
