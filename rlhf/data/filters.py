"""Row filters of a task (`task.filters`), run on its rows in our schema when the task is built, before any
model is loaded (only `turn_tokens` loads a tokenizer). Each filter drops the rows that fail one condition and
logs how many and why; no row left is an error naming the task and the filters.

`task.filters` maps a filter name to its setting (false or null: off); the filters run in that order, and a
row dropped by one is not seen by the next. They read a row's dialogue: a conversation's `messages`, a
prompt row's `prompt`, a preference row's prompt and chosen reply, a scored row's prompt and response.
- `alternating: true`: the roles strictly alternate user, assistant, user, ... (after an optional system
  message), and a conversation or a preference dialogue ends with the assistant, a prompt with the user.
- `nonempty: true`: no empty turn (and, for preference rows, no empty rejected reply).
- `dedupe: trajectory | user_turns`: the first row of each dialogue without its final assistant reply
  (REFUEL setting one), or of each sequence of user turns (REFUEL setting two), is kept.
- `max_turns: N`: at most N turns (user turns; a turn is a user message and the reply to it).
- `turn_tokens: {user: L, assistant: L}`: no user (or assistant) turn longer than L tokens. L is a number,
  or a mapping from the dialogue's number of turns to the limit (REFUEL's MAX_PROMPT_TOKENS /
  MAX_RESPONSE_TOKENS). Lengths are measured with `task.tokenizer` (see `turn_lengths`).
- `no_colon_ending: true`: (preference and scored rows) no reply ends with ":" (A-LoL's cleaning of PRO's HH
  data, whose replies ending with a colon were cut off).
"""

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import datasets
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from rlhf.data.schema import as_messages
from rlhf.models.tiny import tiny_model_path

log = logging.getLogger(__name__)
Keep = Callable[[list[dict]], list[bool]]  # a batch of rows -> keep each?
BATCH = 256  # rows per call of a filter (turn_tokens tokenizes a batch at once)
DEDUPE_KEYS = {"trajectory": "a dialogue (without its final reply) seen before",
               "user_turns": "user turns seen before"}


@dataclass(frozen=True)
class RowFilter:
    """`start()` gives a fresh predicate (which rows of a batch to keep) for one pass over a dataset."""

    name: str
    reason: str
    start: Callable[[], Keep]


def dialogue(row: dict, schema: str) -> list[dict]:
    """The messages a filter reads (see the module docstring)."""
    if schema == "conversation":
        return row["messages"]
    prompt = as_messages(row["prompt"], "user")
    reply = {"preference": "chosen", "scored": "response"}.get(schema)
    return prompt + as_messages(row[reply], "assistant") if reply else prompt


def user_turns(messages: list[dict]) -> int:
    return sum(m["role"] == "user" for m in messages)


def alternates(messages: list[dict], last_role: str) -> bool:
    turns = messages[1:] if messages and messages[0]["role"] == "system" else messages
    return (bool(turns) and turns[-1]["role"] == last_role
            and all(m["role"] == ("user", "assistant")[i % 2] for i, m in enumerate(turns)))


def turn_lengths(tokenizer: PreTrainedTokenizerBase, dialogues: list[list[dict]]) -> list[list[tuple[str, int]]]:
    """For each dialogue, (role, tokens) of each user and assistant message: the tokens it adds to the
    chat-templated dialogue (all templated prefixes of the batch are tokenized in one call).

    A user turn counts its template header, content and end, plus the generation prompt of the reply (the
    first one also counts what opens the dialogue: BOS, a system message); an assistant turn counts its
    content and end. With Llama-3's template this is REFUEL's measure (a user turn's template without BOS,
    an assistant turn's without its 5 header tokens).
    """
    texts, roles = [], []
    for messages in dialogues:
        roles.append([m["role"] for m in messages if m["role"] != "system"])
        texts += [tokenizer.apply_chat_template(messages[: i + 1], tokenize=False,
                                                add_generation_prompt=m["role"] == "user")
                  for i, m in enumerate(messages) if m["role"] != "system"]
    # tokenized as apply_chat_template(tokenize=True) does: the rendered text, no special tokens added
    ends = iter(len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]) if texts else iter(())
    lengths = []
    for turn_roles in roles:
        before, turns = 0, []
        for role in turn_roles:
            upto = next(ends)
            turns.append((role, upto - before))
            before = upto
        lengths.append(turns)
    return lengths


