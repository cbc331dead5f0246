"""The task seam for multi-turn generation: what conversations happen and when one ends."""

from typing import Protocol


class DialogueTask(Protocol):
    """A source of dialogue openings plus the rules of the dialogue.

    max_turns: policy turns per dialogue at most.
    reply_to_last: whether the user answers the policy's last allowed turn (a game's last question).
    """

    name: str
    max_turns: int
    reply_to_last: bool

    def openings(self, split: str, limit: int | None = None) -> tuple[list[list[dict]], list[dict]]:
        """The opening messages (ending with a user turn) of each dialogue of `split`, and each one's
        fields (what the user simulator, the done-check and rewards may read)."""
        ...

    def eval_openings(self) -> tuple[list[list[dict]], list[dict]]:
        """The openings (and fields) of the held-out dialogues evaluation rolls out."""
        ...

    def done(self, conversation: list[dict], fields: dict) -> bool:
        """Whether the dialogue is over after its latest user turn."""
        ...

    def dialogue_metrics(self, messages: list[dict], fields: dict) -> dict[str, float]:
        """The task's own per-dialogue metrics (e.g. a game's success and return)."""
        ...
