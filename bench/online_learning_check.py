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
A figure "raised" when after - before > 2 * sqrt(se_before^2 + se_after^2).

    python bench/online_learning_check.py --out outputs/online_learning_check [--checks bow,pluralistic,...]

Prints one JSON object (also written to <out>/online_learning_check.json). A run whose directory holds a
finished run with the same overrides is not trained again (`--fresh` retrains). Logs: <out>/logs/.
"""

import argparse
import json
import math
import os
import random
import sys
from pathlib import Path

from learning_check import START_OVERRIDES, cached_run, summary

REPO = Path(__file__).resolve().parents[1]
SYNTHETIC = REPO / "data" / "synthetic"
CHECKS = ("bow", "pluralistic", "twenty_questions")

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
TQ_EVAL_REPEATS = 3  # each recorded evaluation game of those objects is played this many times
TQ_START = ["algo=sft", "task=synthetic_dialogues", "trainer.max_steps=300", "trainer.learning_rate=1e-3",
            "trainer.eval_every=0", "trainer.batch_size=16"]
TQ_ONLINE = ["algo=dr_grpo", "task=twenty_questions", "reward=twenty_questions_success", "trainer.max_steps=200",
             "trainer.learning_rate=5e-4", "trainer.samples_per_prompt=8", "trainer.prompts_per_step=8",
             "backend.max_new_tokens=16", "trainer.eval_every=0", "trainer.checkpoint_every=0",
             f"task.max_turns={TQ_TURNS}", "task.num_eval_prompts=1000"]


def raised(before: float, se_b: float, after: float, se_a: float) -> bool:
    return after - before > 2 * math.sqrt(se_b**2 + se_a**2)


def twenty_questions_files(out: Path) -> dict[str, Path]:
    """The game on TQ_OBJECTS objects: objects, attributes and evaluation games files of those objects."""
    from rlhf.tasks.twenty_questions import OBJECTS_PATH
    from rlhf.tasks.twenty_questions_kb import ATTRIBUTES_PATH
    from rlhf.tasks.twenty_questions_task import EVAL_GAMES_PATH

    categories = json.loads(Path(OBJECTS_PATH).read_text())
    kept = dict(list((category, words[:1]) for category, words in categories.items())[:TQ_OBJECTS])
    names = {words[0][0] for words in kept.values()}
    attributes = json.loads(Path(ATTRIBUTES_PATH).read_text())
    attributes["objects"] = {k: v for k, v in attributes["objects"].items() if k in names}
    games = [g for g in json.loads(Path(EVAL_GAMES_PATH).read_text()) if g["word"][0] in names] * TQ_EVAL_REPEATS
    files = {"objects": out / "tq_objects.json", "attributes": out / "tq_attributes.json",
             "games": out / "tq_eval_games.json"}
    for key, value in (("objects", kept), ("attributes", attributes), ("games", games)):
        files[key].write_text(json.dumps(value))
    return files


def random_games(files: dict[str, Path], path: Path) -> None:
    """TQ_GAMES games of a random asker against the knowledge-base oracle of these objects: each turn an
    attribute question or a guess of an object not yet guessed, with equal chance, until a correct guess or
    TQ_TURNS questions; as conversations ending with the asker's turn."""
    from rlhf.tasks.twenty_questions import YES
    from rlhf.tasks.twenty_questions_kb import KnowledgeBaseOracle
    from rlhf.tasks.twenty_questions_task import OPENING

    oracle = KnowledgeBaseOracle(files["objects"], files["attributes"])
    rng, rows = random.Random(0), []
    for game in range(TQ_GAMES):
        secret = oracle.objects[game % len(oracle.objects)]
        messages, guessed = [{"role": "user", "content": OPENING}], []
        for _ in range(TQ_TURNS):
            left = [o for o in oracle.objects if o not in guessed]
            if rng.random() < 0.5:
                question = rng.choice(list(oracle.questions.values()))
            else:
                guessed.append(rng.choice(left))
                question = f"Is it a {guessed[-1]}?"
            answer = oracle.answer(question, secret)
            messages += [{"role": "assistant", "content": question}, {"role": "user", "content": answer}]
            if question.startswith("Is it a ") and answer == YES and guessed and guessed[-1] == secret:
                break
        rows.append({"messages": messages[:-1]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


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
        files, games = twenty_questions_files(out), out / "tq_games.jsonl"
        random_games(files, games)
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
    (out / "online_learning_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
