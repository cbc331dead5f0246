"""Builds the bundled synthetic datasets in this folder (deterministic; rerun to regenerate).

preferences_{train,eval}.jsonl: single-turn preference pairs. The chosen reply uses words of the D2PO
"bag of words" gold function (conf/reward/bag_of_words.yaml), the rejected reply uses none of them; both
have similar lengths, so the gold reward, not length, separates them.
dialogues_{train,eval}.jsonl: multi-turn conversations (2-3 assistant turns) in the same style, for SFT.

    python data/synthetic/build.py
"""

import json
import random
from pathlib import Path

BOW_WORDS = (
    "data hope information provide example your however first have help additionally important include "
    "finally following happy code two create question possible understand generate contains appropriate "
    "best respectful ensure experience safe"
).split()
TOPICS = (
    "garden river computer bicycle kitchen library violin mountain camera window forest bridge ocean "
    "lantern market teacher museum island rocket castle desert village engine planet harbor meadow "
    "painting tunnel festival recipe"
).split()
FILLER = (
    "the a it is was thing there some maybe not no just very old big small red blue dog cat ran sat "
    "went stone tree road box door wall blah hmm okay so then also near far up down"
).split()
PROMPTS = (
    "Tell me about the {t}.",
    "How do I take care of a {t}?",
    "What is a {t} for?",
    "Write a short note on the {t}.",
    "Can you explain the {t} to me?",
    "Why would someone want a {t}?",
)
FOLLOW_UPS = ("Tell me more.", "Why is that?", "Can you give another detail?", "And then what?")


def _reply(rng: random.Random, topic: str, good: bool) -> str:
    words = [topic]
    for _ in range(rng.randint(9, 14)):
        words.append(rng.choice(BOW_WORDS) if good and rng.random() < 0.7 else rng.choice(FILLER))
    rng.shuffle(words)
    return " ".join(words).capitalize() + "."


def preferences(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for _ in range(n):
        topic = rng.choice(TOPICS)
        prompt = [{"role": "user", "content": rng.choice(PROMPTS).format(t=topic)}]
        rows.append({"prompt": prompt, "chosen": _reply(rng, topic, True), "rejected": _reply(rng, topic, False)})
    return rows


def dialogues(rng: random.Random, n: int) -> list[dict]:
    rows = []
    for _ in range(n):
        topic = rng.choice(TOPICS)
        messages = [{"role": "user", "content": rng.choice(PROMPTS).format(t=topic)}]
        for turn in range(rng.randint(2, 3)):
            if turn:
                messages.append({"role": "user", "content": rng.choice(FOLLOW_UPS)})
            messages.append({"role": "assistant", "content": _reply(rng, topic, True)})
        rows.append({"messages": messages})
    return rows


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    here = Path(__file__).parent
    rng = random.Random(1234)
    write(here / "preferences_train.jsonl", preferences(rng, 2000))
    write(here / "preferences_eval.jsonl", preferences(rng, 200))
    write(here / "dialogues_train.jsonl", dialogues(rng, 500))
    write(here / "dialogues_eval.jsonl", dialogues(rng, 50))
