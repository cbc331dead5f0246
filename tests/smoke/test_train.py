"""The real `rlhf-train` on the tiny model: finite loss, every trainable parameter changed, resume."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from rlhf.models.reward_model import load_reward_model
from rlhf.models.tiny import tiny_model_path
from tests.smoke.helpers import REPO, assert_finite, command, env, kill_when, metrics, run, train_losses, weights

pytestmark = pytest.mark.slow


LM_RUNS = {
    "sft": ["algo=sft"],
    "sft_dialogues": ["task=synthetic_dialogues", "algo=sft"],
    **{name: [f"algo={name}"] for name in ("dpo", "rpo", "ipo", "opo", "pro", "refuel", "nll", "wbc", "r_gold",
                                            "r_lol", "a_lol", "a_lol_ref_free", "a_lol_seq", "a_lol_kl")},
    # about half the examples (the rejected replies) have positive advantage: 8 steps scale to 3
    "a_lol_all_priority": ["algo=a_lol", "trainer.sampling_strategy=all_priority", "trainer.max_steps=8"],
    "grpo": ["algo=grpo", "task=synthetic_groups"],
    "dr_grpo": ["algo=dr_grpo", "task=synthetic_groups"],
    "ppo": ["algo=ppo", "task=synthetic_groups"],
}


@pytest.mark.parametrize("name", sorted(LM_RUNS))
def test_train_changes_every_parameter(tmp_path, tiny_cache, name):
    run_dir = tmp_path / "run"
    out = run("rlhf.train", run_dir, tiny_cache, "experiment=debug", "trainer.max_steps=4", *LM_RUNS[name])
    losses = train_losses(run_dir)
    assert_finite(list(losses.values()))
    assert sorted(losses) == list(range(1, max(losses) + 1)) and max(losses) >= 2  # A-LoL scales its steps
    before = weights(tiny_model_path(tiny_cache))
    after = weights(run_dir / "model")
    assert before.keys() == after.keys()
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, f"parameters not updated by {name}: {unchanged}"
    assert (run_dir / "config.yaml").exists() and (run_dir / "final_metrics.json").exists()
    assert "reward after training" in out.stdout


RM_RUNS = {
    "rm": (["algo=rm"], {}),
    "maxmin_rm": (["experiment=maxmin_rm"], {"num_groups": 2, "freeze_backbone": True}),
    "sharedrep_rm": (["experiment=sharedrep_rm"], {"num_groups": 2, "shared_dim": 16, "freeze_backbone": True}),
}


@pytest.mark.parametrize("name", sorted(RM_RUNS))
def test_reward_model_training(tmp_path, tiny_cache, name):
    """Reward models train their heads (and a backbone only when it is not frozen); eval reports held-out
    pair accuracy."""
    overrides, settings = RM_RUNS[name]
    run_dir = tmp_path / "run"
    run("rlhf.train", run_dir, tiny_cache, *overrides, "trainer.max_steps=4", "trainer.eval_every=2",
        "task.train_limit=64", "task.eval_limit=16", "trainer.batch_size=4", "trainer.log_every=1")
    assert_finite(list(train_losses(run_dir).values()))
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert 0.0 <= final["eval/rewards/accuracy"] <= 1.0 and "eval/reward_mean" not in final  # no generation
    initial = load_reward_model(str(tiny_model_path(tiny_cache)), seed=0, **settings).model.state_dict()
    if settings:  # group heads over a frozen backbone, saved apart
        heads = load_file(run_dir / "model" / "heads.safetensors")
        assert all(not torch.equal(initial[f"head.{k}"], v) for k, v in heads.items())
        backbone = load_file(run_dir / "model" / "backbone" / "model.safetensors")
        assert all(torch.equal(initial[f"backbone.{k}"], v) for k, v in backbone.items()), "frozen backbone moved"
    else:
        trained = weights(run_dir / "model")
        assert trained.keys() <= initial.keys() and "score.weight" in trained
        assert all(not torch.equal(initial[k], v) for k, v in trained.items())


def test_rerun_of_finished_run_does_not_train_again(tmp_path, tiny_cache):
    run_dir = tmp_path / "run"
    run("rlhf.train", run_dir, tiny_cache, "experiment=debug", "algo=sft")
    stamp = (run_dir / "model" / "model.safetensors").stat().st_mtime_ns
    out = run("rlhf.train", run_dir, tiny_cache, "experiment=debug", "algo=sft")
    assert (run_dir / "model" / "model.safetensors").stat().st_mtime_ns == stamp
    assert "complete already" in out.stderr + out.stdout


RESUME_RUNS = {  # one per batch kind / loop; only dpo generates at every eval (its RNG must not leak)
    "dpo": ["algo=dpo", "trainer.max_steps=40", "trainer.eval_every=4"],
    "sft": ["algo=sft", "trainer.max_steps=40"],
    "a_lol": ["algo=a_lol", "trainer.max_steps=40"],
    "grpo": ["algo=grpo", "task=synthetic_groups", "trainer.max_steps=40"],
    "ppo": ["algo=ppo", "task=synthetic_groups", "trainer.max_steps=40"],
    "rm": ["algo=rm", "trainer.max_steps=120", "task.train_limit=null"],
}


@pytest.mark.parametrize("name", sorted(RESUME_RUNS))
def test_killed_run_resumes_to_the_same_weights(tmp_path, tiny_cache, name):
    """Kill -9 a run after its first checkpoint; the same command again must finish with the weights
    (and per-step losses) of an uninterrupted run."""
    overrides = ["experiment=debug", "trainer.checkpoint_every=4", "trainer.eval_every=0",
                 "trainer.lr_scheduler=cosine", "trainer.warmup_steps=3", *RESUME_RUNS[name]]
    whole = tmp_path / "whole"
    run("rlhf.train", whole, tiny_cache, *overrides)

    killed = tmp_path / "killed"
    kill_when("rlhf.train", killed, tiny_cache, killed / "checkpoints" / "step-00000004" / "trainer_state.json",
              *overrides, what="its first checkpoint")
    assert not (killed / "final_metrics.json").exists(), "the run finished before it could be killed"

    out = run("rlhf.train", killed, tiny_cache, *overrides)
    assert "resumed from" in out.stderr + out.stdout
    a, b = weights(whole / "model"), weights(killed / "model")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run's"
    steps = [m["step"] for m in metrics(killed) if "loss" in m]
    total = max(train_losses(whole))
    assert steps == sorted(set(steps)) == list(range(1, total + 1)), "steps logged twice or missing"
    assert train_losses(killed) == pytest.approx(train_losses(whole), rel=1e-6, abs=1e-7)
    final = json.loads((killed / "final_metrics.json").read_text())
    assert final == pytest.approx(json.loads((whole / "final_metrics.json").read_text()))


def test_gradient_accumulation_matches_the_larger_batch(tmp_path, tiny_cache):
    """Two micro-batches of 4 pairs accumulated give the step of one batch of 8: DPO averages over pairs,
    and micro-batch k of a step takes the next 4 examples of the same epoch order the batch of 8 takes."""
    common = ["experiment=debug", "algo=dpo", "trainer.max_steps=3", "trainer.max_grad_norm=1e9"]
    run("rlhf.train", tmp_path / "accum", tiny_cache, *common, "trainer.batch_size=4",
        "trainer.gradient_accumulation_steps=2")
    run("rlhf.train", tmp_path / "big", tiny_cache, *common, "trainer.batch_size=8")
    a, b = weights(tmp_path / "accum" / "model"), weights(tmp_path / "big" / "model")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert train_losses(tmp_path / "accum") == pytest.approx(train_losses(tmp_path / "big"), rel=1e-4)


def test_bad_data_fails_before_any_model_is_loaded(tmp_path):
    """A malformed row stops the run with its row and column named, before the policy is built."""
    data = tmp_path / "bad.jsonl"
    data.write_text(
        json.dumps({"prompt": "Hi there.", "chosen": "Hello.", "rejected": "Go."}) + "\n"
        + json.dumps({"prompt": "Hi there.", "chosen": "Hello."}) + "\n"
    )
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    result = subprocess.run(command("rlhf.train", tmp_path / "run", "task=preference", f"task.train_path={data}"),
                            cwd=REPO, env=env(str(cache)), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "row 1: column 'rejected' is missing" in result.stderr
    assert not any(cache.iterdir()), "the tiny policy was built although the data was invalid"


def test_vllm_backend_is_refused_for_evaluation_during_training(tmp_path):
    """vLLM samples the saved policy, so evaluating the policy being trained with it is refused at once."""
    cache = tmp_path / "empty-cache"
    cache.mkdir()
    result = subprocess.run(command("rlhf.train", tmp_path / "run", "backend=vllm"), cwd=REPO, env=env(str(cache)),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "rlhf.backends.vllm.VLLMBackend samples the saved policy" in result.stderr and "backend=hf" in result.stderr
    assert not any(cache.iterdir()), "the tiny policy was built before the backend was refused"


def test_lora_runs_are_reproducible(tmp_path, tiny_cache):
    """The same command twice (different run directories) gives identical LoRA weights: the adapter's random
    initialisation is seeded by `seed`, and a different seed gives different weights."""
    lora = "policy.lora={r: 4, lora_alpha: 8, target_modules: [q_proj, v_proj]}"
    common = ["experiment=debug", "algo=dpo", "trainer.reference=disabled_adapter", "trainer.max_steps=2", lora]
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        run("rlhf.train", tmp_path / name, tiny_cache, *common, f"seed={seed}")
    adapter = {n: load_file(tmp_path / n / "model" / "adapter" / "adapter_model.safetensors") for n in "abc"}
    assert all(torch.equal(adapter["a"][k], adapter["b"][k]) for k in adapter["a"])
    assert not all(torch.equal(adapter["a"][k], adapter["c"][k]) for k in adapter["a"])
    lora_b = [v for k, v in adapter["a"].items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b), "LoRA B (initialised to zero) was not trained"


def test_a_non_finite_gradient_stops_the_run_before_the_weights_or_a_checkpoint_take_it(tmp_path, tiny_cache):
    # a learning rate this large makes the weights huge after one step, and the next loss and gradient inf/NaN
    run_dir = tmp_path / "run"
    result = subprocess.run(command("rlhf.train", run_dir, "experiment=debug", "trainer.learning_rate=1e30",
                                    "trainer.checkpoint_every=1", "trainer.max_steps=6"),
                            cwd=REPO, env=env(tiny_cache), capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "FloatingPointError: non-finite gradient norm at optimizer step" in result.stderr
    assert "stopped before the step, so the weights and the last checkpoint stay finite" in result.stderr
    checkpoints = sorted((run_dir / "checkpoints").glob("step-*/model.safetensors"))
    assert checkpoints and not (run_dir / "final_metrics.json").exists()
    for path in checkpoints:
        assert all(torch.isfinite(t).all() for t in load_file(path).values()), path


@pytest.mark.parametrize("name", ["offline", "online"])
def test_a_run_killed_while_saving_its_model_finishes_with_its_metrics(tmp_path, tiny_cache, name):
    # what a kill after the last checkpoint leaves: the checkpoint, but no model/ and no final_metrics.json
    overrides = ["experiment=debug"] if name == "offline" else ["experiment=online_debug", "algo=grpo"]
    run_dir = tmp_path / "run"
    run("rlhf.train", run_dir, tiny_cache, *overrides)
    whole = json.loads((run_dir / "final_metrics.json").read_text())
    lines = (run_dir / "metrics.jsonl").read_text()
    (run_dir / "final_metrics.json").unlink()
    shutil.rmtree(run_dir / "model")
    out = run("rlhf.train", run_dir, tiny_cache, *overrides)
    assert "resumed from" in out.stderr + out.stdout
    assert json.loads((run_dir / "final_metrics.json").read_text()) == whole  # train/* and eval/* kept
    assert any(k.startswith("train/") for k in whole)
    assert (run_dir / "metrics.jsonl").read_text() == lines  # the final evaluation is not logged twice
    assert (run_dir / "model" / "model.safetensors").exists()


def test_a_run_directory_with_results_refuses_changed_settings(tmp_path, tiny_cache):
    run_dir = tmp_path / "run"
    run("rlhf.train", run_dir, tiny_cache, "experiment=debug")
    before = (run_dir / "final_metrics.json").read_text()
    changed = subprocess.run(command("rlhf.train", run_dir, "experiment=debug", "trainer.learning_rate=0.5", "algo=sft"),
                             cwd=REPO, env=env(tiny_cache), capture_output=True, text=True, timeout=300)
    assert changed.returncode != 0
    assert "holds results made with other settings, which a resume would silently reuse" in changed.stderr
    assert "trainer.learning_rate: 0.0005 -> 0.5" in changed.stderr
    assert "algo._target_: 'rlhf.algos.dpo.DPO' -> 'rlhf.algos.sft.SFT'" in changed.stderr
    assert (run_dir / "final_metrics.json").read_text() == before
    assert "learning_rate: 0.0005" in (run_dir / "config.yaml").read_text()  # the saved settings are kept
    # settings that change only what is written are not checked; an explicit choice continues anyway
    run("rlhf.train", run_dir, tiny_cache, "experiment=debug", "trainer.log_every=3")
    out = run("rlhf.train", run_dir, tiny_cache, "experiment=debug", "trainer.learning_rate=0.5",
              "resume=ignore_config_change")
    assert "continues under changed settings" in out.stderr + out.stdout


def test_a_damaged_latest_checkpoint_is_skipped_and_the_run_ends_as_an_uninterrupted_one(tmp_path, tiny_cache):
    overrides = ["experiment=debug", "trainer.max_steps=6", "trainer.checkpoint_every=2", "trainer.eval_every=0",
                 "trainer.keep_checkpoints=0"]
    whole = tmp_path / "whole"
    run("rlhf.train", whole, tiny_cache, *overrides)
    damaged = tmp_path / "damaged"
    shutil.copytree(whole, damaged)
    for name in ("final_metrics.json", "model", "checkpoints/step-00000006"):  # as if killed after step 4
        shutil.rmtree(damaged / name) if (damaged / name).is_dir() else (damaged / name).unlink()
    (damaged / "checkpoints/step-00000004/model.safetensors").write_bytes(b"{not a header")
    out = run("rlhf.train", damaged, tiny_cache, *overrides)
    text = out.stdout + out.stderr
    assert "newer checkpoints are damaged and were skipped" in text
    assert "step-00000004: model.safetensors: 13 bytes, " in text
    assert "step-00000002 (step 2 of 6)" in text
    a, b = weights(whole / "model"), weights(damaged / "model")
    assert all(torch.equal(a[k], b[k]) for k in a)


PLANTED = """import pickle, sys
class Payload:
    def __reduce__(self):
        return (open, ({marker!r}, "w"))
