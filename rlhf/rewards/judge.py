"""LLM judges: a rubric prompt, JSON scores read from the reply, combined into a reward or a win.

`PointwiseJudge` scores a conversation on named criteria (CollabLLM's interactivity judge; the 20 Questions
rubric of its Twenty Questions fork, methods.md 5.2-5.3). `PairwiseJudge` compares two responses to the
same prefix, asking twice with the positions swapped (for win rates, e.g. REFUEL's against the base
policy, methods.md 1.5). A judge runs through a `Chat`: an OpenAI-compatible endpoint (`client`, cached) or
a local model (`local`). A reply that cannot be read, after `max_attempts` tries, is `Invalid` with its
reason (never a number).
"""

import math
from functools import partial

from rlhf.chat_api import Chat, ChatClient, UnparsableReply, ask, load_local_chat
from rlhf.rewards.base import Invalid, Score, unavailable
from rlhf.users.prompting import fill, first_json_object, transcript

Scores = dict[str, float]


def judge_chat(client: dict | None, local: dict | None) -> Chat:
    """The judge's transport: a `ChatClient(**client)` or `load_local_chat(**local)`; exactly one is set."""
    if (client is None) == (local is None):
        raise ValueError("set exactly one of reward.client (an OpenAI-compatible endpoint) and reward.local "
                         f"(a local model); got client={client!r}, local={local!r}")
    return ChatClient(**client) if client is not None else load_local_chat(**local)


def split_last_response(conversation: list[dict]) -> tuple[list[dict], str]:
    """(the messages before the last assistant message, its content)."""
    last = max((i for i, m in enumerate(conversation) if m["role"] == "assistant"), default=None)
    if last is None:
        raise ValueError(f"conversation has no assistant message to judge: {conversation!r}")
    return conversation[:last], conversation[last]["content"]