def load_tokenizer(path: str | None = None, cache_dir: str | None = None,
                   architecture: Mapping | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer of `path` (hub id or local), or else of the tiny model cached in `cache_dir` for
    `architecture` (as `policy=tiny` builds it)."""
    if path is None and (cache_dir is None or architecture is None):
        raise ValueError("task.tokenizer needs a path (hub id or local folder), or the cache_dir and architecture "
                         "of policy=tiny")
    return AutoTokenizer.from_pretrained(path or tiny_model_path(cache_dir, **architecture))


def stateless(name: str, reason: str, keep_row: Callable[[dict], bool]) -> RowFilter:
    """A filter that judges each row on its own."""
    return RowFilter(name, reason, lambda: lambda rows: [keep_row(row) for row in rows])


def _flag(name: str, value) -> None:
    if value is not True:
        raise ValueError(f"task.filters.{name} must be true or false, got {value!r}")


def _alternating(value, schema: str, tokenizer: Mapping | None) -> RowFilter:
    _flag("alternating", value)
    last = "user" if schema == "prompt" else "assistant"
    return stateless("alternating", f"roles not strictly alternating user/assistant, ending with the {last}",
                     lambda row: alternates(dialogue(row, schema), last))


def _nonempty(value, schema: str, tokenizer: Mapping | None) -> RowFilter:
    _flag("nonempty", value)

    def keep(row: dict) -> bool:
        texts = [m["content"] for m in dialogue(row, schema)]
        if schema == "preference":
            texts += [m["content"] for m in as_messages(row["rejected"], "assistant")]
        return all(isinstance(t, str) and t.strip() for t in texts)

    return stateless("nonempty", "an empty turn", keep)


def _dedupe(key, schema: str, tokenizer: Mapping | None) -> RowFilter:
    if not isinstance(key, str) or key not in DEDUPE_KEYS:
        raise ValueError(f"task.filters.dedupe must be one of {', '.join(DEDUPE_KEYS)}, got {key!r}")

    def identity(row: dict) -> tuple:
        messages = dialogue(row, schema)
        if key == "user_turns":
            return tuple(m["content"] for m in messages if m["role"] == "user")
        trajectory = messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages
        return tuple((m["role"], m["content"]) for m in trajectory)

    def start() -> Keep:
        seen = set()

        def first_seen(row: dict) -> bool:
            found = identity(row)
            new = found not in seen
            seen.add(found)
            return new

        return lambda rows: [first_seen(row) for row in rows]

    return RowFilter("dedupe", DEDUPE_KEYS[key], start)


def _max_turns(value, schema: str, tokenizer: Mapping | None) -> RowFilter:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"task.filters.max_turns must be a positive number of turns, got {value!r}")
    return stateless("max_turns", f"more than {value} turns", lambda row: user_turns(dialogue(row, schema)) <= value)


def _limits(limits) -> dict[str, int | dict[int, int]]:
    """`turn_tokens` as plain numbers: a role's limit, or {number of turns: limit}."""
    def number(value) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"task.filters.turn_tokens: a token limit must be a positive integer, got {value!r}")
        return value

    if not isinstance(limits, Mapping) or not limits or set(limits) - {"user", "assistant"}:
        raise ValueError(f"task.filters.turn_tokens must map user and/or assistant to a token limit, got {limits!r}")
    return {role: {int(k): number(v) for k, v in limit.items()} if isinstance(limit, Mapping) else number(limit)
            for role, limit in limits.items()}


def _limit(limits: dict, role: str, turns: int) -> int | None:
    limit = limits.get(role)
    if not isinstance(limit, dict):
        return limit
    if turns not in limit:
        raise ValueError(f"task.filters.turn_tokens.{role} has no limit for dialogues of {turns} turns (it has "
                         f"{sorted(limit)}); put a max_turns filter before it")
    return limit[turns]


