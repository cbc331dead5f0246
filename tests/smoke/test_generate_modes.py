"""`rlhf-generate` modes on the tiny model: dialogues (killed and resumed), REFUEL pairs trained on, and
CollabLLM candidate pairs."""

import json
import subprocess

import datasets
import pytest

from tests.smoke.helpers import REPO, command, env, kill_when, run

pytestmark = pytest.mark.slow

GAME = ["task=twenty_questions", "user=twenty_questions_kb", "backend.max_new_tokens=12"]


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_killed_generation_resumes_to_the_same_dataset(tmp_path, tiny_cache):
    overrides = ["mode=dialogues", *GAME, "task.max_turns=4", "reward=twenty_questions_infogain",
                 "num_prompts=24", "mode.chunk_size=4"]
    whole = tmp_path / "whole"
    run("rlhf.generate", whole, tiny_cache, *overrides)

    killed = tmp_path / "killed"
    kill_when("rlhf.generate", killed, tiny_cache, killed / "chunks" / "000001.jsonl", *overrides,
              what="its second chunk")
    assert not (killed / "dialogues").exists(), "the run finished before it could be killed"
    run("rlhf.generate", killed, tiny_cache, *overrides)

    a, b = lines(whole / "dialogues.jsonl"), lines(killed / "dialogues.jsonl")
    assert len(b) == 24 and a == b  # no row duplicated, none missing, same dialogues
    assert [r["fields"]["object"] for r in b] == [r["fields"]["object"] for r in a]
    stored = datasets.load_from_disk(str(killed / "dialogues"))
    assert len(stored) == 24 and stored[0]["messages"] == b[0]["messages"]
    for row in b:
        assert row["end"] in ("max_turns", "done") and 1 <= row["num_turns"] <= 4
        assert (row["score"] is None) == (row["invalid_reason"] is not None)
        assert {"success", "questions", "return"} <= row.keys()
    summary = json.loads((killed / "summary.json").read_text())
    assert summary["dialogues"] == 24 and summary["ended/failed"] == 0


def test_generation_refuses_chunks_of_other_work(tmp_path, tiny_cache):
    out = tmp_path / "gen"
    run("rlhf.generate", out, tiny_cache, "mode=dialogues", *GAME, "task.max_turns=1", "num_prompts=2",
        "~reward")
    result = subprocess.run(command("rlhf.generate", out, "mode=dialogues", *GAME, "task.max_turns=1",
                                    "num_prompts=2", "~reward", "seed=3"),
                            cwd=REPO, env=env(tiny_cache), capture_output=True, text=True)
    assert result.returncode != 0 and "holds results made with other settings" in result.stderr
    assert "\n  seed: 0 -> 3\n" in result.stderr


def test_refuel_pairs_then_refuel_training(tmp_path, tiny_cache):
    gen = tmp_path / "gen"
    run("rlhf.generate", gen, tiny_cache, "mode=refuel_pairs", "task=synthetic_dialogues", "user=dataset",
        "reward=bag_of_words", "num_prompts=16", "backend.max_new_tokens=12")
    rows = lines(gen / "dataset.jsonl")
    pairs = datasets.load_from_disk(str(gen / "pairs"))
    assert len(rows) == 16 and len(pairs) == sum(r["drop_reason"] is None for r in rows) > 0
    for pair in pairs:
        assert 0 <= pair["branch_turn"] <= pair["horizon"] < 3
        assert pair["chosen_dialogue"][:len(pair["prompt"])] == pair["prompt"]
        assert pair["score_chosen"] >= pair["score_rejected"]
    train = tmp_path / "train"
    run("rlhf.train", train, tiny_cache, "experiment=debug", "algo=refuel", "task=preference",
        f"task.train_path={gen}/pairs", "trainer.batch_size=4", "trainer.max_steps=2")
    assert (train / "model" / "model.safetensors").exists()


def test_collabllm_pairs(tmp_path, tiny_cache):
    gen = tmp_path / "gen"
    run("rlhf.generate", gen, tiny_cache, "mode=collabllm_pairs", *GAME, "task.max_turns=2",
        "reward=twenty_questions_infogain", "num_prompts=3", "mode.num_samples=2", "mode.window=1")
    rows = lines(gen / "dataset.jsonl")
    assert len(rows) == 6  # 3 dialogues x 2 turns: the tiny policy never guesses the object
    for row in rows:
        assert len(row["candidates"]) == 2 and row["prompt"][-1]["role"] == "user"
        assert row["turn"] == (len(row["prompt"]) - 1) // 2
        if row["drop_reason"] is None:
            assert row["score_chosen"] > row["score_rejected"]  # ties are dropped
        elif row["score_chosen"] is not None and row["score_chosen"] == row["score_rejected"]:
            assert row["drop_reason"] in ("tied scores", "identical candidates")
            assert {row["chosen"], row["rejected"]} == set(row["candidates"])
    second = [r for r in rows if r["turn"] == 1]
    first = {json.dumps(r["fields"]): r for r in rows if r["turn"] == 0}
    for row in second:  # the chosen candidate joined the history, followed by the oracle's answer
        previous = first[json.dumps(row["fields"])]
        assert row["prompt"][-2]["content"] == previous["chosen"] and row["prompt"][-1]["content"] in ("Yes.", "No.")
