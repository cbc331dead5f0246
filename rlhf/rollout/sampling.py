"""Single-turn sampling to a dataset: K responses per prompt, scored, written atomically.

Output (`<run_dir>/dataset` via `save_to_disk`, and `<run_dir>/samples.jsonl`), one row per prompt:
`prompt` (messages), `responses` (K strings), and with a reward `scores` (K floats) plus `chosen` /
`rejected` (the best and worst scored response), rows whose best and worst tie left without a pair
(`chosen`/`rejected` null) so `rlhf-train task=preference` can train on the pairs directly.
"""

import json
import os
import shutil
from pathlib import Path

import datasets
from tqdm.auto import tqdm

from rlhf.eval.reward_eval import BackendFactory, generate_and_score
from rlhf.models.policy import Policy
from rlhf.rewards.base import Reward


def _with_pair(row: dict) -> dict:
    scores = row.get("scores")
    if not scores or max(scores) == min(scores):
        return {**row, "chosen": None, "rejected": None}
    best, worst = scores.index(max(scores)), scores.index(min(scores))
    return {**row, "chosen": row["responses"][best], "rejected": row["responses"][worst]}


def sample_dataset(
    policy: Policy,
    backend: BackendFactory,
    reward: Reward | None,
    prompts: list[list[dict]],
    num_samples: int,
    run_dir: str,
    chunk_size: int = 64,
) -> datasets.Dataset:
    rows: list[dict] = []
    for start in tqdm(range(0, len(prompts), chunk_size), desc="sampling", unit="chunk"):
        rows += generate_and_score(policy, backend, reward, prompts[start:start + chunk_size], num_samples)
    rows = [_with_pair(r) for r in rows]
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    tmp_jsonl = out / ".samples.jsonl.tmp"
    tmp_jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = datasets.Dataset.from_list(rows)
    tmp_dir = out / ".dataset.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    dataset.save_to_disk(str(tmp_dir))
    shutil.rmtree(out / "dataset", ignore_errors=True)
    os.replace(tmp_dir, out / "dataset")
    os.replace(tmp_jsonl, out / "samples.jsonl")
    return dataset
