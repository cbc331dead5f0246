"""Generate responses to prompts with a policy and score them with a reward."""

import logging
import math
from collections.abc import Callable

from rlhf.backends.base import Backend
from rlhf.eval.views import scored
from rlhf.models.policy import Policy
from rlhf.rewards.base import Invalid, Reward, Score, as_columns, invalid_counts, score_checked, valid_scores
from rlhf.rollout.engine import failure_kinds, refuse_failures

log = logging.getLogger(__name__)

BackendFactory = Callable[..., Backend]  # a partially built backend config, completed with model and tokenizer


def generate_and_score(
    backend: Backend, reward: Reward | None, prompts: list[list[dict]], num_samples: int = 1,
    fields: list[dict] | None = None, seed: int | None = None,
) -> list[dict]:
    """One row per prompt: `prompt`, `responses` (num_samples) and, when a reward is given, `scores` (a
    float, or None where the response could not be scored) and `invalid_reasons` (None, or why not)."""
    completions = backend.generate(prompts, num_samples, seed=seed)
    rows = [{"prompt": p, "responses": [c.text for c in cs]} for p, cs in zip(prompts, completions)]
    if reward is not None:
        conversations = [r["prompt"] + [{"role": "assistant", "content": t}] for r in rows for t in r["responses"]]
        repeated = [f for f in fields for _ in range(num_samples)] if fields is not None else None
        values, reasons = as_columns(score_checked(reward, conversations, repeated))
        for i, row in enumerate(rows):
            row["scores"] = values[i * num_samples:(i + 1) * num_samples]
            row["invalid_reasons"] = reasons[i * num_samples:(i + 1) * num_samples]
    return rows


def row_scores(rows: list[dict]) -> list[Score]:
    """The scores of `generate_and_score` rows, flattened, with invalid ones as `Invalid` again."""
    return [Invalid(reason) if value is None else value
            for row in rows for value, reason in zip(row["scores"], row["invalid_reasons"])]


MAX_FAILED_FRACTION = 0.5


def refuse_unscored(reasons: list[str | None], what: str) -> None:
    """Refuse (RunRefused) an evaluation of which more than half the scores (`reasons`: each score's invalid
    reason, None for a valid one) failed because the user simulator or the reward endpoint was down: the mean of
    what got through is not the policy's score. Verdicts (an unparsable judge reply, an empty response) count
    as scored."""
    kinds, example = failure_kinds(reasons)
    refuse_failures(sum(kinds.values()), len(reasons), MAX_FAILED_FRACTION, what, "half", kinds, example,
                    "Not a result: mend the endpoint and run again (a training run resumes from its last checkpoint).")


def summarize(scores: list[Score]) -> dict[str, float]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n)) over the valid scores;
    `n` counts them and `reward_invalid` the others (NaN mean when none is valid)."""
    valid = valid_scores(scores)
    n = len(valid)
    mean = sum(valid) / n if n else math.nan
    var = sum((s - mean) ** 2 for s in valid) / (n - 1) if n > 1 else 0.0
    return {"reward_mean": mean, "reward_stderr": math.sqrt(var / n) if n else math.nan, "n": n,
            "reward_invalid": len(scores) - n}


def sample_and_score(backend: Backend, reward: Reward, prompts: list[list[dict]], num_samples: int,
                     fields: list[dict] | None = None,
                     ) -> tuple[list[dict], list[Score], dict[str, list[Score]], str]:
    """`generate_and_score` rows without scores, then the scores of every sample in row order (each with its
    prompt's `fields`, when given), the reward's parts and what the reward is (`rlhf.eval.views.scored`)."""
    rows = generate_and_score(backend, None, prompts, num_samples)
    repeated = [f for f in fields for _ in range(num_samples)] if fields is not None else None
    scores, parts, what = scored(reward, [r["prompt"] + [{"role": "assistant", "content": t}]
                                          for r in rows for t in r["responses"]], repeated)
    return rows, scores, parts, what


def part_metrics(parts: dict[str, list[Score]]) -> dict[str, float]:
    """`<part>_mean` and `<part>_stderr` of each part of a reward, over its valid scores."""
    out = {}
    for name, values in parts.items():
        stats = summarize(values)
        out[f"{name}_mean"], out[f"{name}_stderr"] = stats["reward_mean"], stats["reward_stderr"]
    return out


class RewardEvaluator:
    """What the training loop calls at eval time: generate on fixed held-out prompts, return reward stats.

    The backend is built afresh for each call, so every evaluation samples with the same seed: before/after
    comparisons use common random numbers and differ only by the weights.
    """

    def __init__(self, backend: BackendFactory, reward: Reward, prompts: list[list[dict]], num_samples: int = 1):
        self.backend, self.reward, self.prompts, self.num_samples = backend, reward, prompts, num_samples

    def rollouts(self, policy: Policy, prompts: list[list[dict]] | None = None) -> list[dict]:
        """Scored samples, one row per prompt (see `generate_and_score`), on `prompts` (default: the
        evaluation prompts)."""
        backend = self.backend(model=policy.model, tokenizer=policy.tokenizer)
        return generate_and_score(backend, self.reward, self.prompts if prompts is None else prompts, self.num_samples)

    def __call__(self, policy: Policy) -> dict[str, float]:
        """Reward statistics, and each part's (a composite's components, a pluralistic gold's groups, a
        judge's scores: `rlhf.eval.views`) as `<part>_mean` / `<part>_stderr`."""
        backend = self.backend(model=policy.model, tokenizer=policy.tokenizer)
        _, scores, parts, _ = sample_and_score(backend, self.reward, self.prompts, self.num_samples)
        refuse_unscored(as_columns(scores)[1], "evaluation")
        reasons = invalid_counts(scores)
        if reasons:  # counted in reward_invalid; the reasons go to the log
            log.info("%d of %d evaluation samples could not be scored: %s", sum(reasons.values()), len(scores),
                     ", ".join(f"{reason} ({n})" for reason, n in sorted(reasons.items())))
        return summarize(scores) | part_metrics(parts)
