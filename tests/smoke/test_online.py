"""The real `rlhf-train` with the online loop on the tiny model: each algorithm family trains on fresh
rollouts (every trainable parameter changes), single-turn and against a simulated user, and a run killed
with SIGKILL resumes to the weights and metrics of an uninterrupted one."""

import json
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from rlhf.models.tiny import tiny_model_path
from tests.fake_chat_server import FakeChatServer, Reply, Status
from tests.smoke.helpers import REPO, assert_finite, command, env, kill_when, metrics, run, weights

pytestmark = pytest.mark.slow

SAMPLE = "data/samples/ultrainteract_pair/train.jsonl"
# pair batches train on pairs of different reward: word counts of 8-token replies are rarely equal
FAMILIES = {
    "grpo": ["algo=grpo"],
    "dr_grpo": ["algo=dr_grpo", "trainer.ppo_epochs=2", "trainer.num_minibatches=2"],
    "ppo": ["algo=ppo", "trainer.ppo_epochs=2", "trainer.num_minibatches=2"],
    "opo": ["algo=opo", "reward=length", "backend.max_new_tokens=16"],
    # (no penalty_reward_value: 8-token replies of the tiny policy are nearly all cut, so all would tie at it;
    # the HH test below trains with it)
    "refuel": ["algo=refuel", "reward=length", "algo.kl_coef=0.05", "trainer.ppo_epochs=2"],
    # windows of 8 pairs (2 updates), 2 gold labels each: the discriminator trains from the third update on
    "d2po": ["algo=d2po", "reward=length", "reward.unit=chars", "backend.max_new_tokens=16", "trainer.discriminator.window=8",
             "trainer.discriminator.relabels=2"],
}


def assert_trained(run_dir, tiny_cache, name: str, updates: int) -> None:
    """Finite losses, rollout statistics and timings every update, every parameter of the policy changed."""
    steps = [m for m in metrics(run_dir) if "loss" in m]
    assert [m["step"] for m in steps] == list(range(1, updates + 1))
    assert_finite([m["loss"] for m in steps])
    for m in steps:  # rollout statistics and where the time went, every update
        assert m["rollout/dialogues"] > 0 and m["rollout/invalid"] >= 0 and "rollout/reward_mean" in m
        assert {"time/generation", "time/step"} <= m.keys()
        assert "skipped" in m or {"time/logprobs", "time/train"} <= m.keys()  # an update with nothing to train
        # the reward scores every rollout; D2PO's discriminator labels them, asking the gold about a few
        assert ("time/discriminator" if name == "d2po" else "time/reward") in m
    before = weights(tiny_model_path(tiny_cache))
    after = weights(run_dir / "model")
    trained = {k for k in after if k in before}
    assert trained == set(before), "the saved policy lacks weights of the initial one"
    unchanged = [k for k in trained if torch.equal(before[k], after[k])]
    assert not unchanged, f"parameters not updated by online {name}: {unchanged}"
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert {"before/eval/reward_mean", "eval/reward_mean", "train/loss"} <= final.keys()


def test_online_pairs_train_the_same_with_the_shared_prompt_forward(tmp_path, tiny_cache):
    """trainer.pair_forward online (OPO): the prompt once for both replies, in the sampling policy's pass and in
    training, gives joint's losses and weights up to float rounding."""
    runs = {}
    for forward in ("joint", "shared_prompt"):
        run_dir = tmp_path / forward
        out = run("rlhf.train", run_dir, tiny_cache, "experiment=online_debug", *FAMILIES["opo"],
                  "trainer.ppo_epochs=2", "trainer.learning_rate=1e-3", f"trainer.pair_forward={forward}")
        assert "runs as joint" not in out.stdout + out.stderr
        runs[forward] = run_dir
    losses = {f: [m["loss"] for m in metrics(d) if "loss" in m] for f, d in runs.items()}
    assert len(losses["joint"]) == 4 and losses["shared_prompt"] == pytest.approx(losses["joint"], abs=1e-4)
    a, b = weights(runs["joint"] / "model"), weights(runs["shared_prompt"] / "model")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=1e-4)


# the families a resume test (below) does not cover; those it covers are checked on its uninterrupted run
@pytest.mark.parametrize("name", ["dr_grpo"])
def test_online_training_changes_every_parameter(tmp_path, tiny_cache, name):
    run_dir = tmp_path / "run"
    out = run("rlhf.train", run_dir, tiny_cache, "experiment=online_debug", "trainer.learning_rate=1e-3",
              *FAMILIES[name])
    assert_trained(run_dir, tiny_cache, name, 4)
    assert "reward after training" in out.stdout


