"""Every CPU twin (`conf/experiment/**/*_debug.yaml`) runs through the real `rlhf-train`, as its published
setup would, and its headline numbers are there and say what the twin claims; an experiment of stages run
again with the same command skips every stage."""

import json
import math

import pytest
import yaml

from tests.config.test_experiments import NUM_TWINS, TWINS
from tests.smoke.helpers import metrics, run

pytestmark = pytest.mark.slow


def stage_metrics(run_dir, stage) -> list[dict]:
    return metrics(run_dir / stage)


def check_sharedrep(run_dir, final):
    # GRPO on the gold raises the gold's min over groups; each policy is scored under both groups' golds
    assert final["eval_gold/reward_mean"] > final["rl_gold/before/eval/reward_mean"]
    for method in ("gold", "maxmin", "sharedrep"):
        assert {f"eval_{method}/group_0_mean", f"eval_{method}/group_1_mean"} <= final.keys()
    # MaxMin keeps one head per group on the backbone; SharedRep adds its shared k-dim layer
    maxmin = json.loads((run_dir / "rm_maxmin" / "model" / "reward_model.json").read_text())
    sharedrep = json.loads((run_dir / "rm_sharedrep" / "model" / "reward_model.json").read_text())
    assert (maxmin["num_groups"], maxmin["shared_dim"]) == (2, None)
    shared_dim = yaml.safe_load((run_dir / "rm_sharedrep" / "config.yaml").read_text())["policy"]["shared_dim"]
    assert (sharedrep["num_groups"], sharedrep["shared_dim"]) == (2, shared_dim) and shared_dim > 1


def check_sharedrep_imdb(run_dir, final):
    check_sharedrep(run_dir, final)
    # the policy step is PPO (trl's IMDb setting), from the SFT stage that stands in for gpt2-imdb
    config = yaml.safe_load((run_dir / "rl_gold" / "config.yaml").read_text())
    assert config["algo"]["_target_"] == "rlhf.algos.ppo.PPO" and config["algo"]["whiten_rewards"] is True


def check_d2po(run_dir, final):
    start = final["opo_gold/before/eval/reward_mean"]
    assert final["sft/eval/reward_mean"] == start  # every online run starts from the SFT stage's model
    assert final["opo_gold/eval/reward_mean"] > start
    labels = {name: max(m.get("d2po/gold_labels", 0) for m in stage_metrics(run_dir, name))
              for name in ("opo_rm", "d2po_conf", "d2po_rand")}
    assert labels["opo_rm"] == 0 and labels["d2po_conf"] > 0 and labels["d2po_rand"] > 0


def check_iterative(run_dir, final):
    assert {"before/eval/reward_mean", "iter-1/eval/reward_mean", "iter-2/eval/reward_mean"} <= final.keys()
    for k in (1, 2):
        assert (run_dir / f"iter-{k}" / "generate" / "pairs.jsonl").read_text().strip()


def check_online_refuel(run_dir, final):
    steps = [m for m in metrics(run_dir) if "loss" in m]
    assert steps and sum(m["pairs/kept"] for m in steps) > 0 and all(math.isfinite(m["loss"]) for m in steps)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["trainer"]["ppo_epochs"] == 4 and config["trainer"]["horizon"] == "last"


def check_twenty_questions(run_dir, final):
    pairs = [json.loads(line) for line in (run_dir / "pairs" / "dataset.jsonl").read_text().splitlines()]
    kept = [p for p in pairs if p["drop_reason"] is None]
    assert kept and all(p["score_chosen"] > p["score_rejected"] for p in kept)  # ties are dropped
    assert final["games/games"] == final["games/baseline/games"] == 64
    assert final["games/success"] + final["games/baseline/success"] > 0  # the SFT start finds some objects


def check_alol(run_dir, final):
    advantages = json.loads((run_dir / "advantages.json").read_text())
    assert 0 < advantages["positive_fraction"] <= 1 and advantages["steps"] <= 40  # steps scaled by it
    assert final["eval/reward_mean"] > final["before/eval/reward_mean"]


