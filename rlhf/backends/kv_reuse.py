"""Keeping each running dialogue's KV cache between its turns (`backend.reuse_cache`, HF backend).

In a multi-turn rollout, the prompt of turn t+1 is the prompt of turn t, the sampled reply, and the user's
answer. Without reuse every turn prefills the whole conversation again. Inside `HFBackend.continuing()`,
each `generate` call keeps, for every row it produced, the ids it has keys and values for (prompt plus
sampled ids) and those keys and values. The next call looks a prompt up by its conversation (the previous
prompt's messages and the reply it was given), and feeds only the ids after the longest common prefix of the
kept ids and the new prompt's ids.

The common prefix is the check that the chat template is append-only for this conversation: a template that
renders earlier turns differently once a later one exists (one that drops a reasoning block, say), or
sampled ids that re-encode differently from the reply's text, give a shorter prefix, so fewer ids are
reused, never wrong ones. `CacheStats` counts how many prompt ids were reused and how many were prefilled,
and the rows whose kept ids were not all a prefix of the new prompt (logged once per session).

Batches: kept rows are left-padded to the longest kept prefix, and each row's new ids are left-padded after
it, so a row's attention mask can have a gap in the middle. Positions come from the mask's running count, as
`generate` computes them, so a row's positions are those of its unpadded ids. Only caches made of plain
`DynamicLayer`s (full attention) under eager or sdpa attention are kept; for any other kind (sliding window,
recurrent state, flash attention's unpadded batches) reuse is off and the log says so.
"""

import json
import logging
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from rlhf.models.kv import plain_layers

log = logging.getLogger(__name__)


def conversation_key(conversation: list[dict], reply: str | None = None) -> str:
    """The key of a prompt (a conversation ending with a user turn) and the reply sampled for it."""
    return json.dumps([[m["role"], m["content"]] for m in conversation] + ([reply] if reply is not None else []))


def continuation_key(conversation: list[dict]) -> str | None:
    """For a prompt `[..., user, assistant reply, user]`: the key its kept row was stored under."""
    if len(conversation) < 3 or conversation[-2]["role"] != "assistant":
        return None
    return conversation_key(conversation[:-2], conversation[-2]["content"])


def common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    return next(i for i in range(n) if a[i] != b[i])


@dataclass
class KeptRow:
    """The ids a row has keys and values for, and those, per layer (keys, values), each (heads, len, dim)."""

    ids: list[int]
    layers: list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class CacheStats:
    """Prompt ids of the session's calls: reused from a kept cache, and prefilled. `diverged`: rows whose kept
    ids were not all a prefix of their new prompt (the template re-rendered an earlier turn, or a reply
    re-encoded differently)."""

    reused: int = 0
    prefilled: int = 0
    diverged: int = 0
    rows: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"reused": self.reused, "prefilled": self.prefilled, "diverged": self.diverged, "rows": self.rows}


@dataclass
class KVStore:
    """The rows kept from the last call of a session, by `conversation_key(prompt, reply text)`."""

    kept: dict[str, KeptRow] = field(default_factory=dict)
    stats: CacheStats = field(default_factory=CacheStats)
    enabled: bool = True
    warned: bool = False

    def lookup(self, conversation: list[dict], ids: list[int]) -> tuple[KeptRow | None, int]:
        """The kept row a prompt continues, and how many of its first ids it shares (at least one id is
        always left to feed)."""
        key = continuation_key(conversation) if self.enabled else None
        row = self.kept.get(key) if key is not None else None
        if row is None:
            return None, 0
        shared = min(common_prefix(row.ids, ids), len(ids) - 1)
        if shared < len(row.ids):
            self.stats.diverged += 1
            if not self.warned:
                self.warned = True
                log.info("a kept dialogue cache is not a prefix of its next prompt (the chat template re-renders an "
                         "earlier turn, or a reply's ids re-encode differently): %d of its %d ids reused, the rest "
                         "prefilled again", shared, len(row.ids))
        return row, shared


def build_cache(rows: list[tuple[KeptRow | None, int]], width: int, like: torch.Tensor | None = None) -> DynamicCache:
    """A cache of `width` positions per row: each row's first `shared` kept positions, right-aligned
    (zeros before them, masked out)."""
    template = next(row for row, shared in rows if row is not None and shared > 0)
    layers = []
    for index, (keys0, values0) in enumerate(template.layers):
        heads, _, dim = keys0.shape
        keys = keys0.new_zeros(len(rows), heads, width, dim)
        values = values0.new_zeros(len(rows), heads, width, dim)
        for i, (row, shared) in enumerate(rows):
            if row is not None and shared > 0:
                keys[i, :, width - shared:] = row.layers[index][0][:, :shared]
                values[i, :, width - shared:] = row.layers[index][1][:, :shared]
        layers.append((keys, values))
    return DynamicCache(layers)


def keep_rows(cache, mask: torch.Tensor, ids: list[list[int]], covered: list[int]) -> list[KeptRow] | None:
    """Per row of a finished `generate` call: the ids it has keys and values for and those.

    mask: (B, T) the attention mask of the call's input; the cache holds T + n positions, n of them sampled
    ids that were fed back. ids: each row's input ids (unpadded) followed by its sampled ids; covered: how
    many of them the cache holds for the row (its input, plus sampled ids up to its end)."""
    layers = plain_layers(cache)
    if layers is None:
        return None
    length = layers[0].keys.shape[2]
    rows = []
    for i in range(mask.shape[0]):
        real = torch.cat([mask[i].nonzero().flatten(), torch.arange(mask.shape[1], length, device=mask.device)])
        index = real[: covered[i]].to(layers[0].keys.device)
        rows.append(KeptRow(ids[i][: len(index)],
                            [(layer.keys[i].index_select(1, index), layer.values[i].index_select(1, index))
                             for layer in layers]))
    return rows
