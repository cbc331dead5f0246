"""Published dataset formats, converted to our row schemas (`rlhf.data.schema`) before validation.

`task.format` names the format of a source (null: its rows already are in our schema). A format reads one
raw row into `Dialogues`: the chosen dialogue (the whole conversation, ending with the chosen assistant
reply), the rejected one, and their scores when the source has them. The task's schema takes from it:
- conversation: `messages`, the chosen dialogue;
- prompt: `prompt`, the chosen dialogue without its final assistant reply;
- preference: `prompt` as above, `chosen` and `rejected`, the final assistant reply of each dialogue (both
  must end with one), and `score_chosen` / `score_rejected` when the source scores the replies;
- scored: `prompt` as above, `response` (the chosen dialogue's final reply) and `score` (its score).

Formats (the columns read; other columns are dropped):
- `hh_transcript`, Anthropic/hh-rlhf: `chosen`, `rejected`, transcripts "\\n\\nHuman: ...\\n\\nAssistant: ...".
- `hh_trl_style`, trl-internal-testing/hh-rlhf-trl-style: `chosen`, `rejected`, whole dialogues as
  `{role, content}` lists (its `prompt` column, the first user turn, is not needed).
- `ultrafeedback`, HuggingFaceH4/ultrafeedback_binarized: `chosen`, `rejected` (the user prompt and a reply
  as `{role, content}` lists), `score_chosen`, `score_rejected` (GPT-4 ratings).
- `ultrainteract_pair`, openbmb/UltraInteract_pair: `trajectory` (`{from, value}` turns from "user" and
  "assistant", ending with the user), `chosen` and `rejected` (the final assistant answers).
- `pro_hh`, PRO's HH json as A-LoL uses it (`hh_train_len2/train.json`, `hh_dev/sampled_dev.json`): `prefix`
  (turn strings marked "<|prompter|>" / "<|assistant|>" ending with an empty "<|assistant|>", the reply's slot;
  or one such list per suffix, of which the first is read), `suffix` ([good, bad, ...]) and `reward` (the
  OpenAssistant reward model's logits, one per suffix). The first two suffixes are chosen and rejected; their
  scores are sigmoid(reward), the scale of A-LoL's HH reward (`reward=oasst_pythia`).
- `alol_rewarded`, the rewarded jsonl files A-LoL's preprocessing writes for Reddit (`pos_train.jsonl`,
  `neg_train.jsonl`, `val.jsonl`, `test.jsonl`), WoW, FaithDial and FaithDial+WoW (`train.jsonl`,
  `val.jsonl`, `test.jsonl`) and COMET: `prompt_or_input_text` (the context's segments, each ending with
  "<|endoftext|>", DialoGPT's separator), `references` (the reply, ending with "<|endoftext|>") and
  `reward_components` (the reward's components and their sum, `final_reward`, the row's score). One reply per
  row, so it gives scored, conversation and prompt rows, not preference ones. The segments become turns that
  alternate and end with the user; a first segment "Knowledge: ..." (WoW, FaithDial) becomes a system message,
  and when the remaining history opens with the assistant, that opening turn is added to the system message
  as "Assistant: ..." (a dialogue must start with the user). The trailing "<|endoftext|>"s are removed.
- `gsm8k`, openai/gsm8k (config "main"): `question` in SharedRep's few-shot prompt (`GSM8K_FEW_SHOT`, then
  "Q: {question}. Think step by step and provide the final answer prefixed by ####.\nA: "), and `answer` (the
  worked solution ending "#### N"), kept as a column of the prompt row: the task passes it to the rewards as
  the field `answer` (`reward=gsm8k_correct` reads it). Prompt rows only.
"""

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import datasets


class SourceFormatError(ValueError):
    """A raw row that does not fit its declared format; the message names the source, row and column."""


