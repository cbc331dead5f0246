"""`rlhf-generate mode=collabllm_pairs`: per-turn candidate pairs scored by a multi-turn-aware reward
(CollabLLM `generate_multiturn_dataset` / `to_dpo_dataset`; the 20Q fork's `process_conversation`).

At every turn of every dialogue:
1. sample `num_candidates` assistant candidates: the first `num_proactive` with the proactive prompt as a
   system message (CollabLLM's proactive arm), the rest plain;
2. score each with the multi-turn-aware reward (`rlhf.rewards.multiturn`): `num_samples` forward sessions
   of `window` turns with the user simulator and the policy, each scored by the configured `reward`
   (the session metric) minus the token cost;
3. chosen = the best candidate, rejected = the worst; on a tie the one whose sessions vary less is chosen
   (the fork's rule); the pair is kept when `score_chosen - score_rejected >= minimum_gap` and the scores
   differ (a tie teaches nothing but noise: dropped as "tied scores" unless `keep_ties`);
4. the chosen candidate joins the history, and the user's next message is the first user turn of the
   chosen candidate's longest forward session (CollabLLM); the dialogue ends when that session ended at
   once, the task says it is done, or after `task.max_turns` turns.

Written to the run directory: `dataset/` (+ `.jsonl`), every candidate pair with `drop_reason` (null when
kept), and `pairs/` (+ `.jsonl`): prompt, chosen, rejected, score_chosen, score_rejected, std_chosen,
std_rejected, turn, chosen_proactive, fields; ready for `rlhf-train algo=dpo task=preference
task.train_path=<run_dir>/pairs`.
"""

from dataclasses import replace
from pathlib import Path

import datasets

from rlhf.eval.reward_eval import BackendFactory
from rlhf.models.policy import Policy
from rlhf.rewards.base import Invalid, Reward
from rlhf.rewards.multiturn import Evaluation, MultiturnAware
from rlhf.rollout.chunks import chunk_seed, run_chunks, save_pairs
from rlhf.rollout.engine import marked_failure, row_failure, turn_seed
from rlhf.rollout.forward import ForwardSimulator
from rlhf.tasks.base import DialogueTask
from rlhf.users.base import UserSimulator

PROACTIVE_PROMPT = (
    "You are a collaborative assistant. Think about what the user ultimately needs. Ask a clarifying "
    "question when the request is ambiguous, and keep your turns short and useful."
)


def with_system(conversation: list[dict], prompt: str) -> list[dict]:
    """The conversation with `prompt` as its system message (appended to an existing one)."""
    if conversation and conversation[0]["role"] == "system":
        return [{"role": "system", "content": conversation[0]["content"] + "\n\n" + prompt}, *conversation[1:]]
    return [{"role": "system", "content": prompt}, *conversation]


def screen_empty(evaluations: list[Evaluation], texts: list[str]) -> list[Evaluation]:
    """The evaluations, with an empty (or whitespace-only) candidate's reward Invalid: its sessions may score
    well by later turns, but an empty reply is neither chosen (the dialogue goes on from it) nor rejected."""
    return [e if t.strip() else replace(e, mean=Invalid("empty candidate")) for e, t in zip(evaluations, texts)]


def rank(evaluations: list[Evaluation]) -> tuple[int, int] | None:
    """(chosen, rejected) candidate indices, or None when fewer than two have a valid reward."""
    valid = [i for i, e in enumerate(evaluations) if not isinstance(e.mean, Invalid)]
    if len(valid) < 2:
        return None
    best = max(valid, key=lambda i: evaluations[i].mean)
    worst = min(valid, key=lambda i: evaluations[i].mean)
    if best == worst or evaluations[best].mean == evaluations[worst].mean:  # a tie: steadier sessions win
        ordered = sorted(valid, key=lambda i: evaluations[i].std)
        return ordered[0], ordered[-1]
    return best, worst


