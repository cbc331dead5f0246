"""Online learning check: do the online algorithms raise a gold reward of the tiny policy on fresh rollouts?

Not a test: a script that trains and reports, on 2 CPU cores, within a few minutes per run.

1. "bow": GRPO, PPO, OPO and online REFUEL, each from the same starting policy (SFT on
   `task=synthetic_mixed`, as bench/learning_check.py builds it), on `task=synthetic_prompts` against the
   bag-of-words gold (`reward=bag_of_words`); the held-out gold reward (64 prompts, sampled with the same
   seed before and after) before and after.
2. "pluralistic": on the bundled pluralistic data (group 0, the 10% minority, rewards bag-of-words words;
   group 1 0.3 bag-of-words + 0.7 "calm" words), GRPO from the same start against (a) the min over the heads
   of a SharedRep reward model (`experiment=sharedrep_rm`) and (b) a pooled Bradley-Terry reward model
   (`algo=rm`) trained on the same pairs; each policy's mean gold score of each group on 64 held-out prompts.
3. "twenty_questions": the game on TQ_OBJECTS objects (the first of each of the first categories, so the
   tiny model can spell them) and TQ_TURNS questions, against the knowledge-base oracle. The start: SFT on
   TQ_GAMES games of a random asker (each turn an attribute question or a guess of an object not yet
   guessed, at random); then online Dr. GRPO against `reward=twenty_questions_success`; the success rate on
   the benchmark's evaluation games of those objects (each played TQ_EVAL_REPEATS times) before and after.
4. "d2po": from the same start, OPO on pairs labelled by (a) the gold itself (one gold label per pair), (b) a
   static reward model (a Bradley-Terry RM trained on D2PO_RM_PAIRS gold-labelled pairs: D2PO with
   max_labels 0, so it never asks nor learns) and (c) D2PO's live discriminator started from that RM
   (D2PO_RELABELS gold labels per window of D2PO_WINDOW pairs); the held-out gold reward every 10 updates
   against updates and against gold labels used, as d2po_curves.png, and each run's reward at equal
   gold-label budgets.
A figure "raised" when after - before > 2 * sqrt(se_before^2 + se_after^2).

    python bench/online_learning_check.py --out outputs/online_learning_check [--checks bow,pluralistic,...]

Prints one JSON object (also written to <out>/online_learning_check.json). A run whose directory holds a
finished run with the same overrides is not trained again (`--fresh` retrains). Logs: <out>/logs/.
"""

import argparse
import json
import math
import os
import sys
from pathlib import Path

from learning_check import START_OVERRIDES, cached_run, summary

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = REPO / "data" / "synthetic"
CHECKS = ("bow", "pluralistic", "twenty_questions", "d2po")

# Per-family settings (a learning rate, a step budget, the samples of an update), chosen per family, never on
# the eval prompts. Each update rolls out 16 prompts; replies of up to 24 tokens (the start's replies are
# ~15 tokens, so the gold can move).
ONLINE = ["trainer.prompts_per_step=16", "backend.max_new_tokens=24", "trainer.eval_every=0",
          "trainer.checkpoint_every=0"]
BOW_METHODS: dict[str, list[str]] = {
    "grpo": ["algo=grpo", "trainer.max_steps=60", "trainer.learning_rate=2e-4", "trainer.samples_per_prompt=4"],
    "ppo": ["algo=ppo", "trainer.max_steps=60", "trainer.learning_rate=2e-4", "trainer.samples_per_prompt=2",
            "trainer.ppo_epochs=2", "trainer.num_minibatches=2", "algo.kl_coef=0.01"],
    "opo": ["algo=opo", "trainer.max_steps=60", "trainer.learning_rate=5e-5"],
    "refuel": ["algo=refuel", "trainer.max_steps=60", "trainer.learning_rate=5e-5", "trainer.ppo_epochs=2"],
}
PLURALISTIC_RMS = {
    "sharedrep": ["experiment=sharedrep_rm"],
    "pooled": ["algo=rm", "task=synthetic_pluralistic", "trainer.learning_rate=5e-4", "trainer.max_steps=200"],
}
PLURALISTIC_PROMPTS = ["task=prompts", f"task.train_path={SYNTHETIC / 'pluralistic_train.jsonl'}",
                       f"task.eval_path={SYNTHETIC / 'pluralistic_eval.jsonl'}", "task.eval_split=train"]
TQ_OBJECTS, TQ_TURNS, TQ_GAMES = 10, 5, 400
TQ_EVAL_REPEATS = 8  # each recorded evaluation game of those objects is played this many times
TQ_START = ["algo=sft", "task=synthetic_dialogues", "trainer.max_steps=300", "trainer.learning_rate=1e-3",
            "trainer.eval_every=0", "trainer.batch_size=16"]
TQ_ONLINE = ["algo=dr_grpo", "task=twenty_questions", "reward=twenty_questions_success", "trainer.max_steps=200",
             "trainer.learning_rate=5e-4", "trainer.samples_per_prompt=8", "trainer.prompts_per_step=8",
             "backend.max_new_tokens=16", "trainer.eval_every=0", "trainer.checkpoint_every=0",
             f"task.max_turns={TQ_TURNS}", "task.num_eval_prompts=1000"]


