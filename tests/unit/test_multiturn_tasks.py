"""The REFUEL, SharedRep, D2PO and A-LoL task configs (conf/task/) on the bundled samples (data/samples): each
filter drops exactly the rows it should and logs it, the openings and user turns a rollout gets, per-turn
token lengths, bad filter settings, and dialogues generated with `user=dataset` replaying the data's turns."""

import json
import logging
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from transformers import AutoTokenizer

import rlhf.data.filters as filters_module
from rlhf.config import CONF_DIR, build
from rlhf.data.filters import build_filters, filter_indices, turn_lengths
from rlhf.data.loading import load_rows
from rlhf.data.sources import convert_rows
from rlhf.rollout.dialogues import generate_dialogues

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"
SAMPLE = {
    "hh": SAMPLES / "hh_rlhf_trl_style" / "train.jsonl",
    "ultrainteract": SAMPLES / "ultrainteract_pair" / "train.jsonl",
    "ultrainteract_dialogues": SAMPLES / "ultrainteract_pair" / "train.jsonl",
    "hh_prompts": SAMPLES / "hh_rlhf" / "train.jsonl",
    "ultrafeedback_prompts": SAMPLES / "ultrafeedback_binarized" / "train_prefs.jsonl",
    "alol_hh": SAMPLES / "pro_hh" / "train.json",
}
# The sample rows each filter drops, in the order the filters run (a row is counted by the first that drops
# it); the comments in data/samples/README.md say why each row is there.
DROPPED = {
    "hh": {"alternating": [5, 6], "nonempty": [7], "max_turns": [4], "turn_tokens": [8, 9]},
    "ultrainteract": {"dedupe": [1, 14], "alternating": [9], "nonempty": [10]},
    "ultrainteract_dialogues": {"dedupe": [1, 4, 14], "alternating": [9], "nonempty": [10], "max_turns": [6],
                                "turn_tokens": [7, 12]},
    "hh_prompts": {"alternating": [4, 7], "nonempty": [5]},
    "ultrafeedback_prompts": {"nonempty": [4]},
    "alol_hh": {"no_colon_ending": [2, 3], "alternating": [4], "nonempty": [5]},
}


