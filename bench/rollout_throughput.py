"""Multi-turn rollout throughput: kept dialogue caches against prefilling every turn, raw `generate`, and
one dialogue at a time.

Workload: `--dialogues` games of Twenty Questions (task=twenty_questions, the first objects of the train
split) of `--turns` policy turns each, the tiny policy (`policy=tiny`) asking and the knowledge-base
oracle (`user=twenty_questions_kb`) answering, `--max-new-tokens` per policy turn, sampled at T = 1.
- reuse:        one `rollout` call over all dialogues with `backend.reuse_cache=true` (the default): each
                dialogue's KV cache is kept between its turns, a turn prefills only the ids it adds
- reprefill:    the same with `reuse_cache=false`: every turn prefills each whole conversation again
- raw_generate: the floor of `reprefill` without the engine: the prompts `reprefill` sampled from, turn by
                turn, left-padded into one plain `model.generate` call per turn (same sampling settings)
- sequential:   one `rollout` call per dialogue (reuse on), which measures batching (`--sequential`)
The sides run interleaved, `--repeats` times each, after one warm-up of each; medians and spreads (min, max)
are printed. The sampled dialogues of `reuse` and `reprefill` are identical (same seeds; the check is
printed). Generated tokens are the policy's sampled ids (eos included) of all turns; tokens/s is their
number over the wall time of the whole rollout (generation, oracle answers and bookkeeping).
`prefill_share`: of the model's forward time, the share spent in forwards of more than one new position
(prefills; the rest is decoding one id per step). `prompt_ids`: ids prefilled and ids reused from a kept cache.
Targets: reuse tokens/s >= 1.5x reprefill's; batched (reuse) >= 5x sequential.

    python bench/rollout_throughput.py [--dialogues 32 --turns 10 --max-new-tokens 24 --threads 1]
"""

import argparse
import json
import statistics
import tempfile
import time

import torch

from rlhf.backends.hf import HFBackend
from rlhf.models.tiny import load_tiny
from rlhf.rollout.engine import rollout
from rlhf.tasks.twenty_questions_task import TwentyQuestionsTask
from rlhf.users.oracle import TwentyQuestionsOracle


