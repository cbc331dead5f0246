"""Offline DPO throughput and memory: rlhf's `fit_offline` against trl 0.28's `DPOTrainer`, on CPU.

What is measured (one epoch, same model, data, batch size, max length, learning rate and batch order):
- ours-dpo:         `fit_offline` with `DPO()`, `reference="precompute"` (one reference pass, no 2nd model) and
                    `pair_forward="joint"` (chosen and rejected as one batch of 2B)
- ours-dpo-frozen:  the same with `reference="frozen_copy"` (a frozen copy of the policy runs each step)
- ours-dpo-shared:  ours-dpo with `pair_forward="shared_prompt"` (each pair's prompt runs once)
- ours-dpo-split:   ours-dpo with `pair_forward="split"` (chosen, then rejected, under activation checkpointing)
- ours-dpo-buckets: ours-dpo with `length_buckets=--buckets` (batches of similar lengths; fewer padded positions)
- ours-dpo-shared-buckets: both
- ours-sft:         `fit_offline` with `SFT()` on prompt + chosen of the same pairs (batch kind "sequence")
- ours-sft-2b:      the same with twice the batch size: as many sequences per step as a DPO batch of pairs
- trl-dpo-precompute: `DPOTrainer` with `precompute_ref_log_probs=True`
- trl-dpo:          `DPOTrainer` with its default reference model in memory

Every (configuration, repeat) runs in its own subprocess, interleaved (repeat 1 of all, then repeat 2...),
and the medians are printed. Per run:
- ref_s:   the reference pass (ours: `make_reference`; trl: `train()` start to `on_train_begin`, which holds
           its precompute in `get_train_dataloader`); 0 when the reference runs inside the loop
- loop_s:  the training loop only (ours: the loop's progress bar from creation to close; trl: on_train_begin
           to on_train_end); total_s = ref_s + loop_s; setup_s: tokenisation (ours) / DPOTrainer() (trl)
- tokens/s: non-pad tokens of the chosen and rejected sequences (prompt included; chosen only for SFT) of
           the epoch, divided by loop_s (`loop_tokens_per_s`) or total_s (`tokens_per_s`)
- peak_rss_mib: the process's ru_maxrss; footprint_mib: that minus the RSS right before the model is created
The final checkpoint and model export of `fit_offline` are replaced by no-ops (trl runs with saving off).
Batches are the same on both sides: trl gets the rows in our epoch order and a sequential sampler, and
the token and padded-position counts of both are printed so equal work can be checked. Truncation is the
same: ours `Tokenization(max_length, "left")`, trl `max_length` with `truncation_mode="keep_end"` and no
separate prompt / completion cut. Both use fused AdamW (trl by default, ours through make_optimizer).
Runs use `--threads` torch threads (default 1: on a shared machine, OpenMP threads that lose their core
make multi-threaded timings several times slower and erratic).
Checks: our DPO footprint within 1.2x our SFT's (at batch B, and at 2B sequences = a DPO batch's count),
the same steps / tokens / padding in ours-dpo and trl-dpo-precompute, our tokens/s >= trl's, and per pair_forward its
loop speed against ours-dpo and trl's loop, and its footprint against SFT's.

    python bench/dpo_throughput.py [--pairs 256 --batch-size 8 --max-length 128 --hidden 384 --layers 6 \
                                    --repeats 2]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "synthetic" / "preferences_train.jsonl"
CONFIGS = ("ours-dpo", "trl-dpo-precompute", "ours-dpo-shared", "ours-dpo-split", "ours-dpo-buckets",
           "ours-dpo-shared-buckets", "ours-sft", "ours-sft-2b", "ours-dpo-frozen", "trl-dpo")
PAIR_FORWARD = {"ours-dpo-shared": "shared_prompt", "ours-dpo-split": "split", "ours-dpo-shared-buckets": "shared_prompt"}
TOKENS = ("non-pad tokens of the chosen and rejected sequences (prompt + reply, chat template included; "
          "prompt + chosen for SFT) processed in one epoch, divided by seconds")


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def padded_positions(lengths: list[list[int]], batch_size: int) -> int:
    """Sum over batches of (sequences x longest sequence): what the model actually runs on."""
    total = 0
    for start in range(0, len(lengths) - len(lengths) % batch_size, batch_size):
        rows = lengths[start:start + batch_size]
        total += sum(len(r) for r in rows) * max(max(r) for r in rows)
    return total


def run_ours(args, config: str) -> dict:
    import rlhf.models.policy as policy_module
    import rlhf.trainers.offline as offline
    from rlhf.algos.dpo import DPO
    from rlhf.algos.sft import SFT
    from rlhf.data.tokenize import Tokenization
    from rlhf.logging import NoLogger
    from rlhf.tasks.dataset import DatasetTask

    marks: dict[str, float] = {}
    make_reference = offline.make_reference

    def timed_reference(*a, **k):
        marks["ref_start"] = time.perf_counter()
        ref = make_reference(*a, **k)
        marks["ref_end"] = time.perf_counter()
        return ref

    class LoopBar:  # the loop's progress bar is created right before the loop and closed right after it
        def __init__(self, *a, **k):
            marks["loop_start"] = time.perf_counter()

        def update(self, n=1): pass
        def set_postfix(self, **k): pass

        def close(self):
            marks["loop_end"] = time.perf_counter()

    offline.make_reference, offline.tqdm = timed_reference, LoopBar
    offline.save_checkpoint = lambda *a, **k: None  # no saving, as trl runs with save_strategy="no"
    policy_module.Policy.save = lambda self, directory: None

    task = DatasetTask("synthetic_prefs", "preference", train_path=str(DATA), train_limit=args.pairs)
    sft = config.startswith("ours-sft")
    algo = SFT() if sft else DPO(beta=0.1)
    batch_size = args.batch_size * (2 if config == "ours-sft-2b" else 1)
    tokenization = Tokenization(max_length=args.max_length, truncation="left")
    baseline = rss_mib()
    policy = policy_module.load_policy(args.model_path, dtype="float32")
    start = time.perf_counter()
    examples = offline.tokenised(task, algo, policy, tokenization)
    setup = time.perf_counter() - start
    train = examples["train"]
    buckets = args.buckets if config.endswith("-buckets") else 0
    order = offline.epoch_order(len(train), args.seed, 0, None, offline.example_lengths(train), batch_size, buckets)
    if sft:
        lengths = [[len(train.items[i].input_ids)] for i in order]
    else:  # a pair is padded to its batch's longest chosen or rejected sequence, both halves alike
        lengths = [[len(train.items[i][0].input_ids), len(train.items[i][1].input_ids)] for i in order]
    with tempfile.TemporaryDirectory() as run_dir:
        offline.fit_offline(policy=policy, algo=algo, task=task, tokenization=tokenization, logger=NoLogger(),
                            run_dir=run_dir, seed=args.seed, config={}, examples=examples,
                            learning_rate=args.lr, epochs=1, batch_size=batch_size, lr_scheduler="linear",
                            warmup_steps=0, max_grad_norm=1.0, log_every=10**9,
                            reference="frozen_copy" if config == "ours-dpo-frozen" else "precompute",
                            pair_forward=PAIR_FORWARD.get(config, "joint"), length_buckets=buckets)
        logged = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
        logged = [m for m in logged if "tokens_per_s" in m]  # the loop's own figure, logged at the last step
    ref_s = marks["ref_end"] - marks["ref_start"] if not sft and config != "ours-dpo-frozen" else 0.0
    return dict(setup_s=setup, ref_s=ref_s, loop_s=marks["loop_end"] - marks["loop_start"],
                steps=logged[-1]["step"], examples=len(train), tokens=sum(sum(r) for r in lengths),
                padded_positions=padded_positions(lengths, batch_size),
                own_tokens_per_s=logged[-1].get("tokens_per_s"), baseline_rss_mib=baseline)


def run_trl(args, config: str) -> dict:
    import warnings

    import datasets
    import torch
    import trl.import_utils as trl_import_utils
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    import rlhf.trainers.offline as offline
    from rlhf.data.tokenize import Tokenization
    from rlhf.tasks.dataset import DatasetTask

    # trl 0.28's is_*_available return transformers' (bool, version) tuples, always truthy: trl then imports
    # optional packages that are not installed (see tests/unit/test_trl_crosscheck.py). Unwrap them.
    for name in [n for n in vars(trl_import_utils) if n.startswith("is_") and n.endswith("_available")]:
        def unwrapped(*a, _check=getattr(trl_import_utils, name), **k):
            found = _check(*a, **k)
            return found[0] if isinstance(found, tuple) else found
        setattr(trl_import_utils, name, unwrapped)
    from trl import DPOConfig, DPOTrainer

    warnings.filterwarnings("ignore")
    datasets.disable_progress_bars()
    # The same rows in the same order as our epoch 0 (a sequential sampler then gives the same batches).
    task = DatasetTask("synthetic_prefs", "preference", train_path=str(DATA), train_limit=args.pairs)
    order = offline.epoch_order(len(task.train), args.seed, 0)
    rows = task.train.select(order)
    rows = datasets.Dataset.from_list([
        {"prompt": r["prompt"], "chosen": [{"role": "assistant", "content": r["chosen"]}],
         "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows])
    assert Tokenization(args.max_length).truncation == "left"  # ours keeps the end, as trl's keep_end
    scratch = tempfile.TemporaryDirectory()  # trl wants an output_dir even when it saves nothing
    config_args = dict(output_dir=scratch.name, per_device_train_batch_size=args.batch_size,
                       num_train_epochs=1, learning_rate=args.lr, lr_scheduler_type="linear", warmup_steps=0,
                       max_grad_norm=1.0, weight_decay=0.0, optim=args.trl_optim, beta=0.1,
                       loss_type="sigmoid",
                       max_length=args.max_length, truncation_mode="keep_end", max_prompt_length=None,
                       max_completion_length=None, precompute_ref_log_probs=config == "trl-dpo-precompute",
                       use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
                       dataloader_num_workers=0, dataloader_drop_last=True,
                       train_sampling_strategy="sequential",
                       eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none",
                       disable_tqdm=True, seed=args.seed)
    marks: dict[str, float] = {}

    class Marks(TrainerCallback):
        def on_train_begin(self, *a, **k):
            marks["loop_start"] = time.perf_counter()

        def on_train_end(self, *a, **k):
            marks["loop_end"] = time.perf_counter()

    tokenizer = AutoTokenizer.from_pretrained(args.model_path)
    baseline = rss_mib()
    model = AutoModelForCausalLM.from_pretrained(args.model_path, dtype=torch.float32)
    start = time.perf_counter()
    trainer = DPOTrainer(model=model, args=DPOConfig(**config_args), train_dataset=rows,
                         processing_class=tokenizer, callbacks=[Marks()])
    setup = time.perf_counter() - start
    ds = trainer.train_dataset
    lengths = [[min(args.max_length, len(p) + len(c)), min(args.max_length, len(p) + len(r))] for p, c, r in
               zip(ds["prompt_input_ids"], ds["chosen_input_ids"], ds["rejected_input_ids"])]
    start = time.perf_counter()
    trainer.train()
    ref_s = marks["loop_start"] - start if config == "trl-dpo-precompute" else 0.0
    scratch.cleanup()
    return dict(setup_s=setup, ref_s=ref_s, loop_s=marks["loop_end"] - marks["loop_start"],
                steps=trainer.state.global_step, examples=len(ds), tokens=sum(sum(r) for r in lengths),
                padded_positions=padded_positions(lengths, args.batch_size), baseline_rss_mib=baseline)


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    result = (run_trl if args.worker.startswith("trl") else run_ours)(args, args.worker)
    result |= dict(peak_rss_mib=peak_rss_mib(), torch_threads=torch.get_num_threads())
    result["footprint_mib"] = result["peak_rss_mib"] - result.pop("baseline_rss_mib")
    result["total_s"] = result["ref_s"] + result["loop_s"]
    result["tokens_per_s"] = result["tokens"] / result["total_s"]
    result["loop_tokens_per_s"] = result["tokens"] / result["loop_s"]
    print("RESULT " + json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run (see the docstring)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--buckets", type=int, default=8, help="trainer.length_buckets of ours-dpo-buckets")
    parser.add_argument("--trl-optim", default="adamw_torch_fused", help="trl's default on torch>=2.8")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--cache-dir", default=os.path.join(tempfile.gettempdir(), "rlhf-bench-models"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    from rlhf.models.tiny import tiny_model_path

    model_path = tiny_model_path(args.cache_dir, hidden_size=args.hidden, num_layers=args.layers,
                                 num_heads=args.heads)
    configs = args.configs.split(",")
    env = os.environ | {"OMP_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1",
                        "TOKENIZERS_PARALLELISM": "false", "HF_DATASETS_OFFLINE": "1",
                        "TRANSFORMERS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    runs: dict[str, list[dict]] = {c: [] for c in configs}
    for repeat in range(args.repeats):  # interleaved, so slow phases of a shared machine hit every config
        for config in configs:
            command = [sys.executable, __file__, "--worker", config, "--model-path", str(model_path)]
            command += [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                        if k not in ("worker", "model_path", "configs", "repeats", "cache_dir")]
            done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode or not lines:
                sys.exit(f"{config} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
            runs[config].append(json.loads(lines[-1][len("RESULT "):]))
            print(f"repeat {repeat} {config}: {runs[config][-1]}", file=sys.stderr, flush=True)

    def median(config, key):
        return statistics.median(r[key] for r in runs[config])

    keys = ("total_s", "ref_s", "loop_s", "setup_s", "tokens_per_s", "loop_tokens_per_s", "peak_rss_mib",
            "footprint_mib")
    results = {}
    for c in configs:
        results[c] = {k: round(median(c, k), 3) for k in keys}
        results[c] |= {k: runs[c][0][k] for k in ("steps", "examples", "tokens", "padded_positions")}
        if c.startswith("ours"):  # fit_offline's own tokens_per_s (metrics.jsonl), as a cross-check of loop's
            results[c]["own_loop_tokens_per_s"] = round(median(c, "own_tokens_per_s"), 3)
        per_run = ("total_s", "loop_s", "footprint_mib")
        results[c]["runs"] = [{k: round(r[k], 3) for k in per_run} for r in runs[c]]
    checks = {}
    for sft in ("ours-sft", "ours-sft-2b"):
        if {"ours-dpo", sft} <= set(configs):
            ratio = results["ours-dpo"]["footprint_mib"] / results[sft]["footprint_mib"]
            name = "dpo_footprint_over_" + sft.removeprefix("ours-").replace("-", "_")
            checks |= {name: round(ratio, 3), f"{name}_within_1.2": ratio <= 1.2}
    for variant in (*PAIR_FORWARD, "ours-dpo-buckets"):  # each lever alone, and shared prompt with buckets
        if {"ours-dpo", variant} <= set(configs):
            name = variant.removeprefix("ours-").replace("-", "_")
            checks[f"{name}_over_dpo_loop_tokens_per_s"] = round(
                results[variant]["loop_tokens_per_s"] / results["ours-dpo"]["loop_tokens_per_s"], 3)
            if "ours-sft" in configs:
                ratio = results[variant]["footprint_mib"] / results["ours-sft"]["footprint_mib"]
                checks |= {f"{name}_footprint_over_sft": round(ratio, 3), f"{name}_footprint_within_1.2": ratio <= 1.2}
        if {variant, "trl-dpo-precompute"} <= set(configs):
            name = variant.removeprefix("ours-").replace("-", "_")
            checks[f"{name}_over_trl_loop_tokens_per_s"] = round(
                results[variant]["loop_tokens_per_s"] / results["trl-dpo-precompute"]["loop_tokens_per_s"], 3)
    if {"ours-dpo", "trl-dpo-precompute"} <= set(configs):
        ours, theirs = results["ours-dpo"], results["trl-dpo-precompute"]
        same = all(ours[k] == theirs[k] for k in ("steps", "tokens", "padded_positions"))
        loop_ratio = ours["loop_tokens_per_s"] / theirs["loop_tokens_per_s"]
        checks |= {"same_steps_tokens_padding": same,
                   "ours_over_trl_tokens_per_s": round(ours["tokens_per_s"] / theirs["tokens_per_s"], 3),
                   "ours_over_trl_loop_tokens_per_s": round(loop_ratio, 3),
                   "ours_tokens_per_s_at_least_trl": ours["tokens_per_s"] >= theirs["tokens_per_s"]}
    if {"dpo_footprint_over_sft_within_1.2", "ours_tokens_per_s_at_least_trl"} <= set(checks):
        checks["targets_met"] = (checks["dpo_footprint_over_sft_within_1.2"]
                                 and checks["ours_tokens_per_s_at_least_trl"])
    from importlib.metadata import version

    import torch
    from safetensors import safe_open
    from transformers import AutoConfig

    with safe_open(str(model_path / "model.safetensors"), "pt") as f:
        parameters = sum(torch.Size(f.get_slice(k).get_shape()).numel() for k in f.keys())
    print(json.dumps({
        "settings": {k: v for k, v in vars(args).items() if k not in ("worker", "model_path")}
        | {"model": f"Llama, hidden {args.hidden}, {args.layers} layers, {args.heads} heads, float32",
           "vocab_size": AutoConfig.from_pretrained(model_path).vocab_size, "parameters": parameters,
           "optimizers": f"ours torch.optim.AdamW fused (rlhf.trainers.offline.make_optimizer), trl {args.trl_optim}"},
        "machine": {"cpu_count": os.cpu_count(), "torch_threads": runs[configs[0]][0]["torch_threads"],
                    "torch": torch.__version__, "transformers": version("transformers"),
                    "trl": version("trl")},
        "tokens_definition": TOKENS, "statistic": f"median over {args.repeats} repeats",
        "results": results, "checks": checks}, indent=2))


if __name__ == "__main__":
    main()
