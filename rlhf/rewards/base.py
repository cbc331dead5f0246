"""The reward seam: a reward scores the last assistant turn of each conversation.

Gold functions, learned reward models and (later) simulated users all sit behind this Protocol, so
rollouts and evaluation do not care which one is configured.
"""

from typing import Protocol


class Reward(Protocol):
    def score(self, conversations: list[list[dict]]) -> list[float]:
        """One score per conversation (a list of {"role", "content"} messages), for its LAST assistant
        message; a reward may read the turns before it as context."""
        ...


def last_response(conversation: list[dict]) -> str:
    """The content of the last assistant message: the response a reward scores."""
    for message in reversed(conversation):
        if message["role"] == "assistant":
            return message["content"]
    raise ValueError(f"conversation has no assistant message to score: {conversation!r}")
