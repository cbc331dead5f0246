"""Group labelling of unlabelled response pairs: SharedRep-RLHF's `create_chosen_rejected.py` (Mukherjee et
al. 2025, `marcellobullo/sharedrep-rlhf`) as a task option (`task.groups`).

Each pair (a prompt and two responses) is given a group: 0, the minority, with probability `proportion`, else 1,
drawn with NumPy's generator seeded by `seed` (the train and eval splits draw from two independent streams of
it). Both responses are scored under every group's gold (`GroupGold.group_scores`, one batched call per split),
and the response the row's own group scores higher is `chosen`. Deliberate deviation: a pair its group scores
equally is dropped and counted, where SharedRep makes response_0 the chosen one (a tie carries no preference).
For one seed, group 0 is the rows whose uniform draw falls below `proportion`, so a larger proportion only turns
majority rows into minority rows.

Input rows: a `prompt` with `responses`, exactly two replies (group rows as `rlhf-generate mode=samples
mode.num_samples=2` writes them; their `scores`, if any, are not read), or preference rows, whose `chosen` and
`rejected` are read as two unordered responses (also after conversion from a published `task.format`). The
row's other columns are given to the gold as each conversation's fields. A group row with an empty (or
whitespace-only) reply, which a sampled policy can write, is dropped and counted (its row keeps its draw, so
the other rows' groups do not move); an empty `chosen` or `rejected` is an error, as in any preference data.
Output: preference rows `prompt`, `chosen`, `rejected`, `group_id`, `score_chosen`, `score_rejected` (the
scores under the row's own group).
"""

import logging
from collections import Counter
from collections.abc import Sequence

import datasets
import numpy as np

from rlhf.data.filters import RowFilter, apply_filters
from rlhf.data.loading import load_rows, source_name
from rlhf.data.schema import MAX_REPORTED, DataValidationError, as_messages, row_problems, validate_rows
from rlhf.data.sources import convert_rows
from rlhf.rewards.base import Invalid, Score
from rlhf.rewards.pluralistic import GroupGold

log = logging.getLogger(__name__)
STREAMS = ("train", "eval")  # the seed's independent streams, one per split
PAIR_COLUMNS = {"group": ("responses", "scores", "invalid_reasons"),
                "preference": ("chosen", "rejected", "score_chosen", "score_rejected", "group_id")}

Pair = tuple[list[dict], list, dict]  # prompt messages, the two responses, the row's other columns


