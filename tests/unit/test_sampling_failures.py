"""`mode=samples` counts responses whose reward endpoint failed as failures: a run of mostly such prompts
stops with the reason, and the rerun scores them again instead of keeping them as invalid samples."""

from functools import partial

import pytest

from rlhf.backends.hf import HFBackend
from rlhf.models.policy import load_policy
from rlhf.rewards.base import unavailable
from rlhf.rollout.sampling import sample_dataset


class Task:
    name = "prompts"

    def openings(self, split, limit=None):
        prompts = [[{"role": "user", "content": f"Say something about {word}."}] for word in ("cats", "rain", "tea")]
        return prompts, [{} for _ in prompts]


class Endpoint:
    """A judge-like reward whose endpoint is down until `up` is set."""

    def __init__(self):
        self.up, self.calls = False, 0

    def score(self, conversations, fields=None):
        self.calls += 1
        if not self.up:
            return [unavailable("HTTP 503 after 3 attempts: busy") for _ in conversations]
        return [float(len(c[-1]["content"])) for c in conversations]


def test_unavailable_rewards_stop_the_run_and_are_scored_again_on_rerun(tiny_path, tmp_path):
    policy = load_policy(tiny_path)
    backend = partial(HFBackend, max_new_tokens=4, min_new_tokens=1, seed=0)
    reward = Endpoint()
    run = partial(sample_dataset, policy, backend, None, reward, Task(), "train", None, 0, str(tmp_path),
                  num_samples=2, chunk_size=1, max_failed_fraction=0.5)
    with pytest.raises(RuntimeError, match=r"(?s)1 of 1 rows so far failed.*reward HTTP 503"):
        run()
    reward.up = True
    dataset = run()
    assert len(dataset) == 3
    assert all(s is not None for row in dataset["scores"] for s in row)
    assert all(r is None for row in dataset["invalid_reasons"] for r in row)
