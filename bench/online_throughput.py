"""Online GRPO throughput: rlhf's online loop (`fit_online`) against trl 0.28's `GRPOTrainer`, on CPU.

The same work on both sides, per update: P prompts of the bundled synthetic prompts (the same prompts in
the same order), K completions each of exactly L new tokens (min = max new tokens, sampled at temperature
1 with top-k / top-p off), the bag-of-words gold reward, group-normalised advantages (std-scaled, the
"grpo" per-sequence-mean aggregation), one optimizer step on all P x K completions (no old-log-prob pass:
each sample is used once, which both loops detect), no reference model (beta 0), AdamW at the same
learning rate. Both read the same tiny-architecture Llama from disk.

Measured per run (each configuration in its own subprocess, interleaved over `--repeats`):
- loop_s: the updates only. Ours: the sum of `time/step` of metrics.jsonl (generation, scoring, the
  forward/backward and the optimizer step); trl: on_train_begin to on_train_end (its own generation,
  scoring, loss and step inside `train()`). Evaluation, saving and model loading are outside both.
- steps_per_s = steps / loop_s, and completion_tokens_per_s = steps * P * K * L / loop_s.
- ours also reports where its time goes (generation share of time/step).
trl's defaults changed to match ours: loss_type "grpo" (trl's default is "dapo"), logging and saving off,
generation_kwargs min_new_tokens = L. Runs use `--threads` torch threads (default 1).

    python bench/online_throughput.py [--prompts 8 --samples 4 --new-tokens 32 --steps 8 --repeats 3]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "synthetic" / "preferences_train.jsonl"
# ours: the backend's defaults (decode=loop with the lean decode step, draw=inverse_cdf); each other one turns one
# lever off: ours-multinomial draws generate's own ids, ours-no-lean calls the model at every decode step,
# ours-generate samples with model.generate (as trl does)
BACKENDS = {"ours": dict(decode="loop", draw="inverse_cdf", lean_step=True),
            "ours-multinomial": dict(decode="loop", draw="multinomial", lean_step=True),
            "ours-no-lean": dict(decode="loop", draw="inverse_cdf", lean_step=False),
            "ours-generate": dict(decode="generate")}
CONFIGS = (*BACKENDS, "trl")


def prompts(n: int) -> list[list[dict]]:
    rows = [json.loads(line) for line in DATA.read_text().splitlines()[:n]]
    return [r["prompt"] for r in rows]


def run_ours(args) -> dict:
    from rlhf.algos.grpo import GRPO
    from rlhf.backends.hf import HFBackend
    from rlhf.data.tokenize import Tokenization
    from rlhf.logging import NoLogger
    from rlhf.models.policy import load_policy
    from rlhf.rewards.gold import BagOfWords
    from rlhf.tasks.dataset import DatasetTask
    from rlhf.trainers import online
    from rlhf.users.none import NoUser

    # one eval prompt: evaluation is outside the measured updates anyway
    task = DatasetTask("bench", "prompt", train_path=str(DATA), eval_path=str(DATA),
                       train_limit=args.prompts * args.steps, eval_limit=1, num_eval_prompts=1)
    online.PromptStream.take = first_in_order(online.PromptStream.take)
    policy = load_policy(args.model_path)
    backend = lambda **parts: HFBackend(**parts, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,  # noqa: E731
                                        seed=args.seed, batch_size=args.prompts * args.samples,
                                        **BACKENDS[args.worker])
    with tempfile.TemporaryDirectory() as run_dir:
        online.fit_online(policy=policy, algo=GRPO(), task=task, backend=backend, user=NoUser(),
                          reward=BagOfWords(gold_words()), tokenization=Tokenization(max_length=1024), logger=NoLogger(),
                          run_dir=run_dir, seed=args.seed, config={}, max_steps=args.steps,
                          prompts_per_step=args.prompts, samples_per_prompt=args.samples,
                          learning_rate=args.lr, log_every=1)
        logged = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in logged if "time/step" in m]
    tokens = [m["rollout/response_tokens_mean"] * m["rollout/dialogues"] for m in steps]
    return dict(loop_s=sum(m["time/step"] for m in steps), steps=len(steps), completion_tokens=sum(tokens),
                generation_s=sum(m["time/generation"] for m in steps), train_s=sum(m["time/train"] for m in steps),
                reward_s=sum(m["time/reward"] for m in steps))


def first_in_order(take):
    """The stream's openings in file order (not shuffled), so trl sees the same prompts in the same order."""
    def in_order(self, step, start, count):
        position = step * self.per_step + start
        return self.openings[position:position + count], self.fields[position:position + count]
    return in_order


def gold_words() -> list[str]:
    """The words of reward=bag_of_words (conf/reward/bag_of_words.yaml)."""
    import yaml

    return yaml.safe_load((ROOT / "conf" / "reward" / "bag_of_words.yaml").read_text())["words"]


