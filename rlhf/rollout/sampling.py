"""`rlhf-generate mode=samples`: K single-turn responses per prompt, scored, written resumably.

Written to the run directory:
- `dataset/` (`save_to_disk`) and `dataset.jsonl`: one row per prompt with `prompt` (messages),
  `responses` (K strings) and, with a reward, `scores` (K floats, null where invalid) and
  `invalid_reasons` (null, or why that response could not be scored), and the columns the task's
  `task.fields` names (e.g. GSM8K's `answer`, which the gold reads again when the pairs are labelled);
- with a reward, `pairs/` (and `pairs.jsonl`): a preference dataset (`prompt`, `chosen`, `rejected`,
  `score_chosen`, `score_rejected`) of the best against the worst valid response of each prompt, leaving
  out prompts whose valid responses all tie, ready for `rlhf-train task=preference
  task.train_path=<run_dir>/pairs`.
The user simulator is not consulted: every sample is one policy turn.
"""

import math
from pathlib import Path

import datasets

from rlhf.eval.reward_eval import BackendFactory, generate_and_score
from rlhf.models.policy import Policy
from rlhf.rewards.base import Reward
from rlhf.rollout.chunks import chunk_seed, run_chunks, save_dataset
from rlhf.rollout.engine import row_failure
from rlhf.tasks.base import DialogueTask
from rlhf.users.base import UserSimulator


def best_worst_pairs(rows: list[dict]) -> list[dict]:
    pairs = []
    for row in rows:
        if sum(s is not None for s in row["scores"]) < 2:
            continue
        scores = [-math.inf if s is None else s for s in row["scores"]]  # an invalid score is never chosen
        best = scores.index(max(scores))
        worst = scores.index(min(s for s in scores if s != -math.inf))
        if scores[best] > scores[worst]:
            pairs.append({"prompt": row["prompt"], "chosen": row["responses"][best],
                          "rejected": row["responses"][worst], "score_chosen": scores[best],
                          "score_rejected": scores[worst]})
    return pairs


def sample_dataset(
    policy: Policy,
    backend: BackendFactory,
    user: UserSimulator,
    reward: Reward | None,
    task: DialogueTask,
    split: str,
    num_prompts: int | None,
    seed: int,
    run_dir: str,
    num_samples: int = 4,
    chunk_size: int = 64,
    max_failed_fraction: float = 0.5,
) -> datasets.Dataset:
    """Sample, score and write (see module docstring); returns the per-prompt dataset."""
    prompts, fields = task.openings(split, num_prompts)
    generator = backend(model=policy.model, tokenizer=policy.tokenizer)

    kept = tuple(getattr(task, "fields", ()))  # the prompt rows' fields the task keeps (e.g. GSM8K's answer)

    def make_rows(items: list, chunk: int) -> list[dict]:
        rows = generate_and_score(generator, reward, [p for p, _ in items], num_samples,
                                  fields=[f for _, f in items], seed=chunk_seed(seed, chunk))
        return [row | {name: f[name] for name in kept} for row, (_, f) in zip(rows, items, strict=True)]

    out = Path(run_dir)
    rows = run_chunks(list(zip(prompts, fields)), chunk_size, out, make_rows, unit="prompt",
                      key={"mode": "samples", "seed": seed, "task": task.name, "split": split,
                           "num_samples": num_samples, "scored": reward is not None,
                           **({"fields": list(kept)} if kept else {})},
                      models={"policy": policy.model, "reward": reward},
                      failed=row_failure, max_failed_fraction=max_failed_fraction)
    dataset = save_dataset(rows, out / "dataset")
    if reward is not None:
        save_dataset(best_worst_pairs(rows), out / "pairs")
    print(f"wrote {len(rows)} prompts x {num_samples} samples to {out / 'dataset'}")
    return dataset
