"""PPO with a learned value head for RLHF: GAE, whitening, KL-penalised token rewards, KL controllers."""

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from rlhf.algos.shapes import require_same_shape


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of `x` where the bool `mask` is True (other positions are selected out: NaN there is harmless)."""
    return torch.where(mask, x, torch.zeros_like(x)).sum() / mask.sum()


def whiten(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """(x - μ) / sqrt(σ² + 1e-8), μ and σ² the mean and unbiased variance of x where `mask` is True.

    As trl's `masked_whiten`/`masked_var` (Bessel-corrected variance, ε = 1e-8 inside the root). With
    `shift_mean=False` the mean is added back, so only the scale changes. Positions outside the mask are
    returned as 0. Raises ValueError for fewer than 2 masked elements, where the unbiased variance is 0/0
    (trl only guards against 0 elements and returns NaN for 1).
    """
    mask = mask.bool()
    count = mask.sum()
    if count.item() < 2:
        raise ValueError(f"whiten needs at least 2 unmasked elements, got {count.item()}")
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask) * count / (count - 1)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, torch.zeros_like(whitened))


def gae(
    token_rewards: Tensor, values: Tensor, response_mask: Tensor, gamma: float, lam: float
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, eq. 16) over the response tokens of each row.

    All inputs (N, T). For the response tokens t of a row, in order, with t' the next response token:

        δ_t = r_t + γ V_t' - V_t        (V_t' = 0 after the row's last response token: the episode ends)
        A_t = δ_t + γλ A_t'             returns R_t = A_t + V_t

    Masked positions are skipped, not treated as steps: a user turn between two assistant turns is part of
    the environment's transition, so it is neither discounted nor bootstrapped through (verl's multi-turn
    `compute_gae_advantage_return` does the same). For a contiguous response this is trl's loop. Returns
    (advantages, returns), both 0 at masked positions.
    """
    mask = response_mask.bool()
    zeros = torch.zeros_like(values[:, 0])  # (N,)
    next_value, next_advantage = zeros, zeros
    advantages = torch.zeros_like(values)  # (N, T)
    for t in reversed(range(values.shape[1])):
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]  # (N,)
        advantage = delta + gamma * lam * next_advantage  # (N,)
        m = mask[:, t]
        advantages[:, t] = torch.where(m, advantage, zeros)
        next_value = torch.where(m, values[:, t], next_value)
        next_advantage = torch.where(m, advantage, next_advantage)
    returns = torch.where(mask, advantages + values, torch.zeros_like(values))
    return advantages, returns