class FormatProblem(ValueError):
    """What is wrong with one column of one raw row (`convert_rows` adds the source and row)."""

    def __init__(self, column: str, problem: str):
        super().__init__(problem)
        self.column = column


@dataclass
class Dialogues:
    """One raw row, read: `chosen` and `rejected` are whole dialogues (lists of `{role, content}`);
    `rejected` is None for a format of one reply per row."""

    chosen: list[dict]
    rejected: list[dict] | None
    score_chosen: float | None = None
    score_rejected: float | None = None
    columns: dict = field(default_factory=dict)  # kept as they are in the row (e.g. a reference answer)


TRANSCRIPT_TURN = re.compile(r"(?:\A|\n\n)(Human|Assistant):")
TRANSCRIPT_ROLES = {"Human": "user", "Assistant": "assistant"}
PRO_MARKERS = {"<|prompter|>": "user", "<|assistant|>": "assistant"}


def parse_transcript(text, column: str) -> list[dict]:
    """An HH transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") as messages, contents stripped."""
    if not isinstance(text, str):
        raise FormatProblem(column, f"expected a transcript string, got {type(text).__name__}")
    parts = TRANSCRIPT_TURN.split(text)
    if len(parts) < 3 or parts[0].strip():
        raise FormatProblem(column, 'expected a transcript of "\\n\\nHuman: ..." / "\\n\\nAssistant: ..." turns')
    return [{"role": TRANSCRIPT_ROLES[who], "content": said.strip()} for who, said in zip(parts[1::2], parts[2::2])]


def message_list(value, column: str) -> list[dict]:
    """A list of `{role, content}` mappings as plain dicts (other keys dropped)."""
    if not isinstance(value, list) or not value:
        raise FormatProblem(column, "expected a non-empty list of {role, content} messages")
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise FormatProblem(column, f"message {i} is not a {{role, content}} mapping of strings")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def number(value, column: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FormatProblem(column, f"expected a finite number, got {value!r}")
    return float(value)


def text(value, column: str) -> str:
    if not isinstance(value, str):
        raise FormatProblem(column, f"expected a string, got {type(value).__name__}")
    return value


def read_hh_transcript(row: dict) -> Dialogues:
    return Dialogues(parse_transcript(row["chosen"], "chosen"), parse_transcript(row["rejected"], "rejected"))


def read_message_lists(row: dict) -> Dialogues:
    return Dialogues(message_list(row["chosen"], "chosen"), message_list(row["rejected"], "rejected"))


def read_ultrafeedback(row: dict) -> Dialogues:
    return Dialogues(message_list(row["chosen"], "chosen"), message_list(row["rejected"], "rejected"),
                     number(row["score_chosen"], "score_chosen"), number(row["score_rejected"], "score_rejected"))


def read_ultrainteract_pair(row: dict) -> Dialogues:
    trajectory = row["trajectory"]
    if not isinstance(trajectory, list) or not trajectory:
        raise FormatProblem("trajectory", "expected a non-empty list of {from, value} turns")
    turns = []
    for i, turn in enumerate(trajectory):
        if not isinstance(turn, dict) or turn.get("from") not in ("user", "assistant"):
            raise FormatProblem("trajectory", f"turn {i} is not a {{from, value}} turn from 'user' or 'assistant'")
        turns.append({"role": turn["from"], "content": text(turn.get("value"), "trajectory")})
    return Dialogues(turns + [{"role": "assistant", "content": text(row["chosen"], "chosen")}],
                     turns + [{"role": "assistant", "content": text(row["rejected"], "rejected")}])


def read_pro_hh(row: dict) -> Dialogues:
    prefix = row["prefix"]
    turns = prefix[0] if isinstance(prefix, list) and prefix and isinstance(prefix[0], list) else prefix
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) for t in turns):
        raise FormatProblem("prefix", "expected a list of turn strings (or one such list per suffix)")
    messages = []
    for i, turn in enumerate(turns):
        marker = next((m for m in PRO_MARKERS if turn.startswith(m)), None)
        if marker is None:
            raise FormatProblem("prefix", f"turn {i} starts with neither <|prompter|> nor <|assistant|>")
        messages.append({"role": PRO_MARKERS[marker], "content": turn[len(marker):].strip()})
    if messages[-1] != {"role": "assistant", "content": ""}:
        raise FormatProblem("prefix", "must end with an empty <|assistant|> turn, the slot of the reply")
    suffix, reward = row["suffix"], row["reward"]
    if not isinstance(suffix, list) or len(suffix) < 2:
        raise FormatProblem("suffix", "expected a list of at least 2 replies (good first)")
    if not isinstance(reward, list) or len(reward) != len(suffix):
        raise FormatProblem("reward", f"expected a list of {len(suffix)} numbers, one per suffix")
    good, bad = (messages[:-1] + [{"role": "assistant", "content": text(s, "suffix")}] for s in suffix[:2])
    return Dialogues(good, bad, sigmoid(number(reward[0], "reward")), sigmoid(number(reward[1], "reward")))


