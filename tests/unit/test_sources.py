"""Published dataset formats (rlhf.data.sources): the bundled samples of data/samples, loaded by the real
loading code, converted to our schemas and compared with hand-written rows; errors that name the source, the
row and the column."""

import json
from pathlib import Path

import pytest

from rlhf.data.loading import load_rows, load_validated
from rlhf.data.schema import DataValidationError
from rlhf.data.sources import SourceFormatError, check_format, convert_rows, parse_transcript

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"
HH = SAMPLES / "hh_rlhf" / "train.jsonl"
TRL = SAMPLES / "hh_rlhf_trl_style" / "train.jsonl"
UF = SAMPLES / "ultrafeedback_binarized" / "train_prefs.jsonl"
UI = SAMPLES / "ultrainteract_pair" / "train.jsonl"
PRO = SAMPLES / "pro_hh" / "train.json"


def converted(path: Path, format: str, schema: str, limit: int | None = None) -> list[dict]:
    return convert_rows(load_rows(str(path), limit=limit), format, schema, repr(str(path))).to_list()


def user(text):
    return {"role": "user", "content": text}


def assistant(text):
    return {"role": "assistant", "content": text}


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_samples_hold_the_published_columns():
    columns = {HH: {"chosen", "rejected"}, TRL: {"chosen", "rejected", "prompt"},
               UF: {"prompt", "prompt_id", "chosen", "rejected", "messages", "score_chosen", "score_rejected"},
               UI: {"task", "dataset", "trajectory", "chosen", "rejected", "id", "parent_id"},
               PRO: {"prefix", "suffix", "reward", "sft_index", "meta"}}
    for path, names in columns.items():
        rows = load_rows(str(path))
        assert set(rows.column_names) == names, path
        assert 10 <= len(rows) <= 20, path


def test_hh_transcripts():
    prompts = converted(HH, "hh_transcript", "prompt")
    assert prompts[1] == {"prompt": [
        user("How do I get my toddler to eat vegetables?"),
        assistant("Toddlers often need to see a food many times before they try it. Serve a small amount next to "
                  "foods she already likes, eat it yourself in front of her, and don't force it."),
        user("She just throws the broccoli on the floor.")]}
    # "\n\nHuman: What is the capital of Australia?\n\nAssistant:": the empty final reply is not in the prompt
    assert prompts[6] == {"prompt": [user("What is the capital of Australia?")]}
    # two Human turns in a row stay as they are (the alternating filter drops such rows)
    assert [m["role"] for m in prompts[4]["prompt"]] == ["user", "user"]
    assert converted(HH, "hh_transcript", "preference")[0] == {
        "prompt": [user("What's a good way to keep basil fresh after I buy it?")],
        "chosen": "Trim the stems and stand the bunch in a glass of water on the counter, loosely covered with a "
                  "plastic bag. Basil dislikes the fridge: the cold turns its leaves black.",
        "rejected": "Put it in the fridge."}
    conversation = converted(HH, "hh_transcript", "conversation")[6]["messages"]
    assert conversation == [user("What is the capital of Australia?"), assistant("")]


def test_transcript_parsing_keeps_paragraphs_inside_a_turn():
    text = "\n\nHuman: Two lines:\n\nfirst and second\n\nAssistant: Sure.\n\nHuman: thanks"
    assert parse_transcript(text, "chosen") == [user("Two lines:\n\nfirst and second"), assistant("Sure."),
                                                user("thanks")]


def test_hh_trl_style_dialogues():
    conversations = converted(TRL, "hh_trl_style", "conversation")
    assert conversations[1] == {"messages": [
        user("How long should I boil an egg?"),
        assistant("For a firm yolk, put the egg in boiling water for about nine to ten minutes, then cool it in "
                  "cold water."),
        user("And for a runny yolk?"),
        assistant("About six minutes gives a set white and a runny yolk. Move it to cold water right away so it "
                  "stops cooking.")]}
    assert len(conversations) == 13
    pair = converted(TRL, "hh_trl_style", "preference", limit=6)  # row 6 has no final reply (below)
    assert pair[1]["prompt"] == conversations[1]["messages"][:3]
    assert (pair[1]["chosen"], pair[1]["rejected"]) == (conversations[1]["messages"][3]["content"], "Just boil it.")
    assert "score_chosen" not in pair[1]  # the source has no scores