class AdaptiveKLController:
    """Adaptive KL coefficient of Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences").

    After each batch with observed KL (per-sequence sum, averaged over the batch) and n_steps samples,

        e = clip(KL / target - 1, -0.2, 0.2),        β ← β (1 + e · n_steps / horizon)

    so β grows when the policy drifts beyond `target` nats and shrinks below it. The gain n_steps / horizon
    is the form of the paper's code (openai/lm-human-preferences, copied by trl's old PPOTrainer), whose
    defaults these are; the paper writes it as a constant K_β per update.
    """

    def __init__(self, init_kl_coef: float = 0.2, target: float = 6.0, horizon: float = 10000) -> None:
        if not init_kl_coef > 0:
            raise ValueError(f"init_kl_coef must be > 0, got {init_kl_coef}")
        if not target > 0:
            raise ValueError(f"target must be > 0, got {target}")
        if not horizon > 0:
            raise ValueError(f"horizon must be > 0, got {horizon}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(float(current_kl) / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class FixedKLController:
    """A constant KL coefficient with the interface of `AdaptiveKLController`."""

    def __init__(self, kl_coef: float) -> None:
        if not kl_coef >= 0:
            raise ValueError(f"kl_coef must be >= 0, got {kl_coef}")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        pass

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


@dataclass(frozen=True)
class PPO:
    """PPO-clip (Schulman et al. 2017, eq. 7 and 9) with the RLHF reward shaping of Ziegler et al. 2019 and
    Stiennon et al. 2020 (eq. 2), as trl's PPOTrainer implements it. Two steps, as PPO has: `targets` once
    per batch of rollouts (token rewards, GAE, whitening), then `loss` on each minibatch of several epochs.

    Token rewards, for response tokens t of response i with sequence score s_i (reward model output):

        r_t = -β (log π_old(y_t) - log π_ref(y_t))  + [t is the last response token] · s_i

    where β is the KL coefficient passed in by the loop (from a KL controller) or the field `kl_coef`, and
    s_i has `missing_eos_penalty` subtracted if the response did not end with EOS (trl's option). GAE with
    the rollout values V_old gives advantages A and returns R; A is whitened over the batch's response tokens.
    With ρ = π / π_old and the masked mean E over response tokens:

        L_pg = E[max(-A ρ, -A clip(ρ, 1 - ε, 1 + ε))]
        L_vf = ½ E[max((V - R)², (V_old + clip(V - V_old, -ε_v, ε_v) - R)²)]
        L = L_pg + c_v L_vf

    Deliberate deviations from trl 0.28 (`trl.experimental.ppo.PPOTrainer`):
    - The score is added at the last response token and V is 0 after it. trl adds it one position later, at
      the first padding token (`sequence_lengths_p1`), and trains the value head on that extra position too.
    - `whiten_rewards` whitens the scores across the batch (keeping their mean, trl's `shift_mean=False`)
      before they enter the token rewards; trl whitens the whole token-reward tensor, KL terms included.
    - GAE and the advantage whitening run over the tensors of one `targets` call: the whole rollout batch of
      a process, as trl computes them once per rollout before splitting into minibatches.
    - `actor/approx_kl` is ½ E[(log ρ)²] over response tokens; trl averages over padding positions as well.
    - Masked positions are selected out, never multiplied by 0 (NaN-safe); GAE skips them (see `gae`), so a
      multi-turn rollout's user turns are part of the environment's transition.

    Whitening needs at least 2 response tokens per call, and `whiten_rewards` at least 2 responses. The
    `kl` metric of `targets`, the mean over responses of Σ_t (log π_old - log π_ref), is what a KL
    controller's `update` takes; `advantages/mean` is taken before whitening (after it, it is 0).
    """

    batch_kind: ClassVar[str] = "rollout"
    needs_reference: ClassVar[bool] = True

    clip_range: float = 0.2
    clip_range_value: float = 0.2
    value_coef: float = 0.1
    gamma: float = 1.0
    lam: float = 0.95
    kl_coef: float = 0.05
    whiten_rewards: bool = False
    missing_eos_penalty: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.clip_range < 1.0:
            raise ValueError(f"algo.clip_range must be in (0, 1), got {self.clip_range}")
        if not self.clip_range_value > 0:
            raise ValueError(f"algo.clip_range_value must be > 0, got {self.clip_range_value}")
        if not self.value_coef >= 0:
            raise ValueError(f"algo.value_coef must be >= 0, got {self.value_coef}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"algo.gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"algo.lam must be in [0, 1], got {self.lam}")
        if not self.kl_coef >= 0:
            raise ValueError(f"algo.kl_coef must be >= 0, got {self.kl_coef}")
        if self.missing_eos_penalty is not None and self.missing_eos_penalty < 0:
            raise ValueError(f"algo.missing_eos_penalty must be >= 0 or null, got {self.missing_eos_penalty}")

    @torch.no_grad()
    def targets(
        self,
        old_logprobs: Tensor,
        ref_logprobs: Tensor,
        old_values: Tensor,
        scores: Tensor,
        ends_with_eos: Tensor,
        response_mask: Tensor,
        kl_coef: float | None = None,
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Advantages (whitened) and returns (N, T) of a batch of rollouts, and their metrics. Token inputs
        (N, T), from the policy that sampled (old) and the reference; `scores` (N,), `ends_with_eos` (N,)."""
        require_same_shape("PPO rollout inputs", 2, old_logprobs, ref_logprobs, old_values, response_mask)
        if scores.shape != old_logprobs.shape[:1] or ends_with_eos.shape != old_logprobs.shape[:1]:
            raise ValueError(
                f"scores {tuple(scores.shape)} and ends_with_eos {tuple(ends_with_eos.shape)} "
                f"must have shape (N,) = ({old_logprobs.shape[0]},)"
            )
        mask = response_mask.bool()  # (N, T)
        if bool((mask.sum(dim=1) == 0).any()):
            raise ValueError("every response needs at least one response token to receive its score")
        beta = self.kl_coef if kl_coef is None else kl_coef
        scores = scores.detach()
        if self.missing_eos_penalty is not None:
            scores = scores - self.missing_eos_penalty * (~ends_with_eos.bool()).to(scores.dtype)
        if self.whiten_rewards:
            scores = whiten(scores, torch.ones_like(mask[:, 0]), shift_mean=False)
        kl = torch.where(mask, old_logprobs - ref_logprobs, torch.zeros_like(old_logprobs))  # (N, T)
        token_rewards = -beta * kl  # (N, T)
        # last response token of each row: T - 1 - (index of the first True in the reversed row)
        last = mask.shape[1] - 1 - mask.flip(dims=[1]).int().argmax(dim=1)  # (N,)
        rows = torch.arange(mask.shape[0], device=mask.device)
        token_rewards[rows, last] += scores.to(token_rewards.dtype)
        raw_advantages, returns = gae(token_rewards, old_values.detach(), mask, self.gamma, self.lam)
        metrics = {"kl": kl.sum(dim=1).mean(), "returns/mean": masked_mean(returns, mask),
                   # before whitening: after it the mean is 0 by construction
                   "advantages/mean": masked_mean(raw_advantages, mask)}
        return {"advantages": whiten(raw_advantages, mask), "returns": returns}, metrics

    def loss(
        self,
        logprobs: Tensor,
        old_logprobs: Tensor,
        values: Tensor,
        old_values: Tensor,
        response_mask: Tensor,
        advantages: Tensor,
        returns: Tensor,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The clipped policy and value losses on a minibatch; all inputs (N, T), `advantages` and `returns`
        from `targets` over the rollout batch the minibatch is part of."""
        require_same_shape("PPO token inputs", 2, logprobs, old_logprobs, values, old_values, response_mask,
                           advantages, returns)
        mask = response_mask.bool()  # (N, T)
        advantages, returns = advantages.detach(), returns.detach()
        log_ratio = torch.where(mask, logprobs - old_logprobs.detach(), torch.zeros_like(logprobs))  # (N, T)
        ratio = torch.exp(log_ratio)  # (N, T)
        pg_losses = -advantages * ratio  # (N, T)
        pg_losses_clipped = -advantages * torch.clamp(ratio, 1 - self.clip_range, 1 + self.clip_range)
        pg_loss = masked_mean(torch.max(pg_losses, pg_losses_clipped), mask)

        # Zeroed before the squares: a NaN at a masked position would otherwise reach the gradient as 0·NaN.
        values = torch.where(mask, values, torch.zeros_like(values))  # (N, T)
        old_values = torch.where(mask, old_values.detach(), torch.zeros_like(values))  # (N, T)
        value_change = torch.clamp(values - old_values, -self.clip_range_value, self.clip_range_value)
        values_clipped = old_values + value_change  # (N, T)
        vf_losses = (values - returns) ** 2  # (N, T)
        vf_losses_clipped = (values_clipped - returns) ** 2  # (N, T)
        vf_loss = 0.5 * masked_mean(torch.max(vf_losses, vf_losses_clipped), mask)
        loss = pg_loss + self.value_coef * vf_loss

        with torch.no_grad():
            metrics = {
                "loss/policy": pg_loss.detach(),
                "loss/value": vf_loss.detach(),
                "actor/clipfrac": masked_mean((pg_losses_clipped > pg_losses).to(ratio.dtype), mask),
                "critic/clipfrac": masked_mean((vf_losses_clipped > vf_losses).to(ratio.dtype), mask),
                "actor/approx_kl": masked_mean(0.5 * log_ratio**2, mask),
            }
        return loss, metrics
