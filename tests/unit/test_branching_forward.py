"""REFUEL branching (shared prefixes, horizons, filters) and CollabLLM forward simulation on the tiny model."""

import copy
import random
from collections import Counter

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhf.backends.hf import HFBackend
from rlhf.rewards.base import Invalid
from rlhf.rewards.gold import Length
from rlhf.rewards.multiturn import Evaluation, MultiturnAware
from rlhf.rewards.twenty_questions import InformationGain
from rlhf.rollout.branching import branch_pairs, cut_after, sample_branch
from rlhf.rollout.collabllm import _pair_row, rank, screen_empty
from rlhf.rollout.engine import rollout
from rlhf.rollout.forward import ForwardSimulator
from rlhf.tasks.twenty_questions_task import TwentyQuestionsTask
from rlhf.users.dataset import DatasetUser
from rlhf.users.oracle import TwentyQuestionsOracle


@pytest.fixture(scope="module")
def backend(tiny_path):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_path)
    # min_new_tokens: no empty reply, whose Length score is invalid (the pair checks below read valid scores)
    return HFBackend(model, AutoTokenizer.from_pretrained(tiny_path), max_new_tokens=8, min_new_tokens=1, seed=0)


def test_branch_sampling_is_refuels():
    """L ~ U{0..H-1} and h ~ U{0..L}: P(h, L) = 1 / (H (L + 1))."""
    rng = random.Random(0)
    draws = Counter(sample_branch(rng, 3) for _ in range(60000))
    assert set(draws) == {(h, L) for L in range(3) for h in range(L + 1)}
    for (h, L), n in draws.items():
        assert n / 60000 == pytest.approx(1 / (3 * (L + 1)), abs=0.01)
    assert {sample_branch(rng, 4, "last")[1] for _ in range(50)} == {3}
    with pytest.raises(ValueError, match="at least one policy turn"):
        sample_branch(rng, 0)


def test_branched_pairs_share_exactly_the_prefix(backend):
    fields = [{"user_turns": ["u1", "u2", "u3"]} for _ in range(8)]
    openings = [[{"role": "user", "content": f"question {i}"}] for i in range(8)]
    first = rollout(backend, DatasetUser(), openings, fields, 4, seed=1, progress=False)
    rng = random.Random(0)
    branches = [sample_branch(rng, d.num_turns) for d in first]
    second = rollout(backend, DatasetUser(), [d.prefix_before(h) for d, (h, _) in zip(first, branches)], fields,
                     [L - h + 1 for h, L in branches], seed=2, progress=False)
    rows = branch_pairs(first, second, branches, Length("chars"))
    for row, d1, d2, (h, L) in zip(rows, first, second, branches):
        prefix = d1.prefix_before(h)
        assert row["prompt"] == prefix and prefix[-1]["role"] == "user"
        assert d2.messages[:len(prefix)] == prefix  # roll-out 2 continues the shared prefix
        assert (row["branch_turn"], row["horizon"]) == (h, L)
        for dialogue in (row["chosen_dialogue"], row["rejected_dialogue"]):
            assert dialogue[:len(prefix)] == prefix
            assert sum(m["role"] == "assistant" for m in dialogue) == L + 1  # cut after turn L
            assert dialogue[-1]["role"] == "assistant"
        assert {row["chosen"], row["rejected"]} == {d1.messages[d1.policy_turns[h]]["content"],
                                                     d2.messages[d2.policy_turns[0]]["content"]}
        # the rewards are those of the dialogues cut after turn L, and the chosen one is not worse
        assert row["score_chosen"] == len(row["chosen_dialogue"][-1]["content"])
        assert row["score_chosen"] >= row["score_rejected"]


def test_branch_filters_name_their_reason(backend):
    fields = [{"user_turns": ["u1"]}] * 3
    openings = [[{"role": "user", "content": "q"}]] * 3
    first = rollout(backend, DatasetUser(), openings, fields, 2, seed=1, progress=False)
    branches = [(0, 1)] * 3
    same = rollout(backend, DatasetUser(), openings, fields, 2, seed=1, progress=False)  # identical roll-out
    rows = branch_pairs(first, same, branches, Length("chars"))
    assert {r["drop_reason"] for r in rows} == {"identical responses at the branch turn"}

    class Nan:
        def score(self, conversations, fields=None):
            return [float("nan")] * len(conversations)

    other = rollout(backend, DatasetUser(), openings, fields, 2, seed=9, progress=False)
    assert {r["drop_reason"] for r in branch_pairs(first, other, branches, Nan())} == {"invalid reward: reward is nan"}
    long = branch_pairs(first, other, branches, Length("chars"), backend.tokenizer, max_tokens=5)
    assert {r["drop_reason"] for r in long} == {"longer than 5 tokens"}
    assert cut_after(first[0], 7) == first[0].messages  # a horizon beyond the dialogue keeps all of it
    # an empty reply at the branch turn, whose dialogue the reward scores by a later, non-empty turn
    blank = copy.deepcopy(first)
    blank[0].messages[blank[0].policy_turns[0]]["content"] = "  "
    reasons = [r["drop_reason"] for r in branch_pairs(blank, other, branches, Length("chars"))]
    assert reasons[0] == "an empty response at the branch turn" and reasons[1:] == [None, None]


