"""`rlhf-generate mode=dialogues`: full dialogues between the policy and the user simulator, scored.

Written to the run directory: `dialogues/` (`save_to_disk`) and `dialogues.jsonl`, one row per dialogue:
- `messages` (the conversation, opening included: a `conversation` dataset, ready for
  `rlhf-train task=... task.schema=conversation`), `start` (how many messages were the opening),
- `fields` (the task's data for the dialogue), `num_turns`, `finish_reasons` (per policy turn),
  `token_ids` (per policy turn, what the policy sampled),
- `end` ("user", "done", "max_turns" or "failed") and `failure` (the user simulator's reason, or null),
- with a reward: `score` (of the last policy turn, in the context of the whole dialogue; null when
  invalid) and `invalid_reason`; and the task's own metrics as columns (e.g. `success`, `return`).
A summary (dialogue counts by end, failures by reason, invalid scores by reason, task metric means) goes to
`summary.json` and the console.
"""

import json
from pathlib import Path

import datasets

from rlhf.atomic import write_text
from rlhf.backends.base import Backend
from rlhf.eval.reward_eval import BackendFactory
from rlhf.models.policy import Policy
from rlhf.rewards.base import Invalid, Reward, Score, as_columns, invalid_counts, score_checked
from rlhf.rollout.chunks import chunk_seed, run_chunks, save_dataset
from rlhf.rollout.engine import Dialogue, rollout, row_failure, summary
from rlhf.tasks.base import DialogueTask
from rlhf.users.base import UserSimulator


def score_dialogues(reward: Reward, dialogues: list[Dialogue], conversations: list[list[dict]] | None = None) -> list[Score]:
    """The reward of each dialogue's conversation (default: the whole dialogue); a dialogue whose user
    simulator failed is Invalid with that reason, without asking the reward."""
    conversations = [d.messages for d in dialogues] if conversations is None else conversations
    scores: list[Score] = [Invalid(f"user simulator failed: {d.failure}") if d.end == "failed" else 0.0 for d in dialogues]
    keep = [i for i, d in enumerate(dialogues) if d.end != "failed"]
    if keep:
        checked = score_checked(reward, [conversations[i] for i in keep], [dialogues[i].fields for i in keep])
        for i, score in zip(keep, checked):
            scores[i] = score
    return scores


def dialogue_rows(task: DialogueTask, dialogues: list[Dialogue], scores: list[Score] | None) -> list[dict]:
    rows = [d.to_row() | task.dialogue_metrics(d.messages, d.fields) for d in dialogues]
    if scores is not None:
        values, reasons = as_columns(scores)
        for row, value, reason in zip(rows, values, reasons):
            row["score"], row["invalid_reason"] = value, reason
    return rows


def report(rows: list[dict], run_dir: Path, metric_keys: list[str]) -> dict:
    """Counts and means of generated dialogues, written to summary.json and printed."""
    out = {"dialogues": len(rows), **summary(rows)}
    if rows and "score" in rows[0]:
        scored = [r["score"] for r in rows if r["score"] is not None]
        out["score_mean"] = sum(scored) / len(scored) if scored else float("nan")
        out["score_invalid"] = invalid_counts([Invalid(r["invalid_reason"]) for r in rows if r["score"] is None])
    for key in metric_keys:
        out[f"{key}_mean"] = sum(r[key] for r in rows) / max(len(rows), 1)
    write_text(run_dir / "summary.json", json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    return out


def generate_dialogues(
    policy: Policy,
    backend: BackendFactory,
    user: UserSimulator,
    reward: Reward | None,
    task: DialogueTask,
    split: str,
    num_prompts: int | None,
    seed: int,
    run_dir: str,
    chunk_size: int = 64,
    max_failed_fraction: float = 0.5,
) -> datasets.Dataset:
    """Roll out, score and write dialogues (see module docstring), resumably; `rlhf.rollout.chunks` says how
    failures and changed weights are handled."""
    openings, fields = task.openings(split, num_prompts)
    generator: Backend = backend(model=policy.model, tokenizer=policy.tokenizer)

    def make_rows(items: list, chunk: int) -> list[dict]:
        dialogues = rollout(generator, user, [o for o, _ in items], [f for _, f in items], task.max_turns,
                            done=task.done, reply_to_last=task.reply_to_last, seed=chunk_seed(seed, chunk))
        return dialogue_rows(task, dialogues, score_dialogues(reward, dialogues) if reward is not None else None)

    out = Path(run_dir)
    rows = run_chunks(list(zip(openings, fields)), chunk_size, out, make_rows, unit="dialogue",
                      key={"mode": "dialogues", "seed": seed, "task": task.name, "split": split},
                      models={"policy": policy.model, "reward": reward, "user": user},
                      failed=row_failure, max_failed_fraction=max_failed_fraction)
    dataset = save_dataset(rows, out / "dialogues")
    metric_keys = list(task.dialogue_metrics(openings[0], fields[0])) if openings else []
    report(rows, out, metric_keys)
    return dataset
