"""Rollouts as training data: the conversation the policy took part in, as token ids, with a mask that
selects exactly the ids it sampled.

A dialogue is re-tokenised with the chat template (`rlhf.data.tokenize`), which is how the policy was
prompted at every turn. Each trained policy turn is then checked against the ids the backend sampled for
it (`Dialogue.token_ids`): where the template reproduces them, its tokens are trained on; where it does not
(a non-canonical tokenisation the model sampled, a stop string cut from the text, special tokens dropped
by decoding), the sampled ids are spliced into the sequence in place of the template's and the turn is
counted as a mismatch. Either way the trained tokens are exactly the sampled ones: user, system and
opening tokens, and the end-of-turn token the template adds after a reply cut at the length limit, never
are. After a spliced turn, later turns are trained in a context that holds the sampled ids of the earlier
one, where the policy saw its re-tokenised text; the old log-probs are taken on the same sequence, so
ratios stay consistent.
"""

import math
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from rlhf.backends.base import Backend
from rlhf.backends.completions import prompt_ids
from rlhf.data.batch import collate_pairs
from rlhf.data.examples import Examples, collate_groups
from rlhf.data.tokenize import TokenizedSequence, Tokenization, tokenize_conversation, truncate
from rlhf.rewards.base import Invalid, Reward, Score, invalid_counts, score_checked, valid_scores
from rlhf.rewards.multiturn import MultiturnAware
from rlhf.rollout.branching import cut_after, sample_branch
from rlhf.rollout.dialogues import score_dialogues
from rlhf.rollout.engine import Dialogue, marked_failure, rollout
from rlhf.rollout.forward import ForwardSimulator
from rlhf.users.base import UserSimulator


@dataclass(frozen=True)
class SampledSequence:
    """One training sequence of a rollout.

    sequence: input_ids and turn_ids, where turn_ids is the dialogue's policy turn index (0-based, as in
        `Dialogue.policy_turns`) on every id the policy sampled in a trained turn, and -1 elsewhere.
    mismatched: trained turns whose ids the chat template did not reproduce (their sampled ids were used);
        0 for a single trained turn, which is never re-tokenised.
    ends_with_eos: whether the last trained turn ended on its own (an end-of-turn id or a stop string), not
        cut at the backend's length limit.
    """

    sequence: TokenizedSequence
    mismatched: int
    ends_with_eos: bool


def sampled_sequence(tokenizer: PreTrainedTokenizerBase, dialogue: Dialogue, turns: list[int]) -> SampledSequence:
    """The dialogue up to and including the last of `turns` (its policy turn indices), tokenised, with the
    ids the policy sampled in `turns` marked (see module docstring). A single turn is its prompt ids, exactly
    as the backend prompted the policy with them, then the ids it sampled: nothing is re-tokenised."""
    if not turns:
        raise ValueError("a training sequence needs at least one policy turn")
    if len(set(turns)) == 1:
        (turn,) = set(turns)
        prompt, sampled = prompt_ids(tokenizer, dialogue.prefix_before(turn)), list(dialogue.token_ids[turn])
        return SampledSequence(TokenizedSequence(prompt + sampled, [-1] * len(prompt) + [turn] * len(sampled)), 0,
                               dialogue.finish_reasons[turn] != "length")
    messages = dialogue.until_turn(max(turns))
    base = tokenize_conversation(tokenizer, messages)
    # tokenize_conversation numbers all assistant messages, the opening's included
    ordinal = {index: a for a, index in enumerate(i for i, m in enumerate(messages) if m["role"] == "assistant")}
    ids, marks = list(base.input_ids), [-1] * len(base.input_ids)
    mismatched = 0
    eos = tokenizer.eos_token_id
    for turn in sorted(set(turns), reverse=True):  # from the end, so splicing leaves earlier positions alone
        a = ordinal[dialogue.policy_turns[turn]]
        positions = [i for i, t in enumerate(base.turn_ids) if t == a]
        start, end = positions[0], positions[-1] + 1  # the turn's span: its content and end-of-turn token
        sampled = list(dialogue.token_ids[turn])
        closes = ids[end - 1] == eos
        if closes and not (sampled and sampled[-1] == eos):
            end -= 1  # the template closed a turn the policy did not end: that token is not the policy's
        if ids[start:end] != sampled:
            mismatched += 1
        ids[start:end], marks[start:end] = sampled, [turn] * len(sampled)
    ended = dialogue.finish_reasons[max(turns)] != "length"
    return SampledSequence(TokenizedSequence(ids, marks), mismatched, ended)


