"""`rlhf-generate mode=refuel_pairs`: REFUEL's branched dialogue pairs (Gao et al. 2024, setting one).

For each opening:
1. roll out a whole dialogue (roll-out 1, up to `task.max_turns` policy turns);
2. sample the horizon L ~ U{0..H-1} (H = its policy turns) and the branch turn h ~ U{0..L}
   (`horizon="last"`: L = H-1, h ~ U{0..H-1}, as REFUEL's setting two scores whole dialogues);
3. regenerate from the shared prefix that ends with user turn h (roll-out 2): policy turn h and the rest;
4. score both dialogues cut after policy turn L with the reward: the "relative future" of turn h.
The pair is the two responses at turn h (chosen = roll-out 1 if its reward is higher, else roll-out 2:
ties go to roll-out 2, as REFUEL does), prompt = the shared prefix.

Deliberate deviation: REFUEL regenerates roll-out 2 to the full H turns and then uses only its first L+1;
here it stops after turn L, which gives the same pairs for less generation.

Written to the run directory: `dataset/` (+ `dataset.jsonl`), every pair with `drop_reason` (null when
kept): "invalid reward: ...", "user simulator failed: ...", "identical responses at the branch turn",
"longer than N tokens"; and `pairs/` (+ `pairs.jsonl`), the kept ones only: a preference dataset
(`prompt`, `chosen`, `rejected`, `score_chosen`, `score_rejected`, `branch_turn`, `horizon`,
`chosen_dialogue`, `rejected_dialogue`) ready for `rlhf-train algo=refuel task=preference
task.train_path=<run_dir>/pairs`.
"""

import random
from pathlib import Path

import datasets

from rlhf.eval.reward_eval import BackendFactory
from rlhf.models.policy import Policy
from rlhf.rewards.base import Invalid, Reward, score_checked
from rlhf.rollout.chunks import chunk_seed, run_chunks, save_pairs
from rlhf.rollout.engine import Dialogue, rollout, row_failure
from rlhf.tasks.base import DialogueTask
from rlhf.users.base import UserSimulator


def sample_branch(rng: random.Random, num_turns: int, horizon: str = "sampled") -> tuple[int, int]:
    """(branch turn h, horizon L) for a dialogue of `num_turns` policy turns (see module docstring)."""
    if num_turns < 1:
        raise ValueError("a dialogue to branch needs at least one policy turn")
    if horizon == "last":
        return rng.randrange(num_turns), num_turns - 1
    last = rng.randrange(num_turns)
    return rng.randint(0, last), last


def cut_after(dialogue: Dialogue, turn: int) -> list[dict]:
    """The dialogue up to and including its policy turn `turn` (counted within the dialogue), or all of
    it, up to its last policy turn, when it ended sooner."""
    return dialogue.until_turn(min(turn, dialogue.num_turns - 1))


