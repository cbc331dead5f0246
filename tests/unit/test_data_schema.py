"""Row schemas and their error messages, loading rows from local files and saved datasets, DatasetTask."""

import json
import re

import datasets
import pytest

from rlhf.data.examples import check_supports
from rlhf.data.loading import load_rows, load_validated
from rlhf.data.schema import DataValidationError, as_messages, row_problems, validate_rows
from rlhf.tasks.dataset import DatasetTask


def m(role: str, content: str) -> dict:
    return {"role": role, "content": content}


GOOD = {
    "conversation": {"messages": [m("system", "Be brief."), m("user", "Hi"), m("assistant", "Hello.")]},
    "preference": {"prompt": [m("user", "Hi")], "chosen": "Hello.", "rejected": "Go away.", "score_chosen": 2.0},
    "prompt": {"prompt": "Hi", "extra": 1},
}

# (schema, row, the one problem expected for it)
BAD = [
    ("conversation", {}, "column 'messages' is missing"),
    ("conversation", {"messages": []}, "column 'messages' must be a non-empty list of {role, content} messages"),
    ("conversation", {"messages": [m("user", "a"), m("user", "b")]},
     "column 'messages' message 1: wrong role order, expected assistant but found user"),
    ("conversation", {"messages": [m("assistant", "a")]},
     "column 'messages' message 0: wrong role order, expected user but found assistant"),
    ("conversation", {"messages": [m("user", "  "), m("assistant", "b")]},
     "column 'messages' message 0 (user) is an empty turn"),
    ("conversation", {"messages": [m("user", "a"), m("bot", "b")]},
     "column 'messages' message 1 has unknown role 'bot' (expected one of system, user, assistant)"),
    ("conversation", {"messages": [m("user", "a"), m("system", "s"), m("assistant", "b")]},
     "column 'messages' message 1: a system message may only open the conversation"),
    ("conversation", {"messages": [m("user", "a"), {"role": "assistant"}]},
     "column 'messages' message 1 is not a {role, content} mapping"),
    ("conversation", {"messages": [m("system", "s"), m("user", "a")]},
     "column 'messages' has no assistant turn to train on"),
    ("preference", {"prompt": "Hi", "chosen": "Hello."}, "column 'rejected' is missing"),
    ("preference", {"prompt": [m("user", "a"), m("assistant", "b")], "chosen": "c", "rejected": "d"},
     "column 'prompt' must end with a user turn, not assistant"),
    ("preference", {"prompt": [m("system", "s")], "chosen": "c", "rejected": "d"},
     "column 'prompt' must end with a user turn, not system"),
    ("preference", {"prompt": "a", "chosen": [m("user", "c")], "rejected": "d"},
     "column 'chosen' message 0: wrong role order, expected assistant but found user"),
    ("preference", {"prompt": "a", "chosen": "c", "rejected": [m("assistant", "d"), m("system", "s")]},
     "column 'rejected' message 1: a system message may only open the conversation"),
    ("preference", {"prompt": "a", "chosen": "c", "rejected": ""}, "column 'rejected' is an empty turn"),
    ("preference", {"prompt": "a", "chosen": "c", "rejected": "d", "score_chosen": "high"},
     "column 'score_chosen' must be a number, got str"),
    ("preference", {"prompt": "a", "chosen": "c", "rejected": "d", "magnitude": [1]},
     "column 'magnitude' must be a number, got list"),
    ("preference", {"prompt": "a", "chosen": "c", "rejected": "d", "score_chosen": float("inf")},
     "column 'score_chosen' must be a finite number, got inf"),
    ("preference", {"prompt": "a", "chosen": "c", "rejected": "d", "score_rejected": float("nan")},
     "column 'score_rejected' must be a finite number, got nan"),
    ("prompt", {"prompt": " "}, "column 'prompt' is an empty turn"),
    ("prompt", {"text": "Hi"}, "column 'prompt' is missing"),
]


@pytest.mark.parametrize("schema", sorted(GOOD))
def test_good_rows_have_no_problems(schema):
    assert row_problems(GOOD[schema], schema) == []
    validate_rows([GOOD[schema]] * 3, schema, "good.jsonl")  # does not raise


def test_multi_turn_rows_are_valid():
    conversation = [m("user", "a"), m("assistant", "b"), m("user", "c"), m("assistant", "d"), m("user", "e")]
    assert row_problems({"messages": conversation}, "conversation") == []  # may end with a user turn
    row = {"prompt": conversation, "chosen": [m("assistant", "f"), m("user", "g"), m("assistant", "h")],
           "rejected": "i", "score_chosen": 1, "score_rejected": 0.5}
    assert row_problems(row, "preference") == []


@pytest.mark.parametrize("schema,row,problem", BAD, ids=[p[:40] for _, _, p in BAD])
def test_each_problem_is_named_with_its_row_and_source(schema, row, problem):
    assert row_problems(row, schema) == [problem]
    rows = [GOOD[schema], GOOD[schema], row, GOOD[schema]]
    with pytest.raises(DataValidationError) as excinfo:
        validate_rows(rows, schema, "'my/data.jsonl'")
    assert str(excinfo.value) == f"1 invalid row(s) in 'my/data.jsonl':\n  row 2: {problem}"
    assert isinstance(excinfo.value, ValueError)


