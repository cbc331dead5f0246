"""Dataset schemas and validation: every row is checked before any model is loaded.

Row kinds (column names are the schema):
- conversation: `messages`, a list of `{role, content}`; roles are system (first only), then user and
  assistant alternating, starting with user; at least one assistant turn.
- preference: `prompt` (messages ending with a user turn, or a string = one user turn), `chosen` and
  `rejected` (an assistant reply as a string, or a list of messages starting with the assistant),
  optional numeric `score_chosen` / `score_rejected`, `group_id`, `magnitude`.
- scored: `prompt` as above, `response` (one assistant reply, a string or messages as above) and an optional
  numeric `score`: one reply and its reward, the rows of A-LoL's Reddit, WoW, FaithDial and COMET data.
- prompt: `prompt` as above (extra columns are kept).
- group: `prompt` as above, `responses` (K >= 2 assistant replies as strings) and `scores` (K numbers), as
  `rlhf-generate` writes them; every row of a dataset has the same K.
"""

import math
from collections.abc import Iterable

ROLES = ("system", "user", "assistant")
MAX_REPORTED = 10


class DataValidationError(ValueError):
    """Rows that do not fit a schema; the message lists each problem with its source, row and column."""

    def __init__(self, source: str, problems: list[str], total: int):
        more = f"\n  ... and {total - len(problems)} more" if total > len(problems) else ""
        super().__init__(f"{total} invalid row(s) in {source}:\n  " + "\n  ".join(problems) + more)
        self.problems = problems


def as_messages(value: str | list, role: str) -> list[dict]:
    """A string becomes one message of `role`; a list of messages is returned as plain dicts."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    return [{"role": m["role"], "content": m["content"]} for m in value]


def message_problems(messages, column: str, first_role: str, last_role: str | None) -> list[str]:
    """Problems of one list of messages: shape, roles, empty turns, role order."""
    if not isinstance(messages, list) or not messages:
        return [f"column '{column}' must be a non-empty list of {{role, content}} messages"]
    problems = []
    expected = first_role
    for i, m in enumerate(messages):
        where = f"column '{column}' message {i}"
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            return [f"{where} is not a {{role, content}} mapping"]
        role, content = m["role"], m["content"]
        if role not in ROLES:
            return [f"{where} has unknown role {role!r} (expected one of {', '.join(ROLES)})"]
        if not isinstance(content, str) or not content.strip():
            problems.append(f"{where} ({role}) is an empty turn")
        if role == "system":
            if i != 0 or column not in ("messages", "prompt"):
                problems.append(f"{where}: a system message may only open the conversation")
            continue
        if role != expected:
            problems.append(f"{where}: wrong role order, expected {expected} but found {role}")
            break
        expected = "assistant" if role == "user" else "user"
    if last_role is not None and messages[-1]["role"] != last_role and not problems:
        problems.append(f"column '{column}' must end with a {last_role} turn, not {messages[-1]['role']}")
    return problems


def _reply_problems(value, column: str) -> list[str]:
    if isinstance(value, str):
        return [] if value.strip() else [f"column '{column}' is an empty turn"]
    return message_problems(value, column, first_role="assistant", last_role=None)


def _prompt_problems(value) -> list[str]:
    if isinstance(value, str):
        return [] if value.strip() else ["column 'prompt' is an empty turn"]
    return message_problems(value, "prompt", first_role="user", last_role="user")


def row_problems(row: dict, kind: str) -> list[str]:
    """Problems of one row of schema `kind` ("conversation", "preference", "scored", "prompt" or "group")."""
    required = {"conversation": ("messages",), "preference": ("prompt", "chosen", "rejected"), "prompt": ("prompt",),
                "scored": ("prompt", "response"), "group": ("prompt", "responses", "scores")}
    if kind not in required:
        raise ValueError(f"unknown data schema {kind!r}; expected one of {sorted(required)}")
    missing = [c for c in required[kind] if row.get(c) is None]
    if missing:
        return [f"column '{c}' is missing" for c in missing]
    if kind == "conversation":
        problems = message_problems(row["messages"], "messages", first_role="user", last_role=None)
        if not problems and not any(m["role"] == "assistant" for m in row["messages"]):
            problems.append("column 'messages' has no assistant turn to train on")
        return problems
    problems = _prompt_problems(row["prompt"])
    if kind == "preference":
        problems += _reply_problems(row["chosen"], "chosen") + _reply_problems(row["rejected"], "rejected")
    if kind == "scored":
        problems += _reply_problems(row["response"], "response")
    for column in {"preference": ("score_chosen", "score_rejected", "magnitude"), "scored": ("score",)}.get(kind, ()):
        if row.get(column) is not None and (not isinstance(row[column], (int, float)) or isinstance(row[column], bool)):
            problems.append(f"column '{column}' must be a number, got {type(row[column]).__name__}")
        elif row.get(column) is not None and not math.isfinite(row[column]):
            problems.append(f"column '{column}' must be a finite number, got {row[column]}")
    if kind == "group":
        problems += _group_problems(row["responses"], row["scores"])
    return problems


def _group_problems(responses, scores) -> list[str]:
    if not isinstance(responses, list) or len(responses) < 2:
        return ["column 'responses' must be a list of at least 2 replies"]
    if not isinstance(scores, list) or len(scores) != len(responses):
        return [f"column 'scores' must be a list of {len(responses)} numbers, one per response"]
    problems = [f"column 'responses' item {i} is an empty turn" for i, r in enumerate(responses)
                if not isinstance(r, str) or not r.strip()]
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in scores):
        problems.append("column 'scores' must hold numbers only")
    elif not all(math.isfinite(x) for x in scores):
        problems.append(f"column 'scores' must hold finite numbers, got {scores}")
    return problems


def validate_rows(rows: Iterable[dict], kind: str, source: str) -> None:
    """Raise `DataValidationError` naming every bad row (the first few in full) of `source`."""
    reported, total = [], 0
    for index, row in enumerate(rows):
        problems = row_problems(row, kind)
        if problems:
            total += 1
            if len(reported) < MAX_REPORTED:
                reported.append(f"row {index}: " + "; ".join(problems))
    if total:
        raise DataValidationError(source, reported, total)