def test_forward_sessions_and_the_multiturn_aware_reward(backend):
    task = TwentyQuestionsTask()
    openings, fields = task.openings("train", 2)
    candidates = [o + [{"role": "assistant", "content": "Is it an animal?"}] for o in openings]
    simulator = ForwardSimulator(backend, TwentyQuestionsOracle(), window=2, done=task.done, reply_to_last=True)
    sessions = simulator.sessions(candidates, fields, num_samples=3, seed=4)
    assert [len(s) for s in sessions] == [3, 3]
    for candidate, group in zip(candidates, sessions):
        for s in group:
            assert s.messages[:len(candidate)] == candidate and s.start == len(candidate) - 1
            assert s.messages[s.start + 1]["content"] in ("Yes.", "No.")  # the oracle answers the candidate
            assert s.num_turns == 2 and len(s.token_ids) == 2  # the window's policy turns only
    # MR = mean over sessions of (metric - min(cost_weight * future tokens, cap)), by hand
    metric = InformationGain()
    mr = MultiturnAware(metric, simulator, num_samples=3, cost_weight=0.01, cost_cap=0.05)
    (evaluation, _) = mr.evaluate(candidates, fields, seed=4)
    expected = []
    for s in evaluation.sessions:
        (value,) = metric.score([s.messages], [s.fields | {"session_start": s.start}])
        expected.append(value - min(0.01 * sum(map(len, s.token_ids)), 0.05))
    assert evaluation.session_scores == pytest.approx(expected)
    assert evaluation.mean == pytest.approx(sum(expected) / 3)
    scores = mr.score(candidates, fields)  # the Reward protocol: one score per candidate
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)


def test_candidate_ranking_rules():
    from rlhf.rewards.multiturn import Evaluation
    e = lambda mean, std=0.0: Evaluation(mean, std, [], [])  # noqa: E731
    assert rank([e(0.2), e(0.5), e(0.1)]) == (1, 2)
    assert rank([e(0.3, std=0.2), e(0.3, std=0.1)]) == (1, 0)  # a tie: the steadier one is chosen
    assert rank([e(0.3), e(Invalid("judge replied with prose"))]) is None
    # an empty candidate is neither chosen nor rejected, however its sessions score
    screened = screen_empty([e(0.9), e(0.2), e(0.5)], [" \n", "Is it red?", "Is it big?"])
    assert isinstance(screened[0].mean, Invalid) and screened[0].mean.reason == "empty candidate"
    assert rank(screened) == (2, 1)
    assert rank(screen_empty([e(0.9), e(0.2)], ["", "Is it red?"])) is None


@pytest.mark.parametrize("scores, keep_ties, minimum_gap, reason", [
    ((0.5, 0.5), False, 0.0, "tied scores"),  # a tie teaches nothing: dropped by default
    ((0.5, 0.5), True, 0.0, None),
    ((0.6, 0.5), False, 0.0, None),
    ((0.52, 0.5), False, 0.05, "reward gap below minimum_gap=0.05"),
])
def test_collabllm_pairs_drop_ties_unless_asked(scores, keep_ties, minimum_gap, reason):
    evaluations = [Evaluation(s, 0.1 * k, [s], []) for k, s in enumerate(scores)]
    row = _pair_row([{"role": "user", "content": "Is it alive?"}], {}, 0, ["Yes?", "No?"], evaluations,
                    rank(evaluations), 0, minimum_gap, keep_ties)
    assert row["drop_reason"] == reason and row["score_chosen"] == max(scores)


def test_a_failed_forward_session_fails_the_candidate_and_a_verdict_is_left_out(backend):
    from rlhf.rewards.base import Invalid, unavailable
    from rlhf.rollout.engine import row_failure

    task = TwentyQuestionsTask()
    openings, fields = task.openings("train", 2)
    candidates = [o + [{"role": "assistant", "content": "Is it an animal?"}] for o in openings]
    simulator = ForwardSimulator(backend, TwentyQuestionsOracle(), window=1, done=task.done, reply_to_last=True)

    class Scripted:  # candidate 0: one session's judge reply unparsable; candidate 1: one session's endpoint down
        def score(self, conversations, fields=None):
            return [Invalid("judge reply has no JSON object"), 1.0, 3.0,
                    2.0, unavailable("HTTP 503 after 3 attempts: busy"), 2.0]

    verdict, failed = MultiturnAware(Scripted(), simulator, num_samples=3, cost_weight=0.0).score(candidates, fields)
    assert verdict == pytest.approx(2.0)  # the mean of the two sessions the judge could score
    assert isinstance(failed, Invalid)
    assert failed.reason == "a forward session failed: reward unavailable: HTTP 503 after 3 attempts: busy"
    assert row_failure({"invalid_reason": failed.reason}) == "reward HTTP 503"


def test_a_collabllm_row_with_an_unscored_candidate_is_a_failure_not_a_pair_of_the_others():
    from rlhf.rewards.base import Invalid, unavailable
    from rlhf.rollout.engine import row_failure

    down = Invalid(f"a forward session failed: {unavailable('timeout after 3 attempts').reason}")
    evaluations = [Evaluation(0.9, 0.1, [0.9], []), Evaluation(down, 0.0, [None], []), Evaluation(0.2, 0.1, [0.2], [])]
    row = _pair_row([{"role": "user", "content": "Is it alive?"}], {}, 0, ["Yes?", "No?", "Red?"], evaluations,
                    rank(evaluations), 0, 0.0)
    assert row["drop_reason"].startswith("a candidate could not be scored: a forward session failed: reward "
                                         "unavailable")
    assert row_failure(row) == "reward timeout"
    verdict = [Evaluation(0.9, 0.1, [0.9], []), Evaluation(Invalid("empty candidate"), 0.0, [None], []),
               Evaluation(0.2, 0.1, [0.2], [])]
    assert _pair_row([], {}, 0, ["Yes?", "", "Red?"], verdict, rank(verdict), 0, 0.0)["drop_reason"] is None
