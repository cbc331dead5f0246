"""`eval=win_rate`: the policy's win rate against a baseline policy at each turn of held-out dialogues
(REFUEL's table: h = 1..H and their average), decided by a pairwise judge.

Prefixes: the baseline plays each held-out opening with the user simulator for H - 1 turns (seeded); the
prefix of turn h is that dialogue up to its h-th assistant turn, so policy and baseline answer the same
conversation, at every turn, with the same sampling seed. A dialogue that ended before turn h (the user
stopped, the task was done) has no turn-h prefix. The judge is the `reward`: a pairwise judge
(`reward=judge_pairwise`, asked twice with the positions swapped) or any reward turned into a preference
(the higher score wins; equal scores tie). Ties count half; a verdict that could not be read is counted
apart and left out of the rate. Single-turn tasks (no user) give h = 1 only: the plain win rate.
A dialogue whose user simulator failed while its prefixes were played is left out at every turn (its later
turns are unknown, not ended) and counted as `failed_prefixes`; the baseline's dialogues are written to
`prefixes.jsonl`, and an evaluation where more than half of them failed is refused.

Standard errors are binomial, sqrt(p (1 - p) / n) per turn; the average's is sqrt(sum_h se_h^2) / H
(turns taken as independent samples). With `by` (a field such as `group_id`) each turn's rate is also
reported per value of that field. A pluralistic gold judges under every group's gold too (`group_<g>`,
SharedRep's minority and majority side by side), a composite reward under each component.
"""

import json
import math
from pathlib import Path

from rlhf.atomic import write_jsonl, write_text
from rlhf.eval.evaluate import PolicyFactory
from rlhf.eval.plots import line_plot
from rlhf.eval.report import markdown_table
from rlhf.eval.reward_eval import BackendFactory, refuse_unscored
from rlhf.eval.views import scored
from rlhf.models.policy import Policy
from rlhf.rewards.base import Invalid, Reward, Score
from rlhf.rewards.judge import PairwiseJudge
from rlhf.rollout.engine import rollout
from rlhf.tasks.base import DialogueTask
from rlhf.users.base import UserSimulator


def preferences(judge: Reward, prefixes: list[list[dict]], first: list[str], second: list[str],
                fields: list[dict]) -> tuple[list[Score], dict[str, list[Score]]]:
    """1.0 where `first` wins, 0.0 where `second` does, 0.5 for a tie, Invalid where it could not be decided;
    and the same under each part of the reward (`rlhf.eval.views`: each group's gold, each component)."""
    if isinstance(judge, PairwiseJudge):
        return judge.compare(prefixes, first, second, fields), {}
    conversations = [p + [{"role": "assistant", "content": r}] for p, r in zip(prefixes, first)]
    conversations += [p + [{"role": "assistant", "content": r}] for p, r in zip(prefixes, second)]
    main, parts, _ = scored(judge, conversations, fields + fields)
    return compared(main), {name: compared(values) for name, values in parts.items()}


def compared(scores: list[Score]) -> list[Score]:
    """The outcomes of the first half of `scores` against the second half."""
    n = len(scores) // 2
    out: list[Score] = []
    for a, b in zip(scores[:n], scores[n:]):
        if isinstance(a, Invalid) or isinstance(b, Invalid):
            out.append(a if isinstance(a, Invalid) else b)
        else:
            out.append(1.0 if a > b else 0.0 if a < b else 0.5)
    return out


def rate(outcomes: list[Score]) -> dict[str, float]:
    """Win rate (ties half) with its binomial standard error over the decided outcomes."""
    decided = [o for o in outcomes if not isinstance(o, Invalid)]
    n = len(decided)
    p = sum(decided) / n if n else math.nan
    return {"win_rate": p, "stderr": math.sqrt(p * (1 - p) / n) if n else math.nan, "n": n,
            "wins": sum(o == 1.0 for o in decided), "ties": sum(o == 0.5 for o in decided),
            "losses": sum(o == 0.0 for o in decided), "invalid": len(outcomes) - n}