ALOL_SEPARATOR = "<|endoftext|>"


def read_alol_rewarded(row: dict) -> Dialogues:
    context = text(row["prompt_or_input_text"], "prompt_or_input_text")
    segments = [s.strip() for s in context.split(ALOL_SEPARATOR)]
    while segments and not segments[-1]:
        segments.pop()
    if not segments:
        raise FormatProblem("prompt_or_input_text", "is empty")
    system = segments.pop(0) if segments[0].startswith("Knowledge:") else None
    if not segments:
        raise FormatProblem("prompt_or_input_text", "has knowledge but no dialogue history")
    if len(segments) % 2 == 0:  # the history opens with the assistant
        opening = f"Assistant: {segments.pop(0)}"
        system = f"{system}\n\n{opening}" if system else opening
    turns = [{"role": "user" if (len(segments) - 1 - i) % 2 == 0 else "assistant", "content": s}
             for i, s in enumerate(segments)]
    reply = text(row["references"], "references").removesuffix(ALOL_SEPARATOR).strip()
    components = row["reward_components"]
    if not isinstance(components, dict) or "final_reward" not in components:
        raise FormatProblem("reward_components", "expected a mapping with the components' sum, 'final_reward'")
    head = [{"role": "system", "content": system}] if system else []
    return Dialogues(head + turns + [{"role": "assistant", "content": reply}], None,
                     number(components["final_reward"], "reward_components"))


# SharedRep's GSM8K prompt (`src/helper/gsm8k_utils.py`), its indentation as published
GSM8K_FEW_SHOT = """These are examples of how to solve math problems step by step:

    Q: If there are 3 apples and you eat one, how many are left?
    A: Let's think step by step. There are 3 apples. You eat one. So 3 - 1 = 2.
    #### The final answer is 2.

    Q: Tom had 4 pencils. He gave 1 to Sarah and bought 3 more. How many does he have now?
    A: Let's think step by step. He had 4 and gave away 1, so 4 - 1 = 3. Then he bought 3, so 3 + 3 = 6.
    #### The final answer is 6.

    The following is the only question you need to answer:
    """


def read_gsm8k(row: dict) -> Dialogues:
    question = text(row["question"], "question")
    answer = text(row["answer"], "answer")
    if "####" not in answer:
        raise FormatProblem("answer", "has no final answer after '####'")
    prompt = GSM8K_FEW_SHOT + f"\nQ: {question}. Think step by step and provide the final answer prefixed by ####.\nA: "
    return Dialogues([{"role": "user", "content": prompt}], None, columns={"answer": answer})


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