def test_all_problems_of_one_row_are_listed():
    row = {"prompt": "", "chosen": " ", "rejected": "d", "score_rejected": "x"}
    assert row_problems(row, "preference") == [
        "column 'prompt' is an empty turn",
        "column 'chosen' is an empty turn",
        "column 'score_rejected' must be a number, got str",
    ]
    missing = row_problems({"prompt": "a"}, "preference")
    assert missing == ["column 'chosen' is missing", "column 'rejected' is missing"]


def test_only_the_first_ten_bad_rows_are_listed():
    # 28 rows (0..27); every odd row from 3 on is bad: rows 3, 5, ..., 27 -> 13 bad rows, 10 listed, 3 more.
    rows = [GOOD["prompt"] if i < 3 or i % 2 == 0 else {"prompt": ""} for i in range(28)]
    bad = [i for i in range(28) if i >= 3 and i % 2 == 1]
    assert len(bad) == 13
    with pytest.raises(DataValidationError) as excinfo:
        validate_rows(rows, "prompt", "src")
    text = str(excinfo.value)
    assert text.startswith("13 invalid row(s) in src:\n")
    listed = [int(n) for n in re.findall(r"^  row (\d+): column 'prompt' is an empty turn$", text, re.M)]
    assert listed == bad[:10]
    assert text.endswith("\n  ... and 3 more")
    assert len(excinfo.value.problems) == 10


def test_unknown_schema_raises():
    with pytest.raises(ValueError, match=r"unknown data schema 'chat'; expected one of \['conversation', "):
        row_problems({}, "chat")


# ---- loading -------------------------------------------------------------------------------------------

ROWS = [{"prompt": f"Question {i}?", "chosen": f"Good {i}.", "rejected": f"Bad {i}."} for i in range(5)]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_load_jsonl_and_limit(tmp_path):
    path = write_jsonl(tmp_path / "prefs.jsonl", ROWS)
    assert load_rows(path).to_list() == ROWS
    assert load_rows(path, split="ignored-for-files").to_list() == ROWS
    assert load_rows(path, limit=2).to_list() == ROWS[:2]
    assert load_rows(path, limit=50).to_list() == ROWS  # a limit past the end keeps all


def test_load_parquet(tmp_path):
    path = tmp_path / "prefs.parquet"
    datasets.Dataset.from_list(ROWS).to_parquet(str(path))
    assert load_rows(str(path)).to_list() == ROWS
    assert load_rows(str(path), limit=3)["prompt"] == [r["prompt"] for r in ROWS[:3]]


def test_load_saved_dataset_and_dataset_dict(tmp_path):
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "flat"))
    assert load_rows(str(tmp_path / "flat")).to_list() == ROWS
    splits = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(ROWS[:3]), "test": datasets.Dataset.from_list(ROWS[3:])}
    )
    splits.save_to_disk(str(tmp_path / "dict"))
    assert load_rows(str(tmp_path / "dict")).to_list() == ROWS[:3]  # default split: train
    assert load_rows(str(tmp_path / "dict"), split="test", limit=1).to_list() == ROWS[3:4]
    with pytest.raises(KeyError, match=r"has no split 'validation' \(it has \['test', 'train'\]\)"):
        load_rows(str(tmp_path / "dict"), split="validation")


def test_missing_local_paths_are_named(tmp_path):
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match=re.escape(repr(missing))):
        load_rows(missing)
    folder = str(tmp_path / "no_such_folder")
    with pytest.raises(FileNotFoundError, match=re.escape(f"dataset path {folder!r} does not exist")):
        load_rows(folder)


def test_load_validated_names_the_source(tmp_path):
    bad = [*ROWS[:2], {"prompt": "Q", "chosen": "", "rejected": "R"}]
    path = write_jsonl(tmp_path / "bad.jsonl", bad)
    # A file is its own split, so the source is just the path.
    with pytest.raises(DataValidationError, match=re.escape(f"in {path!r}:\n  row 2: column 'chosen' is an empty")):
        load_validated(path, "preference")
    # A saved dataset's split is named, even when the folder name has a dot in it.
    folder = str(tmp_path / "prefs.v2")
    datasets.DatasetDict({"test": datasets.Dataset.from_list(bad)}).save_to_disk(folder)
    with pytest.raises(DataValidationError, match=re.escape(f"in {folder!r} (split 'test'):\n  row 2:")):
        load_validated(folder, "preference", split="test")
    # limit applies before validation: the bad row 2 is not loaded
    assert len(load_validated(path, "preference", limit=2)) == 2