def collabllm_pairs(
    policy: Policy,
    backend: BackendFactory,
    user: UserSimulator,
    reward: Reward | None,
    task: DialogueTask,
    split: str,
    num_prompts: int | None,
    seed: int,
    run_dir: str,
    num_candidates: int = 2,
    num_proactive: int = 1,
    proactive_prompt: str = PROACTIVE_PROMPT,
    num_samples: int = 3,
    window: int = 2,
    cost_weight: float = 5e-4,
    cost_cap: float = 1.0,
    minimum_gap: float = 0.0,
    keep_ties: bool = False,
    chunk_size: int = 16,
    max_failed_fraction: float = 0.5,
) -> datasets.Dataset:
    """Generate and write CollabLLM candidate pairs (module docstring), resumably; `rlhf.rollout.chunks`
    says how failures and changed weights are handled."""
    if reward is None:
        raise ValueError("mode=collabllm_pairs scores forward sessions with a reward: set reward=...")
    if not 2 <= num_candidates or not 0 <= num_proactive <= num_candidates:
        raise ValueError(f"mode.num_candidates={num_candidates} must be >= 2 and mode.num_proactive="
                         f"{num_proactive} within [0, num_candidates]")
    openings, fields = task.openings(split, num_prompts)
    generator = backend(model=policy.model, tokenizer=policy.tokenizer)
    simulator = ForwardSimulator(generator, user, window, task.done, task.reply_to_last)
    multiturn = MultiturnAware(reward, simulator, num_samples, cost_weight, cost_cap)

    def make_rows(items: list, chunk: int) -> list[dict]:
        base = chunk_seed(seed, chunk)
        histories = [list(o) for o, _ in items]
        rows: list[dict] = []
        active = list(range(len(items)))
        for turn in range(task.max_turns):
            if not active:
                break
            candidates = _candidates(generator, [histories[i] for i in active], num_candidates, num_proactive,
                                     proactive_prompt, turn_seed(base, turn, 0))
            flat = [(i, k, text) for i, texts in zip(active, candidates) for k, text in enumerate(texts)]
            evaluations = multiturn.evaluate([histories[i] + [{"role": "assistant", "content": t}] for i, _, t in flat],
                                             [items[i][1] for i, _, _ in flat], seed=turn_seed(base, turn, 1))
            still = []
            for a, i in enumerate(active):
                texts = candidates[a]
                mine = screen_empty(evaluations[a * num_candidates:(a + 1) * num_candidates], texts)
                ranked = rank(mine)
                row = _pair_row(histories[i], items[i][1], turn, texts, mine, ranked, num_proactive, minimum_gap,
                               keep_ties)
                rows.append(row)
                if ranked is None:
                    continue
                chosen = mine[ranked[0]]
                histories[i].append({"role": "assistant", "content": texts[ranked[0]]})
                longest = max(chosen.sessions, key=lambda s: len(s.messages))
                after = longest.messages[longest.start + 1:longest.start + 2]
                if not after or after[0]["role"] != "user":
                    continue
                histories[i].append(after[0])
                if not task.done(histories[i], items[i][1]):
                    still.append(i)
            active = still
        return rows

    out = Path(run_dir)
    rows = run_chunks(list(zip(openings, fields)), chunk_size, out, make_rows, unit="dialogue",
                      key={"mode": "collabllm_pairs", "seed": seed, "task": task.name, "split": split,
                           "num_candidates": num_candidates, "num_proactive": num_proactive,
                           "num_samples": num_samples, "window": window, "cost_weight": cost_weight,
                           "cost_cap": cost_cap, "minimum_gap": minimum_gap, "proactive_prompt": proactive_prompt,
                           "keep_ties": keep_ties},
                      models={"policy": policy.model, "reward": reward, "user": user},
                      failed=row_failure, max_failed_fraction=max_failed_fraction)
    return save_pairs(rows, out, drop=("candidates", "candidate_scores"))


def _candidates(generator, histories: list[list[dict]], num_candidates: int, num_proactive: int, prompt: str,
                seed: int) -> list[list[str]]:
    """Per history: `num_proactive` proactive candidates, then the plain ones."""
    proactive = generator.generate([with_system(h, prompt) for h in histories], num_proactive, seed=seed) \
        if num_proactive else [[] for _ in histories]
    plain = generator.generate(histories, num_candidates - num_proactive, seed=seed + 1) \
        if num_candidates > num_proactive else [[] for _ in histories]
    return [[c.text for c in p + q] for p, q in zip(proactive, plain)]


def _pair_row(history: list[dict], fields: dict, turn: int, texts: list[str], evaluations: list[Evaluation],
              ranked: tuple[int, int] | None, num_proactive: int, minimum_gap: float,
              keep_ties: bool = False) -> dict:
    scores = [None if isinstance(e.mean, Invalid) else e.mean for e in evaluations]
    row = {"prompt": list(history), "fields": fields, "turn": turn, "candidates": texts, "candidate_scores": scores,
           "chosen": None, "rejected": None, "score_chosen": None, "score_rejected": None,
           "std_chosen": None, "std_rejected": None, "chosen_proactive": None}
    unscored = [e.mean.reason for e in evaluations if isinstance(e.mean, Invalid)]
    failure = next((reason for reason in unscored if marked_failure(reason)), None)
    if failure is not None:  # not a ranking of the candidates: one of them went unscored (generated again)
        return row | {"drop_reason": f"a candidate could not be scored: {failure}"}
    if ranked is None:
        return row | {"drop_reason": "fewer than two valid candidates: " + "; ".join(unscored)}
    best, worst = ranked
    row |= {"chosen": texts[best], "rejected": texts[worst], "score_chosen": scores[best],
            "score_rejected": scores[worst], "std_chosen": evaluations[best].std,
            "std_rejected": evaluations[worst].std, "chosen_proactive": best < num_proactive}
    if texts[best] == texts[worst]:
        return row | {"drop_reason": "identical candidates"}
    if scores[best] == scores[worst] and not keep_ties:
        return row | {"drop_reason": "tied scores"}
    if scores[best] - scores[worst] < minimum_gap:
        return row | {"drop_reason": f"reward gap below minimum_gap={minimum_gap}"}
    return row | {"drop_reason": None}