def task_cfg(name: str, tiny_cache: str, *overrides: str, path: Path | None = None):
    """The config with task `name` on its sample (or `path`; all of it for both splits) and the session's tiny
    model."""
    path = path or SAMPLE[name]
    tiny = [] if any(o.startswith("policy=") for o in overrides) else [f"policy.cache_dir={tiny_cache}"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("generate", [f"task={name}", f"task.train_path={path}", f"task.eval_path={path}",
                                "++task.train_split=train", "++task.eval_split=train", "run_dir=unused", *tiny,
                                *overrides])


def test_a_local_file_is_sliced_as_the_hub_split_would_be(tiny_cache):
    """UltraInteract has a train split only: its tasks hold out train[:5%]; on a local file the same slices
    apply (the held-out rows are not trained on), and a plain split name reads the whole file."""
    path = str(SAMPLE["ultrainteract"])
    whole = load_rows(path, "test")
    held_out, rest = load_rows(path, "train[:5%]"), load_rows(path, "train[5%:]")
    assert len(whole) == 15 and (len(held_out), len(rest)) == (1, 14)
    assert held_out.to_list() + rest.to_list() == whole.to_list()


def user(text):
    return {"role": "user", "content": text}


@pytest.mark.parametrize("name", sorted(DROPPED))
def test_each_filter_drops_exactly_its_rows_and_logs_it(name, tiny_cache, caplog):
    cfg = task_cfg(name, tiny_cache)
    assert list(cfg.task.filters) == list(DROPPED[name])  # the config runs these filters, in this order
    raw = load_rows(str(SAMPLE[name]))
    rows = convert_rows(raw, cfg.task.format, cfg.task.schema, "sample")
    filters = build_filters(build(cfg.task.filters), cfg.task.schema, build(cfg.task.get("tokenizer")))
    kept, dropped = filter_indices(rows, filters)
    assert dropped == DROPPED[name]
    assert kept == [i for i in range(len(raw)) if not any(i in d for d in DROPPED[name].values())]

    with caplog.at_level(logging.INFO, logger="rlhf.data.filters"):
        task = build(cfg.task)  # the real path: hydra config, loading, conversion, filters, validation
    assert task.train.to_list() == rows.select(kept).to_list() == task.eval.to_list()
    lines = [r.getMessage() for r in caplog.records if r.name == "rlhf.data.filters"]
    assert len(lines) == 2 * len(DROPPED[name])  # one line per filter, for each split
    reaching = len(raw)
    for line, (filter_name, indices) in zip(lines, DROPPED[name].items()):
        assert line.startswith(f"task {name!r}, {str(SAMPLE[name])!r}: filter {filter_name} dropped "
                               f"{len(indices)} of {reaching} (")
        reaching -= len(indices)


def test_filters_run_in_batches_with_dedupe_across_them(tiny_cache, monkeypatch):
    monkeypatch.setattr(filters_module, "BATCH", 4)  # rows 0-3, 4-7, ...: row 4 repeats row 3, row 14 row 2
    cfg = task_cfg("ultrainteract_dialogues", tiny_cache)
    rows = convert_rows(load_rows(str(SAMPLE["ultrainteract_dialogues"])), cfg.task.format, cfg.task.schema, "sample")
    filters = build_filters(build(cfg.task.filters), cfg.task.schema, build(cfg.task.tokenizer))
    assert filter_indices(rows, filters)[1] == DROPPED["ultrainteract_dialogues"]


def test_filters_on_rows_already_in_our_schema(tmp_path, tiny_cache):
    # format null: the rows are checked as loaded, then filtered (here: REFUEL setting two's dedupe)
    path = tmp_path / "dialogues.jsonl"
    dialogues = [[user("a"), {"role": "assistant", "content": "b"}], [user("a"), {"role": "assistant", "content": "c"}],
                 [user("d"), {"role": "assistant", "content": "e"}]]
    path.write_text("".join(json.dumps({"messages": d}) + "\n" for d in dialogues))
    task = build(task_cfg("synthetic_dialogues", tiny_cache, "+task.filters.dedupe=user_turns", path=path).task)
    assert task.train["messages"] == task.eval["messages"] == [dialogues[0], dialogues[2]]


def test_hh_openings_and_user_turns(tiny_cache):
    task = build(task_cfg("hh", tiny_cache).task)
    openings, fields = task.openings("train")
    assert len(openings) == 7 and task.max_turns == 5
    # kept sample row 2: three turns about learning the guitar
    assert openings[2] == [user("I'd like to learn to play the guitar.")]
    assert fields[2] == {"user_turns": ["My fingertips hurt after practicing.",
                                        "Should I buy an electric or an acoustic guitar?"]}
    # kept sample row 3: the five-turn dialogue, all of whose later user turns are replayed
    assert openings[3] == [user("What's a quick dinner I can make tonight?")]
    assert fields[3]["user_turns"] == ["I don't have any rice.", "I have spaghetti.", "What vegetables go best?",
                                       "Thanks, that sounds good."]
    assert [len(f["user_turns"]) for f in fields] == [0, 1, 2, 4, 3, 0, 1]


def test_ultrainteract_openings_are_the_first_user_messages(tiny_cache):
    task = build(task_cfg("ultrainteract", tiny_cache).task)
    openings, _ = task.openings("train")
    # the kept sample rows 0, 2, 3, 4, 5, 6, 7, 8, 11, 12, 13, by a phrase of their first user message; rows 3
    # and 4 (and 7 and 8) open alike: different trajectories (first attempts, numbers of turns) of one problem
    phrases = ["Maria buys 4 muffins", "sum of the even numbers", "2^10 is divided by 7", "2^10 is divided by 7",
               "is a palindrome", "What is 15% of 80?", "rectangular field", "rectangular field",
               "least common multiple of 4 and 6", "n boxes in a row", "greatest common divisor"]
    assert len(openings) == len(phrases) and task.max_turns == 5
    for opening, phrase in zip(openings, phrases):
        assert len(opening) == 1 and opening[0]["role"] == "user" and phrase in opening[0]["content"]


def test_hh_prompts_are_the_dialogue_before_the_last_reply(tiny_cache):
    task = build(task_cfg("hh_prompts", tiny_cache).task)
    prompts = task.prompts("eval")
    assert len(prompts) == 9
    assert prompts[1] == [
        user("How do I get my toddler to eat vegetables?"),
        {"role": "assistant", "content": "Toddlers often need to see a food many times before they try it. Serve a "
                                         "small amount next to foods she already likes, eat it yourself in front of "
                                         "her, and don't force it."},
        user("She just throws the broccoli on the floor.")]
    assert prompts[4] == [user("What is the capital of Australia?")]  # sample row 6: its empty reply is not kept


def test_alol_hh_rows_carry_scores(tiny_cache):
    task = build(task_cfg("alol_hh", tiny_cache).task)
    assert len(task.train) == 8 and task.schema == "preference"
    assert all(0 < r["score_chosen"] < 1 and 0 < r["score_rejected"] < 1 for r in task.train)
    assert task.train[0]["prompt"] == [user("How do I remove a coffee stain from a white shirt?")]


def test_turn_lengths_are_the_tokens_each_turn_adds_to_the_template(tiny_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    messages = [user("Hello there"), {"role": "assistant", "content": "Hi! How can I help?"}, user("A joke, please")]
    n = [len(tokenizer(m["content"], add_special_tokens=False).input_ids) for m in messages]
    system = [{"role": "system", "content": "Be brief."}, *messages]
    plain, one_turn, with_system = turn_lengths(tokenizer, [messages, messages[:1], system])
    # The tiny template renders "<|bos|>" then "<|role|>\n{content}<|end|>\n" per message, and a generation
    # prompt "<|assistant|>\n". A user turn is "<|user|>", "\n", content, "<|end|>", "\n" plus the reply's prompt
    # "<|assistant|>", "\n": n + 6 tokens (the first also counts "<|bos|>": n + 7); an assistant turn is its
    # content, "<|end|>" and "\n": n + 2.
    assert plain == [("user", n[0] + 7), ("assistant", n[1] + 2), ("user", n[2] + 6)]
    assert one_turn == plain[:1]
    whole = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert sum(length for _, length in plain) == len(whole)
    # a system message is counted with the first user turn
    assert with_system[0][1] > n[0] + 7 and with_system[1:] == plain[1:]
    assert turn_lengths(tokenizer, []) == [] and turn_lengths(tokenizer, [[]]) == [[]]


def test_the_tokenizer_is_the_policys(tiny_cache, tiny_path):
    cfg = task_cfg("hh", tiny_cache)
    tokenizer = OmegaConf.to_container(cfg.task.tokenizer, resolve=True)
    assert tokenizer["path"] is None and tokenizer["cache_dir"] == tiny_cache
    assert tokenizer["architecture"] == OmegaConf.to_container(cfg.policy.architecture)
    cfg = task_cfg("ultrainteract_dialogues", tiny_cache, "policy=hf", f"policy.path={tiny_path}")
    assert OmegaConf.to_container(cfg.task.tokenizer, resolve=True) == {
        "path": tiny_path, "cache_dir": None, "architecture": None}
    assert len(build(cfg.task).train) == 7  # measured with the tokenizer at policy.path: the same tiny one


def test_no_row_left_is_an_error_naming_the_task_and_filters(tiny_cache):
    cfg = task_cfg("hh", tiny_cache, "task.filters.turn_tokens.user=1")
    with pytest.raises(Exception, match=r"task 'hh': no row of .*train\.jsonl' is left after task\.filters: "
                                        r"alternating dropped 2 of 13 .*turn_tokens dropped 9 of 9"):
        instantiate(cfg.task)


@pytest.mark.parametrize("override, message", [
    ("+task.filters.bogus=true", r"task\.filters\.bogus is not a filter; the filters are alternating, nonempty"),
    ("task.filters.dedupe=prompt", r"task\.filters\.dedupe must be one of trajectory, user_turns, got 'prompt'"),
    ("task.filters.max_turns=0", r"task\.filters\.max_turns must be a positive number of turns, got 0"),
    ("task.filters.alternating=yes", r"task\.filters\.alternating must be true or false, got 'yes'"),
    ("+task.filters.no_colon_ending=true", (r"no_colon_ending reads the replies of preference or scored rows, not "
                                           r"'conversation' rows")),
    ("task.tokenizer=null", r"task\.filters\.turn_tokens measures turns with task\.tokenizer, which is not set"),
    ("~task.filters.max_turns", (r"task\.filters\.turn_tokens\.user has no limit for dialogues of 6 turns \(it has "
                                r"\[1, 2, 3, 4, 5\]\); put a max_turns filter before it")),
])
def test_bad_filter_settings_are_reported(tiny_cache, override, message):
    cfg = task_cfg("ultrainteract_dialogues", tiny_cache, override)
    with pytest.raises(Exception, match=message):
        instantiate(cfg.task)


def test_dialogues_with_the_dataset_user_replay_the_data(tiny_cache, tmp_path):
    cfg = task_cfg("hh", tiny_cache, "mode=dialogues", "user=dataset", "~reward", "backend.max_new_tokens=4",
                   "task.eval_path=null", f"run_dir={tmp_path}")
    task = build(cfg.task)
    dataset = build(cfg.mode)(policy=build(cfg.policy), backend=build(cfg.backend), user=build(cfg.user),
                              reward=None, task=task, split="train", num_prompts=None, seed=0, run_dir=str(tmp_path))
    assert build(cfg.mode).func is generate_dialogues and len(dataset) == len(task.train) == 7
    for row, data in zip(dataset, task.train):
        data_users = [m["content"] for m in data["messages"] if m["role"] == "user"]
        assert [m["content"] for m in row["messages"] if m["role"] == "user"] == data_users
        assert row["num_turns"] == len(data_users)  # one policy turn per user turn of the data
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"] * len(data_users)
        assert row["end"] == ("max_turns" if len(data_users) == task.max_turns else "user")
