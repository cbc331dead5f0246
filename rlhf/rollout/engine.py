"""Turn-synchronous multi-turn rollouts: many dialogues advance together, one turn at a time.

At each turn the policy turns of all active dialogues go to the backend in ONE batched call, then the user
turns of all of them go to the user simulator in ONE batched call. A dialogue leaves the batch when it
ends: the user ends it (`UserTurn.end()` or the `[[TERMINATE CHAT]]` marker), the task's done-check says
so, the simulator fails (the dialogue is kept, marked failed with the reason), or it reaches `max_turns`
policy turns.

Sampling is seeded per turn from `seed` (`turn_seed`), so the same openings and seed give the same
dialogues, whatever ran before in the process. A backend with a `continuing()` session (the HF backend) keeps
each dialogue's KV cache from one of its turns to the next for the length of the rollout.
"""

import json
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from rlhf.atomic import RunRefused
from rlhf.backends.base import Backend, Completion
from rlhf.users.base import TERMINATE, UserSimulator, UserTurn

DoneCheck = Callable[[list[dict], dict], bool]  # (conversation so far, the dialogue's fields) -> ended?

ENDS = ("user", "done", "max_turns", "failed")


@dataclass
class Dialogue:
    """One dialogue as it was rolled out.

    messages: the whole conversation, `{role, content}` dicts; the first `start` were given (the opening).
    fields: the task's data for this dialogue (secret object, dataset user turns, ...).
    policy_turns: the index in `messages` of each assistant turn the policy produced, in order.
    token_ids: per policy turn, the ids the policy sampled (eos included when it emitted one): which tokens
        the policy produced. Training re-tokenises `messages` with the chat template (turn masks from
        `rlhf.data.tokenize`); user tokens are never the policy's.
    finish_reasons: per policy turn, "stop" or "length" (cut at the backend's max_new_tokens).
    end: why it ended: "user", "done", "max_turns" or "failed" (None while running).
    failure: the user simulator's reason when `end == "failed"`.
    """

    messages: list[dict]
    fields: dict
    start: int
    policy_turns: list[int] = field(default_factory=list)
    token_ids: list[list[int]] = field(default_factory=list)
    finish_reasons: list[str] = field(default_factory=list)
    end: str | None = None
    failure: str | None = None

    @property
    def num_turns(self) -> int:
        return len(self.policy_turns)

    def add_policy_turn(self, completion: Completion) -> None:
        self.policy_turns.append(len(self.messages))
        self.messages.append({"role": "assistant", "content": completion.text})
        self.token_ids.append(list(completion.token_ids))
        self.finish_reasons.append(completion.finish_reason)

    def until_turn(self, turn: int) -> list[dict]:
        """The conversation up to and including policy turn `turn` (0-based)."""
        return self.messages[: self.policy_turns[turn] + 1]

    def prefix_before(self, turn: int) -> list[dict]:
        """The conversation before policy turn `turn`: it ends with the user message that turn answers."""
        return self.messages[: self.policy_turns[turn]]

    def to_row(self) -> dict:
        """The dialogue as a dataset row (see `rlhf.rollout.dialogues` for the columns)."""
        return {"messages": self.messages, "fields": self.fields, "start": self.start,
                "num_turns": self.num_turns, "token_ids": self.token_ids,
                "finish_reasons": self.finish_reasons, "end": self.end, "failure": self.failure}


def turn_seed(seed: int, turn: int, speaker: int) -> int:
    """The sampling seed of one turn of one rollout call (speaker 0 = policy, 1 = user)."""
    return (seed * 1_000_003 + turn * 2 + speaker) % 2**63


