"""Dialogues on a task's held-out openings, scored: what the online loop reports at evaluation time, for
single-turn tasks (no user) and dialogues with a simulated user alike."""

import math
from collections.abc import Callable

from rlhf.eval.reward_eval import BackendFactory, summarize
from rlhf.models.policy import Policy
from rlhf.rewards.base import Reward, Score, invalid_counts
from rlhf.rollout.dialogues import score_dialogues
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
        self.openings, self.fields = task.eval_openings()
        if not self.openings:
            raise ValueError(f"task {task.name!r} has no evaluation openings")

    def play(self, policy: Policy) -> tuple[list[Dialogue], list[Score]]:
        """The evaluation dialogues of `policy` and their scores."""
        generator = self.backend(model=policy.model, tokenizer=policy.tokenizer)
        dialogues = rollout(generator, self.user, self.openings, self.fields, self.task.max_turns,
                            done=self.task.done, reply_to_last=self.task.reply_to_last, seed=self.seed,
                            progress=self.progress)
        return dialogues, score_dialogues(self.reward, dialogues)

    def metrics(self, dialogues: list[Dialogue], scores: list[Score]) -> dict[str, float]:
        """Reward statistics, the task's metrics (mean and standard error), turns and how dialogues ended."""
        reasons = invalid_counts(scores)
        if reasons and self.log is not None:
            self.log(f"{sum(reasons.values())} of {len(scores)} evaluation dialogues could not be scored: "
                     + ", ".join(f"{reason} ({n})" for reason, n in sorted(reasons.items())))
        out = summarize(scores)
        per_dialogue = [self.task.dialogue_metrics(d.messages, d.fields) for d in dialogues]
        for key in per_dialogue[0] if per_dialogue else []:
            out[f"{key}_mean"], out[f"{key}_stderr"] = mean_and_stderr([m[key] for m in per_dialogue])
        rows = [d.to_row() for d in dialogues]
        return out | {k: float(v) for k, v in summary(rows).items() if not k.startswith("failures/")}

    def __call__(self, policy: Policy) -> dict[str, float]:
        return self.metrics(*self.play(policy))
