"""data/twenty_questions/subset/ is what `python -m rlhf.tasks.twenty_questions_subset` writes, and its random
asker's games are games of that knowledge base: each answer is the oracle's, a game stops at a correct guess."""

import json
from pathlib import Path

from rlhf.tasks.twenty_questions import DATA_DIR, YES
from rlhf.tasks.twenty_questions_kb import KnowledgeBaseOracle
from rlhf.tasks.twenty_questions_subset import NUM_OBJECTS, NUM_TURNS, write_random_games, write_subset

BUNDLED = DATA_DIR / "twenty_questions" / "subset"


def test_the_bundled_subset_is_what_the_module_writes(tmp_path):
    files = write_subset(tmp_path)
    write_random_games(files, tmp_path / "random_games.jsonl")
    for name in ("objects.json", "attributes.json", "eval_games.json", "random_games.jsonl"):
        assert (tmp_path / name).read_bytes() == (BUNDLED / name).read_bytes(), name


def test_the_random_games_are_games_of_its_knowledge_base():
    oracle = KnowledgeBaseOracle(BUNDLED / "objects.json", BUNDLED / "attributes.json")
    assert len(oracle.objects) == NUM_OBJECTS
    games = [json.loads(line)["messages"] for line in Path(BUNDLED / "random_games.jsonl").read_text().splitlines()]
    for k, messages in enumerate(games):
        secret = oracle.objects[k % len(oracle.objects)]
        questions = messages[1::2]
        assert 1 <= len(questions) <= NUM_TURNS and messages[0]["role"] == "user"
        for question, answer in zip(questions, messages[2::2]):
            assert answer["content"] == oracle.answer(question["content"], secret)
        won = [q for q, a in zip(questions, messages[2::2]) if a["content"] == YES and q["content"] == f"Is it a {secret}?"]
        assert not won  # a correct guess ends the game, with the guess as its last turn
    assert any(messages[-1]["content"] == f"Is it a {oracle.objects[k % NUM_OBJECTS]}?" for k, messages in enumerate(games))
