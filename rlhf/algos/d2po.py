"""OPO pair construction and D2PO's discriminator relabelling rule (pure tensor functions).

Singhal et al. 2024, "D2PO: Discriminator-Guided DPO with Response Evaluation Models" (arXiv 2405.01511;
code PrasannS/d2po). OPO samples two responses per prompt, scores both and trains DPO (summed over the
pairs, β = 0.05) on (argmax, argmin). D2PO scores them with a discriminator (a reward model trained online)
and spends a small gold-label budget per window on the pairs it is least sure of: those pairs' returned
scores are reordered to agree with gold, and the gold pairs become the discriminator's training data.
"""

import torch
from torch import Tensor

CRITERIA = ("conf", "rand")


def opo_pairs(scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per prompt, the chosen (higher-scored) and rejected sample of its two: `scores` (P, 2).

    Returns chosen_index (P,) and rejected_index (P,) in {0, 1} with rejected = 1 - chosen, and is_tie (P,).
    Deliberate deviation: on a tie D2PO's code takes argmax = argmin = 0 and trains on a duplicate pair with
    zero gradient (marked TODO there). Here a tie gets chosen 0 / rejected 1 and is flagged, so that the
    caller drops it.
    """
    if scores.ndim != 2 or scores.shape[1] != 2:
        raise ValueError(f"scores must be (P, 2), two samples per prompt, got {tuple(scores.shape)}")
    if bool(torch.isnan(scores).any()):
        raise ValueError("scores contain NaN")
    chosen = (scores[:, 1] > scores[:, 0]).long()  # (P,) argmax, first index on a tie
    return chosen, 1 - chosen, scores[:, 0] == scores[:, 1]


def select_relabels(
    rm_scores_a: Tensor,
    rm_scores_b: Tensor,
    budget: int,
    criteria: str,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Indices (LongTensor, at most `budget`) of the pairs whose gold labels are requested, in order.

    `conf`: ascending |r_a - r_b|, the least confident pairs first (stable on equal margins);
    `rand`: a random permutation drawn with `generator`.
    """
    _check_pair(rm_scores_a, rm_scores_b)
    if budget < 0:
        raise ValueError(f"relabel budget must be >= 0, got {budget}")
    if criteria == "conf":
        order = torch.argsort((rm_scores_a - rm_scores_b).abs(), stable=True)  # (P,)
    elif criteria == "rand":
        order = torch.randperm(rm_scores_a.shape[0], generator=generator).to(rm_scores_a.device)
    else:
        raise ValueError(f"relab_criteria must be one of {CRITERIA}, got {criteria!r}")
    return order[:budget]


def relabelled_scores(
    rm_scores_a: Tensor, rm_scores_b: Tensor, gold_a: Tensor, gold_b: Tensor, selected: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """The scores returned to the policy (P,) each, and which pairs' gold labels were used (P,) bool.

    RM scores, except for selected pairs with unequal gold: there the larger of the pair's two RM scores
    goes to the gold winner and the smaller to the loser. Selected pairs with equal gold are skipped
    (used False) and keep their RM scores, as in D2PO.
    """
    _check_pair(rm_scores_a, rm_scores_b)
    _check_pair(rm_scores_a, gold_a)
    _check_pair(rm_scores_a, gold_b)
    is_selected = torch.zeros_like(rm_scores_a, dtype=torch.bool)
    is_selected[selected] = True
    used = is_selected & (gold_a != gold_b)  # (P,)
    high, low = torch.maximum(rm_scores_a, rm_scores_b), torch.minimum(rm_scores_a, rm_scores_b)  # (P,)
    a_wins = gold_a > gold_b  # (P,)
    scores_a = torch.where(used, torch.where(a_wins, high, low), rm_scores_a)
    scores_b = torch.where(used, torch.where(a_wins, low, high), rm_scores_b)
    return scores_a, scores_b, used


class RelabelBudget:
    """Gold labels left in the current window: D2PO restores RELABELS (16) each time the discriminator's
    window of SAMPN texts fills (`reset`), and every relabel request `take`s from what is left."""

    def __init__(self, window_budget: int):
        if window_budget < 0:
            raise ValueError(f"relabel window budget must be >= 0, got {window_budget}")
        self.window_budget = window_budget
        self.remaining = window_budget

    def reset(self) -> None:
        self.remaining = self.window_budget

    def take(self, n: int) -> int:
        """Grants min(n, remaining) labels and returns how many were granted."""
        if n < 0:
            raise ValueError(f"cannot take a negative number of labels, got {n}")
        granted = min(n, self.remaining)
        self.remaining -= granted
        return granted

    def state_dict(self) -> dict[str, int]:
        return {"window_budget": self.window_budget, "remaining": self.remaining}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["window_budget"] != self.window_budget:
            raise ValueError(f"saved relabel window budget {state['window_budget']} != configured "
                             f"{self.window_budget}")
        if not 0 <= state["remaining"] <= self.window_budget:
            raise ValueError(f"saved relabel budget remaining {state['remaining']} is outside "
                             f"[0, {self.window_budget}]")
        self.remaining = int(state["remaining"])


def _check_pair(a: Tensor, b: Tensor) -> None:
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"per-pair tensors must all be (P,), got {tuple(a.shape)} and {tuple(b.shape)}")
