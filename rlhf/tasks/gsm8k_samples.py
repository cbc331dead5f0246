"""GSM8K-like problems for the CPU twin of SharedRep's GSM8K experiment (`sharedrep_gsm8k_debug`):

    python -m rlhf.tasks.gsm8k_samples data/samples

writes gsm8k_twin/{train,test}.jsonl in openai/gsm8k's columns (`question`, `answer` ending "#### N"), and
gsm8k_twin/sft_{train,test}.jsonl: each question in SharedRep's few-shot prompt (`format: gsm8k`) answered in
the few-shot examples' style ("Let's think step by step. ... #### The final answer is N."), the twin's SFT
data. The problems are one- and two-step sums and differences of small numbers from the templates below; the
bundled files are that command's output.
"""

import random
import sys
from pathlib import Path

from rlhf.atomic import write_jsonl
from rlhf.data.sources import read_gsm8k

NAMES = ["Ana", "Ben", "Chloe", "Dev", "Emil", "Farah", "Goran", "Hana"]
THINGS = ["apples", "pencils", "stickers", "marbles", "books", "shells"]


def problem(rng: random.Random) -> tuple[str, str, str]:
    """(question, GSM8K answer, the few-shot style reply) of one problem."""
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(2, 9), rng.randint(1, 5)
    if rng.random() < 0.5:
        question = f"{name} has {a} {thing} and finds {b} more. How many {thing} does {name} have now?"
        value, steps = a + b, f"{name} has {a} and finds {b}, so {a} + {b} = {a + b}."
    else:
        question = f"{name} has {a + b} {thing} and gives away {b}. How many {thing} are left?"
        value, steps = a, f"{name} has {a + b} and gives away {b}, so {a + b} - {b} = {a}."
    answer = f"{steps.replace(', so', '. So')}\n#### {value}"
    return question, answer, f"Let's think step by step. {steps}\n#### The final answer is {value}."


def write_samples(out: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    folder = out / "gsm8k_twin"
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 48), ("test", 24)):
        rows = [problem(rng) for _ in range(n)]
        write_jsonl(folder / f"{split}.jsonl", [{"question": q, "answer": a} for q, a, _ in rows])
        prompts = [read_gsm8k({"question": q, "answer": a}).chosen for q, a, _ in rows]
        write_jsonl(folder / f"sft_{split}.jsonl", [{"messages": p + [{"role": "assistant", "content": reply}]}
                                                    for p, (_, _, reply) in zip(prompts, rows, strict=True)])


if __name__ == "__main__":
    write_samples(Path(sys.argv[1] if len(sys.argv) > 1 else "data/samples"))