D2PO_RM_PAIRS, D2PO_WINDOW, D2PO_RELABELS, D2PO_STEPS = 64, 64, 16, 60
D2PO_RM = ["algo=rm", "task=synthetic_prefs", f"task.train_limit={D2PO_RM_PAIRS}", "trainer.max_steps=40",
           "trainer.batch_size=16", "trainer.learning_rate=5e-4", "trainer.eval_every=0"]
D2PO_COMMON = ["task=synthetic_prompts", *ONLINE[:2], "trainer.learning_rate=5e-5", f"trainer.max_steps={D2PO_STEPS}",
               "trainer.eval_every=10", "trainer.checkpoint_every=0", "reward=bag_of_words"]


def d2po_runs(rm: Path) -> dict[str, list[str]]:
    live = ["algo=d2po", f"trainer.discriminator.model.path={rm}", f"trainer.discriminator.window={D2PO_WINDOW}",
            f"trainer.discriminator.relabels={D2PO_RELABELS}"]
    return {"opo_gold": ["algo=opo"], "opo_static_rm": [*live, "trainer.discriminator.max_labels=0"], "d2po": live}


def gold_curve(run_dir: Path, name: str) -> list[dict]:
    """(step, gold labels used, eval reward, stderr) at every evaluation of a run; the runs that start from the
    trained reward model count the D2PO_RM_PAIRS gold-labelled pairs it was trained on."""
    labels, points = (0.0 if name == "opo_gold" else float(D2PO_RM_PAIRS)), []
    for m in (json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()):
        if "loss" in m:
            if name == "opo_gold":
                labels += m["pairs/reward_labels"]  # every pair labelled by the gold
            else:
                labels = D2PO_RM_PAIRS + m["d2po/gold_labels"]
        if "eval/reward_mean" in m:
            points.append({"step": m["step"], "gold_labels": labels, "reward": m["eval/reward_mean"],
                           "stderr": m["eval/reward_stderr"]})
    return points


def plot_curves(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_step, by_labels) = plt.subplots(1, 2, figsize=(11, 4))
    for name, points in curves.items():
        for axis, x in ((by_step, "step"), (by_labels, "gold_labels")):
            axis.errorbar([p[x] for p in points], [p["reward"] for p in points],
                          yerr=[p["stderr"] for p in points], marker="o", capsize=3, label=name)
    by_step.set(xlabel="policy updates", ylabel="gold reward (held-out prompts)", title="gold reward by update")
    by_labels.set(xlabel=f"gold labels used (with the {D2PO_RM_PAIRS} pairs the reward model was trained on)",
                  title="gold reward by gold labels used")
    by_labels.set_xscale("symlog", linthresh=50)
    by_step.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def raised(before: float, se_b: float, after: float, se_a: float) -> bool:
    return after - before > 2 * math.sqrt(se_b**2 + se_a**2)


def twenty_questions_files(out: Path) -> dict[str, Path]:
    """The game on TQ_OBJECTS objects (rlhf/tasks/twenty_questions_subset.py), its evaluation games each
    repeated TQ_EVAL_REPEATS times."""
    from rlhf.tasks.twenty_questions_subset import write_subset

    files = write_subset(out / "tq", TQ_OBJECTS)
    games = json.loads(files["games"].read_text()) * TQ_EVAL_REPEATS
    files["games"] = out / "tq_eval_games.json"
    files["games"].write_text(json.dumps(games))
    return files


