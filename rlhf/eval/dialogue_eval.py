"""Dialogues on a task's held-out openings, scored: what the online loop reports at evaluation time, for
single-turn tasks (no user) and dialogues with a simulated user alike."""

import math
from collections.abc import Callable

from rlhf.eval.reward_eval import BackendFactory, part_metrics, refuse_unscored, summarize
from rlhf.eval.views import scored
from rlhf.models.policy import Policy
from rlhf.rewards.base import Invalid, Reward, Score, as_columns, invalid_counts
from rlhf.rollout.engine import Dialogue, rollout, summary
from rlhf.tasks.base import DialogueTask
from rlhf.users.base import UserSimulator


def mean_and_stderr(values: list[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    return mean, math.sqrt(var / n)


class DialogueEvaluator:
    """Rolls out the task's evaluation openings (`task.eval_openings()`) with the policy and the user
    simulator, scores each dialogue with the reward, and returns reward_mean / reward_stderr / n /
    reward_invalid, the task's own metrics (`<metric>_mean`, `<metric>_stderr`, e.g. 20 Questions success),
    the mean number of policy turns and how dialogues ended.

    The backend is built afresh and the dialogues seeded with `seed` at every call, so evaluations before
    and after training use the same random numbers and differ only by the weights.
    """

    def __init__(self, backend: BackendFactory, user: UserSimulator, reward: Reward, task: DialogueTask,
                 seed: int = 0, log: Callable[[str], None] | None = None, progress: bool = False):
        self.backend, self.user, self.reward, self.task, self.seed, self.log = backend, user, reward, task, seed, log
        self.progress = progress
        self.meaning = "reward"  # what the reward of the last `play` is (see `rlhf.eval.views.scored`)
        self.openings, self.fields = task.eval_openings()
        if not self.openings:
            raise ValueError(f"task {task.name!r} has no evaluation openings")

    def play(self, policy: Policy) -> tuple[list[Dialogue], list[Score], dict[str, list[Score]]]:
        """The evaluation dialogues of `policy`, their scores and the reward's parts (`rlhf.eval.views`); a
        dialogue whose user simulator failed is Invalid with that reason, without asking the reward."""
        generator = self.backend(model=policy.model, tokenizer=policy.tokenizer)
        dialogues = rollout(generator, self.user, self.openings, self.fields, self.task.max_turns,
                            done=self.task.done, reply_to_last=self.task.reply_to_last, seed=self.seed,
                            progress=self.progress)
        keep = [i for i, d in enumerate(dialogues) if d.end != "failed"]
        failed = [Invalid(f"user simulator failed: {d.failure}") for d in dialogues]
        main, parts, self.meaning = scored(self.reward, [dialogues[i].messages for i in keep], [dialogues[i].fields for i in keep])
        scores, by_part = list(failed), {name: list(failed) for name in parts}
        for j, i in enumerate(keep):
            scores[i] = main[j]
            for name, values in parts.items():
                by_part[name][i] = values[j]
        return dialogues, scores, by_part

    def metrics(self, dialogues: list[Dialogue], scores: list[Score],
                parts: dict[str, list[Score]] | None = None) -> dict[str, float]:
        """Reward statistics, each part's and the task's metrics (mean and standard error), turns and how
        dialogues ended."""
        refuse_unscored(as_columns(scores)[1], "evaluation of dialogues")
        reasons = invalid_counts(scores)
        if reasons and self.log is not None:
            self.log(f"{sum(reasons.values())} of {len(scores)} evaluation dialogues could not be scored: "
                     + ", ".join(f"{reason} ({n})" for reason, n in sorted(reasons.items())))
        out = summarize(scores) | part_metrics(parts or {})
        per_dialogue = [self.task.dialogue_metrics(d.messages, d.fields) for d in dialogues]
        for key in per_dialogue[0] if per_dialogue else []:
            out[f"{key}_mean"], out[f"{key}_stderr"] = mean_and_stderr([m[key] for m in per_dialogue])
        rows = [d.to_row() for d in dialogues]
        return out | {k: float(v) for k, v in summary(rows).items() if not k.startswith("failures/")}

    def __call__(self, policy: Policy) -> dict[str, float]:
        return self.metrics(*self.play(policy))