def test_trl_style_dialogue_without_a_final_reply_is_no_preference_row():
    # sample row 6 ends with the user: as a conversation it is kept for the filters; as a pair it has no reply
    assert converted(TRL, "hh_trl_style", "conversation")[6]["messages"][-1] == user("And on a mountain?")
    with pytest.raises(SourceFormatError, match=r"train\.jsonl', row 6, column 'chosen': the dialogue does not "
                                                r"end with an assistant reply \(format 'hh_trl_style'\)"):
        converted(TRL, "hh_trl_style", "preference")


def test_ultrafeedback_rows():
    assert converted(UF, "ultrafeedback", "prompt")[0] == {"prompt": [user("Write a haiku about autumn leaves.")]}
    assert converted(UF, "ultrafeedback", "preference")[2] == {
        "prompt": [user("Translate 'Where is the train station?' into French.")],
        "chosen": "Où est la gare ?", "rejected": "Où est le train ?", "score_chosen": 10.0, "score_rejected": 5.5}


def test_ultrainteract_trajectory_and_chosen_answer():
    rows = converted(UI, "ultrainteract_pair", "conversation")
    problem = ("Solve the following math problem step-by-step.\nSimplify your answer as much as possible. Present "
               "your final answer as \\boxed{Your Answer}.\nWhat is the remainder when 2^10 is divided by 7?")
    trajectory = [user(problem),
                  assistant("Step 1: 2^10 = 1024.\nStep 2: 1024 = 7 * 145 + 9.\nAnswer:\n\\boxed{9}"),
                  user("Your answer is wrong.\nCheck your arithmetic in the last step and try again.")]
    chosen = "Step 1: 2^10 = 1024.\nStep 2: 7 * 146 = 1022, so 1024 - 1022 = 2.\nAnswer:\n\\boxed{2}"
    assert rows[3] == {"messages": trajectory + [assistant(chosen)]}
    assert converted(UI, "ultrainteract_pair", "prompt")[3] == {"prompt": trajectory}
    pair = converted(UI, "ultrainteract_pair", "preference")[3]
    assert pair == {"prompt": trajectory, "chosen": chosen,
                    "rejected": "Step 1: 1024 / 7 = 146.\nAnswer:\n\\boxed{146}"}


def test_pro_hh_rows_with_sigmoid_scores():
    pair = converted(PRO, "pro_hh", "preference")[1]
    assert pair["prompt"] == [
        user("What's a good first pet for a child?"),
        assistant("Guinea pigs are a good choice: they are gentle, rarely bite, and live five to seven years."),
        user("Do they need a lot of space?")]
    assert pair["chosen"].startswith("Yes, more than people expect") and pair["rejected"] == "No, a small box is fine."
    # reward [1.21, -1.35]: e^-1.21 = 0.29820 -> 1 / 1.29820 = 0.77030; e^1.35 = 3.85743 -> 1 / 4.85743 = 0.20587
    assert pair["score_chosen"] == pytest.approx(0.77030, abs=1e-5)
    assert pair["score_rejected"] == pytest.approx(0.20587, abs=1e-5)
    conversation = converted(PRO, "pro_hh", "conversation")[1]["messages"]
    assert conversation == pair["prompt"] + [assistant(pair["chosen"])]


def test_a_flat_pro_prefix_reads_like_one_per_suffix(tmp_path):
    row = {"prefix": ["<|prompter|>Hi", "<|assistant|>"], "suffix": ["Hello!", "What?"], "reward": [0.0, 0.0]}
    path = write_jsonl(tmp_path / "flat.json", [row])
    assert converted(Path(path), "pro_hh", "preference") == [
        {"prompt": [user("Hi")], "chosen": "Hello!", "rejected": "What?", "score_chosen": 0.5, "score_rejected": 0.5}]