def fit_length(sample: SampledSequence, spec: Tokenization, where: str) -> SampledSequence | None:
    """`sample` within `spec.max_length` (`data.truncation`), or None when it is to be dropped (truncation
    "drop", or no sampled token left)."""
    sequence = truncate(sample.sequence, spec, where)
    return None if sequence is None else SampledSequence(sequence, sample.mismatched, sample.ends_with_eos)


# --- one update's rollouts as training units --------------------------------------------------------------

@dataclass(frozen=True)
class Rules:
    """How the task's dialogues run (`rlhf.tasks.base.DialogueTask`): the rollout engine's settings."""

    max_turns: int
    reply_to_last: bool
    done: Callable[[list[dict], dict], bool] | None


@dataclass
class Experience:
    """This process's rollouts of one update as training units (`Examples`: a group of sequences, a pair, or
    one rollout each, with per-unit fields such as rewards), the dialogues they came from, and counts."""

    examples: Examples | None  # None when no unit is left
    dialogues: list[Dialogue]
    stats: dict[str, float]


Chunk = tuple[list[list[dict]], list[dict], int]  # openings, their fields, and the chunk's sampling seed


CREDITS = ("dialogue", "turn")


@dataclass(frozen=True)
class ForwardScoring:
    """Per-turn credit by the multi-turn-aware reward (CollabLLM; `rlhf.rewards.multiturn`): a turn's
    reward is the mean over `num_samples` simulated futures of `window` policy turns of the reward, minus
    min(cost_weight * future tokens, cost_cap)."""

    window: int = 2
    num_samples: int = 3
    cost_weight: float = 5e-4
    cost_cap: float = 1.0


