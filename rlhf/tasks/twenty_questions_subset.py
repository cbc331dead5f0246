"""A Twenty Questions game small enough for the tiny model: the first object of each of the first categories
(so a 1024-token vocabulary spells them), the benchmark's evaluation games of those objects, and games of a
random asker to start a policy from (SFT), as the CPU twins and bench/online_learning_check.py play it.

    python -m rlhf.tasks.twenty_questions_subset data/twenty_questions/subset

writes objects.json, attributes.json, eval_games.json and random_games.jsonl there; the bundled
data/twenty_questions/subset/ is that command's output with the defaults below.
"""

import json
import random
import sys
from pathlib import Path

from rlhf.tasks.twenty_questions import OBJECTS_PATH, YES
from rlhf.tasks.twenty_questions_kb import ATTRIBUTES_PATH, KnowledgeBaseOracle
from rlhf.tasks.twenty_questions_task import EVAL_GAMES_PATH, OPENING

NUM_OBJECTS, NUM_GAMES, NUM_TURNS = 10, 400, 5


def write_subset(out: Path, num_objects: int = NUM_OBJECTS) -> dict[str, Path]:
    """The game on `num_objects` objects: its objects, attributes and evaluation games files in `out`."""
    categories = json.loads(Path(OBJECTS_PATH).read_text())
    kept = dict(list((category, words[:1]) for category, words in categories.items())[:num_objects])
    names = {words[0][0] for words in kept.values()}
    attributes = json.loads(Path(ATTRIBUTES_PATH).read_text())
    attributes["objects"] = {k: v for k, v in attributes["objects"].items() if k in names}
    games = [g for g in json.loads(Path(EVAL_GAMES_PATH).read_text()) if g["word"][0] in names]
    out.mkdir(parents=True, exist_ok=True)
    files = {"objects": out / "objects.json", "attributes": out / "attributes.json", "games": out / "eval_games.json"}
    for key, value in (("objects", kept), ("attributes", attributes), ("games", games)):
        files[key].write_text(json.dumps(value, indent=1) + "\n")
    return files


def write_random_games(files: dict[str, Path], path: Path, num_games: int = NUM_GAMES, num_turns: int = NUM_TURNS,
                       seed: int = 0) -> None:
    """`num_games` games of a random asker against the knowledge-base oracle of these objects: each turn an
    attribute question or a guess of an object not yet guessed, with equal chance, until a correct guess or
    `num_turns` questions; as conversations ending with the asker's turn (rows of `messages`)."""
    oracle = KnowledgeBaseOracle(files["objects"], files["attributes"])
    rng, rows = random.Random(seed), []
    for game in range(num_games):
        secret = oracle.objects[game % len(oracle.objects)]
        messages, guessed = [{"role": "user", "content": OPENING}], []
        for _ in range(num_turns):
            left = [o for o in oracle.objects if o not in guessed]
            if rng.random() < 0.5:
                question = rng.choice(list(oracle.questions.values()))
            else:
                guessed.append(rng.choice(left))
                question = f"Is it a {guessed[-1]}?"
            answer = oracle.answer(question, secret)
            messages += [{"role": "assistant", "content": question}, {"role": "user", "content": answer}]
            if question.startswith("Is it a ") and answer == YES and guessed and guessed[-1] == secret:
                break
        rows.append({"messages": messages[:-1]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    target = Path(sys.argv[1])
    write_random_games(write_subset(target), target / "random_games.jsonl")
