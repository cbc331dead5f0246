"""GSM8K correctness: 1 when the reply's final number equals the reference answer's, else 0, as SharedRep's
GSM8K gold computes it (`src/helper/gsm8k_utils.py`: `extract_hash_answer`, `extract_final_answer`,
`compute_correctness_score`).

The reference is the number after "####" in the row's `answer` field (GSM8K's worked solution; the task passes
it with `task.fields: [answer]`). The reply's number is, in order: the content of the first \\boxed{...}; the
number after "The answer is", "Final answer:" or "The final answer is"; else the last number in the reply.
Both are compared as floats after removing thousands separators and a trailing "." or ",". A reply with no
number scores 0. A conversation without the field is refused, naming it.
"""

import re

from rlhf.rewards.base import Score, last_response

BOXED = re.compile(r"\\boxed\{(.*?)\}")
PHRASES = [re.compile(p, re.IGNORECASE | re.DOTALL)
           for p in (r"The answer is ([\d.,\-]+)", r"Final answer: ([\d.,\-]+)", r"The final answer is ([\d.,\-]+)")]
NUMBER = re.compile(r"[-+]?\d{1,3}(?:,\d{3})*(?:\.\d+)?|\d+\.\d+")


def as_number(text: str) -> float | None:
    try:
        return float(text.rstrip(".,").replace(",", ""))
    except ValueError:
        return None


def reference_answer(answer: str) -> float:
    """The number after "####" in a GSM8K solution; raises when there is none."""
    if "####" not in answer:
        raise ValueError(f"a GSM8K answer ends with '#### <number>'; this one has no '####': {answer[-60:]!r}")
    value = as_number(answer.split("####")[1].strip())
    if value is None:
        raise ValueError(f"the GSM8K answer after '####' is not a number: {answer.split('####')[1][:40]!r}")
    return value


def final_number(reply: str) -> float | None:
    """The reply's final answer (module docstring), or None."""
    boxed = BOXED.search(reply)
    if boxed:
        return as_number(boxed.group(1))
    for phrase in PHRASES:
        match = phrase.search(reply)
        if match and as_number(match.group(1)) is not None:
            return as_number(match.group(1))
    numbers = NUMBER.findall(reply)
    return as_number(numbers[-1]) if numbers else None


class GSM8KCorrect:
    """1.0 when the reply's final number equals the reference answer (field `field`), else 0.0."""

    def __init__(self, field: str = "answer") -> None:
        self.field = field

    def score(self, conversations: list[list[dict]], fields: list[dict] | None = None) -> list[Score]:
        if fields is None or len(fields) != len(conversations):
            raise ValueError(f"GSM8K correctness needs each conversation's field {self.field!r} (the reference "
                             "solution): give the task `task.fields: [answer]`")
        scores: list[Score] = []
        for i, (conversation, row) in enumerate(zip(conversations, fields)):
            if self.field not in row:
                raise ValueError(f"conversation {i} has no field {self.field!r} (its fields: {sorted(row)})")
            predicted = final_number(last_response(conversation))
            scores.append(float(predicted is not None and predicted == reference_answer(row[self.field])))
        return scores
