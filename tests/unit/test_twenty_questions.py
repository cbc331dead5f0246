"""Twenty Questions rules (LMRL-Gym, reference/methods.md section 5.1) on hand-written games, and the
rule-based guess check against the benchmark's own verdicts on its 1000 recorded eval games."""

import json
from collections import Counter

import pytest

from rlhf.tasks.twenty_questions import (
    DATA_DIR,
    episode_return,
    guessed,
    is_guess,
    load_objects,
    normalize_answer,
    postprocess_question,
    split_line,
)

DOG = ["Dog"]
SOCKS = ["Socks", "Sock", "Pair of socks"]


def test_load_objects() -> None:
    objects, categories = load_objects()
    assert len(objects) == 158 and len(categories) == 158 and len(set(categories)) == 17
    assert ["Airplane", "Plane"] in objects
    assert categories[objects.index(["Basketball"])] == "Sports"


def test_guess_on_third_question() -> None:
    lines = ["Is it an animal? Yes.", "Is it a pet? Yes.", "Is it a dog? Yes.", "Is it a cat? No."]
    # -1, -1, then 0 for the guess; the line after the guess is not played.
    assert episode_return(lines, DOG) == (-2.0, True)


def test_no_guess_in_twenty() -> None:
    lines = [f"Is it thing number {i}? No." for i in range(20)] + ["Is it a dog? Yes."]
    # The 21st line comes after the game has ended.
    assert episode_return(lines, DOG) == (-20.0, False)
    assert episode_return(lines[:5], DOG) == (-5.0, False)


def test_yes_to_a_non_guess_is_not_a_guess() -> None:
    assert not guessed("Is it an animal?", "Yes.", DOG)
    assert not guessed("Is it a dog or a cat?", "Yes.", DOG)
    assert not guessed("Is it a cat or a dog?", "Yes.", DOG)
    assert episode_return(["Is it an animal? Yes.", "Is it a mammal? Yes."], DOG) == (-2.0, False)


def test_guess_answered_no_is_not_a_guess() -> None:
    assert is_guess("Is it a dog?", DOG)
    assert not guessed("Is it a dog?", "No.", DOG)
    assert episode_return(["Is it a dog? No.", "Is it a dog? Yes."], DOG) == (-1.0, True)


@pytest.mark.parametrize(
    "question",
    ["Is it a pair of socks?", "Is the object a sock?", "Are they socks?", "Is it a type of sock?", "sock"],
)
def test_synonyms_and_frames(question: str) -> None:
    assert is_guess(question, SOCKS)


def test_plural_and_singular() -> None:
    assert is_guess("Is it dogs?", DOG)
    assert is_guess("Are they glasses?", ["Glass"])
    assert is_guess("Is it a tomato?", ["Tomatoes"])
    assert not is_guess("Is it a dogma?", DOG)


def test_synonym_with_airplane() -> None:
    assert is_guess("Is the object a plane?", ["Airplane", "Plane"])
    assert is_guess("Is it an airplane?!", ["Airplane", "Plane"])


def test_kind_of_ball_is_not_basketball() -> None:
    assert not is_guess("Is it a kind of ball?", ["Basketball"])
    assert not is_guess("Is it a ball?", ["Basketball"])
    assert is_guess("Is it a kind of basketball?", ["Basketball"])


def test_other_noun_before_the_name_is_not_a_guess() -> None:
    assert not is_guess("Is it used to catch a dog?", DOG)
    assert not is_guess("Is it a toy dog?", DOG)
    assert not is_guess("Is it a part of a dog?", DOG)  # "part" is not a counter word
    assert is_guess("Is it a keyboard?", ["Computer keyboard", "Keyboard"])
    assert is_guess("Is it a computer keyboard?", ["Computer keyboard", "Keyboard"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Is it an animal", "Is it an animal?"),
        ("  is it red?  ", "Is it red?"),
        ("Could it fly?", "Could it fly?"),
        ("Does it list fruit, vegetables, etc.?", "Does it list fruit, vegetables, etc.?"),
        ("What is it?", None),
        ("It is a dog.", None),
        ("Is it a dog.", None),  # "?" appended after ".": a sentence
        ("", None),
        ("Is " + "it " * 40 + "red?", None),
    ],
)
def test_postprocess_question(text: str, expected: str | None) -> None:
    assert postprocess_question(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("Yes.", "Yes."), ("yes", "Yes."), (" YES, it is", "Yes."), ("No.", "No."), ("no", "No."),
     ("Maybe.", "No."), ("", "No."), ("yesterday", "No."), ("I think yes", "No.")],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


def test_split_line() -> None:
    assert split_line("Is it a dog? Yes.") == ("Is it a dog?", "Yes.")
    assert split_line("Is it big? Is it a dog? No.") == ("Is it big? Is it a dog?", "No.")


def test_agreement_with_recorded_lmrl_verdicts() -> None:
    """Our verdict (some line's question guesses the object and is answered "Yes.") against each game's
    recorded `correct` (LMRL-Gym's nltk-based `is_done`)."""
    games = json.loads((DATA_DIR / "twenty_questions" / "lmrl_eval_games.json").read_text())
    assert len(games) == 1000
    confusion = Counter(
        (game["correct"], any(guessed(*split_line(line), game["word"]) for line in game["lines"]))
        for game in games
    )
    agreement = (confusion[True, True] + confusion[False, False]) / len(games)
    print(f"confusion (recorded, ours): {dict(confusion)}; agreement {agreement:.3f}")
    # Measured: 981/1000 = 98.1%; recorded True/ours True 292, False/False 689, True/False 19, False/True 0.
    # The 19 misses are guesses with an adjective ("a large bear", "a wooden rake") or phrased around the
    # name ("used for watching television", "a dish or bowl") that nltk tags as noun-free; we refuse them.
    assert agreement >= 0.975
    assert confusion[False, True] <= 2  # measured 0: the rules never call a recorded failure a guess
