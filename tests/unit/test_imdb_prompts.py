"""SharedRep's IMDb prompts: a review's first tokens extended to the end of a word, reviews of 200 characters or
fewer left out, lengths from the seed; the bundled twin data is what the module writes; the twin's gold keeps
the IMDb gold's formula."""

import json
import random
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from transformers import AutoTokenizer

from rlhf.config import CONF_DIR, build
from rlhf.tasks.imdb_prompts import MAX_TOKENS, MIN_TOKENS, prompt_rows, review_prefix, write_samples

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"
REVIEW = "Unforgettable performances throughout, " * 8


@pytest.fixture(scope="module")
def tokenizer(tiny_path):
    return AutoTokenizer.from_pretrained(tiny_path)


def test_a_prefix_ends_at_a_word_boundary(tokenizer):
    ids = tokenizer(REVIEW)["input_ids"]
    for size in range(MIN_TOKENS, MAX_TOKENS):
        prefix = review_prefix(REVIEW, tokenizer, size)
        assert REVIEW.startswith(prefix)
        assert len(tokenizer(prefix)["input_ids"]) >= min(size, len(ids) - 1)
        rest = REVIEW[len(prefix):]
        assert rest == "" or rest[0] in " ," , (size, prefix)  # the word it stopped in is whole


def test_short_reviews_are_left_out_and_lengths_follow_the_seed(tokenizer):
    reviews = [{"text": REVIEW, "label": 1}, {"text": "Too short to keep.", "label": 0}, {"text": REVIEW[::-1], "label": 0}]
    first = prompt_rows(reviews, tokenizer, random.Random(3), "reviews")
    assert [r["label"] for r in first] == [1, 0]
    assert first == prompt_rows(reviews, tokenizer, random.Random(3), "reviews")
    with pytest.raises(ValueError, match="row 1: column 'text'"):
        prompt_rows([{"text": REVIEW}, {"text": None}], tokenizer, random.Random(0), "reviews")


def test_the_bundled_twin_data_is_what_the_module_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_CACHE", str(tmp_path / "cache"))  # a fresh build of the tiny tokenizer
    write_samples(tmp_path)
    for name in ("imdb/train.jsonl", "imdb/test.jsonl", "imdb_prompts/train.jsonl", "imdb_prompts/test.jsonl",
                 "imdb_prompts/sft_train.jsonl", "imdb_prompts/sft_test.jsonl"):
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes(), name
    sft = [json.loads(line) for line in (SAMPLES / "imdb_prompts" / "sft_train.jsonl").read_text().splitlines()]
    reviews = [json.loads(line)["text"] for line in (SAMPLES / "imdb" / "train.jsonl").read_text().splitlines()]
    assert [m["messages"][0]["content"] + m["messages"][1]["content"] for m in sft] == [
        r for r in reviews if len(r) > 200]


def test_the_twin_gold_is_the_imdb_formula_with_listed_positive_words():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["reward=gold_imdb_words", "run_dir=/tmp/unused"])
    gold = build(cfg.reward)
    conversation = [{"role": "user", "content": "This film"}, {"role": "assistant", "content": "was great, truly"}]
    minority, majority = (gold.score([conversation], [{"group_id": g}])[0] for g in (0, 1))
    assert minority == pytest.approx(0.3 - 0.003 * 3 + 0.7 * 1) and majority == pytest.approx(1 - 0.01 * 3)