def run_trl(args) -> dict:
    import warnings

    import datasets
    import torch
    import trl.import_utils as trl_import_utils
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from rlhf.rewards.gold import BagOfWords

    for name in [n for n in vars(trl_import_utils) if n.startswith("is_") and n.endswith("_available")]:
        def unwrapped(*a, _check=getattr(trl_import_utils, name), **k):  # see bench/dpo_throughput.py
            found = _check(*a, **k)
            return found[0] if isinstance(found, tuple) else found
        setattr(trl_import_utils, name, unwrapped)
    from trl import GRPOConfig, GRPOTrainer

    warnings.filterwarnings("ignore")
    datasets.disable_progress_bars()
    gold = BagOfWords(gold_words())

    def bag_of_words(completions, **kwargs):
        return gold.score([[{"role": "user", "content": ""}] + c for c in completions])

    rows = datasets.Dataset.from_list([{"prompt": p} for p in prompts(args.prompts * args.steps)])
    scratch = tempfile.TemporaryDirectory()
    config = GRPOConfig(output_dir=scratch.name, per_device_train_batch_size=args.prompts * args.samples,
                        num_generations=args.samples, max_completion_length=args.new_tokens,
                        generation_kwargs={"min_new_tokens": args.new_tokens}, temperature=1.0, top_p=1.0,
                        top_k=0, max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="constant",
                        warmup_steps=0, beta=0.0, loss_type="grpo", scale_rewards="group", use_cpu=True,
                        bf16=False, shuffle_dataset=False, logging_strategy="no", save_strategy="no",
                        report_to="none", disable_tqdm=True, seed=args.seed, max_grad_norm=1.0,
                        weight_decay=0.0, optim="adamw_torch")
    marks: dict[str, float] = {}

    class Marks(TrainerCallback):
        def on_train_begin(self, *a, **k):
            marks["start"] = time.perf_counter()

        def on_train_end(self, *a, **k):
            marks["end"] = time.perf_counter()

    model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=torch.float32)
    trainer = GRPOTrainer(model=model, reward_funcs=bag_of_words, args=config, train_dataset=rows,
                          processing_class=AutoTokenizer.from_pretrained(args.model_path), callbacks=[Marks()])
    trainer.train()
    scratch.cleanup()
    steps = trainer.state.global_step
    return dict(loop_s=marks["end"] - marks["start"], steps=steps,
                completion_tokens=steps * args.prompts * args.samples * args.new_tokens)


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    result = (run_trl if args.worker == "trl" else run_ours)(args)
    result |= dict(torch_threads=torch.get_num_threads(), steps_per_s=result["steps"] / result["loop_s"],
                   completion_tokens_per_s=result["completion_tokens"] / result["loop_s"])
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {CONFIGS}")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "rlhf-bench-models"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    from rlhf.models.tiny import tiny_model_path

    model_path = tiny_model_path(args.cache_dir, hidden_size=args.hidden, num_layers=args.layers,
                                 num_heads=args.heads)
    env = os.environ | {"OMP_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1", "TOKENIZERS_PARALLELISM": "false",
                        "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    configs = args.configs.split(",")
    if "ours" not in configs or "trl" not in configs or set(configs) - set(CONFIGS):
        sys.exit(f"--configs={args.configs}: needs ours and trl, of {CONFIGS}")
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    for repeat in range(args.repeats):  # interleaved, so slow phases of a shared machine hit both
        for config in configs:
            command = [sys.executable, __file__, "--worker", config, "--model-path", str(model_path)]
            command += [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                        if k not in ("worker", "model_path", "repeats", "cache_dir", "configs")]
            done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode or not lines:
                sys.exit(f"{config} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
            runs[config].append(json.loads(lines[-1][len("RESULT "):]))
            print(f"repeat {repeat} {config}: {runs[config][-1]}", file=sys.stderr, flush=True)

    results = {}
    for config, values in runs.items():
        results[config] = {k: round(statistics.median(r[k] for r in values), 4)
                           for k in ("loop_s", "steps_per_s", "completion_tokens_per_s")}
        results[config]["spread_steps_per_s"] = [round(min(r["steps_per_s"] for r in values), 4),
                                                 round(max(r["steps_per_s"] for r in values), 4)]
        results[config]["completion_tokens"] = values[0]["completion_tokens"]
    for config in (c for c in configs if c != "trl"):
        for phase in ("generation", "train", "reward"):
            results[config][f"{phase}_share"] = round(statistics.median(r[f"{phase}_s"] / r["loop_s"]
                                                                        for r in runs[config]), 3)
        results[config]["over_trl_steps_per_s"] = round(results[config]["steps_per_s"] / results["trl"]["steps_per_s"], 3)
    ours = runs["ours"]
    ratio = results["ours"]["steps_per_s"] / results["trl"]["steps_per_s"]
    from importlib.metadata import version

    import torch
    print(json.dumps({
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "model_path")}
        | {"model": f"Llama, hidden {args.hidden}, {args.layers} layers, {args.heads} heads, float32"},
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": ours[0]["torch_threads"],
                    "torch": torch.__version__, "trl": version("trl")},
        "statistic": f"median over {args.repeats} interleaved repeats; spread = [min, max]",
        "results": results,
        "checks": {"same_completion_tokens": results["ours"]["completion_tokens"] == results["trl"]["completion_tokens"],
                   "ours_over_trl_steps_per_s": round(ratio, 3), "target_1.5x_met": ratio >= 1.5,
                   "at_least_1.0x": ratio >= 1.0}}, indent=2))


if __name__ == "__main__":
    main()