class GroupSampler:
    """K dialogues per opening, as samples with a reward each.

    credit "dialogue": a sample is a whole dialogue, scored as a whole, and every policy turn of it is
    trained on with that reward. "turn": a sample is one policy turn, in the context of the dialogue before
    it, with its own reward: the reward of the dialogue up to that turn (and the user's reply to it), or,
    with `forward`, the multi-turn-aware score of simulated futures after it (`ForwardScoring`).

    As units: "group" batches keep the K samples of a prompt (credit "turn": of a prompt and turn index)
    together, an invalid score (or a dialogue that ended before that turn) as NaN, which GRPO leaves out of
    its group; "rollout" batches take each validly scored sample on its own (PPO)."""

    def __init__(self, samples_per_prompt: int, single: bool, credit: str = "dialogue",
                 forward: ForwardScoring | None = None):
        if samples_per_prompt < 1:
            raise ValueError(f"trainer.samples_per_prompt={samples_per_prompt} must be >= 1")
        if credit not in CREDITS:
            raise ValueError(f"trainer.credit={credit!r} is not one of {CREDITS}")
        if forward is not None and credit != "turn":
            raise ValueError("trainer.forward scores turns: it needs trainer.credit=turn")
        self.k, self.single, self.credit, self.forward = samples_per_prompt, single, credit, forward

    def __call__(self, backend: Backend, user: UserSimulator, reward: Reward, rules: Rules, chunks: list[Chunk],
                 tokenizer: PreTrainedTokenizerBase, spec: Tokenization) -> Experience:
        dialogues = []
        for openings, fields, seed in chunks:
            dialogues += rollout(backend, user, [o for o in openings for _ in range(self.k)],
                                 [f for f in fields for _ in range(self.k)], rules.max_turns, done=rules.done,
                                 reply_to_last=rules.reply_to_last, seed=seed, progress=False)
        if self.credit == "dialogue":
            # (group, slot in the group, dialogue, trained turns); slot k = the k-th dialogue of its prompt
            samples = [(i // self.k, i % self.k, d, list(range(d.num_turns))) for i, d in enumerate(dialogues)]
            scores = score_dialogues(reward, dialogues)
        else:
            samples = [((i // self.k, t), i % self.k, d, [t]) for i, d in enumerate(dialogues)
                       for t in range(d.num_turns)]
            scores = self._turn_scores(backend, user, reward, rules, samples, chunks[0][2])
        return self._units(samples, scores, dialogues, tokenizer, spec)

    def _turn_scores(self, backend, user, reward, rules, samples, seed: int) -> list[Score]:
        if self.forward is None:  # the turn and the user's reply to it: what a game's answer-aware reward reads
            conversations = [d.messages[: d.policy_turns[t] + 2] for _, _, d, (t,) in samples]
        else:
            simulator = ForwardSimulator(backend, user, self.forward.window, rules.done, rules.reply_to_last)
            reward = MultiturnAware(reward, simulator, self.forward.num_samples, self.forward.cost_weight,
                                    self.forward.cost_cap, seed=seed)
            conversations = [d.until_turn(t) for _, _, d, (t,) in samples]
        return score_checked(reward, conversations, [d.fields for _, _, d, _ in samples])

    def _units(self, samples, scores: list[Score], dialogues: list[Dialogue], tokenizer,
               spec: Tokenization) -> Experience:
        stats = Counter()
        groups: dict = {}
        for (group, slot, d, turns), score in zip(samples, scores):
            sample = fit_length(sampled_sequence(tokenizer, d, turns), spec, f"rollout {group} {slot}") \
                if d.num_turns else None
            stats["rollout/too_long"] += sample is None and d.num_turns > 0
            stats["rollout/mismatched_turns"] += sample.mismatched if sample is not None else 0
            value = math.nan if sample is None or isinstance(score, Invalid) else score
            groups.setdefault(group, {})[slot] = (sample, value)
        units, rewards, eos = [], [], []
        for members in groups.values():
            kept = [(sample, value) for sample, value in members.values() if not math.isnan(value)]
            if self.single:
                units += [[sample.sequence] for sample, _ in kept]
                rewards += [[value] for _, value in kept]
                eos += [[sample.ends_with_eos] for sample, _ in kept]
            elif kept:  # a group with no valid sample has nothing to train on
                stand_in = kept[0][0]  # for a slot without a valid sample, whose NaN reward gives no gradient
                slots = [members.get(k, (None, math.nan)) for k in range(self.k)]
                units.append([(sample if sample is not None else stand_in).sequence for sample, _ in slots])
                rewards.append([value for _, value in slots])
                eos.append([sample is not None and sample.ends_with_eos for sample, _ in slots])
        fields = {"rewards": torch.tensor(rewards, dtype=torch.float), "ends_with_eos": torch.tensor(eos)}
        return Experience(_examples(units, fields, tokenizer.pad_token_id, "group"), dialogues,
                          dict(stats) | _score_stats(scores))


class BranchedPairs:
    """REFUEL's branched pairs, online (Gao et al. 2024; `rlhf.rollout.branching`): roll out a dialogue,
    draw the branch turn h (and the horizon L), regenerate from the prefix that ends with user turn h,
    score both dialogues cut after turn L, and pair the two responses at turn h. A single-turn task
    branches at h = 0: two samples per prompt (OPO, Singhal et al. 2024). Pairs with an invalid score are
    dropped; so are ties unless `keep_ties` (the algorithm's `keeps_ties`: a tie is no preference, but a
    regression on the reward gap can use it). Only turn h of each dialogue is trained on.

    The reward scores both dialogues of every pair, unless a `labeller` (D2PO's live discriminator,
    `rlhf.rewards.discriminator`) labels the pairs and asks the reward, its gold, about some of them."""

    def __init__(self, horizon: str, keep_ties: bool, labeller=None):
        if horizon not in ("sampled", "last"):
            raise ValueError(f"trainer.horizon={horizon!r} must be 'sampled' or 'last'")
        self.horizon, self.keep_ties, self.labeller = horizon, keep_ties, labeller

    def __call__(self, backend: Backend, user: UserSimulator, reward: Reward, rules: Rules, chunks: list[Chunk],
                 tokenizer: PreTrainedTokenizerBase, spec: Tokenization) -> Experience:
        first, second, branches = [], [], []
        for openings, fields, seed in chunks:
            ones = rollout(backend, user, openings, fields, rules.max_turns, done=rules.done,
                           reply_to_last=rules.reply_to_last, seed=2 * seed, progress=False)
            ones = [d for d in ones if d.num_turns > 0]
            rng = random.Random(seed)
            drawn = [sample_branch(rng, d.num_turns, self.horizon) for d in ones]
            twos = rollout(backend, user, [d.prefix_before(h) for d, (h, _) in zip(ones, drawn)],
                           [d.fields for d in ones], [L - h + 1 for h, L in drawn], done=rules.done,
                           reply_to_last=rules.reply_to_last, seed=2 * seed + 1, progress=False)
            first, second, branches = first + ones, second + twos, branches + drawn
        cut_first = [cut_after(d, L) for d, (_, L) in zip(first, branches)]
        cut_second = [cut_after(d, L - h) for d, (h, L) in zip(second, branches)]
        if self.labeller is None:
            scores = score_dialogues(reward, first + second, cut_first + cut_second)
            stats = Counter({"pairs/reward_labels": len(first)})
        else:
            scores_a, scores_b, labelled = self.labeller.label(cut_first, cut_second, [d.fields for d in first], reward)
            scores = [Invalid(f"user simulator failed: {d.failure}") if d.end == "failed" else score
                      for d, score in zip(first + second, scores_a + scores_b)]
            stats = Counter(labelled)
        units, values = [], {name: [] for name in PAIR_FIELDS}
        for i, ((h, _), a, b) in enumerate(zip(branches, first, second)):
            ra, rb = scores[i], scores[len(first) + i]
            if isinstance(ra, Invalid) or isinstance(rb, Invalid):
                stats["pairs/invalid"] += 1
                continue
            if ra == rb and not self.keep_ties:
                stats["pairs/ties"] += 1
                continue
            sa = fit_length(sampled_sequence(tokenizer, a, [h]), spec, f"pair {i} (roll-out 1)")
            sb = fit_length(sampled_sequence(tokenizer, b, [0]), spec, f"pair {i} (roll-out 2)")
            if sa is None or sb is None:
                stats["rollout/too_long"] += 1
                continue
            stats["rollout/mismatched_turns"] += sa.mismatched + sb.mismatched
            (chosen, rc), (rejected, rr) = ((sa, ra), (sb, rb)) if ra > rb else ((sb, rb), (sa, ra))
            units.append((chosen.sequence, rejected.sequence))
            for name, value in zip(PAIR_FIELDS, (rc, rr, chosen.ends_with_eos, rejected.ends_with_eos, h)):
                values[name].append(value)
        stats["pairs/kept"] = len(units)
        fields = {name: torch.tensor(v, dtype=PAIR_DTYPES.get(name, torch.float)) for name, v in values.items()}
        return Experience(_examples(units, fields, tokenizer.pad_token_id, "pair"), first + second,
                          stats | _score_stats(scores))


PAIR_FIELDS = ("chosen_scores", "rejected_scores", "chosen_ends_with_eos", "rejected_ends_with_eos", "branch_turns")
PAIR_DTYPES = {"chosen_ends_with_eos": torch.bool, "rejected_ends_with_eos": torch.bool, "branch_turns": torch.long}


def _examples(units: list, fields: dict[str, Tensor], pad_id: int, kind: str) -> Examples | None:
    if not units:
        return None
    collate = collate_groups if kind == "group" else collate_pairs
    return Examples(units, list(range(len(units))), fields, 0, lambda items, p: collate(items, p, pad_id))


def _score_stats(scores: list[Score]) -> dict[str, float]:
    valid = valid_scores(scores)
    failed = sum(marked_failure(s.reason) is not None for s in scores if isinstance(s, Invalid))
    out = {"rollout/reward_mean": sum(valid) / len(valid) if valid else math.nan,
           "rollout/invalid": len(scores) - len(valid), "rollout/scored": len(scores), "rollout/failed": failed}
    return out | {f"rollout/invalid/{reason}": n for reason, n in invalid_counts(scores).items()}