class WinRatePerTurn:
    """baseline: the policy compared against (a built policy; default the tiny model, i.e. the starting
    point of tiny runs). turns: H (default: the task's max_turns). by: a field to break the rates down by."""

    def __init__(self, baseline: Policy, turns: int | None = None, by: str | None = None):
        if turns is not None and turns < 1:
            raise ValueError(f"eval.turns={turns} must be >= 1")
        self.baseline, self.turns, self.by = baseline, turns, by

    def __call__(self, policy: PolicyFactory, task: DialogueTask, reward: Reward, backend: BackendFactory,
                 user: UserSimulator, run_dir: str, seed: int) -> dict:
        turns = self.turns or task.max_turns
        openings, fields = task.eval_openings()
        if self.by is not None and any(self.by not in f for f in fields):
            row = next(i for i, f in enumerate(fields) if self.by not in f)
            raise ValueError(f"eval.by={self.by!r}: held-out dialogue {row} of task {task.name!r} has no such field")
        model = policy()
        ours = backend(model=model.model, tokenizer=model.tokenizer)
        theirs = backend(model=self.baseline.model, tokenizer=self.baseline.tokenizer)
        prefixes, failures = self.prefixes(theirs, user, task, openings, fields, turns, seed, Path(run_dir))
        refuse_unscored([None if f is None else f"user simulator failed: {f}" for f in failures],
                        "win-rate evaluation's prefixes")
        prefixes = [[] if f is not None else p for p, f in zip(prefixes, failures)]  # left out at every turn
        per_turn, records = [], []
        for h in range(1, turns + 1):
            cases = [(i, p[h - 1]) for i, p in enumerate(prefixes) if len(p) >= h]
            convs, rows = [c for _, c in cases], [fields[i] for i, _ in cases]
            a = [c[0].text for c in ours.generate(convs, 1, seed=seed * 1_000 + h)]
            b = [c[0].text for c in theirs.generate(convs, 1, seed=seed * 1_000 + h)]
            outcomes, by_part = preferences(reward, convs, a, b, rows)
            point = {"turn": h, **rate(outcomes), **{name: rate(o) for name, o in by_part.items()}}
            if self.by is not None:
                for value in sorted({str(r[self.by]) for r in rows}):
                    chosen = [o for o, r in zip(outcomes, rows) if str(r[self.by]) == value]
                    point[f"{self.by}={value}"] = rate(chosen)
            per_turn.append(point)
            records += [{"dialogue": i, "turn": h, "prefix": c, "policy": x, "baseline": y,
                          "outcome": o if isinstance(o, float) else None,
                          "invalid_reason": o.reason if isinstance(o, Invalid) else None}
                         for (i, c), x, y, o in zip(cases, a, b, outcomes)]
        out = Path(run_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(out / "comparisons.jsonl", records)
        refuse_unscored([r["invalid_reason"] for r in records], "win-rate evaluation")
        rates = [p["win_rate"] for p in per_turn if not math.isnan(p["win_rate"])]
        errs = [p["stderr"] for p in per_turn if not math.isnan(p["win_rate"])]
        average = sum(rates) / len(rates) if rates else math.nan
        result = {"policy": model.path, "baseline": self.baseline.path, "per_turn": per_turn,
                  "failed_prefixes": sum(f is not None for f in failures),
                  "win_rate": average, "win_rate_stderr": math.sqrt(sum(e * e for e in errs)) / len(errs)
                  if errs else math.nan}
        # flat numbers, for `rlhf-eval sweep=`: each turn's rate and each part's average over turns
        result |= {f"win_rate/h={p['turn']}": p["win_rate"] for p in per_turn}
        parts = sorted({k for p in per_turn for k, v in p.items() if isinstance(v, dict)})
        for name in parts:
            rates = [p[name]["win_rate"] for p in per_turn if name in p and not math.isnan(p[name]["win_rate"])]
            result[f"win_rate/{name}"] = sum(rates) / len(rates) if rates else math.nan
        write_text(out / "eval.json", json.dumps(result, indent=2))
        table = self.table(result)
        write_text(out / "eval.md", table)
        lines = {"policy": [(p["turn"], p["win_rate"], p["stderr"]) for p in per_turn]}
        lines |= {name: [(p["turn"], p[name]["win_rate"], p[name]["stderr"]) for p in per_turn if name in p]
                  for name in parts}
        line_plot(out / "win_rate.png", [("turn h", "win rate against the baseline", lines)],
                  f"{model.path} vs {self.baseline.path}")
        print(table)
        return result

    @staticmethod
    def prefixes(generator, user: UserSimulator, task: DialogueTask, openings: list[list[dict]],
                 fields: list[dict], turns: int, seed: int,
                 out: Path | None = None) -> tuple[list[list[list[dict]]], list[str | None]]:
        """Per dialogue, the conversation before each of its turns 1..H that the baseline's dialogue reached,
        and its user simulator's failure (None where it did not fail); the dialogues written to
        `out`/prefixes.jsonl."""
        if turns == 1:
            return [[o] for o in openings], [None] * len(openings)
        dialogues = rollout(generator, user, openings, fields, turns - 1, done=task.done, reply_to_last=True,
                            seed=seed, progress=True)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            write_jsonl(out / "prefixes.jsonl", [d.to_row() for d in dialogues])
        prefixes = []
        for d in dialogues:
            before = [d.messages[:i] for i in d.policy_turns]
            if d.end == "max_turns" and d.messages[-1]["role"] == "user":  # the user answered the last turn
                before.append(list(d.messages))
            prefixes.append(before)
        return prefixes, [d.failure if d.end == "failed" else None for d in dialogues]

    def table(self, result: dict) -> str:
        """REFUEL's layout: win rate in % per turn (the last one H) and their average, ± standard error."""
        turns = result["per_turn"]
        header = ["policy", *(f"h={p['turn']}" for p in turns[:-1]), f"H={turns[-1]['turn']}", "avg"]

        def cell(p: float, e: float) -> str:
            return "n/a" if math.isnan(p) else f"{100 * p:.1f} ± {100 * e:.1f}"

        rows = [[result["policy"], *(cell(p["win_rate"], p["stderr"]) for p in turns),
                 cell(result["win_rate"], result["win_rate_stderr"])]]
        values = sorted({k for p in turns for k in p if isinstance(p[k], dict)})  # parts, then breakdowns
        if values:
            rows += [[value, *(cell(p[value]["win_rate"], p[value]["stderr"]) if value in p else "n/a"
                               for p in turns), ""] for value in values]
        counts = ", ".join(f"h={p['turn']}: {p['n']} ({p['wins']} won, {p['ties']} tied, {p['losses']} lost"
                           + (f", {p['invalid']} undecided" if p["invalid"] else "") + ")" for p in turns)
        failed = result.get("failed_prefixes", 0)
        left_out = f"; {failed} dialogues left out: their user simulator failed" if failed else ""
        return (markdown_table(header, rows)
                + f"\nagainst {result['baseline']}; dialogues per turn: {counts}{left_out}\n")
