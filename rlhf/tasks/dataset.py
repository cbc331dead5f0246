"""A task whose conversations come from datasets: offline training rows and held-out prompts."""

from collections.abc import Mapping

from rlhf.data.filters import build_filters
from rlhf.data.loading import load_validated
from rlhf.data.schema import as_messages
from rlhf.data.sources import check_format
from rlhf.tasks.group_labelling import GroupLabelling, load_labelled


class DatasetTask:
    """Training and evaluation rows from a hub dataset name or a local path, checked against `schema`.

    schema: "preference" (prompt, chosen, rejected), "conversation" (messages), "scored" (prompt, response,
        score) or "prompt" (prompt only);
        see `rlhf.data.schema`. Rows are loaded and validated when the task is built, before any model.
    num_eval_prompts: how many held-out prompts reward evaluation generates for (the first ones).
    max_turns: policy turns per generated dialogue (`rlhf-generate`); with `user=dataset`, a dialogue also
        ends when the data has no further user turn.
    format: the published format of the rows (`rlhf.data.sources`: e.g. hh_transcript, ultrainteract_pair),
        converted to `schema` before validation; None when they already are in our schema.
    filters: {filter name: setting} (`rlhf.data.filters`: alternating, nonempty, dedupe, max_turns,
        turn_tokens, no_colon_ending), applied in order to both splits after conversion, each logging what
        it dropped; no row left is an error.
    tokenizer: what measures turn lengths for `filters.turn_tokens`: `{path}` (hub id or local), or the
        `{cache_dir, architecture}` of policy=tiny (see `rlhf.data.filters.load_tokenizer`).
    groups: a `GroupLabelling` (`rlhf.tasks.group_labelling`): the rows are unlabelled response pairs, each
        given a group (0, the minority, with probability `groups.proportion`) and ordered into chosen and
        rejected under that group's gold when the task is built; needs schema "preference". The filters run
        on the labelled rows.
    fields: columns of prompt rows given to the user simulator, the done-check and the rewards as each
        dialogue's fields (e.g. GSM8K's reference `answer`, which `reward=gsm8k_correct` reads), and kept in
        `rlhf-generate mode=samples` rows; each must be a column of both splits.
    """

    reply_to_last = False

    def __init__(
        self,
        name: str,
        schema: str,
        train_path: str | None = None,
        eval_path: str | None = None,
        train_split: str = "train",
        eval_split: str = "test",
        train_limit: int | None = None,
        eval_limit: int | None = None,
        num_eval_prompts: int = 64,
        max_turns: int = 1,
        format: str | None = None,
        filters: Mapping | None = None,
        tokenizer: Mapping | None = None,
        groups: GroupLabelling | None = None,
        fields: list[str] | None = None,
    ):
        if train_path is None and eval_path is None:
            raise ValueError(f"task {name!r} needs task.train_path or task.eval_path")
        if groups is not None and schema != "preference":
            raise ValueError(f"task {name!r}: task.groups labels pairs into preference rows, so task.schema must "
                             f"be 'preference', not {schema!r}")
        self.name, self.schema, self.num_eval_prompts, self.max_turns = name, schema, num_eval_prompts, max_turns
        self.fields = tuple(fields or ())
        if self.fields and schema != "prompt":
            raise ValueError(f"task {name!r}: task.fields names columns of prompt rows; schema is {schema!r}")
        check_format(format, schema)
        row_filters = build_filters(filters, schema, tokenizer)

        def load(path: str | None, split: str, limit: int | None, stream: str):
            if not path:
                return None
            if groups is not None:
                return load_labelled(groups, path, split, limit, format, row_filters, name, stream)
            return load_validated(path, schema, split, limit, format, row_filters, name)

        self.train = load(train_path, train_split, train_limit, "train")
        self.eval = load(eval_path, eval_split, eval_limit, "eval")
        for split, rows in (("train", self.train), ("eval", self.eval)):
            missing = [c for c in self.fields if rows is not None and c not in rows.column_names]
            if missing:
                raise ValueError(f"task {name!r}: task.fields names {missing[0]!r}, which the {split} rows do not "
                                 f"have (their columns: {rows.column_names})")

    def prompts(self, split: str, limit: int | None = None) -> list[list[dict]]:
        """The prompts of a split ("train" or "eval"): the conversation up to its first assistant turn."""
        rows = self.train if split == "train" else self.eval
        if rows is None:
            raise ValueError(f"task {self.name!r} has no {split} data (set task.{split}_path)")
        rows = rows.select(range(min(limit, len(rows)))) if limit is not None else rows
        if self.schema == "conversation":
            return [_until_first_reply(row["messages"]) for row in rows]
        return [as_messages(row["prompt"], "user") for row in rows]

    def eval_prompts(self) -> list[list[dict]]:
        return self.prompts("eval", self.num_eval_prompts)

    def openings(self, split: str, limit: int | None = None) -> tuple[list[list[dict]], list[dict]]:
        """Dialogue openings (see `DialogueTask`). Conversation rows also give `user_turns`: their user
        messages after the first assistant turn, which `user=dataset` replays; prompt rows give the columns
        `task.fields` names."""
        prompts = self.prompts(split, limit)
        rows = self.train if split == "train" else self.eval
        if self.schema != "conversation":
            kept = rows.select(range(len(prompts))).select_columns(list(self.fields)) if self.fields else None
            return prompts, kept.to_list() if kept is not None else [{} for _ in prompts]
        fields = [{"user_turns": [m["content"] for m in row["messages"][len(opening):] if m["role"] == "user"]}
                  for opening, row in zip(prompts, rows)]
        return prompts, fields

    def eval_openings(self) -> tuple[list[list[dict]], list[dict]]:
        """The openings of the first `num_eval_prompts` eval rows (the prompts `eval_prompts` gives)."""
        return self.openings("eval", self.num_eval_prompts)

    def done(self, conversation: list[dict], fields: dict) -> bool:
        return False

    def dialogue_metrics(self, messages: list[dict], fields: dict) -> dict[str, float]:
        return {}


def _until_first_reply(messages: list[dict]) -> list[dict]:
    first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return [{"role": m["role"], "content": m["content"]} for m in messages[:first]]
