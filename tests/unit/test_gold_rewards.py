"""Gold rewards against hand-counted responses."""

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from rlhf.rewards.gold import BagOfWords, Length, words_of

CONF = Path(__file__).resolve().parents[2] / "conf"
BAG = OmegaConf.load(CONF / "reward" / "bag_of_words.yaml").words


def turn(response: str, prompt: str = "Tell me something.") -> list[dict]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def test_the_configured_bag_is_d2po_30_words():
    reward = instantiate(OmegaConf.load(CONF / "reward" / "bag_of_words.yaml"))
    assert isinstance(reward, BagOfWords)
    assert len(BAG) == 30 and len(reward.words) == 30
    assert {"data", "hope", "happy", "help", "first", "safe", "respectful"} <= reward.words


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        # happy (x3, counts once), help, first, data -> 4; "to" is not a bag word
        ("Happy to help, happy happy! First, data.", 4),
        # upper/mixed case: EXAMPLE, Code, SAFE -> 3
        ("EXAMPLE Code is SAFE", 3),
        # punctuation glued to words still splits off: "(two)" -> two, "question?" -> question,
        # "best..." -> best, "experience;" -> experience -> 4
        ("(two) question? best... experience;", 4),
        # no bag word: "helpful" is not "help", "dataset" not "data", "codes" not "code" -> 0
        ("A helpful dataset of codes.", 0),
        # "you're" is one token, not "your"; your (x2, counts once), code, have -> 3
        ("You're sure your code... your plan, have fun", 3),
        ("", 0),
    ],
)
def test_bag_of_words_counts_distinct_words_present(response, expected):
    assert BagOfWords(BAG).score([turn(response)]) == [float(expected)]


def test_bag_of_words_with_a_custom_bag_is_case_insensitive():
    reward = BagOfWords(["Cat", "dog"])
    # cat (as CAT and cat) and dog -> 2; "cats" is a different word
    assert reward.score([turn("CAT cats cat, Dog!"), turn("cats only")]) == [2.0, 0.0]


def test_bag_of_words_reads_the_response_only():
    # the user's "data", "help" and "first" earn nothing; the response has hope -> 1
    assert BagOfWords(BAG).score([turn("I hope so.", prompt="First, help me with data.")]) == [1.0]


def test_the_last_assistant_message_is_scored():
    conversation = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Happy to help, first data."},  # 4, but an earlier turn
        {"role": "user", "content": "More please."},
        {"role": "assistant", "content": "Finally, be safe."},  # finally, safe -> 2
        {"role": "user", "content": "Thanks, that was important and appropriate."},
    ]
    assert BagOfWords(BAG).score([conversation]) == [2.0]
    assert Length("words").score([conversation]) == [3.0]


def test_a_conversation_without_an_assistant_message_is_an_error():
    with pytest.raises(ValueError, match="no assistant message"):
        BagOfWords(BAG).score([[{"role": "user", "content": "data"}]])


def test_an_empty_bag_is_rejected():
    with pytest.raises(ValueError):
        BagOfWords([])


def test_words_of_lowercases_and_keeps_apostrophes():
    assert words_of("Don't STOP: 2 ways-out!") == ["don't", "stop", "2", "ways", "out"]


def test_length_in_words_and_chars():
    conversations = [turn("Hello there,  general   Kenobi!"), turn(""), turn("a\nb")]
    # words split on any whitespace run: 4, 0, 2; chars: 31 (two double/triple spaces included), 0, 3
    assert Length("words").score(conversations) == [4.0, 0.0, 2.0]
    assert Length("chars").score(conversations) == [31.0, 0.0, 3.0]
    assert Length("words").score([turn("x", prompt="a very long prompt " * 10)]) == [1.0]


def test_length_config_and_unit_check():
    reward = instantiate(OmegaConf.load(CONF / "reward" / "length.yaml"))
    assert isinstance(reward, Length) and reward.unit == "words"
    with pytest.raises(ValueError, match="unit"):
        Length("tokens")
