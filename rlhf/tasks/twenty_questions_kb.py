"""A knowledge-base oracle for Twenty Questions: exact yes/no answers without a language model.

LMRL-Gym answers the asker with a fine-tuned FLAN-T5 oracle; this stand-in answers from a hand-judged
table of boolean attributes (data/twenty_questions/attributes.json) so the game can be played, and an
asker tested, on CPU with answers that are exact and reproducible. It understands two kinds of question:

- a guess ("Is it a dog?"), recognised with the game's own `is_guess`: "Yes." if it names the secret
  (any accepted name), "No." if it names another object;
- an attribute question, matched against each attribute's canonical phrase and its alternative phrasings
  after normalisation (lower case, punctuation and the articles a/an/the dropped).

Anything else is "No.", as LMRL-Gym's oracle post-processing answers invalid questions. Category
attributes (one per category of objects.json) are the benchmark's own categories.
"""

import json
import math
from collections import Counter
from pathlib import Path

from rlhf.tasks.twenty_questions import (DATA_DIR, NO, OBJECTS_PATH, YES, is_guess, load_objects, normalize_answer,
                                         word_tokens)

ATTRIBUTES_PATH = DATA_DIR / "twenty_questions" / "attributes.json"
_ARTICLES = frozenset({"a", "an", "the"})


def normalize_question(text: str) -> str:
    """Question text reduced for phrase matching: lower-case word tokens without articles, space-joined,
    so "Is it an animal?" and "is it animal" match."""
    return " ".join(word for word in word_tokens(text) if word not in _ARTICLES)


class KnowledgeBaseOracle:
    """Answers Twenty Questions questions from the attribute table; also the set of objects still
    consistent with a game so far, and the exact information gain of a question."""

    def __init__(self, objects_path: str | Path = OBJECTS_PATH, attributes_path: str | Path = ATTRIBUTES_PATH):
        objects, categories = load_objects(objects_path)
        data = json.loads(Path(attributes_path).read_text())
        self.names: dict[str, list[str]] = {names[0]: names for names in objects}
        self.category: dict[str, str] = {names[0]: category for names, category in zip(objects, categories)}
        self.questions: dict[str, str] = data["questions"]
        self.attributes: dict[str, dict[str, bool]] = data["objects"]
        missing = set(self.names) ^ set(self.attributes)
        if missing:
            raise ValueError(f"objects and attributes disagree on: {sorted(missing)}")
        self._phrases: dict[str, str] = {}
        self._parsed: dict[str, tuple[str, str] | None] = {}  # parse is pure and is_guess is slow: cache it
        for key, question in self.questions.items():
            for phrase in [question, *data.get("alternatives", {}).get(key, [])]:
                previous = self._phrases.setdefault(normalize_question(phrase), key)
                if previous != key:
                    raise ValueError(f"phrase {phrase!r} belongs to both {previous!r} and {key!r}")

    @property
    def objects(self) -> list[str]:
        """Canonical names of all objects, in objects.json order."""
        return list(self.names)

    def parse(self, question: str) -> tuple[str, str] | None:
        """("guess", canonical name) for a guess, ("attribute", key) for a known attribute phrasing, None
        for anything else. A question that guesses several objects is reported as the first; `answer`
        checks the secret's names first, so such a question is still "Yes." for each of them."""
        if question not in self._parsed:
            guess = next((obj for obj, names in self.names.items() if is_guess(question, names)), None)
            key = self._phrases.get(normalize_question(question))
            self._parsed[question] = ("guess", guess) if guess else ("attribute", key) if key else None
        return self._parsed[question]

    def answer(self, question: str, secret: str) -> str:
        """The oracle's reply, "Yes." or "No.", to `question` when the hidden object is `secret`
        (a canonical name)."""
        parsed = self.parse(question)
        if parsed is None:
            return NO
        if parsed[0] == "guess":
            return YES if parsed[1] == secret or is_guess(question, self.names[secret]) else NO
        return YES if self.attributes[secret][parsed[1]] else NO

    def candidates(self, history: list[tuple[str, str]]) -> list[str]:
        """The objects for which this oracle would have given every answer in `history` (pairs of
        question and answer; answers are normalised with `normalize_answer`)."""
        replies = [(question, normalize_answer(answer)) for question, answer in history]
        return [obj for obj in self.names if all(self.answer(q, obj) == a for q, a in replies)]

    def information_gain(self, question: str, candidates: list[str]) -> float:
        """Expected reduction, in bits, of the entropy of the hidden object by asking `question`.

        Exact under a uniform prior over `candidates` (the posterior of a uniform prior given a history is
        uniform over the consistent objects, since the oracle is deterministic): log2(n) minus the expected
        log2 of the size of the group that shares the secret's answer. A guess of a candidate splits it
        1 / n-1, so it is worth the chance of being right; an unparseable question splits nothing and
        gains 0.
        """
        n = len(candidates)
        if n <= 1:
            return 0.0
        groups = Counter(self.answer(question, obj) for obj in candidates)
        return math.log2(n) - sum(size / n * math.log2(size) for size in groups.values())
