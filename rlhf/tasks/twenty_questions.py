"""Twenty Questions game logic of LMRL-Gym (Abdulhai et al. 2023), without any model.

Source: `abdulhaim/LMRL-Gym` @ 911d726b, `llm_rl_scripts/twenty_questions/env/{env.py, data.py}`
(reference/methods.md, section 5.1). An asker asks yes/no questions about a hidden object; the oracle
answers exactly "Yes." or "No."; the game ends when the object is guessed or after 20 questions; every
question costs -1 except the one that guesses the object, which earns 0 (so a return lies in [-20, 0]).

Deliberate deviation: LMRL-Gym's `is_done` POS-tags the question with nltk (whose tagger data cannot be
fetched here) and rejects a guess that contains any other noun. `is_guess` below is a rule-based stand-in:
the words before the object's name must all come from a fixed list of function words and question frames.
It is stricter than the tagger where the tagger misses a noun, e.g. "Is it a dish or bowl?" (counted as a
guess of Bowl by LMRL-Gym, not here), and it accepts a plural or singular of the name, which LMRL-Gym does
not. Agreement with the benchmark's own verdicts is checked in tests/unit/test_twenty_questions.py.
"""

import json
import re
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
OBJECTS_PATH = DATA_DIR / "twenty_questions" / "objects.json"
MAX_QUESTIONS = 20
MAX_QUESTION_WORDS = 40
QUESTION_STARTS = ("Is", "Does", "Can", "Do", "Are", "Could")
YES, NO = "Yes.", "No."

# Words allowed before the object's name in a guess: auxiliaries, pronouns, articles, determiners, filler
# adverbs and the nouns a question frame uses for "the hidden thing" (LMRL-Gym ignores object, something,
# type, kind). Kept short on purpose: a word not listed makes the question a non-guess.
FRAME_WORDS = frozenset(
    "is are does do can could it they this that these those the a an some your my you i we thinking of "
    "object objects something thing things item items entity word answer secret specifically exactly "
    "actually perhaps maybe possibly just simply called named known as".split()
)
# Counter nouns allowed when followed by "of" ("a kind of", "a pair of"); LMRL-Gym allows any noun there.
COUNTER_WORDS = frozenset(
    "type types kind kinds sort sorts pair pairs piece pieces form variety species".split()
)
_WORD = re.compile(r"[a-z0-9]+(?:['-][a-z0-9]+)*")


def load_objects(path: str | Path = OBJECTS_PATH) -> tuple[list[list[str]], list[str]]:
    """The objects (each a list of accepted names, canonical first) and the category of each, in file
    order."""
    categories = json.loads(Path(path).read_text())
    objects = [names for words in categories.values() for names in words]
    return objects, [category for category, words in categories.items() for _ in words]


def normalize_answer(text: str) -> str:
    """The oracle's reply as "Yes." or "No.": a yes/no at the start (any case) decides; anything else is
    "No.", as LMRL-Gym's oracle post-processing does."""
    match = re.match(r"\s*(yes|no)\b", text, flags=re.IGNORECASE)
    return YES if match and match.group(1).lower() == "yes" else NO


def postprocess_question(text: str) -> str | None:
    """LMRL-Gym's `asker_postproc`: strip, append "?" if missing, upper-case the first letter; None (an
    invalid question, which the oracle answers "No.") if it is empty, has more than 40 words, does not
    start with Is/Does/Can/Do/Are/Could, or ends in ".?" (a sentence, not a question; "etc.?" is allowed)."""
    question = text.strip()
    if not question:
        return None
    if not question.endswith("?"):
        question += "?"
    question = question[0].upper() + question[1:]
    words = question.split(" ")
    if len(words) > MAX_QUESTION_WORDS or words[0] not in QUESTION_STARTS:
        return None
    if question[-2] == "." and words[-1] != "etc.?":
        return None
    return question


def word_tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _same_noun(a: str, b: str) -> bool:
    """Equal up to a regular plural: "sock"/"socks", "glass"/"glasses"."""
    return a == b or a in (b + "s", b + "es") or b in (a + "s", a + "es")


def is_guess(question: str, names: list[str]) -> bool:
    """Whether `question` guesses the object with these accepted `names` (regardless of the answer).

    The question (trailing punctuation stripped, lower-cased) must end with one of the names, token by token,
    its last word allowed to differ by a regular plural. Every word before the name must be a frame word
    (FRAME_WORDS), a word of one of the object's own names (LMRL-Gym ignores those too), or a counter noun
    followed by "of" ("a type of", "a pair of"). So "Is it a dog?" guesses Dog, "Is it a cat or a dog?"
    does not (it names another noun), and "Is it a kind of ball?" does not guess Basketball.
    """
    tokens = word_tokens(question)
    own = {word for name in names for word in word_tokens(name)}
    for name in names:
        target = word_tokens(name)
        if not target or len(target) > len(tokens):
            continue
        tail = tokens[len(tokens) - len(target) :]
        if tail[:-1] != target[:-1] or not _same_noun(tail[-1], target[-1]):
            continue
        prefix = tokens[: len(tokens) - len(target)]
        if all(
            word in FRAME_WORDS or word in own or (word in COUNTER_WORDS and prefix[i + 1 : i + 2] == ["of"])
            for i, word in enumerate(prefix)
        ):
            return True
    return False


def guessed(question: str, answer: str, names: list[str]) -> bool:
    """LMRL-Gym's `word_guessed`: the oracle said "Yes." to a question that guesses the object."""
    return answer == YES and is_guess(question, names)


def split_line(line: str) -> tuple[str, str]:
    """A transcript line "Is it a dog? Yes." as (question, answer): the answer follows the last "?"."""
    question, mark, answer = line.rpartition("?")
    if not mark:
        return line.strip(), ""
    return question.strip() + "?", answer.strip()


def episode_return(lines: list[str], names: list[str]) -> tuple[float, bool]:
    """Return and success of a transcript of "Question? Answer." lines: -1 per question, except 0 for the
    question that guesses the object. The game ends at the guess or after 20 questions; later lines are
    ignored."""
    total = 0.0
    for line in lines[:MAX_QUESTIONS]:
        question, answer = split_line(line)
        if guessed(question, answer, names):
            return total, True
        total -= 1.0
    return total, False
