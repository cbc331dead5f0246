"""A-LoL's rewarded Reddit / WoW / FaithDial / COMET rows (`task.format: alol_rewarded`) as scored rows: turns
from the <|endoftext|>-separated context, the knowledge as the system message, the final_reward as the score;
the bundled samples are what rlhf/tasks/alol_samples.py writes; scored rows through validation, filters,
tokenisation (only the reply is trained on) and the reward formats that read them."""

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from rlhf.data.examples import build_examples
from rlhf.data.filters import build_filters, filter_indices
from rlhf.data.loading import load_rows
from rlhf.data.schema import row_problems
from rlhf.data.sources import SourceFormatError, check_format, convert_rows
from rlhf.data.tokenize import Tokenization
from rlhf.rewards.comet_critic import parse_prompt
from rlhf.rewards.reward_model import format_knowledge_pair
from rlhf.tasks.alol_samples import write_samples

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"
EOS = "<|endoftext|>"


def scored(rows: list[dict], tmp_path, schema: str = "scored") -> list[dict]:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return convert_rows(load_rows(str(path)), "alol_rewarded", schema, "rows.jsonl").to_list()


def row(context: str, reply: str, reward: float = 1.5, **components) -> dict:
    return {"id": 0, "prompt_or_input_text": context, "references": reply + EOS, "meta_data": {},
            "reward_components": {**components, "final_reward": reward}}


def test_a_reddit_row_is_the_parent_and_its_reply(tmp_path):
    [out] = scored([row(f"Is the bridge open yet?{EOS}", "Since Monday.", 2.25, fluency=0.9)], tmp_path)
    assert out == {"prompt": [{"role": "user", "content": "Is the bridge open yet?"}], "response": "Since Monday.",
                   "score": 2.25}


def test_a_wow_row_keeps_its_knowledge_and_history(tmp_path):
    context = f"Knowledge: Tea comes from Camellia sinensis.{EOS}Do you like tea?{EOS}Yes, green tea.{EOS}Why?{EOS}"
    [out] = scored([row(context, "It is mild.")], tmp_path)
    assert out["prompt"] == [{"role": "system", "content": "Knowledge: Tea comes from Camellia sinensis."},
                             {"role": "user", "content": "Do you like tea?"},
                             {"role": "assistant", "content": "Yes, green tea."},
                             {"role": "user", "content": "Why?"}]
    # a history the wizard opened: its first turn joins the system message, so the dialogue starts with the user
    [opened] = scored([row(f"Knowledge: K.{EOS}I read about tea.{EOS}Oh, tell me.{EOS}", "Sure.")], tmp_path)
    assert opened["prompt"] == [{"role": "system", "content": "Knowledge: K.\n\nAssistant: I read about tea."},
                                {"role": "user", "content": "Oh, tell me."}]
    assert format_knowledge_pair(opened["prompt"] + [{"role": "assistant", "content": "Sure."}]) == ("K.", "Sure.")
    with pytest.raises(ValueError, match="opens with a system message 'Knowledge: ...'; this one opens with user"):
        format_knowledge_pair([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}])


def test_one_reply_rows_give_no_preference_rows_and_bad_rows_are_named(tmp_path):
    with pytest.raises(ValueError, match="one reply per row, no rejected one"):
        check_format("alol_rewarded", "preference")
    with pytest.raises(SourceFormatError, match=r"row 1, column 'reward_components'.*final_reward"):
        scored([row(f"a{EOS}", "b"), {**row(f"a{EOS}", "b"), "reward_components": {"fluency": 1.0}}], tmp_path)
    with pytest.raises(SourceFormatError, match=r"row 0, column 'prompt_or_input_text': has knowledge but no"):
        scored([row(f"Knowledge: K.{EOS}", "b")], tmp_path)
    assert scored([row(f"a{EOS}", "b")], tmp_path, "prompt") == [{"prompt": [{"role": "user", "content": "a"}]}]


def test_scored_rows_are_validated_filtered_and_only_the_reply_is_trained(tiny_path):
    tiny_tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    assert row_problems({"prompt": "a", "response": "b", "score": True}, "scored") == [
        "column 'score' must be a number, got bool"]
    assert row_problems({"prompt": "a", "response": " "}, "scored") == ["column 'response' is an empty turn"]
    rows = load_rows(str(SAMPLES / "alol_wow" / "train.jsonl"))
    rows = convert_rows(rows, "alol_rewarded", "scored", "train.jsonl")
    kept, dropped = filter_indices(rows, build_filters({"alternating": True, "nonempty": True,
                                                        "no_colon_ending": True}, "scored"))
    assert len(kept) == len(rows) and not any(dropped.values())
    examples = build_examples(rows, "scored", "sequence", tiny_tokenizer, Tokenization(max_length=512), "wow")
    assert examples.fields["rewards"].tolist() == pytest.approx([r["score"] for r in rows])
    for item, r in zip(examples.items, rows):
        trained = [t for t, turn in zip(item.input_ids, item.turn_ids) if turn >= 0]
        assert tiny_tokenizer.decode(trained).strip().startswith(r["response"][:20].strip())
        assert set(t for t in item.turn_ids if t >= 0) == {sum(m["role"] == "assistant" for m in r["prompt"])}


def test_the_bundled_samples_are_what_the_module_writes(tmp_path):
    write_samples(tmp_path)
    for name in ("alol_reddit/pos_train.jsonl", "alol_reddit/neg_train.jsonl", "alol_reddit/val.jsonl",
                 "alol_wow/train.jsonl", "alol_wow/val.jsonl", "alol_comet/train.jsonl", "alol_comet/val.jsonl"):
        assert (tmp_path / name).read_bytes() == (SAMPLES / name).read_bytes(), name


def test_comet_rows_are_one_prompt_the_critic_reads_back(tmp_path):
    rows = [json.loads(line) for line in (SAMPLES / "alol_comet" / "train.jsonl").read_text().splitlines()]
    converted = scored(rows[:4], tmp_path)
    for raw, row in zip(rows[:4], converted, strict=True):
        assert row["prompt"] == [{"role": "user", "content": raw["prompt_or_input_text"].strip()}]
        assert row["response"] == raw["references"]
        head, relation = parse_prompt(row["prompt"][0]["content"])
        assert (head, relation) == (raw["meta_data"]["head"], raw["meta_data"]["relation"])
