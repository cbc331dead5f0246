"""OPO pair construction and D2PO's relabelling rule on hand-made examples."""

import pytest
import torch

from rlhf.algos.d2po import RelabelBudget, opo_pairs, relabelled_scores, select_relabels


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def test_opo_pairs_argmax_vs_argmin_and_ties():
    # Prompt 0: sample 1 scores higher; prompt 1: sample 0; prompt 2: a tie; prompt 3: negative scores.
    scores = t(0.1, 0.7, 2.0, -1.0, 0.5, 0.5, -3.0, -2.0).reshape(4, 2)
    chosen, rejected, tie = opo_pairs(scores)
    assert chosen.tolist() == [1, 0, 0, 1]
    assert rejected.tolist() == [0, 1, 1, 0]
    assert tie.tolist() == [False, False, True, False]
    assert chosen.dtype == rejected.dtype == torch.long


def test_opo_pairs_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(P, 2\)"):
        opo_pairs(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="NaN"):
        opo_pairs(t(float("nan"), 1.0).reshape(1, 2))


# Four pairs; RM margins |r_a − r_b| = (1.0, 0.1, 0.5, 0.1).
RM_A = t(2.0, 0.3, -1.0, 0.0)
RM_B = t(1.0, 0.2, -0.5, 0.1)


def test_select_relabels_conf_is_least_confident_first():
    # Ascending margin: pairs 1 and 3 (0.1, stable order keeps 1 before 3), then 2 (0.5), then 0 (1.0).
    assert select_relabels(RM_A, RM_B, 3, "conf").tolist() == [1, 3, 2]
    assert select_relabels(RM_A, RM_B, 10, "conf").tolist() == [1, 3, 2, 0]  # budget above P: all pairs
    assert select_relabels(RM_A, RM_B, 0, "conf").tolist() == []


def test_select_relabels_rand_is_a_seeded_permutation():
    picked = select_relabels(RM_A, RM_B, 3, "rand", torch.Generator().manual_seed(0))
    expected = torch.randperm(4, generator=torch.Generator().manual_seed(0))[:3]
    assert picked.tolist() == expected.tolist()
    assert len(set(picked.tolist())) == 3
    full = select_relabels(RM_A, RM_B, 4, "rand", torch.Generator().manual_seed(5))
    assert sorted(full.tolist()) == [0, 1, 2, 3]


def test_select_relabels_errors():
    with pytest.raises(ValueError, match="relab_criteria"):
        select_relabels(RM_A, RM_B, 2, "entropy")
    with pytest.raises(ValueError, match=">= 0"):
        select_relabels(RM_A, RM_B, -1, "conf")
    with pytest.raises(ValueError, match=r"\(P,\)"):
        select_relabels(RM_A, RM_B[:3], 2, "conf")


def test_relabelled_scores_by_hand():
    # Gold: pair 0 b wins (RM had a ahead: swapped), pair 1 a wins (RM agreed: unchanged), pair 2 gold tie
    # (skipped), pair 3 a wins but is not selected (keeps its RM scores, where b leads).
    gold_a = t(0.0, 5.0, 3.0, 9.0)
    gold_b = t(1.0, 4.0, 3.0, 0.0)
    selected = torch.tensor([0, 1, 2])
    scores_a, scores_b, used = relabelled_scores(RM_A, RM_B, gold_a, gold_b, selected)
    # pair 0: max(2, 1) = 2 → b, min = 1 → a.  pair 1: a gets max(0.3, 0.2) = 0.3, b 0.2.
    # pair 2: tie, RM scores (−1, −0.5) stay.  pair 3: unselected, (0, 0.1) stay.
    assert scores_a.tolist() == [1.0, 0.3, -1.0, 0.0]
    assert scores_b.tolist() == [2.0, 0.2, -0.5, 0.1]
    assert used.tolist() == [True, True, False, False]
    # The inputs are not modified in place.
    assert RM_A.tolist() == [2.0, 0.3, -1.0, 0.0]


def test_relabelled_scores_nothing_selected_returns_rm_scores():
    scores_a, scores_b, used = relabelled_scores(RM_A, RM_B, t(0, 0, 0, 0), t(1, 1, 1, 1),
                                                 torch.tensor([], dtype=torch.long))
    assert torch.equal(scores_a, RM_A) and torch.equal(scores_b, RM_B)
    assert not used.any()


def test_relabel_budget_take_reset_and_exhaustion():
    budget = RelabelBudget(16)
    assert budget.take(10) == 10 and budget.remaining == 6
    assert budget.take(10) == 6 and budget.remaining == 0  # only what is left
    assert budget.take(5) == 0  # exhausted until the window resets
    budget.reset()
    assert budget.remaining == 16
    assert budget.take(0) == 0
    with pytest.raises(ValueError, match="negative"):
        budget.take(-1)
    with pytest.raises(ValueError, match=">= 0"):
        RelabelBudget(-1)


def test_relabel_budget_state_dict_round_trip():
    budget = RelabelBudget(16)
    budget.take(5)
    state = budget.state_dict()
    assert state == {"window_budget": 16, "remaining": 11}
    restored = RelabelBudget(16)
    restored.load_state_dict(state)
    assert restored.remaining == 11
    with pytest.raises(ValueError, match="window budget"):
        RelabelBudget(8).load_state_dict(state)
    with pytest.raises(ValueError, match="outside"):
        RelabelBudget(16).load_state_dict({"window_budget": 16, "remaining": 17})


def test_budget_and_selection_together():
    # A window of 3 labels over two calls of 4 pairs: the first call uses all 3, the second gets none.
    budget = RelabelBudget(3)
    first = select_relabels(RM_A, RM_B, budget.take(4), "conf")
    second = select_relabels(RM_A, RM_B, budget.take(4), "conf")
    assert first.tolist() == [1, 3, 2] and second.tolist() == []