@pytest.mark.parametrize("format, bad_row, column, problem", [
    ("hh_transcript", {"chosen": "no speakers here", "rejected": "\n\nHuman: a\n\nAssistant: b"}, "chosen",
     "expected a transcript of"),
    ("hh_trl_style", {"chosen": [{"role": "user", "content": "a"}], "rejected": "not a list"}, "rejected",
     "expected a non-empty list of {role, content} messages"),
    ("ultrafeedback", {"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                       "rejected": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "c"}],
                       "score_chosen": None, "score_rejected": 1.0}, "score_chosen", "expected a finite number"),
    ("ultrainteract_pair", {"trajectory": [{"from": "system", "value": "a"}], "chosen": "b", "rejected": "c"},
     "trajectory", "turn 0 is not a {from, value} turn from 'user' or 'assistant'"),
    ("pro_hh", {"prefix": [["<|prompter|>a", "Assistant: b", "<|assistant|>"]] * 2, "suffix": ["c", "d"],
                "reward": [1.0, 0.0]}, "prefix", "turn 1 starts with neither <|prompter|> nor <|assistant|>"),
    ("pro_hh", {"prefix": [["<|prompter|>a", "<|assistant|>"]] * 2, "suffix": ["c", "d"], "reward": [1.0]},
     "reward", "expected a list of 2 numbers, one per suffix"),
])
def test_conversion_errors_name_the_source_row_and_column(tmp_path, format, bad_row, column, problem):
    good = {"hh_transcript": lambda: json.loads(HH.read_text().splitlines()[0]),
            "hh_trl_style": lambda: json.loads(TRL.read_text().splitlines()[0]),
            "ultrafeedback": lambda: json.loads(UF.read_text().splitlines()[0]),
            "ultrainteract_pair": lambda: json.loads(UI.read_text().splitlines()[0]),
            "pro_hh": lambda: json.loads(PRO.read_text().splitlines()[0])}[format]()
    path = write_jsonl(tmp_path / "rows.jsonl", [good, {**good, **bad_row}])
    with pytest.raises(SourceFormatError) as excinfo:
        load_validated(path, "preference", format=format)
    message = str(excinfo.value)
    assert message.startswith(f"{path!r}, row 1, column '{column}': ") and problem in message
    assert f"(format {format!r})" in message


def test_missing_column_and_unknown_format(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"chosen": "\n\nHuman: a\n\nAssistant: b"}])
    with pytest.raises(SourceFormatError, match=r"has no column 'rejected', which format 'hh_transcript' reads "
                                                r"\(its columns: chosen\)"):
        load_validated(path, "prompt", format="hh_transcript")
    with pytest.raises(ValueError, match=r"task\.format='hh' is not one of \['alol_rewarded', 'gsm8k', 'hh_transcript', 'hh_trl_style'"):
        check_format("hh", "prompt")
    with pytest.raises(ValueError, match=r"not task\.schema='group'"):
        check_format("ultrafeedback", "group")
    check_format(None, "group")  # rows already in our schema


def test_conversion_comes_before_validation():
    # Raw rows are not in our schema ...
    with pytest.raises(DataValidationError, match="column 'prompt' is missing"):
        load_validated(str(HH), "prompt")
    # ... converted, they are checked as prompt rows: the rows the hh_prompts filters drop are the invalid ones
    with pytest.raises(DataValidationError) as excinfo:
        load_validated(str(HH), "prompt", format="hh_transcript")
    assert [p.split(":")[0] for p in excinfo.value.problems] == ["row 4", "row 5", "row 7"]
    assert "wrong role order, expected assistant but found user" in excinfo.value.problems[0]
    assert "(user) is an empty turn" in excinfo.value.problems[1]
    # with no bad row left, the converted rows load
    rows = load_validated(str(UF), "prompt", format="ultrafeedback", limit=4)
    assert rows["prompt"][3] == [user("Give me three tips for staying focused while studying.")]