class ForwardMeter:
    """Seconds of the model's forwards, split into prefills (more than one new position) and decode steps."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.prefill = self.decode = 0.0
        self._start, self._width = 0.0, 0
        model.register_forward_pre_hook(self._before, with_kwargs=True)
        model.register_forward_hook(self._after)

    def _before(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self._width, self._start = ids.shape[1], time.perf_counter()

    def _after(self, module, args, output):
        seconds = time.perf_counter() - self._start
        if self._width > 1:
            self.prefill += seconds
        else:
            self.decode += seconds

    def reset(self) -> tuple[float, float]:
        spent, self.prefill, self.decode = (self.prefill, self.decode), 0.0, 0.0
        return spent


def play(backend, user, task, openings, fields, turns, seed, one_at_a_time=False):
    if one_at_a_time:
        return [d for o, f in zip(openings, fields)
                for d in rollout(backend, user, [o], [f], turns, done=task.done, reply_to_last=True, seed=seed,
                                 progress=False)]
    return rollout(backend, user, openings, fields, turns, done=task.done, reply_to_last=True, seed=seed,
                   progress=False)


def raw_generate(backend: HFBackend, turn_prompts: list[list[list[dict]]], max_new_tokens: int, seed: int) -> int:
    """Plain batched `generate` over each turn's prompts; returns the generated ids (up to eos)."""
    model, pad = backend.model, backend.tokenizer.pad_token_id
    torch.manual_seed(seed)
    generated = 0
    for conversations in turn_prompts:
        prompts = [backend.prompt_ids(c) for c in conversations]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=True,
                                 temperature=1.0, top_p=1.0, top_k=0, pad_token_id=pad,
                                 eos_token_id=backend.eos_ids)[:, width:]
        done = torch.isin(out, torch.tensor(backend.eos_ids))
        # ids up to and including the first eos, as the engine counts them
        generated += int(torch.where(done.any(1), done.int().argmax(1) + 1, torch.full((len(out),), out.shape[1])).sum())
    return generated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dialogues", type=int, default=32)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sequential", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--cache", default=None, help="tiny model cache (default: a fresh temporary one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    policy = load_tiny(args.cache or tempfile.mkdtemp(), architecture={})
    policy.model.eval()
    meter = ForwardMeter(policy.model)
    backends = {reuse: HFBackend(policy.model, policy.tokenizer, max_new_tokens=args.max_new_tokens, seed=0,
                                 batch_size=args.dialogues, reuse_cache=reuse) for reuse in (True, False)}
    task, user = TwentyQuestionsTask(max_turns=args.turns), TwentyQuestionsOracle()
    openings, fields = task.openings("train", args.dialogues)
    sides = ["reuse", "reprefill", "raw_generate"] + (["sequential"] if args.sequential else [])
    results: dict[str, list[dict]] = {name: [] for name in sides}
    same = True
    for repeat in range(args.repeats + 1):  # the first round is the warm-up
        dialogues = {}
        for name in sides:
            meter.reset()
            start = time.perf_counter()
            if name == "raw_generate":
                prompts = [[d.prefix_before(t) for d in dialogues["reprefill"] if t < d.num_turns]
                           for t in range(args.turns)]
                tokens, turns_, counts = raw_generate(backends[False], prompts, args.max_new_tokens, repeat), \
                    sum(map(len, prompts)), None
            else:
                backend = backends[name != "reprefill"]
                dialogues[name] = play(backend, user, task, openings, fields, args.turns, seed=repeat,
                                       one_at_a_time=name == "sequential")
                tokens = sum(len(ids) for d in dialogues[name] for ids in d.token_ids)
                turns_ = sum(d.num_turns for d in dialogues[name])
                counts = backend.last_session if name == "reuse" else None
            seconds = time.perf_counter() - start
            prefill, decode = meter.reset()
            if repeat:
                results[name].append({"seconds": seconds, "tokens": tokens, "turns": turns_, "counts": counts,
                                      "prefill_share": prefill / max(prefill + decode, 1e-9)})
        same &= [d.token_ids for d in dialogues["reuse"]] == [d.token_ids for d in dialogues["reprefill"]]
    out = {"workload": {"dialogues": args.dialogues, "turns": args.turns, "max_new_tokens": args.max_new_tokens,
                        "repeats": args.repeats, "threads": args.threads, "device": str(policy.model.device)},
           "reuse_and_reprefill_sample_the_same_dialogues": same}
    for name, runs in results.items():
        rates = [r["tokens"] / r["seconds"] for r in runs]
        out[name] = {"seconds": round(statistics.median(r["seconds"] for r in runs), 3),
                     "generated_tokens": statistics.median(r["tokens"] for r in runs),
                     "policy_turns": statistics.median(r["turns"] for r in runs),
                     "tokens_per_s": round(statistics.median(rates), 1),
                     "tokens_per_s_min_max": [round(min(rates), 1), round(max(rates), 1)],
                     "prefill_share": round(statistics.median(r["prefill_share"] for r in runs), 3)}
        if runs[0]["counts"] is not None:
            counts = runs[-1]["counts"]
            out[name]["prompt_ids"] = {"prefilled": counts["prefilled"], "reused": counts["reused"],
                                       "rows_not_a_prefix": counts["diverged"], "rows": counts["rows"]}
    ratio = out["reuse"]["tokens_per_s"] / out["reprefill"]["tokens_per_s"]
    out["reuse_vs_reprefill"] = round(ratio, 2)
    out["reprefill_vs_raw_generate"] = round(out["reprefill"]["tokens_per_s"] / out["raw_generate"]["tokens_per_s"], 2)
    out["target_1.5x_reprefill_met"] = ratio >= 1.5
    if args.sequential:
        batching = out["reuse"]["tokens_per_s"] / out["sequential"]["tokens_per_s"]
        out["batched_vs_sequential"] = round(batching, 2)
        out["target_5x_sequential_met"] = batching >= 5
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
