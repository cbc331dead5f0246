"""trainer.tokenised_cache: tokenised examples read back equal to a fresh tokenisation, for every batch kind;
any change to the rows, settings, reply columns or tokenizer is a miss; jobs starting together tokenise once."""

import threading

import datasets
import pytest
import torch
from transformers import AutoTokenizer

from rlhf.data import examples_cache
from rlhf.data.examples import build_examples
from rlhf.data.tokenize import Tokenization

PAIRS = [
    {"prompt": "Tell me about the garden.", "chosen": "Happy to help with data.", "rejected": "It is a box.",
     "score_chosen": 2.0, "score_rejected": 1.0},
    {"prompt": "What is a bridge for?", "chosen": "First, safe information.", "rejected": "Blah near road.",
     "score_chosen": 1.5, "score_rejected": -1.0},
    {"prompt": "Why a rocket?", "chosen": "Best experience to create. " * 12, "rejected": "Maybe not so.",
     "score_chosen": 0.5, "score_rejected": 0.0},
]
GROUPS = [{"prompt": "Hi?", "responses": ["Hello there.", "Hey.", "Good day to you."], "scores": [1.0, 0.0, 2.0]},
          {"prompt": "Why?", "responses": ["Because.", "No idea at all.", "It is so."], "scores": [0.5, 0.1, 0.2]}]
CASES = {  # batch kind: (rows, schema, reply columns)
    "pair": (PAIRS, "preference", ("chosen",)),
    "reward_pair": (PAIRS, "preference", ("chosen",)),
    "sequence": (PAIRS, "preference", ("chosen", "rejected")),
    "group": (GROUPS, "group", ("chosen",)),
    "rollout": (GROUPS, "group", ("chosen",)),
}
SPEC = Tokenization(max_length=40, truncation="drop")  # the long row's chosen reply is dropped


@pytest.fixture(scope="module")
def tokenizer(tiny_path):
    return AutoTokenizer.from_pretrained(tiny_path)


def counting(monkeypatch) -> list:
    calls = []
    build = examples_cache.build_examples

    def counted(*args, **kwargs):
        calls.append(1)
        return build(*args, **kwargs)

    monkeypatch.setattr(examples_cache, "build_examples", counted)
    return calls


@pytest.mark.parametrize("kind", list(CASES))
def test_cached_examples_are_the_fresh_ones(kind, tokenizer, tmp_path, monkeypatch):
    rows, schema, responses = CASES[kind]
    data = datasets.Dataset.from_list(rows)
    fresh = build_examples(data, schema, kind, tokenizer, SPEC, "rows", responses)
    calls = counting(monkeypatch)
    first = examples_cache.cached_examples(tmp_path, data, schema, kind, tokenizer, SPEC, "rows", responses)
    again = examples_cache.cached_examples(tmp_path, datasets.Dataset.from_list(rows), schema, kind, tokenizer, SPEC,
                                           "rows", responses)
    assert len(calls) == 1  # the second run read the first one's
    for got in (first, again):
        assert got.items == fresh.items and got.rows == fresh.rows and got.dropped == fresh.dropped
        assert got.fields.keys() == fresh.fields.keys()
        for name, value in fresh.fields.items():
            assert got.fields[name].dtype == value.dtype and torch.equal(got.fields[name], value)
        positions = list(range(len(fresh)))[::-1]
        a, b = got.batch(positions), fresh.batch(positions)
        for name in ("input_ids", "attention_mask"):
            if hasattr(b, name):
                assert torch.equal(getattr(a, name), getattr(b, name))
    if kind == "pair":
        assert fresh.dropped == 1 and type(again.items[0]) is tuple


def test_any_change_is_a_miss(tokenizer, tmp_path, monkeypatch):
    calls = counting(monkeypatch)
    data = datasets.Dataset.from_list(PAIRS)

    def cached(rows=data, spec=SPEC, responses=("chosen",), tok=tokenizer, kind="sequence"):
        return examples_cache.cached_examples(tmp_path, rows, "preference", kind, tok, spec, "rows", responses)

    base = cached()
    assert len(calls) == 1
    edited = [dict(r) for r in PAIRS]
    edited[1]["chosen"] = "First, unsafe information."
    cached(rows=datasets.Dataset.from_list(edited))
    cached(rows=data.select([2, 1, 0]))  # the same rows in another order
    cached(spec=Tokenization(max_length=64, truncation="drop"))
    cached(responses=("chosen", "rejected"))
    cached(kind="pair")
    other = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    other.add_tokens(["zzyzx"])  # another vocabulary
    cached(tok=other)
    templated = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    templated.chat_template = "{#- another template, the same renders -#}" + tokenizer.chat_template
    cached(tok=templated)
    assert len(calls) == 8
    assert cached().items == base.items and len(calls) == 8  # the first entry is still there
    assert examples_cache.cached_examples(None, data, "preference", "sequence", tokenizer, SPEC, "rows").items \
        == base.items and len(calls) == 9  # no folder: tokenised


def test_jobs_that_start_together_tokenise_once(tokenizer, tmp_path, monkeypatch):
    calls = counting(monkeypatch)
    data = datasets.Dataset.from_list(PAIRS)
    out = []
    jobs = [threading.Thread(target=lambda: out.append(examples_cache.cached_examples(
        tmp_path, data, "preference", "pair", tokenizer, SPEC, "rows"))) for _ in range(2)]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
    assert len(calls) == 1 and out[0].items == out[1].items
    assert len(list(tmp_path.glob("*.safetensors"))) == 1 and not list(tmp_path.glob(".*.tmp"))