def test_d2po_spends_its_gold_labels_and_trains_its_discriminator(tmp_path, tiny_cache):
    run_dir = tmp_path / "run"
    run("rlhf.train", run_dir, tiny_cache, "experiment=online_debug", *FAMILIES["d2po"], "trainer.max_steps=6",
        "trainer.discriminator.max_labels=5")
    steps = [m for m in metrics(run_dir) if "loss" in m]
    # 2 labels in each window of two updates, until max_labels: 2, 2, 4, 4, 5, 5
    assert [m["d2po/gold_labels"] for m in steps] == [2, 2, 4, 4, 5, 5]
    assert [m["d2po/updates"] for m in steps] == [0, 0, 1, 1, 1, 1]  # from the second window, once each
    initial = load_file(tiny_model_path(tiny_cache) / "model.safetensors")
    trained = load_file(run_dir / "discriminator" / "model.safetensors")
    assert "score.weight" in trained and not torch.equal(trained["model.norm.weight"], initial["model.norm.weight"])


def test_ppo_keeps_its_value_head_and_adapts_the_kl_coefficient(tmp_path, tiny_cache):
    run_dir = tmp_path / "run"
    controller = "{_target_: rlhf.algos.ppo.AdaptiveKLController, init_kl_coef: 0.2, target: 0.001, horizon: 10}"
    run("rlhf.train", run_dir, tiny_cache, "experiment=online_debug", "algo=ppo", f"trainer.kl_controller={controller}",
        "trainer.learning_rate=1e-3", "trainer.ppo_epochs=2")
    assert (run_dir / "model" / "value_head.safetensors").exists()
    steps = [m for m in metrics(run_dir) if "loss" in m]
    assert steps[0]["rollout/kl"] == 0.0  # the first rollout is sampled by the reference itself
    # after each update β follows the controller's rule on the update's KL (Ziegler et al.'s horizon form)
    expected, beta = [], 0.2
    for m in steps:
        error = min(max(m["rollout/kl"] / 0.001 - 1, -0.2), 0.2)
        beta *= 1 + error * m["rollout/dialogues"] / 10
        expected.append(beta)
    assert [m["kl_coef"] for m in steps] == pytest.approx(expected, rel=1e-9)
    assert len(set(expected)) == 4  # the coefficient moved every update


def test_grpo_plays_twenty_questions_against_the_oracle(tmp_path, tiny_cache):
    """Multi-turn: games of up to 3 questions against the knowledge-base oracle the task brings, scored by
    exact success; every policy turn of a game is trained on."""
    run_dir = tmp_path / "run"
    run("rlhf.train", run_dir, tiny_cache, "experiment=online_debug", "algo=grpo", "task=twenty_questions",
        "reward=twenty_questions_infogain", "task.max_turns=3")
    config = (run_dir / "config.yaml").read_text()
    assert "rlhf.users.oracle.TwentyQuestionsOracle" in config
    steps = [m for m in metrics(run_dir) if "loss" in m]
    assert all(m["rollout/turns_mean"] > 1 for m in steps)
    assert all({"rollout/success_mean", "rollout/questions_mean"} <= m.keys() for m in steps)
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert {"eval/success_mean", "eval/return_mean", "eval/turns_mean"} <= final.keys()


def test_refuel_on_ultrainteract_with_the_simulated_user(tmp_path, tiny_cache):
    """The design card's `rlhf-train algo=refuel task=ultrainteract` on the bundled sample: the task brings
    the online loop and its user (REFUEL's user prompt on the policy's own model, here the tiny one)."""
    run_dir = tmp_path / "run"
    run("rlhf.train", run_dir, tiny_cache, "algo=refuel", "task=ultrainteract", f"task.train_path={SAMPLE}",
        "trainer.max_steps=2", "trainer.prompts_per_step=2", "task.num_eval_prompts=2", "task.max_turns=2",
        "backend.max_new_tokens=8")
    steps = [m for m in metrics(run_dir) if "loss" in m]
    assert len(steps) == 2 and all(m["rollout/ended/failed"] == 0 for m in steps)
    assert max(m["rollout/turns_mean"] for m in steps) > 1  # the simulated user answered


def test_refuel_setting_two_on_hh_dialogues_with_the_data_s_user_turns(tmp_path, tiny_cache):
    """REFUEL setting two: HH dialogues whose user turns are the data's (user=dataset), whole dialogues
    scored, setting two's shaping, linear decay."""
    run_dir = tmp_path / "run"
    sample = "data/samples/hh_rlhf_trl_style/train.jsonl"
    run("rlhf.train", run_dir, tiny_cache, "algo=refuel", "task=hh", "user=dataset", "trainer=online",
        f"task.train_path={sample}", f"task.eval_path={sample}", "algo.kl_coef=0.05", "algo.penalty_reward_value=-10",
        "trainer.lr_scheduler=linear", "trainer.max_steps=2", "trainer.prompts_per_step=4", "task.num_eval_prompts=2",
        "backend.max_new_tokens=8", "trainer.ppo_epochs=2")
    steps = [m for m in metrics(run_dir) if "loss" in m]
    assert len(steps) == 2 and max(m["rollout/turns_mean"] for m in steps) > 1
    assert steps[1]["lr"] < steps[0]["lr"]
    assert all("kl" in m for m in steps)  # the old policy's KL to the reference, in REFUEL's shaping


