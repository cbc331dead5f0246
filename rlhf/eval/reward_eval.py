"""Generate responses to prompts with a policy and score them with a reward."""

import math
from collections.abc import Callable

from rlhf.backends.base import Backend
from rlhf.models.policy import Policy
from rlhf.rewards.base import Reward

BackendFactory = Callable[..., Backend]  # a partially built backend config, completed with model and tokenizer


def generate_and_score(
    backend: Backend, reward: Reward | None, prompts: list[list[dict]], num_samples: int = 1
) -> list[dict]:
    """One row per prompt: `prompt`, `responses` (num_samples), and `scores` when a reward is given."""
    completions = backend.generate(prompts, num_samples)
    rows = [{"prompt": p, "responses": [c.text for c in cs]} for p, cs in zip(prompts, completions)]
    if reward is not None:
        conversations = [r["prompt"] + [{"role": "assistant", "content": t}] for r in rows for t in r["responses"]]
        scores = reward.score(conversations)
        for i, row in enumerate(rows):
            row["scores"] = scores[i * num_samples:(i + 1) * num_samples]
    return rows


def summarize(scores: list[float]) -> dict[str, float]:
    """Mean and standard error of the mean (sample standard deviation / sqrt(n))."""
    n = len(scores)
    mean = sum(scores) / n
    var = sum((s - mean) ** 2 for s in scores) / (n - 1) if n > 1 else 0.0
    return {"reward_mean": mean, "reward_stderr": math.sqrt(var / n), "n": n}


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
        return summarize([s for row in self.rollouts(policy) for s in row["scores"]])