def check_alol_pipeline(run_dir, final):
    # the NLL reference is the start of A-LoL's stage; the value head leaves some examples to train on, and
    # the steps (epochs x batches per epoch) are scaled by their share
    assert final["train/before/eval/reward_mean"] == final["reference/eval/reward_mean"]
    advantages = json.loads((run_dir / "train" / "advantages.json").read_text())
    assert 0 < advantages["positive_fraction"] <= 1
    config = yaml.safe_load((run_dir / "train" / "config.yaml").read_text())
    per_epoch = {"alol_reddit": 32, "alol_wow": 48, "alol_comet": 48}[config["task"]["name"]] // config["trainer"]["batch_size"]
    assert advantages["steps"] == max(1, int(config["trainer"]["epochs"] * per_epoch * advantages["positive_fraction"]))
    assert final["train/eval/reward_mean"] > final["train/before/eval/reward_mean"]


def check_alol_baselines(run_dir, final):
    # DPO and PRO start from the same policy on the same held-out prompts; DPO and PPO raise the gold
    assert final["dpo/before/eval/reward_mean"] == final["pro/before/eval/reward_mean"]
    assert final["dpo/eval/reward_mean"] > final["dpo/before/eval/reward_mean"]
    assert final["ppo/eval/reward_mean"] > final["ppo/before/eval/reward_mean"]
    assert math.isfinite(final["pro/eval/reward_mean"]) and final["pro/eval/n"] == 64
    config = yaml.safe_load((run_dir / "pro" / "config.yaml").read_text())
    assert config["algo"]["sft_weight"] == 0.05 and "beta" not in config["algo"]


def check_online(run_dir, final):
    assert math.isfinite(final["eval/reward_mean"])


def check_sharedrep_gsm8k(run_dir, final):
    check_sharedrep(run_dir, final)
    # the samples keep each prompt's reference answer, which the gold's correctness trait read when the
    # pairs were labelled; the z statistics were fitted on those samples
    samples = [json.loads(line) for line in (run_dir / "samples_train" / "dataset.jsonl").read_text().splitlines()]
    assert all("#### " in row["answer"] for row in samples)
    assert "z statistics of the trait" in (run_dir / "rm_maxmin" / "train.log").read_text()


CHECKS = {"sharedrep_debug": check_sharedrep, "sharedrep_imdb_debug": check_sharedrep_imdb,
          "sharedrep_gsm8k_debug": check_sharedrep_gsm8k, "d2po_debug": check_d2po,
          "refuel_ultrainteract_debug": check_iterative, "refuel_hh_debug": check_online_refuel,
          "refuel_ultrainteract_online_debug": check_online_refuel, "twenty_questions_debug": check_twenty_questions,
          "alol_hha_debug": check_alol, "online_debug": check_online, "alol_reddit_debug": check_alol_pipeline,
          "alol_wow_debug": check_alol_pipeline, "alol_comet_debug": check_alol_pipeline,
          "alol_hha_baselines_debug": check_alol_baselines}
RERUN = "alol_reddit_debug"  # the cheapest experiment of stages; the others' skipping is the same code


def test_every_twin_has_its_checks():
    assert len(CHECKS) == NUM_TWINS and set(CHECKS) == set(TWINS)


@pytest.mark.parametrize("name", TWINS)
def test_twin(name, tmp_path, tiny_cache):
    run_dir = tmp_path / name
    run("rlhf.train", run_dir, tiny_cache, f"experiment={name}")
    final = json.loads((run_dir / "final_metrics.json").read_text())
    CHECKS[name](run_dir, final)
    if name == RERUN:  # the same command again: nothing to do
        again = run("rlhf.train", run_dir, tiny_cache, f"experiment={name}")
        stages = json.loads((run_dir / "stages.json").read_text())
        logged = again.stdout + again.stderr
        assert all(f"{stage}: done" in logged for stage in stages), logged[-2000:]
        assert json.loads((run_dir / "final_metrics.json").read_text()) == final