def parse_scores(reply: str, keys: list[str], low: float, high: float) -> Scores:
    """The `keys` of the first JSON object in `reply`, each a number in [low, high]; otherwise raises
    UnparsableReply with the first problem ("judge reply has no JSON object", "judge reply has no
    'accuracy' score", "judge score interactivity=7 outside [0, 1]", ...)."""
    found = first_json_object(reply)
    if found is None:
        raise UnparsableReply("judge reply has no JSON object")
    scores = {}
    for key in keys:
        if key not in found:
            raise UnparsableReply(f"judge reply has no {key!r} score")
        value = found[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UnparsableReply(f"judge score {key}={value!r} is not a number")
        if not (math.isfinite(value) and low <= value <= high):
            raise UnparsableReply(f"judge score {key}={value} outside [{low:g}, {high:g}]")
        scores[key] = float(value)
    return scores


class PointwiseJudge:
    """Scores the last assistant message of each conversation with a rubric.

    template: the judge's prompt (one user message). Placeholders: `{conversation}` (the whole dialogue,
        see `rlhf.users.prompting.transcript`), `{history}` (the messages before the last assistant
        message), `{response}` (that message), and any key of the conversation's fields (e.g. `{object}`).
    keys: the scores the reply's JSON object must hold, each a number in `score_range`.
    weights, bias: the reward is bias + sum_k weights[k] * score_k. Every rescale of methods.md 5.3 is of
        this form: (x - 2.5) * 2 is weight 2 and bias -5; CollabLLM's reward-path x / 3 is weight 1/3; the
        infogain proxy a * IG + accuracy is weights {information_gain: a, accuracy: 1}.
    max_attempts: tries while the reply is unparsable or out of range (each a new sample).
    client / local: exactly one; keyword arguments of `ChatClient` or of `load_local_chat`.
    `rate` gives the per-key scores (for logging); `score` the combined reward.
    """

    def __init__(
        self,
        template: str,
        keys: list[str],
        weights: dict[str, float],
        bias: float = 0.0,
        score_range: tuple[float, float] = (0.0, 1.0),
        max_attempts: int = 3,
        client: dict | None = None,
        local: dict | None = None,
    ) -> None:
        if not keys:
            raise ValueError("reward.keys is empty: name the scores the judge must return")
        unknown = sorted(set(weights) - set(keys))
        if unknown:
            raise ValueError(f"reward.weights names {unknown}, which are not in reward.keys={list(keys)}")
        low, high = score_range
        if not low < high:
            raise ValueError(f"reward.score_range={list(score_range)} must be [low, high] with low < high")
        if max_attempts < 1:
            raise ValueError(f"reward.max_attempts={max_attempts} must be >= 1")
        self.template, self.keys, self.weights, self.bias = template, list(keys), dict(weights), bias
        self.low, self.high = float(low), float(high)
        self.max_attempts = max_attempts
        self.chat = judge_chat(client, local)

    def prompt(self, conversation: list[dict], fields: dict, where: str) -> list[dict]:
        history, response = split_last_response(conversation)
        values = {**fields, "conversation": transcript(conversation), "history": transcript(history),
                  "response": response}
        return [{"role": "user", "content": fill(self.template, values, where)}]

    def rate(
        self, conversations: list[list[dict]], fields: list[dict] | None = None
    ) -> list[Scores | Invalid]:
        """The judge's scores {key: value} of each conversation, or Invalid with the reason."""
        rows = fields if fields is not None else [{} for _ in conversations]
        prompts = [self.prompt(c, f, f"reward.template in conversation {i}")
                   for i, (c, f) in enumerate(zip(conversations, rows, strict=True))]
        parse = partial(parse_scores, keys=self.keys, low=self.low, high=self.high)
        return ask(self.chat, prompts, parse, Invalid, self.max_attempts, unavailable=unavailable)

    def combine(self, scores: Scores) -> float:
        return self.bias + sum(weight * scores[key] for key, weight in self.weights.items())

    def score(self, conversations: list[list[dict]], fields: list[dict] | None = None) -> list[Score]:
        return [r if isinstance(r, Invalid) else self.combine(r) for r in self.rate(conversations, fields)]


WINNERS = {1: 1, 2: 2, "1": 1, "2": 2, "tie": 0}


def parse_winner(reply: str) -> int:
    """The "winner" of the first JSON object in `reply`: 1, 2 (the position) or 0 ("tie")."""
    found = first_json_object(reply)
    if found is None:
        raise UnparsableReply("judge reply has no JSON object")
    if "winner" not in found:
        raise UnparsableReply("judge reply has no 'winner'")
    winner = found["winner"]
    if isinstance(winner, bool) or winner not in WINNERS:
        raise UnparsableReply(f"judge winner={winner!r} is not 1, 2 or 'tie'")
    return WINNERS[winner]


class PairwiseJudge:
    """Which of two responses to the same prefix is better: 1 (the first, A), 0 (B) or 0.5 (tie).

    Each pair is judged twice, A in position 1 and then B in position 1. A or B wins only when both
    verdicts agree; a tie in either, or verdicts that follow the position instead of the response, count
    as a tie. The mean over prefixes is A's win rate (ties half).
    template: the judge's prompt; placeholders `{history}` (the shared prefix, see `transcript`),
        `{response_1}`, `{response_2}` and any key of the fields. The reply must hold a JSON object with
        "winner": 1, 2 or "tie".
    max_attempts, client, local: as for `PointwiseJudge`.
    As a `Reward` (`score`), A is each conversation's last assistant message and B the conversation's
    `reference` field (e.g. the base policy's response to the same prefix).
    """

    def __init__(self, template: str, max_attempts: int = 3, client: dict | None = None,
                 local: dict | None = None) -> None:
        if max_attempts < 1:
            raise ValueError(f"reward.max_attempts={max_attempts} must be >= 1")
        self.template, self.max_attempts = template, max_attempts
        self.chat = judge_chat(client, local)

    def prompt(self, prefix: list[dict], first: str, second: str, fields: dict, where: str) -> list[dict]:
        values = {**fields, "history": transcript(prefix), "response_1": first, "response_2": second}
        return [{"role": "user", "content": fill(self.template, values, where)}]

    def compare(
        self,
        prefixes: list[list[dict]],
        responses_a: list[str],
        responses_b: list[str],
        fields: list[dict] | None = None,
    ) -> list[Score]:
        """1.0 where A wins, 0.0 where B wins, 0.5 for a tie, Invalid where a verdict could not be read."""
        rows = fields if fields is not None else [{} for _ in prefixes]
        cases = list(enumerate(zip(prefixes, responses_a, responses_b, rows, strict=True)))
        prompts = [self.prompt(p, a, b, f, f"reward.template in pair {i}") for i, (p, a, b, f) in cases]
        prompts += [self.prompt(p, b, a, f, f"reward.template in pair {i}") for i, (p, a, b, f) in cases]
        verdicts = ask(self.chat, prompts, parse_winner, Invalid, self.max_attempts,
                       unavailable=unavailable)
        n = len(cases)
        return [outcome(a_first, b_first) for a_first, b_first in zip(verdicts[:n], verdicts[n:])]

    def score(self, conversations: list[list[dict]], fields: list[dict] | None = None) -> list[Score]:
        """`compare` of each conversation's last response (A) with its fields' `reference` (B)."""
        if fields is None or any("reference" not in f for f in fields):
            missing = 0 if fields is None else next(i for i, f in enumerate(fields) if "reference" not in f)
            raise ValueError(f"a pairwise judge compares with the `reference` field, which conversation "
                             f"{missing} lacks (the task must supply the reference response of each prompt)")
        split = [split_last_response(c) for c in conversations]
        references = [f["reference"] for f in fields]
        return self.compare([h for h, _ in split], [r for _, r in split], references, fields)


def outcome(a_first: int | Invalid, b_first: int | Invalid) -> Score:
    """A's result from the verdict with A in position 1 and the one with B in position 1."""
    if isinstance(a_first, Invalid):
        return a_first
    if isinstance(b_first, Invalid):
        return b_first
    if a_first == 1 and b_first == 2:
        return 1.0
    if a_first == 2 and b_first == 1:
        return 0.0
    return 0.5
