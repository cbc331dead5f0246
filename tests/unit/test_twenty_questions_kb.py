"""Tests of the knowledge-base Twenty Questions oracle: table completeness, answers, candidate sets, exact
information gain, and that a greedy information-gain asker finds every object within 20 questions."""

import json
import math

import pytest

from rlhf.tasks.twenty_questions import MAX_QUESTIONS, NO, YES, load_objects
from rlhf.tasks.twenty_questions_kb import ATTRIBUTES_PATH, KnowledgeBaseOracle


@pytest.fixture(scope="module")
def oracle() -> KnowledgeBaseOracle:
    return KnowledgeBaseOracle()


def test_every_object_has_every_attribute(oracle):
    data = json.loads(ATTRIBUTES_PATH.read_text())
    objects, categories = load_objects()
    assert set(data["objects"]) == {names[0] for names in objects} and len(data["objects"]) == 158
    keys = set(data["questions"])
    assert set(data["alternatives"]) <= keys
    for values in data["objects"].values():
        assert set(values) == keys and all(isinstance(v, bool) for v in values.values())
    # Exactly one category attribute is true per object, and it is the object's category in objects.json.
    for names, category in zip(objects, categories):
        assert oracle.answer(oracle.questions[category.lower().replace(" ", "_")], names[0]) == YES


def test_no_attribute_phrase_is_a_guess(oracle):
    data = json.loads(ATTRIBUTES_PATH.read_text())
    for key, question in data["questions"].items():
        for phrase in [question, *data["alternatives"].get(key, [])]:
            assert oracle.parse(phrase) == ("attribute", key), phrase


@pytest.mark.parametrize(
    "question, secret, expected",
    [
        ("Is it an animal?", "Dog", YES),
        ("Is it alive?", "Dog", YES),
        ("Is it a pet?", "Dog", YES),
        ("Is it man-made?", "Dog", NO),
        ("Is it man-made?", "Airplane", YES),
        ("Can you eat it?", "Airplane", NO),
        ("Can it fly?", "Airplane", YES),
        ("is it  EDIBLE", "Banana", YES),  # an alternative phrasing, case and punctuation ignored
        ("Is it yellow?", "Banana", YES),
        ("Is it made of metal?", "Spoon", YES),
        ("Is it a musical instrument?", "Spoon", NO),
        ("Is it a body of water?", "Lake", YES),
        ("Does it have strings?", "Violin", YES),
    ],
)
def test_attribute_answers(oracle, question, secret, expected):
    assert oracle.answer(question, secret) == expected


def test_guesses_and_unparseable(oracle):
    assert oracle.answer("Is it a dog?", "Dog") == YES
    assert oracle.answer("Is it a plane?", "Airplane") == YES  # a synonym
    assert oracle.answer("Is it a pair of shoes?", "Shoes") == YES
    assert oracle.answer("Is it a TV?", "Television") == YES
    assert oracle.answer("Is it a cat?", "Dog") == NO
    assert oracle.answer("Is it an airplane?", "Helicopter") == NO
    for question in ["What is it?", "Is it bigger than my grandmother's teapot?", "", "Dog"]:
        assert oracle.parse(question) is None or question == "Dog"
        assert oracle.answer(question, "Elephant") == NO
    assert oracle.answer("Dog", "Dog") == YES  # the bare name is a guess, as in `is_guess`


def test_candidates_shrink_over_a_game(oracle):
    game = [
        ("Is it alive?", YES),
        ("Is it an animal?", YES),
        ("Is it a pet?", NO),
        ("Is it a predator?", YES),
        ("Does it have stripes?", "No"),  # answers are normalised
        ("Is it orange in color?", NO),
        ("Is it a lion?", NO),
        ("Is it a bear?", YES),
    ]
    sizes = []
    for i in range(len(game) + 1):
        candidates = oracle.candidates(game[:i])
        assert "Bear" in candidates
        sizes.append(len(candidates))
    assert sizes == [158, 14, 10, 7, 3, 2, 2, 1, 1]
    assert oracle.candidates(game) == ["Bear"]
    assert oracle.candidates([("Is it alive?", YES), ("Is it man-made?", YES)]) == []


def test_information_gain_exact_values(oracle):
    eight = ["Dog", "Cat", "Rabbit", "Horse", "Apple", "Banana", "Orange", "Grape"]
    assert oracle.information_gain("Is it an animal?", eight) == pytest.approx(1.0, abs=1e-12)
    assert oracle.information_gain("Is it man-made?", eight) == 0.0  # all answer No
    assert oracle.information_gain("Why?", eight) == 0.0  # unparseable: always No
    assert oracle.information_gain("Is it an animal?", ["Dog"]) == 0.0
    # A guess among n uniform candidates: Yes with p = 1/n (0 bits left), No with p = (n-1)/n
    # (log2(n-1) bits left), so the gain is log2 n - (n-1)/n log2(n-1); for n = 8: 3 - 7/8 log2 7.
    assert oracle.information_gain("Is it a cat?", eight) == pytest.approx(3 - 7 / 8 * math.log2(7), abs=1e-12)
    assert oracle.information_gain("Is it a cat?", ["Cat", "Dog"]) == pytest.approx(1.0)
    # Guessing an object outside the candidates answers No for all of them: no information.
    assert oracle.information_gain("Is it a car?", eight) == 0.0
    # A 2/6 split of 8: 3 - (2/8 * 1 + 6/8 * log2 6).
    assert oracle.information_gain("Is it a pet?", eight[:4] + ["Apple", "Banana", "Orange", "Grape"]) == (
        pytest.approx(3 - (3 / 8 * math.log2(3) + 5 / 8 * math.log2(5)))
    )


def play_greedy(oracle: KnowledgeBaseOracle, secret: str) -> tuple[int, bool]:
    """A greedy asker: the attribute question of largest gain while one helps, then guesses of the
    remaining candidates in order. Returns (questions asked, found within 20)."""
    history: list[tuple[str, str]] = []
    while len(history) < MAX_QUESTIONS:
        candidates = oracle.candidates(history)
        gain, question = max((oracle.information_gain(q, candidates), q) for q in oracle.questions.values())
        if gain <= 0:
            question = f"Is it a {candidates[0]}?"
        history.append((question, oracle.answer(question, secret)))
        if gain <= 0 and history[-1][1] == YES:
            return len(history), True
    return len(history), False


def test_greedy_asker_finds_every_object(oracle):
    results = {secret: play_greedy(oracle, secret) for secret in oracle.objects}
    assert all(found for _, found in results.values()), [s for s, (_, ok) in results.items() if not ok]
    counts = [n for n, _ in results.values()]
    assert max(counts) <= MAX_QUESTIONS and sum(counts) / len(counts) < 10
