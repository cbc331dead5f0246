"""PPO on a fixed set of scored rollouts (the group data of `rlhf-generate`, each response one rollout).

The policy gets a value head (`rlhf.models.value_model`), then the offline loop trains both with
`rlhf.algos.ppo.PPO`. Offline, each batch gets one update, so the behaviour (old) policy of a batch is the
current one detached, as in GRPO with one iteration: the ratio starts at 1 and the per-token KL penalty to
the reference (precomputed, the initial policy) is what keeps the policy near it. Old values are the
current values detached (no value clipping on the first and only pass). Online PPO, with fresh rollouts
and several epochs over them, needs the online loop.
"""

from rlhf.models.policy import Policy
from rlhf.models.value_model import PolicyWithValueHead
from rlhf.trainers.offline import fit_offline


def fit_ppo(*, policy: Policy, seed: int, **offline) -> dict[str, float]:
    """`fit_offline` with the policy wrapped in a value head (initialised under `seed`)."""
    critic = Policy(PolicyWithValueHead(policy.model, seed), policy.tokenizer, policy.path)
    return fit_offline(policy=critic, seed=seed, **offline)