def test_turn_credit_with_forward_scoring(tmp_path, tiny_cache):
    """credit=turn: each question of a game is a sample, rewarded by the multi-turn-aware score of simulated
    futures (two sessions of one more question) under the exact information gain."""
    run_dir = tmp_path / "run"
    run("rlhf.train", run_dir, tiny_cache, "experiment=online_debug", "algo=grpo", "task=twenty_questions",
        "reward=twenty_questions_infogain", "task.max_turns=2", "trainer.max_steps=2", "trainer.credit=turn",
        "trainer.forward={window: 1, num_samples: 2, cost_weight: 0.0, cost_cap: 1.0}")
    steps = [m for m in metrics(run_dir) if "loss" in m]
    assert len(steps) == 2 and all(m["rollout/turns_mean"] == 2 for m in steps)
    for m in steps:  # an invalid score (an empty question) is counted with its reason
        assert m["rollout/invalid"] == sum(v for k, v in m.items() if k.startswith("rollout/invalid/"))
        assert m["loss"] == m["loss"]


def test_offline_only_algorithms_are_refused_online(tmp_path, tiny_cache):
    result = subprocess.run(command("rlhf.train", tmp_path / "run", "experiment=online_debug", "algo=sft"),
                            cwd=REPO, env=env(tiny_cache), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "SFT trains on sequence batches of fixed data; the online loop trains algorithms of" in result.stderr


RESUME = {  # one per algorithm family, and a dialogue task
    "grpo": FAMILIES["grpo"] + ["trainer.ppo_epochs=2"],
    "ppo": FAMILIES["ppo"],
    "opo": FAMILIES["opo"],
    "refuel": FAMILIES["refuel"],
    "d2po": FAMILIES["d2po"],
    "twenty_questions": ["algo=grpo", "task=twenty_questions", "reward=twenty_questions_infogain",
                         "task.max_turns=3"],
}


@pytest.mark.parametrize("name", sorted(RESUME))
def test_killed_online_run_resumes_to_the_same_weights(tmp_path, tiny_cache, name):
    overrides = ["experiment=online_debug", "trainer.max_steps=8", "trainer.checkpoint_every=3",
                 "trainer.eval_every=4", "trainer.learning_rate=1e-3", "trainer.lr_scheduler=cosine",
                 "trainer.warmup_steps=2", *RESUME[name]]
    whole = tmp_path / "whole"
    run("rlhf.train", whole, tiny_cache, *overrides)
    if name in FAMILIES:
        assert_trained(whole, tiny_cache, name, 8)

    killed = tmp_path / "killed"
    kill_when("rlhf.train", killed, tiny_cache, killed / "checkpoints" / "step-00000003" / "trainer_state.json",
              *overrides, what="its first checkpoint")
    assert not (killed / "final_metrics.json").exists(), "the run finished before it could be killed"

    out = run("rlhf.train", killed, tiny_cache, *overrides)
    assert "resumed from" in out.stderr + out.stdout
    a, b = weights(whole / "model"), weights(killed / "model")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run's"
    steps = [m["step"] for m in metrics(killed) if "loss" in m]
    assert steps == list(range(1, 9)), "steps logged twice or missing"
    strip = lambda ms: [{k: v for k, v in m.items() if not k.startswith("time/")} for m in ms]  # noqa: E731
    assert strip(metrics(killed)) == strip(metrics(whole))
    assert json.loads((killed / "final_metrics.json").read_text()) == json.loads((whole / "final_metrics.json").read_text())


def test_a_run_whose_reward_endpoint_is_down_stops_before_training_or_reporting(tmp_path, tiny_cache):
    """A judge whose endpoint refuses every connection: the step-0 evaluation is refused rather than reported
    (its mean would be of nothing). A judge that answers the evaluation's 4 requests and then fails with 503:
    the first update stops before training on its scores, all failed, naming the failure."""
    judge = ["experiment=online_debug", "algo=grpo", "reward=judge_interactivity", "+reward.client.max_retries=0",
             f"reward.client.cache_dir={tmp_path / 'chat'}"]

    def refusal(run_dir, *overrides):
        result = subprocess.run(command("rlhf.train", run_dir, *judge, *overrides), cwd=REPO,
                                env=env(tiny_cache, OPENAI_API_KEY="sk-test"), capture_output=True, text=True,
                                timeout=300)
        assert result.returncode != 0
        assert not any("loss" in m for m in metrics(run_dir))
        return result.stderr

    stderr = refusal(tmp_path / "down", "reward.client.base_url=http://127.0.0.1:9/v1")
    assert "evaluation of dialogues: 4 of 4 scores failed, more than half" in stderr
    assert '"reward connection error": 4' in stderr
    answered = []

    def evaluation_only(body, seen):
        answered.append(1)
        return Reply('{"thought": "fine", "interactivity": 1}') if len(answered) <= 4 else Status(503, "busy")

    server = FakeChatServer(evaluation_only).start()
    try:
        stderr = refusal(tmp_path / "busy", f"reward.client.base_url={server.base_url}")
    finally:
        server.stop()
    assert "update 1: 8 of 8 scores failed, more than trainer.max_failed_fraction=0.5" in stderr
    assert '"reward HTTP 503": 8' in stderr
    assert len(answered) == 4 + 8