def test_non_finite_scores_in_a_file_are_refused_at_load(tmp_path):
    path = tmp_path / "scores.jsonl"
    path.write_text('{"prompt": "Q", "chosen": "A", "rejected": "B", "score_chosen": 1.0, "score_rejected": 0.5}\n'
                    '{"prompt": "Q", "chosen": "A", "rejected": "B", "score_chosen": Infinity, "score_rejected": 0.5}\n')
    with pytest.raises(DataValidationError, match=re.escape(
            f"in {str(path)!r}:\n  row 1: column 'score_chosen' must be a finite number, got inf")):
        load_validated(str(path), "preference")
    groups = tmp_path / "groups.jsonl"
    groups.write_text('{"prompt": "Q", "responses": ["A", "B"], "scores": [1.0, NaN]}\n')
    with pytest.raises(DataValidationError, match=r"row 0: column 'scores' must hold finite numbers, got \[1.0, nan\]"):
        load_validated(str(groups), "group")


def test_pairs_with_identical_replies_are_dropped_and_counted(tmp_path, caplog):
    rows = [{"prompt": "Q", "chosen": "A", "rejected": "B"}, {"prompt": "Q", "chosen": "same", "rejected": "same"},
            {"prompt": "Q", "chosen": [m("assistant", "x")], "rejected": "x"}, {"prompt": "Q", "chosen": "C", "rejected": "D"}]
    path = write_jsonl(tmp_path / "ties.jsonl", rows[:2] + rows[3:])
    with caplog.at_level("WARNING", logger="rlhf.data.loading"):
        kept = load_validated(path, "preference")
    assert list(kept["chosen"]) == ["A", "C"]
    assert f"dropped 1 of 3 pairs of {path!r} whose chosen and rejected replies are identical (rows 1)" in caplog.text
    # a reply given as a message list is the same reply as its text
    assert as_messages(rows[2]["chosen"], "assistant") == as_messages(rows[2]["rejected"], "assistant")
    only = write_jsonl(tmp_path / "only.jsonl", [rows[1]])
    with pytest.raises(ValueError, match="every one of the 1 pairs of .* has identical chosen and rejected replies"):
        load_validated(only, "preference")


# ---- DatasetTask ---------------------------------------------------------------------------------------


def test_task_validates_rows_when_built(tmp_path):
    rows = [{"messages": [m("user", "Hi"), m("assistant", "Hello.")]}, {"messages": [m("assistant", "Hello.")]}]
    path = write_jsonl(tmp_path / "dialogues.jsonl", rows)
    with pytest.raises(DataValidationError, match=r"row 1: column 'messages' message 0: wrong role order"):
        DatasetTask(name="d", schema="conversation", train_path=path)
    with pytest.raises(ValueError, match="needs task.train_path or task.eval_path"):
        DatasetTask(name="d", schema="conversation")


def test_task_prompts_of_preference_rows(tmp_path):
    rows = [
        {"prompt": "Question 0?", "chosen": "a", "rejected": "b"},
        {"prompt": "Question 1?", "chosen": "a", "rejected": "b"},
        {"prompt": "Question 2?", "chosen": "a", "rejected": "b"},
    ]
    task = DatasetTask(name="p", schema="preference", eval_path=write_jsonl(tmp_path / "e.jsonl", rows),
                       num_eval_prompts=2)
    assert task.prompts("eval") == [[m("user", f"Question {i}?")] for i in range(3)]
    assert task.prompts("eval", limit=1) == [[m("user", "Question 0?")]]
    assert task.eval_prompts() == [[m("user", f"Question {i}?")] for i in range(2)]
    assert task.train is None
    with pytest.raises(ValueError, match=r"task 'p' has no train data \(set task.train_path\)"):
        task.prompts("train")


def test_task_prompts_of_conversations_stop_at_the_first_reply(tmp_path):
    rows = [
        {"messages": [m("system", "S"), m("user", "U0"), m("assistant", "A0"), m("user", "U1"), m("assistant", "A1")]},
        {"messages": [m("user", "V0"), m("assistant", "B0")]},
    ]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    task = DatasetTask(name="c", schema="conversation", train_path=path, eval_path=path)
    expected = [[m("system", "S"), m("user", "U0")], [m("user", "V0")]]
    assert task.prompts("eval") == expected
    assert task.prompts("train") == expected


def test_check_supports():
    with pytest.raises(ValueError, match=r"pair batches, which need preference rows, but task=x has conversation rows"):
        check_supports("conversation", "pair", "task=x")
    with pytest.raises(ValueError, match=r"need conversation, preference or scored rows, but src has prompt rows"):
        check_supports("prompt", "sequence", "src")
    for schema, kind in (("preference", "pair"), ("preference", "sequence"), ("conversation", "sequence")):
        check_supports(schema, kind, "src")  # does not raise


def test_zero_training_steps_is_refused_not_read_as_an_epoch(tmp_path):
    from rlhf.trainers.offline import fit_offline

    with pytest.raises(ValueError, match=r"trainer.max_steps=0 must be >= 1 \(or null: trainer.epochs epochs\)"):
        fit_offline(policy=None, algo=None, task=None, tokenization=None, logger=None, run_dir=str(tmp_path), seed=0,
                    config={}, max_steps=0)
    assert not any(tmp_path.iterdir())  # refused before the run directory is written