def branch_pairs(first: list[Dialogue], second: list[Dialogue], branches: list[tuple[int, int]],
                 reward: Reward, tokenizer=None, max_tokens: int | None = None) -> list[dict]:
    """Pair rows from roll-outs 1 and 2 (module docstring), each with its `drop_reason`."""
    cut_first = [cut_after(d, horizon) for d, (_, horizon) in zip(first, branches)]
    cut_second = [cut_after(d, horizon - branch) for d, (branch, horizon) in zip(second, branches)]
    fields = [d.fields for d in first]
    scores_first = score_checked(reward, cut_first, fields)
    scores_second = score_checked(reward, cut_second, fields)
    rows = []
    for d1, d2, (branch, horizon), c1, c2, r1, r2 in zip(first, second, branches, cut_first, cut_second,
                                                        scores_first, scores_second):
        a, b = d1.messages[d1.policy_turns[branch]]["content"], d2.messages[d2.policy_turns[0]]["content"]
        one_wins = not isinstance(r1, Invalid) and not isinstance(r2, Invalid) and r1 > r2
        (chosen, rejected, rc, rr, cd, rd) = (a, b, r1, r2, c1, c2) if one_wins else (b, a, r2, r1, c2, c1)
        reason = None
        if d2.end == "failed":
            reason = f"user simulator failed: {d2.failure}"
        elif not a.strip() or not b.strip():  # the reward scores the horizon's turn, not the branch turn's
            reason = "an empty response at the branch turn"
        elif isinstance(rc, Invalid) or isinstance(rr, Invalid):
            reason = f"invalid reward: {(rc if isinstance(rc, Invalid) else rr).reason}"
        elif a == b:
            reason = "identical responses at the branch turn"
        elif max_tokens is not None and max(_length(tokenizer, c) for c in (c1, c2)) > max_tokens:
            reason = f"longer than {max_tokens} tokens"
        rows.append({"prompt": d1.prefix_before(branch), "chosen": chosen, "rejected": rejected,
                     "score_chosen": None if isinstance(rc, Invalid) else rc,
                     "score_rejected": None if isinstance(rr, Invalid) else rr,
                     "branch_turn": branch, "horizon": horizon, "chosen_dialogue": cd, "rejected_dialogue": rd,
                     "drop_reason": reason})
    return rows


def _length(tokenizer, conversation: list[dict]) -> int:
    return len(tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=False))


def refuel_pairs(
    policy: Policy,
    backend: BackendFactory,
    user: UserSimulator,
    reward: Reward | None,
    task: DialogueTask,
    split: str,
    num_prompts: int | None,
    seed: int,
    run_dir: str,
    horizon: str = "sampled",
    max_tokens: int | None = None,
    chunk_size: int = 64,
    max_failed_fraction: float = 0.5,
) -> datasets.Dataset:
    """Generate, score, filter and write REFUEL pairs (module docstring), resumably; `rlhf.rollout.chunks`
    says how failures and changed weights are handled."""
    if reward is None:
        raise ValueError("mode=refuel_pairs ranks the two roll-outs with a reward: set reward=...")
    if horizon not in ("sampled", "last"):
        raise ValueError(f"mode.horizon={horizon!r} must be 'sampled' or 'last'")
    openings, fields = task.openings(split, num_prompts)
    generator = backend(model=policy.model, tokenizer=policy.tokenizer)

    def make_rows(items: list, chunk: int) -> list[dict]:
        base = chunk_seed(seed, chunk)
        first = rollout(generator, user, [o for o, _ in items], [f for _, f in items], task.max_turns,
                        done=task.done, reply_to_last=task.reply_to_last, seed=2 * base)
        failed = [d for d in first if d.end == "failed" or d.num_turns == 0]
        first = [d for d in first if d.end != "failed" and d.num_turns > 0]
        rng = random.Random(base)
        branches = [sample_branch(rng, d.num_turns, horizon) for d in first]
        second = rollout(generator, user, [d.prefix_before(h) for d, (h, _) in zip(first, branches)],
                         [d.fields for d in first], [L - h + 1 for h, L in branches], done=task.done,
                         reply_to_last=task.reply_to_last, seed=2 * base + 1)
        rows = branch_pairs(first, second, branches, reward, policy.tokenizer, max_tokens)
        return rows + [{"prompt": d.messages[:d.start], "chosen": None, "rejected": None, "score_chosen": None,
                        "score_rejected": None, "branch_turn": None, "horizon": None, "chosen_dialogue": None,
                        "rejected_dialogue": None, "drop_reason": f"user simulator failed: {d.failure}"}
                       for d in failed]

    out = Path(run_dir)
    rows = run_chunks(list(zip(openings, fields)), chunk_size, out, make_rows, unit="dialogue",
                      key={"mode": "refuel_pairs", "seed": seed, "task": task.name, "split": split,
                           "horizon": horizon, "max_tokens": max_tokens},
                      models={"policy": policy.model, "reward": reward, "user": user},
                      failed=row_failure, max_failed_fraction=max_failed_fraction)
    return save_pairs(rows, out)