sys.stdout.buffer.write(pickle.dumps({{"random_state": Payload()}}))
"""


@pytest.mark.parametrize("planted", ["random_states_0.pkl", "custom_checkpoint_0.pkl", "scheduler.json"])
def test_resuming_never_runs_code_planted_in_a_run_directory(tmp_path, tiny_cache, planted):
    """A crafted pickle in someone's run directory, with its manifest rewritten to match, is never unpickled:
    the resume is refused with the checkpoint named, and the pickle's payload (creating a file) never runs."""
    from rlhf.trainers.checkpoint import write_manifest

    run_dir, marker = tmp_path / "run", tmp_path / "pwned"
    overrides = ["experiment=debug", "trainer.max_steps=4", "trainer.checkpoint_every=2", "trainer.eval_every=0"]
    run("rlhf.train", run_dir, tiny_cache, *overrides)
    shutil.rmtree(run_dir / "checkpoints/step-00000004")
    (run_dir / "final_metrics.json").unlink()
    checkpoint = run_dir / "checkpoints/step-00000002"
    payload = subprocess.run([sys.executable, "-c", PLANTED.format(marker=str(marker))], capture_output=True,
                             check=True).stdout
    (checkpoint / planted).write_bytes(payload)
    write_manifest(checkpoint)
    out = subprocess.run(command("rlhf.train", run_dir, *overrides), cwd=REPO, env=env(tiny_cache),
                         capture_output=True, text=True, timeout=300)
    assert not marker.exists(), "code from the run directory ran"
    assert out.returncode != 0
    assert f"cannot resume from {checkpoint}" in out.stdout + out.stderr
