"""The reward seam: a reward scores the last assistant turn of each conversation.

Gold functions, learned reward models, judges and composite rewards all sit behind this Protocol, so
rollouts and evaluation do not care which one is configured. A conversation that cannot be scored gets an
`Invalid` with its reason instead of a number: it is counted and reported, never silently scored as 0.
"""

import math
from collections import Counter
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Invalid:
    """A conversation the reward could not score, and why (e.g. "empty response", "reward is nan")."""

    reason: str


Score = float | Invalid

UNAVAILABLE = "reward unavailable: "


def unavailable(failure: str) -> Invalid:
    """The score of a conversation whose reward could not be obtained (a judge's endpoint failed after its
    retries): not a verdict on the response. Generation counts it as a failure, as it does a user simulator's
    (`rlhf.rollout.engine.row_failure`): the chunk holding it is generated again, and a run with too many stops."""
    return Invalid(UNAVAILABLE + failure)


class Reward(Protocol):
    def score(self, conversations: list[list[dict]], fields: list[dict] | None = None) -> list[Score]:
        """One score per conversation (a list of {"role", "content"} messages), for its LAST assistant
        message; a reward may read the turns before it as context, and `fields` (one dict per
        conversation, e.g. a dataset row's `group_id` or reference answer) where it needs them."""
        ...


def last_response(conversation: list[dict]) -> str:
    """The content of the last assistant message: the response a reward scores."""
    for message in reversed(conversation):
        if message["role"] == "assistant":
            return message["content"]
    raise ValueError(f"conversation has no assistant message to score: {conversation!r}")


def screen_response(text: str, max_chars: int | None = None) -> Invalid | None:
    """Why a response cannot be scored, or None: empty (or whitespace only), not valid UTF-8 (text decoded
    with `errors="surrogateescape"`, e.g. from raw bytes, keeps undecodable bytes as lone surrogates), or
    longer than `max_chars`. A U+FFFD that a tokenizer decoded in place of invalid bytes is a character
    like any other: the response is scored as the text the policy is shown."""
    if not text.strip():
        return Invalid("empty response")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return Invalid("response is not valid UTF-8")
    if max_chars is not None and len(text) > max_chars:
        return Invalid(f"response longer than {max_chars} characters")
    return None


def score_checked(
    reward: Reward, conversations: list[list[dict]], fields: list[dict] | None = None,
    max_response_chars: int | None = None,
) -> list[Score]:
    """`reward.score` on the conversations whose response passes `screen_response`; the others, and any
    score that is not a finite number, become `Invalid`. What every caller of a reward goes through."""
    screened = [screen_response(last_response(c), max_response_chars) for c in conversations]
    keep = [i for i, problem in enumerate(screened) if problem is None]
    scores: list[Score] = list(screened)  # type: ignore[arg-type]  # the None slots are filled below
    if keep:
        kept_fields = [fields[i] for i in keep] if fields is not None else None
        results = reward.score([conversations[i] for i in keep], kept_fields)
        if len(results) != len(keep):
            raise ValueError(f"{type(reward).__name__}.score returned {len(results)} scores for {len(keep)} conversations")
        for i, result in zip(keep, results):
            if isinstance(result, Invalid):
                scores[i] = result
            elif not math.isfinite(result):
                scores[i] = Invalid(f"reward is {result}")
            else:
                scores[i] = float(result)
    return scores


def valid_scores(scores: list[Score]) -> list[float]:
    return [s for s in scores if not isinstance(s, Invalid)]


def invalid_counts(scores: list[Score]) -> dict[str, int]:
    """How many scores are invalid, by reason."""
    return dict(Counter(s.reason for s in scores if isinstance(s, Invalid)))


def as_columns(scores: list[Score]) -> tuple[list[float | None], list[str | None]]:
    """Scores as two dataset columns: the value (None when invalid) and the reason (None when valid)."""
    return ([None if isinstance(s, Invalid) else s for s in scores],
            [s.reason if isinstance(s, Invalid) else None for s in scores])
