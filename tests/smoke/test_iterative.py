"""`trainer=iterative`: REFUEL's setting one as one command, generate -> train twice in one run directory, with
each iteration's evaluation, and a run killed in its second iteration resuming to the same result."""

import json

import pytest
import torch

from tests.smoke.helpers import kill_when, metrics, run, weights

pytestmark = pytest.mark.slow

ITERATIVE = ["trainer=iterative", "algo=refuel", "task=synthetic_dialogues", "user=dataset", "trainer.iterations=2",
             "trainer.num_prompts=32", "trainer.train.max_steps=4", "trainer.train.batch_size=4",
             "trainer.train.eval_every=0", "trainer.train.checkpoint_every=2", "task.num_eval_prompts=8",
             "backend.max_new_tokens=8", "trainer.train.learning_rate=1e-3"]


def test_iterations_chain_generation_and_training_and_resume(tmp_path, tiny_cache):
    whole = tmp_path / "whole"
    run("rlhf.train", whole, tiny_cache, *ITERATIVE)
    for k in (1, 2):
        pairs = [json.loads(line) for line in (whole / f"iter-{k}" / "generate" / "pairs.jsonl").read_text().splitlines()]
        assert pairs and all("branch_turn" in p for p in pairs)
        assert (whole / f"iter-{k}" / "train" / "model" / "model.safetensors").exists()
    # iteration 2 generated with iteration 1's model, so its pairs differ from iteration 1's
    first = (whole / "iter-1" / "generate" / "pairs.jsonl").read_text()
    assert first != (whole / "iter-2" / "generate" / "pairs.jsonl").read_text()
    assert (whole / "model").resolve() == (whole / "iter-2" / "train" / "model").resolve()
    assert [m["step"] for m in metrics(whole)] == [0, 1, 2]  # the start, then each iteration's evaluation
    final = json.loads((whole / "final_metrics.json").read_text())
    assert {"before/eval/reward_mean", "iter-1/eval/reward_mean", "iter-2/eval/reward_mean"} <= final.keys()

    killed = tmp_path / "killed"
    kill_when("rlhf.train", killed, tiny_cache, killed / "iter-2" / "train" / "checkpoints" / "step-00000002" /
              "trainer_state.json", *ITERATIVE, what="iteration 2 checkpointed")
    out = run("rlhf.train", killed, tiny_cache, *ITERATIVE)
    assert "resumed from" in out.stderr + out.stdout
    a, b = weights(whole / "model"), weights(killed / "model")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert metrics(killed) == metrics(whole)
