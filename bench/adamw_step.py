"""AdamW's step on a model's parameters: torch's per-parameter loop (what the trainers used before), foreach, and
fused (what `rlhf.trainers.offline.make_optimizer` builds), interleaved, on the same parameters and gradients.

    python bench/adamw_step.py [--hidden 256 --layers 4] [--steps 16 --repeats 7 --threads 1]

Prints one JSON object: per implementation the median and spread (min, max) of the seconds for `--steps` steps
over `--repeats` interleaved repeats, the ratio of each to the loop, and the largest parameter difference from
the loop's after the same steps (float rounding). Not a test.
"""

import argparse
import json
import statistics
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

KINDS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4)
    base = LlamaForCausalLM(config)
    grads = [torch.randn_like(p) * 1e-2 for p in base.parameters()]
    start = [p.detach().clone() for p in base.parameters()]

    def run(kind: str) -> tuple[float, list[torch.Tensor]]:
        params = [torch.nn.Parameter(s.clone()) for s in start]
        optimizer = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, **KINDS[kind])
        for p, g in zip(params, grads):
            p.grad = g.clone()
        optimizer.step()  # the state is allocated at the first step: not timed
        began = time.perf_counter()
        for _ in range(args.steps):
            optimizer.step()
        return time.perf_counter() - began, params

    seconds = {kind: [] for kind in KINDS}
    finals = {}
    for _ in range(args.repeats):
        for kind in KINDS:  # interleaved, so load on the machine falls on every side alike
            took, finals[kind] = run(kind)
            seconds[kind].append(took)
    loop = statistics.median(seconds["loop"])
    report = {"parameters": sum(s.numel() for s in start), "steps": args.steps, "repeats": args.repeats,
              "threads": args.threads, "torch": torch.__version__}
    for kind, values in seconds.items():
        report[kind] = {"median_s": round(statistics.median(values), 4), "min_s": round(min(values), 4),
                        "max_s": round(max(values), 4), "speedup_vs_loop": round(loop / statistics.median(values), 2),
                        "max_abs_diff_vs_loop": max(float((a - b).detach().abs().max()) for a, b in zip(finals[kind], finals["loop"]))}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