def group_gold(model_dir: Path, prompts_path: Path, n: int, seed: int) -> dict:
    """Each group's gold score (mean, standard error) of the policy's replies to the first n prompts."""
    from hydra import compose, initialize_config_dir

    from rlhf.backends.hf import HFBackend
    from rlhf.config import CONF_DIR, build
    from rlhf.eval.dialogue_eval import mean_and_stderr
    from rlhf.models.policy import load_policy
    from rlhf.rewards.base import valid_scores

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        gold = build(compose("eval", ["reward=gold_synthetic_pluralistic"]).reward)
    rows = [json.loads(line) for line in prompts_path.read_text().splitlines()[:n]]
    policy = load_policy(str(model_dir))
    backend = HFBackend(policy.model, policy.tokenizer, max_new_tokens=24, seed=seed)
    replies = [cs[0].text for cs in backend.generate([r["prompt"] for r in rows], 1, seed=seed)]
    conversations = [r["prompt"] + [{"role": "assistant", "content": t}] for r, t in zip(rows, replies)]
    out = {}
    for group, name in ((0, "minority"), (1, "majority")):
        scores = valid_scores(gold.score(conversations, [{"group_id": group}] * len(rows)))
        out[f"{name}_gold"], out[f"{name}_gold_stderr"] = mean_and_stderr(scores)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--checks", default=",".join(CHECKS))
    parser.add_argument("--methods", default=",".join(BOW_METHODS))
    parser.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("RLHF_CACHE", str(out / "cache"))
    os.environ["RLHF_CACHE"] = env["RLHF_CACHE"]

    def progress(line: str) -> None:
        print(f"[online_learning_check] {line}", file=sys.stderr, flush=True)

    def run(name: str, overrides: list[str]) -> tuple[dict, float]:
        metrics, seconds = cached_run(out / name, overrides, out / "logs" / f"{name}.log", env, args.fresh)
        progress(f"{name}: done ({seconds:.0f}s)")
        return metrics, seconds

    checks = [c for c in args.checks.split(",") if c]
    report: dict = {}
    start = out / "start" / "model"
    if {"bow", "pluralistic"} & set(checks):
        progress("starting policy: SFT on synthetic_mixed")
        run("start", START_OVERRIDES)
    if "bow" in checks:
        report["bow"] = {}
        for method in [m for m in args.methods.split(",") if m]:
            overrides = ["task=synthetic_prompts", f"policy.path={start}", *ONLINE, *BOW_METHODS[method]]
            metrics, seconds = run(f"bow-{method}", overrides)
            report["bow"][method] = summary(metrics, BOW_METHODS[method], seconds)
            r = report["bow"][method]
            progress(f"bow {method}: {r['before']:.3f} ± {r['before_stderr']:.3f} -> {r['after']:.3f} ± "
                     f"{r['after_stderr']:.3f} (raised={r['raised']})")
    if "pluralistic" in checks:
        report["pluralistic"] = {"start": group_gold(start, SYNTHETIC / "pluralistic_eval.jsonl", 64, 0)}
        rewards = {"sharedrep": ["reward=group_rm", "reward.route=min"], "pooled": ["reward=reward_model"]}
        for name, rm_overrides in PLURALISTIC_RMS.items():
            rm, _ = run(f"rm-{name}", rm_overrides)
            overrides = [*PLURALISTIC_PROMPTS, f"policy.path={start}", *ONLINE, *BOW_METHODS["grpo"],
                         *rewards[name], f"reward.path={out / f'rm-{name}' / 'model'}"]
            metrics, seconds = run(f"pluralistic-grpo-{name}", overrides)
            gold = group_gold(out / f"pluralistic-grpo-{name}" / "model", SYNTHETIC / "pluralistic_eval.jsonl", 64, 0)
            report["pluralistic"][name] = gold | {"rm_accuracy": rm.get("eval/rewards/accuracy"),
                                                  "seconds": round(seconds, 1)}
        for name in PLURALISTIC_RMS:
            g, s = report["pluralistic"][name], report["pluralistic"]["start"]
            g["minority_raised"] = raised(s["minority_gold"], s["minority_gold_stderr"], g["minority_gold"],
                                          g["minority_gold_stderr"])
    if "twenty_questions" in checks:
        from rlhf.tasks.twenty_questions_subset import write_random_games

        files, games = twenty_questions_files(out), out / "tq_games.jsonl"
        write_random_games(files, games, TQ_GAMES, TQ_TURNS)
        run("tq-start", [*TQ_START, f"task.train_path={games}", f"task.eval_path={games}"])
        game = [f"task.objects_path={files['objects']}", f"task.eval_games_path={files['games']}"]
        metrics, seconds = run("tq-grpo", [*TQ_ONLINE, *game, f"policy.path={out / 'tq-start' / 'model'}"])
        before, after = metrics["before/eval/success_mean"], metrics["eval/success_mean"]
        se_b, se_a = metrics["before/eval/success_stderr"], metrics["eval/success_stderr"]
        report["twenty_questions"] = {"before": before, "before_stderr": se_b, "after": after, "after_stderr": se_a,
                                      "raised": raised(before, se_b, after, se_a),
                                      "questions_before": metrics["before/eval/questions_mean"],
                                      "questions_after": metrics["eval/questions_mean"],
                                      "seconds": round(seconds, 1), "overrides": TQ_ONLINE}
        progress(f"twenty questions success {before:.3f} ± {se_b:.3f} -> {after:.3f} ± {se_a:.3f}")
    if "d2po" in checks:
        if not start.exists():
            run("start", START_OVERRIDES)
        rm, _ = run("d2po-rm", D2PO_RM)
        curves, report["d2po"] = {}, {"rm_accuracy": rm["eval/rewards/accuracy"]}
        for name, overrides in d2po_runs(out / "d2po-rm" / "model").items():
            metrics, seconds = run(f"d2po-{name}", [*D2PO_COMMON, f"policy.path={start}", *overrides])
            curves[name] = gold_curve(out / f"d2po-{name}", name)
            report["d2po"][name] = {"curve": curves[name], "seconds": round(seconds, 1),
                                    "gold_labels": curves[name][-1]["gold_labels"]}
        # the reward each run had reached when it had used the gold labels D2PO uses in all
        budget = report["d2po"]["d2po"]["gold_labels"]
        for name, points in curves.items():
            within = [p for p in points if p["gold_labels"] <= budget]
            report["d2po"][name]["at_d2po_budget"] = within[-1] if within else None
        plot_curves(curves, out / "d2po_curves.png")
        report["d2po"]["plot"] = str(out / "d2po_curves.png")
    (out / "online_learning_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