def _turn_tokens(limits, schema: str, tokenizer: Mapping | None) -> RowFilter:
    limits = _limits(limits)
    if tokenizer is None:
        raise ValueError("task.filters.turn_tokens measures turns with task.tokenizer, which is not set")
    measure = load_tokenizer(**tokenizer)

    def within(messages: list[dict], lengths: list[tuple[str, int]]) -> bool:
        turns = user_turns(messages)
        bounds = {role: _limit(limits, role, turns) for role in ("user", "assistant")}
        return all(bounds[role] is None or n <= bounds[role] for role, n in lengths)

    def keep(rows: list[dict]) -> list[bool]:
        dialogues = [dialogue(row, schema) for row in rows]
        return [within(d, lengths) for d, lengths in zip(dialogues, turn_lengths(measure, dialogues))]

    return RowFilter("turn_tokens", f"a turn over its token limit {limits}", lambda: keep)


def _no_colon_ending(value, schema: str, tokenizer: Mapping | None) -> RowFilter:
    _flag("no_colon_ending", value)
    if schema not in ("preference", "scored"):
        raise ValueError(f"task.filters.no_colon_ending reads the replies of preference or scored rows, not {schema!r} "
                         "rows")
    columns = ("chosen", "rejected") if schema == "preference" else ("response",)

    def keep(row: dict) -> bool:
        replies = [m["content"] for c in columns for m in as_messages(row[c], "assistant")]
        return not any(r.rstrip().endswith(":") for r in replies)

    return stateless("no_colon_ending", "a reply ending with ':'", keep)


BUILDERS = {"alternating": _alternating, "nonempty": _nonempty, "dedupe": _dedupe, "max_turns": _max_turns,
            "turn_tokens": _turn_tokens, "no_colon_ending": _no_colon_ending}


def build_filters(settings: Mapping | None, schema: str, tokenizer: Mapping | None = None) -> list[RowFilter]:
    """The filters `settings` (`task.filters`) asks for, in order, checked (and the tokenizer loaded) now."""
    if settings and schema not in ("conversation", "prompt", "preference", "scored"):
        raise ValueError(f"task.filters work on conversation, prompt, preference and scored rows, not {schema!r} rows")
    filters = []
    for name, value in (settings or {}).items():
        if name not in BUILDERS:
            raise ValueError(f"task.filters.{name} is not a filter; the filters are {', '.join(BUILDERS)}")
        if value is not None and value is not False:
            filters.append(BUILDERS[name](value, schema, tokenizer))
    return filters


def filter_indices(rows: datasets.Dataset,
                   filters: Sequence[RowFilter]) -> tuple[list[int], dict[str, list[int]]]:
    """The indices of the rows every filter keeps, and of the rows each filter dropped."""
    keeps = [(f.name, f.start()) for f in filters]
    kept, dropped = [], {f.name: [] for f in filters}
    offset = 0
    for columns in rows.iter(batch_size=BATCH):
        batch = [dict(zip(columns, values)) for values in zip(*columns.values())]
        alive = list(range(len(batch)))
        for name, keep in keeps:
            verdicts = keep([batch[i] for i in alive]) if alive else []
            dropped[name] += [offset + i for i, ok in zip(alive, verdicts) if not ok]
            alive = [i for i, ok in zip(alive, verdicts) if ok]
        kept += [offset + i for i in alive]
        offset += len(batch)
    return kept, dropped


def apply_filters(rows: datasets.Dataset, filters: Sequence[RowFilter], task: str,
                  source: str) -> datasets.Dataset:
    """The rows of `source` every filter keeps; logs one line per filter; raises when none is left."""
    kept, dropped = filter_indices(rows, filters)
    reaching = len(rows)
    lines = []
    for f in filters:
        lines.append(f"{f.name} dropped {len(dropped[f.name])} of {reaching} ({f.reason})")
        log.info("task %r, %s: filter %s", task, source, lines[-1])
        reaching -= len(dropped[f.name])
    if not kept:
        raise ValueError(f"task {task!r}: no row of {source} is left after task.filters: " + "; ".join(lines))
    return rows.select(kept)
