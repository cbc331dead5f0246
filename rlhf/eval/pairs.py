"""`eval=pairs`: the pair accuracy of a reward (a trained reward model, a gold) on the task's held-out
preference pairs, pooled and per group (`group_id`: SharedRep's minority and majority reward-model accuracy).

A pair is right when the reward scores `chosen` strictly above `rejected` (the training metric
`rewards/accuracy`); ties are counted apart, and pairs either side of which could not be scored are left out
and counted. Standard errors are binomial. No policy is loaded.
"""

import json
import math
from pathlib import Path

from rlhf.atomic import write_jsonl, write_text
from rlhf.data.schema import as_messages
from rlhf.eval.evaluate import PolicyFactory
from rlhf.eval.plots import bar_plot
from rlhf.eval.report import markdown_table
from rlhf.eval.reward_eval import BackendFactory, refuse_unscored
from rlhf.eval.views import scored
from rlhf.rewards.base import Invalid, Reward, Score, as_columns
from rlhf.tasks.dataset import DatasetTask
from rlhf.users.base import UserSimulator

CONVERSATION_COLUMNS = ("prompt", "chosen", "rejected")


def accuracy(chosen: list[Score], rejected: list[Score]) -> dict[str, float]:
    decided = [(c, r) for c, r in zip(chosen, rejected) if not isinstance(c, Invalid) and not isinstance(r, Invalid)]
    n = len(decided)
    right = sum(c > r for c, r in decided)
    p = right / n if n else math.nan
    return {"accuracy": p, "stderr": math.sqrt(p * (1 - p) / n) if n else math.nan, "n": n,
            "ties": sum(c == r for c, r in decided), "invalid": len(chosen) - n}


class PairAccuracy:
    """limit: the first `limit` held-out pairs (default all). by: the field to break accuracy down by."""

    def __init__(self, limit: int | None = None, by: str = "group_id"):
        self.limit, self.by = limit, by

    def __call__(self, policy: PolicyFactory, task: DatasetTask, reward: Reward, backend: BackendFactory,
                 user: UserSimulator, run_dir: str, seed: int) -> dict:
        del policy, backend, user, seed  # a reward is evaluated, on fixed pairs
        if not isinstance(task, DatasetTask) or task.schema != "preference" or task.eval is None:
            raise ValueError(f"eval=pairs needs a preference task with held-out pairs (task.eval_path); task "
                             f"{task.name!r} has none")
        rows = task.eval.select(range(min(self.limit, len(task.eval)))) if self.limit else task.eval
        fields = [{k: v for k, v in row.items() if k not in CONVERSATION_COLUMNS} for row in rows]
        prompts = [as_messages(row["prompt"], "user") for row in rows]
        chosen = [p + as_messages(row["chosen"], "assistant") for p, row in zip(prompts, rows)]
        rejected = [p + as_messages(row["rejected"], "assistant") for p, row in zip(prompts, rows)]
        n = len(rows)
        main, parts, what = scored(reward, chosen + rejected, fields + fields)
        result = {"reward_is": what, **accuracy(main[:n], main[n:])}
        groups = sorted({f[self.by] for f in fields if self.by in f}, key=str)
        for value in groups:
            keep = [i for i, f in enumerate(fields) if f.get(self.by) == value]
            result[f"{self.by}={value}"] = accuracy([main[i] for i in keep], [main[n + i] for i in keep])
        for name, values in parts.items():  # e.g. each group's gold, each component
            result[name] = accuracy(values[:n], values[n:])
        result |= {f"accuracy/{k}": v["accuracy"] for k, v in result.items() if isinstance(v, dict)}
        out = Path(run_dir)
        out.mkdir(parents=True, exist_ok=True)
        write_jsonl(out / "pairs.jsonl", [{**f, "score_chosen_eval": c if isinstance(c, float) else None,
                                           "score_rejected_eval": r if isinstance(r, float) else None}
                                          for f, c, r in zip(fields, main[:n], main[n:])])
        refuse_unscored(as_columns(main)[1], "evaluation of pairs")
        write_text(out / "eval.json", json.dumps(result, indent=2))
        slices = {"all": result, **{k: v for k, v in result.items() if isinstance(v, dict)}}
        table = markdown_table(["pairs", "accuracy", "n", "ties", "invalid"],
                               [[name, f"{s['accuracy']:.3f} ± {s['stderr']:.3f}", s["n"], s["ties"], s["invalid"]]
                                for name, s in slices.items()])
        table += ("\n" + (f"reward: {what}; " if what != "reward" else "")
                  + "a pair is right when chosen scores strictly above rejected\n")
        write_text(out / "eval.md", table)
        bar_plot(out / "pairs.png", {name: (s["accuracy"], s["stderr"]) for name, s in slices.items()},
                 "held-out pair accuracy (± s.e.)", f"{task.name}: {n} pairs")
        print(table)
        return result