class GroupLabelling:
    """Labels pairs with groups and orders them under the group's gold (see the module docstring).

    gold: the groups' gold rewards; group 0 is the minority, group 1 the majority.
    proportion: the probability of group 0, in [0, 1] (`data.proportion`, which the task's config reads).
    seed: the seed of the draws.
    """

    def __init__(self, gold: GroupGold, proportion: float, seed: int) -> None:
        if not isinstance(gold, GroupGold):
            raise TypeError(f"task.groups.gold must score every group (a GroupGold, e.g. reward config "
                            f"gold_synthetic_pluralistic or gold_hh_pluralistic), not a {type(gold).__name__}")
        if isinstance(proportion, bool) or not isinstance(proportion, int | float) or not 0 <= proportion <= 1:
            raise ValueError(f"task.groups.proportion={proportion!r} (set as data.proportion) must be a number in "
                             "[0, 1]: the share of the minority group 0")
        if len(gold.groups) != 2:
            raise ValueError(f"task.groups.gold has {len(gold.groups)} groups; the labelling draws two "
                             "(0: minority, 1: majority)")
        self.gold, self.proportion, self.seed = gold, float(proportion), seed

    def draw(self, n: int, stream: str) -> np.ndarray:
        """(n,) group ids of the rows of `stream` ("train" or "eval"): 0 with probability `proportion`."""
        sequence = np.random.SeedSequence(self.seed).spawn(len(STREAMS))[STREAMS.index(stream)]
        return np.where(np.random.default_rng(sequence).random(n) < self.proportion, 0, 1)

    def label(self, rows: datasets.Dataset, stream: str, source: str) -> tuple[datasets.Dataset, int]:
        """The labelled preference rows of `rows`, and how many ties were dropped."""
        read = read_pairs(rows, source)
        groups = self.draw(len(read), stream)  # a draw per row, an empty-reply row's too
        kept = [i for i, pair in enumerate(read) if pair is not None]
        if len(kept) < len(read):
            log.warning("%s: %d of %d pairs dropped for an empty reply", source, len(read) - len(kept), len(read))
        if not kept:
            raise ValueError(f"{source}: every one of its {len(read)} pairs has an empty reply")
        pairs, groups = [read[i] for i in kept], groups[kept]
        conversations = [prompt + as_messages(reply, "assistant") for prompt, replies, _ in pairs for reply in replies]
        fields = [extra for _, _, extra in pairs for _ in range(2)]
        scores = self.scores(conversations, fields, source)  # (2, 2N): response j of row i at 2i + j
        labelled, problems = [], []
        for i, ((prompt, replies, _), group) in enumerate(zip(pairs, groups.tolist())):
            first, second = scores[group][2 * i], scores[group][2 * i + 1]
            invalid = [(j, s.reason) for j, s in enumerate((first, second)) if isinstance(s, Invalid)]
            if invalid:
                problems.append(f"row {i}: " + "; ".join(f"response {j} under group {group}: {reason}"
                                                        for j, reason in invalid))
            elif first != second:
                best = int(second > first)
                labelled.append({"prompt": prompt, "chosen": replies[best], "rejected": replies[1 - best],
                                 "group_id": group, "score_chosen": max(first, second),
                                 "score_rejected": min(first, second)})
        if problems:
            raise DataValidationError(f"{source} (scored by task.groups.gold)", problems[:MAX_REPORTED], len(problems))
        ties = len(pairs) - len(labelled)
        if not labelled:
            raise ValueError(f"{source}: every one of its {len(pairs)} pairs is a tie under its group's gold")
        return datasets.Dataset.from_list(labelled), ties

    def scores(self, conversations: list[list[dict]], fields: list[dict], source: str) -> list[list[Score]]:
        """(G, 2N) `gold.group_scores`; a scoring error is raised again naming the first row that fails alone."""
        try:
            return self.gold.group_scores(conversations, fields)
        except Exception as error:
            row = next((i // 2 for i in range(0, len(conversations), 2) if self._fails(conversations, fields, i)),
                       None)
            where = f"row {row}" if row is not None else "a batch of rows (no row fails alone)"
            raise ValueError(f"{source}: task.groups.gold failed to score {where}: {error}") from error

    def _fails(self, conversations: list[list[dict]], fields: list[dict], start: int) -> bool:
        try:
            self.gold.group_scores(conversations[start:start + 2], fields[start:start + 2])
        except Exception:  # noqa: BLE001  (any error: looking for the row that raises it)
            return True
        return False


def read_pairs(rows: datasets.Dataset, source: str) -> list[Pair | None]:
    """Each row's prompt (as messages), two responses and other columns, or None for a group row with an empty
    reply; bad rows raise, named."""
    kind = "group" if "responses" in rows.column_names else "preference"
    if kind == "preference" and not {"chosen", "rejected"} <= set(rows.column_names):
        problem = ("task.groups needs columns 'prompt' and 'responses' (two replies), or 'prompt', 'chosen' and "
                   f"'rejected'; found {rows.column_names}")
        raise DataValidationError(source, [problem], 1)
    pairs, problems = [], []
    for index, row in enumerate(rows):
        found = _pair_problems(row, kind)
        if found:
            problems.append(f"row {index}: " + "; ".join(found))
            continue
        replies = row["responses"] if kind == "group" else [row["chosen"], row["rejected"]]
        if not all(reply.strip() for reply in replies):  # a group row's (a preference row's are problems)
            pairs.append(None)
            continue
        extra = {k: v for k, v in row.items() if k != "prompt" and k not in PAIR_COLUMNS[kind]}
        pairs.append((as_messages(row["prompt"], "user"), replies, extra))
    if problems:
        raise DataValidationError(source, problems[:MAX_REPORTED], len(problems))
    return pairs


def _pair_problems(row: dict, kind: str) -> list[str]:
    if kind == "preference":
        return row_problems(row, "preference")
    problems = row_problems(row, "prompt")
    responses = row["responses"]
    if not isinstance(responses, list) or len(responses) != 2:
        size = len(responses) if isinstance(responses, list) else type(responses).__name__
        return problems + [f"column 'responses' must hold exactly 2 replies to label a pair, not {size}"]
    return problems + [f"column 'responses' item {i} is not a string but a {type(r).__name__}"
                       for i, r in enumerate(responses) if not isinstance(r, str)]


def load_labelled(labelling: GroupLabelling, path: str, split: str, limit: int | None, format: str | None,
                  filters: Sequence[RowFilter], task: str, stream: str) -> datasets.Dataset:
    """The pairs of `path` (converted from `format` first, if given), labelled, then filtered by `filters` and
    checked as preference rows; logs the row counts and the realised minority share."""
    rows = load_rows(path, split, limit)
    source = source_name(path, split)
    if format is not None:
        rows = convert_rows(rows, format, "preference", source)
    total = len(rows)
    rows, ties = labelling.label(rows, stream, source)
    if filters:
        rows = apply_filters(rows, filters, task, source)
    validate_rows(rows, "preference", source=source)
    counts = Counter(rows["group_id"])
    log.info("task %r, %s: %d of %d pairs kept (%d ties under their group dropped); group 0 (minority) "
             "%d rows = %.2f%% at proportion %g, group 1 %d rows", task, source, len(rows), total, ties,
             counts[0], 100 * counts[0] / len(rows), labelling.proportion, counts[1])
    for group in (0, 1):
        if not counts[group]:
            log.warning("task %r, %s: no row is labelled group %d, so nothing trains or evaluates its head",
                        task, source, group)
    return rows
