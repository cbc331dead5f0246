"""Prompt templates for LLM simulators and judges, and reading their replies.

A template is plain text in which `{name}` (an identifier in braces) is a placeholder; any other brace is
literal, so a template can show the JSON it wants back. Simulated users see the dialogue as a transcript
inside one user message, so the model writing the next turn speaks for the user while being, in its own
chat, the assistant (REFUEL's simulated user, methods.md 1.3).
"""

import json
import re
from dataclasses import dataclass

from rlhf.chat_api import Chat, UnparsableReply, ask
from rlhf.users.base import TERMINATE, UserTurn

PLACEHOLDER = re.compile(r"\{([A-Za-z_]\w*)\}")
REPLY_FORMATS = ("question", "json", "yes_no")
YES_NO = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)


def placeholders(template: str) -> list[str]:
    """The placeholder names of `template`, in order of first use."""
    return list(dict.fromkeys(PLACEHOLDER.findall(template)))


def fill(template: str, values: dict, where: str) -> str:
    """`template` with each placeholder replaced by `str(values[name])`; a name with no value is a
    ValueError naming it, `where` it was needed (e.g. "conversation 3") and the names available."""
    missing = [name for name in placeholders(template) if name not in values]
    if missing:
        raise ValueError(f"template placeholder {{{missing[0]}}} has no value for {where}: "
                         f"available are {sorted(values)}")
    return PLACEHOLDER.sub(lambda match: str(values[match.group(1)]), template)


def transcript(messages: list[dict]) -> str:
    """The dialogue as text, one "### role: content" block per message, blank lines between; system
    messages (the policy's instructions) are left out."""
    return "\n\n".join(f"### {m['role']}: {m['content']}" for m in messages if m["role"] != "system")


def first_json_object(text: str) -> dict | None:
    """The first JSON object in `text`, wherever it starts: around it there may be prose, a code fence
    (```json ... ```) or more text. None when there is none."""
    decoder = json.JSONDecoder()
    for start in (i for i, char in enumerate(text) if char == "{"):
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def parse_user_reply(reply: str, reply_format: str) -> UserTurn:
    """The user's next message from a simulator's reply; raises UnparsableReply with the reason.

    "question" (REFUEL, methods.md 1.3): the text after the last "Question:" (the justification before it is
        dropped), or, as REFUEL does, the whole reply when it has no "Question:"; an empty one is unparsable.
    "json" (CollabLLM): the "response" string of the first JSON object.
    "yes_no" (a Twenty Questions oracle): the "response" of the first JSON object, or the whole reply when it
        has none, normalised to "Yes." or "No." from its first word; any other answer is unparsable.
    A message containing TERMINATE (or a reply with no message that contains it) ends the dialogue.
    """
    try:
        message = _user_message(reply, reply_format)
    except UnparsableReply:
        if TERMINATE in reply:
            return UserTurn.end()
        raise
    return UserTurn.end() if TERMINATE in message else UserTurn(message)


def _user_message(reply: str, reply_format: str) -> str:
    if reply_format == "question":
        _, marker, question = reply.rpartition("Question:")
        question = question.strip()
        if not question:
            raise UnparsableReply("user simulator reply has an empty question" if marker else
                                  "user simulator reply is empty")
        return question
    found = first_json_object(reply)
    if reply_format == "yes_no":
        return _yes_no(found.get("response") if found is not None else reply)
    if found is None:
        raise UnparsableReply("user simulator reply has no JSON object")
    message = found.get("response")
    if not isinstance(message, str) or not message.strip():
        raise UnparsableReply("user simulator reply has no non-empty 'response' string")
    return message.strip()


def _yes_no(answer) -> str:
    match = YES_NO.match(answer) if isinstance(answer, str) else None
    if match is None:
        raise UnparsableReply(f"the oracle's answer {str(answer)[:80]!r} is not yes or no")
    return "Yes." if match.group(1).lower() == "yes" else "No."


@dataclass(frozen=True)
class UserPrompting:
    """How a simulated user is asked and read (shared by `LLMUser` and `APIUser`).

    template: the simulator's prompt; placeholders are `{conversation}` (the dialogue so far, see
        `transcript`) and any key of the dialogue's fields (e.g. `{object}` in Twenty Questions).
    reply_format: "question", "json" or "yes_no" (see `parse_user_reply`).
    max_attempts: tries per turn while the reply is unparsable; then the turn fails with the reason.
    """

    template: str
    reply_format: str = "question"
    max_attempts: int = 3

    def __post_init__(self) -> None:
        if self.reply_format not in REPLY_FORMATS:
            raise ValueError(f"user.reply_format={self.reply_format!r} is not one of {list(REPLY_FORMATS)}")
        if self.max_attempts < 1:
            raise ValueError(f"user.max_attempts={self.max_attempts} must be >= 1")

    def prompt(self, conversation: list[dict], fields: dict, where: str) -> list[dict]:
        """The simulator's input: one user message, the template filled for this dialogue."""
        values = {**fields, "conversation": transcript(conversation)}
        return [{"role": "user", "content": fill(self.template, values, where)}]

    def respond(self, chat: Chat, conversations: list[list[dict]], fields: list[dict],
                seed: int | None = None) -> list[UserTurn]:
        """One `UserTurn` per dialogue, all asked in one batch per attempt; a dialogue whose reply cannot
        be had or parsed gets `UserTurn.failed(reason)` and the others their replies."""
        if len(fields) != len(conversations):
            raise ValueError(f"{len(conversations)} conversations but {len(fields)} field rows")
        prompts = [self.prompt(c, f, f"user.template in conversation {i}")
                   for i, (c, f) in enumerate(zip(conversations, fields))]
        return ask(chat, prompts, lambda reply: parse_user_reply(reply, self.reply_format), UserTurn.failed,
                   self.max_attempts, seed)