def rollout(
    backend: Backend,
    user: UserSimulator,
    openings: list[list[dict]],
    fields: list[dict],
    max_turns: int | list[int],
    done: DoneCheck | None = None,
    reply_to_last: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> list[Dialogue]:
    """Roll out one dialogue per opening (messages ending with a user turn), in input order.

    max_turns: policy turns per dialogue at most (one number, or one per dialogue).
    reply_to_last: whether the user answers the policy's last allowed turn (a game's last question still
        gets its answer and its done-check); otherwise a dialogue at `max_turns` ends on the policy's turn.
    done: the task's check, run after every user reply.
    """
    limits = [max_turns] * len(openings) if isinstance(max_turns, int) else list(max_turns)
    if len(openings) != len(fields) or len(openings) != len(limits):
        raise ValueError(f"{len(openings)} openings, {len(fields)} field rows and {len(limits)} turn limits")
    if any(limit < 1 for limit in limits):
        raise ValueError(f"max_turns must be >= 1, got {min(limits)}")
    dialogues = [Dialogue([dict(m) for m in opening], dict(f), len(opening)) for opening, f in zip(openings, fields)]
    bar = tqdm(total=len(dialogues), desc="dialogues", unit="dialogue", disable=not progress, leave=False)
    with getattr(backend, "continuing", nullcontext)():
        _turns(backend, user, dialogues, limits, done, reply_to_last, seed, bar)
    bar.close()
    return dialogues


def _turns(backend: Backend, user: UserSimulator, dialogues: list[Dialogue], limits: list[int],
           done: DoneCheck | None, reply_to_last: bool, seed: int, bar) -> None:
    """Advance all dialogues together until each has ended (see `rollout`)."""
    active = list(range(len(dialogues)))
    for turn in range(max(limits, default=0)):
        if not active:
            break
        completions = backend.generate([dialogues[i].messages for i in active], 1, seed=turn_seed(seed, turn, 0))
        for i, (completion,) in zip(active, completions):
            dialogues[i].add_policy_turn(completion)
        if not reply_to_last:
            _end(dialogues, [i for i in active if turn == limits[i] - 1], "max_turns", bar)
            active = [i for i in active if turn < limits[i] - 1]
            if not active:
                return
        replies = user.respond([dialogues[i].messages for i in active], [dialogues[i].fields for i in active],
                               seed=turn_seed(seed, turn, 1))
        if len(replies) != len(active):
            raise ValueError(f"{type(user).__name__}.respond returned {len(replies)} replies for {len(active)} dialogues")
        still = []
        for i, reply in zip(active, replies):
            if add_user_turn(dialogues[i], reply, done, last=turn == limits[i] - 1):
                still.append(i)
            else:
                bar.update(1)
        active = still


def add_user_turn(dialogue: Dialogue, reply: UserTurn, done: DoneCheck | None, last: bool) -> bool:
    """Apply the user's reply to a dialogue: append it, or end the dialogue (failed, ended by the user,
    done, or `last` allowed turn). Returns whether the dialogue goes on."""
    if reply.failure is not None:
        dialogue.end, dialogue.failure = "failed", reply.failure
    elif reply.content is None or TERMINATE in reply.content:
        dialogue.end = "user"
    else:
        dialogue.messages.append({"role": "user", "content": reply.content})
        if done is not None and done(dialogue.messages, dialogue.fields):
            dialogue.end = "done"
        elif last:
            dialogue.end = "max_turns"
        else:
            return True
    return False


def _end(dialogues: list[Dialogue], indices: list[int], reason: str, bar) -> None:
    for i in indices:
        dialogues[i].end = reason
    bar.update(len(indices))


def failure_class(reason: str) -> str:
    """The kind of a failure, without its details: "HTTP 500 after 3 attempts: overloaded" -> "HTTP 500",
    "malformed response after 2 attempts: body is not JSON: b'<html>'" -> "malformed response"."""
    cut = min((i for i in (reason.find(m) for m in (" after ", ":", " '", ' "', " (")) if i > 0), default=len(reason))
    return reason[:cut].strip()[:60] or "unknown"


FAILURE_MARKERS = {"user simulator failed: ": "", "reward unavailable: ": "reward "}


def marked_failure(reason: str | None) -> str | None:
    """The kind of failure a drop or invalid reason names ("... user simulator failed: HTTP 500 after 3
    attempts" -> "HTTP 500", "invalid reward: reward unavailable: timeout ..." -> "reward timeout"), None for
    a reason that is a verdict on the response (empty, tied, too long, unparsable judge reply)."""
    for marker, kind in FAILURE_MARKERS.items():
        if reason and marker in reason:
            return kind + failure_class(reason.split(marker, 1)[1])
    return None


def failure_kinds(reasons: list[str | None]) -> tuple[dict[str, int], str]:
    """How many of `reasons` (invalid or drop reasons, None for none) name a failure, by kind
    (`marked_failure`), and the first such reason in full ("" when none does)."""
    kinds: dict[str, int] = {}
    example = ""
    for reason in reasons:
        if (kind := marked_failure(reason)) is not None:
            kinds[kind] = kinds.get(kind, 0) + 1
            example = example or reason
    return kinds, example


def refuse_failures(failed: int, total: int, max_failed_fraction: float, what: str, limit: str,
                    kinds: dict[str, int], example: str, then: str) -> None:
    """RunRefused when more than `max_failed_fraction` of `total` scores of `what` failed for want of the user
    simulator or the reward endpoint: what is left is whichever scores happened to get through, not a result.
    `limit` names the fraction in the message (its config key)."""
    if failed == 0 or failed <= max_failed_fraction * total:
        return
    raise RunRefused(f"{what}: {failed} of {total} scores failed, more than {limit} (the "
                     f"user simulator or the reward endpoint is down). Failures by kind: {json.dumps(kinds)}; for "
                     f"example: {example!r}. {then}")


def row_failure(row: dict) -> str | None:
    """The kind of the failure behind a written row, None for a row that is a result: a dialogue's user
    simulator `failure`, or a user simulator or reward endpoint (`rlhf.rewards.base.unavailable`) failure
    named by its `drop_reason`, `invalid_reason` or one of its `invalid_reasons`."""
    if row.get("failure") is not None:
        return failure_class(row["failure"])
    reasons = [row.get("drop_reason"), row.get("invalid_reason"), *(row.get("invalid_reasons") or [])]
    return next((kind for kind in map(marked_failure, reasons) if kind is not None), None)


def summary(rows: list[dict]) -> dict[str, float]:
    """Counts by how dialogues (as `Dialogue.to_row` rows) ended, failures by kind (`failure_class`; each row
    keeps its full reason), mean policy turns."""
    out: dict[str, float] = {f"ended/{end}": sum(r["end"] == end for r in rows) for end in ENDS}
    for r in rows:
        if r["failure"] is not None:
            key = f"failures/{failure_class(r['failure'])}"
            out[key] = out.get(key, 0) + 1
    out["turns_mean"] = sum(r["num_turns"] for r in rows) / max(len(rows), 1)
    return out