# format name -> (reader, the raw columns it needs)
FORMATS: dict[str, tuple[Callable[[dict], Dialogues], tuple[str, ...]]] = {
    "hh_transcript": (read_hh_transcript, ("chosen", "rejected")),
    "hh_trl_style": (read_message_lists, ("chosen", "rejected")),
    "ultrafeedback": (read_ultrafeedback, ("chosen", "rejected", "score_chosen", "score_rejected")),
    "ultrainteract_pair": (read_ultrainteract_pair, ("trajectory", "chosen", "rejected")),
    "pro_hh": (read_pro_hh, ("prefix", "suffix", "reward")),
    "alol_rewarded": (read_alol_rewarded, ("prompt_or_input_text", "references", "reward_components")),
    "gsm8k": (read_gsm8k, ("question", "answer")),
}
SCHEMAS = ("conversation", "prompt", "preference", "scored")
ONE_REPLY = ("alol_rewarded",)  # formats without a rejected reply
PROMPT_ONLY = ("gsm8k",)  # formats of prompts without replies


def check_format(format: str | None, schema: str) -> None:
    """Raise when `format` is unknown or cannot give rows of `schema` (before anything is loaded)."""
    if format is None:
        return
    if format not in FORMATS:
        raise ValueError(f"task.format={format!r} is not one of {sorted(FORMATS)} (or null: rows in our schema)")
    if schema not in SCHEMAS:
        raise ValueError(f"task.format={format!r} gives {', '.join(SCHEMAS)} rows, not task.schema={schema!r}")
    if format in PROMPT_ONLY and schema != "prompt":
        raise ValueError(f"task.format={format!r} has prompts without replies: it gives prompt rows, not "
                         f"task.schema={schema!r}")
    if format in ONE_REPLY and schema == "preference":
        raise ValueError(f"task.format={format!r} has one reply per row, no rejected one: it gives scored, "
                         "conversation and prompt rows, not task.schema='preference'")


def without_final_reply(dialogue: list[dict]) -> list[dict]:
    return dialogue[:-1] if dialogue[-1]["role"] == "assistant" else dialogue


def final_reply(dialogue: list[dict], column: str) -> str:
    if dialogue[-1]["role"] != "assistant":
        raise FormatProblem(column, "the dialogue does not end with an assistant reply")
    return dialogue[-1]["content"]


def to_schema(read: Dialogues, schema: str) -> dict:
    """The row of `schema` (see the module docstring) taken from a read raw row."""
    if schema == "conversation":
        return {"messages": read.chosen}
    if schema == "prompt":
        return {"prompt": without_final_reply(read.chosen)} | read.columns
    if schema == "scored":
        row = {"prompt": read.chosen[:-1], "response": final_reply(read.chosen, "chosen")}
        return row | ({"score": read.score_chosen} if read.score_chosen is not None else {})
    row = {"prompt": read.chosen[:-1], "chosen": final_reply(read.chosen, "chosen"),
           "rejected": final_reply(read.rejected, "rejected")}
    if read.score_chosen is not None:
        row |= {"score_chosen": read.score_chosen, "score_rejected": read.score_rejected}
    return row


def convert_rows(rows: datasets.Dataset, format: str, schema: str, source: str) -> datasets.Dataset:
    """`rows` of the published `format` as rows of our `schema`; raises `SourceFormatError` naming `source`,
    the row and the column of the first row that does not fit the format."""
    check_format(format, schema)
    read, columns = FORMATS[format]
    missing = [c for c in columns if c not in rows.column_names]
    if missing:
        raise SourceFormatError(f"{source} has no column {', '.join(map(repr, missing))}, which format {format!r} "
                                f"reads (its columns: {', '.join(rows.column_names)})")

    def convert(row: dict, index: int) -> dict:
        try:
            return to_schema(read(row), schema)
        except FormatProblem as problem:
            raise SourceFormatError(f"{source}, row {index}, column '{problem.column}': {problem} "
                                    f"(format {format!r})") from None

    return rows.map(convert, with_indices=True, remove_columns=rows.column_names, load_from_cache_file=False,
                    desc=f"converting {format} rows")
