"""CollabLLM's multi-turn-aware reward (Wu et al. 2025, `collabllm/reward.py::multiturn_aware_reward`).

A candidate response is scored by how the conversation goes on after it: `num_samples` forward sessions
are simulated (`ForwardSimulator`), each is scored by `metric` (any reward: an LLM judge, a weighted
`Composite` of judge keys, the exact 20Q information gain...) with the session's start in the fields
(`session_start`), and

    R_session = metric(session) - min(cost_weight * tokens, cost_cap)
    MR        = mean over the valid sessions of R_session

where `tokens` counts the tokens the policy generated in the session's future turns (the
`aditi-bhaskar/multiturn-20q` fork's cost: `min(cost_weight * #tokens(forward turns), 1)`). A session
whose metric is invalid (a verdict: an unparsable judge reply, an empty reply) is left out of the mean; a
candidate with no valid session is Invalid with the reasons. A session whose user simulator or reward endpoint
failed makes the candidate's score that failure (`rlhf.rollout.engine.marked_failure`), not a mean over the
sessions that got through: generation then counts it as failed and generates it again.
"""

import statistics
from collections import Counter
from dataclasses import dataclass

from rlhf.rewards.base import Invalid, Reward, Score, score_checked
from rlhf.rollout.engine import Dialogue, marked_failure
from rlhf.rollout.forward import ForwardSimulator


@dataclass
class Evaluation:
    """One candidate's multi-turn-aware reward: `mean` (or Invalid), `std` over its valid sessions, the
    per-session scores (None where invalid) and the sessions themselves."""

    mean: Score
    std: float
    session_scores: list[float | None]
    sessions: list[Dialogue]


class MultiturnAware:
    def __init__(self, metric: Reward, simulator: ForwardSimulator, num_samples: int = 3,
                 cost_weight: float = 5e-4, cost_cap: float = 1.0, seed: int = 0):
        if num_samples < 1:
            raise ValueError(f"num_samples={num_samples} must be >= 1")
        self.metric, self.simulator = metric, simulator
        self.num_samples, self.cost_weight, self.cost_cap = num_samples, cost_weight, cost_cap
        self.seed, self.calls = seed, 0

    def evaluate(self, conversations: list[list[dict]], fields: list[dict] | None = None,
                 seed: int | None = None) -> list[Evaluation]:
        """Simulate and score; `seed` fixes the simulation (default: this reward's seed plus its call count)."""
        fields = fields if fields is not None else [{} for _ in conversations]
        seed = self.seed + self.calls if seed is None else seed
        self.calls += 1
        sessions = self.simulator.sessions(conversations, fields, self.num_samples, seed=seed)
        flat = [s for group in sessions for s in group]
        scores: list[Score] = [Invalid(f"user simulator failed: {s.failure}") if s.end == "failed" else 0.0 for s in flat]
        ok = [i for i, s in enumerate(flat) if s.end != "failed"]
        if ok:
            checked = score_checked(self.metric, [flat[i].messages for i in ok],
                                    [flat[i].fields | {"session_start": flat[i].start} for i in ok])
            for i, score in zip(ok, checked):
                tokens = sum(len(ids) for ids in flat[i].token_ids)
                scores[i] = score if isinstance(score, Invalid) else score - min(self.cost_weight * tokens, self.cost_cap)
        out = []
        for k, group in enumerate(sessions):
            mine = scores[k * self.num_samples:(k + 1) * self.num_samples]
            valid = [s for s in mine if not isinstance(s, Invalid)]
            failure = next((s.reason for s in mine if isinstance(s, Invalid) and marked_failure(s.reason)), None)
            if failure is not None:
                mean: Score = Invalid(f"a forward session failed: {failure}")
            elif valid:
                mean = statistics.fmean(valid)
            else:
                reasons = Counter(s.reason for s in mine if isinstance(s, Invalid))
                mean = Invalid("no valid forward session: " + ", ".join(f"{r} (x{n})" for r, n in reasons.items()))
            out.append(Evaluation(mean, statistics.pstdev(valid) if len(valid) > 1 else 0.0,
                                  [None if isinstance(s, Invalid) else s for s in mine], group))
        return out

    def score(self, conversations: list[list[dict]], fields: list[dict] | None = None) -> list[Score]:
        return [e.mean for e in self.evaluate(conversations, fields)]
