"""SharedRep's IMDb prompts: the opening of each IMDb review longer than 200 characters, cut after a random
number of the policy tokenizer's tokens (2 to 7: trl's `LengthSampler(2, 8)`) and extended to the end of the
word it stops in, as SharedRep's `pre_processing_imdb` / `sample_fragment` compute it. Written as prompt rows:

    python -m rlhf.tasks.imdb_prompts <out_dir> [--reviews stanfordnlp/imdb] [--tokenizer lvwerra/gpt2-imdb]

writes <out_dir>/train.jsonl and <out_dir>/test.jsonl, one {"prompt", "label"} row per kept review (`label`:
IMDb's sentiment, kept for reading; no reward reads it). The lengths are drawn from `--seed` in review order,
so the same command writes the same files. `--reviews` is a hub id, a saved dataset, or a folder holding
train.jsonl and test.jsonl, with IMDb's columns `text` and `label`; `--limit` keeps the first N reviews of each
split.

`python -m rlhf.tasks.imdb_prompts --samples data/samples` writes the CPU twin's data instead: review-like texts
from the phrase lists below (none comes from IMDb) in imdb/{train,test}.jsonl, their prompts under the tiny
policy's tokenizer in imdb_prompts/{train,test}.jsonl, and each prompt with the rest of its review as a
conversation in imdb_prompts/sft_{train,test}.jsonl (the twin's SFT stands in for gpt2-imdb's tuning on IMDb);
the bundled files are that command's output.
"""

import argparse
import os
import random
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerBase

from rlhf.atomic import write_jsonl
from rlhf.data.loading import load_rows

MIN_REVIEW_CHARS = 200
MIN_TOKENS, MAX_TOKENS = 2, 8  # drawn from range(2, 8), as trl's LengthSampler does


def review_prefix(review: str, tokenizer: PreTrainedTokenizerBase, size: int) -> str:
    """The first `size` tokens of `review` (at most all but one), extended to the end of their last word."""
    encoded = tokenizer(review, truncation=True)
    ids, words = encoded["input_ids"], encoded.word_ids()
    size = min(size, len(ids) - 1)
    end = size - 1
    while end + 1 < len(words) and words[end] == words[end + 1]:
        end += 1
    # decoded as is: the published clean-up of spaces before punctuation is skipped for BPE tokenizers
    # (GPT-2's) by the transformers this project pins
    return tokenizer.decode(ids[: end + 1], skip_special_tokens=True, clean_up_tokenization_spaces=False)


def prompt_rows(reviews: list[dict], tokenizer: PreTrainedTokenizerBase, rng: random.Random,
                where: str) -> list[dict]:
    """The prompt row of each review longer than MIN_REVIEW_CHARS characters."""
    if not tokenizer.is_fast:
        raise ValueError(f"--tokenizer {tokenizer.name_or_path!r}: the word boundaries need a fast tokenizer")
    rows = []
    for i, review in enumerate(reviews):
        text = review.get("text")
        if not isinstance(text, str):
            raise ValueError(f"{where}, row {i}: column 'text' must be a string, got {type(text).__name__}")
        if len(text) <= MIN_REVIEW_CHARS:
            continue
        size = rng.randrange(MIN_TOKENS, MAX_TOKENS)
        rows.append({"prompt": review_prefix(text, tokenizer, size), "label": review.get("label")})
    return rows


def write_prompts(out: Path, reviews: str, tokenizer_path: str, seed: int = 0,
                  limit: int | None = None) -> dict[str, list[dict]]:
    """Write train.jsonl and test.jsonl under `out`; returns the prompt rows of each split."""
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    rng = random.Random(seed)
    written = {}
    for split in ("train", "test"):
        folder = Path(reviews) / f"{split}.jsonl"
        rows = load_rows(str(folder) if folder.is_file() else reviews, split=split, limit=limit)
        missing = [c for c in ("text", "label") if c not in rows.column_names]
        if missing:
            raise ValueError(f"--reviews {reviews!r} ({split}) has no column {missing[0]!r}; IMDb's columns are "
                             f"text and label (found {rows.column_names})")
        prompts = prompt_rows(rows.to_list(), tokenizer, rng, f"{reviews} ({split})")
        write_jsonl(out / f"{split}.jsonl", prompts)
        written[split] = prompts
    return written


OPENINGS = ["This film", "I watched this movie", "The director", "Honestly, the story", "My friends and I saw it",
            "The first half", "As a fan of the book", "The cast"]
MIDDLES = ["was {a} from the opening scene to the credits", "felt {a}, although the pacing dragged in places",
           "surprised me: the dialogue was {a} and the score stayed with me",
           "left the audience {a}, and the lead performance carried every scene"]
ADJECTIVES = ["wonderful", "dull", "brilliant", "forgettable", "moving", "clumsy", "funny", "tedious"]
ENDINGS = ["I would watch it again with my family next weekend.", "Skip the sequel, but this one is worth a look.",
           "The cinematography alone makes the ticket worth it.", "It is a long two hours for what it says."]


def sample_reviews(rng: random.Random, n: int) -> list[dict]:
    """`n` review-like texts from the phrase lists (some of 200 characters or fewer, which the prompts leave
    out), labelled by their first adjective."""
    rows = []
    for _ in range(n):
        adjective = rng.choice(ADJECTIVES)
        text = " ".join([f"{rng.choice(OPENINGS)} {rng.choice(MIDDLES).format(a=adjective)}.",
                         f"The supporting cast was {rng.choice(ADJECTIVES)} too.", rng.choice(ENDINGS),
                         rng.choice(ENDINGS)])
        rows.append({"text": text, "label": int(ADJECTIVES.index(adjective) % 2 == 0)})
    return rows


def write_samples(out: Path, seed: int = 0) -> None:
    """The twin's reviews (data/samples/imdb/) and their prompts under the tiny tokenizer (imdb_prompts/)."""
    from rlhf.models.tiny import tiny_model_path

    rng = random.Random(seed)
    for folder in ("imdb", "imdb_prompts"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    reviews = {"train": sample_reviews(rng, 96), "test": sample_reviews(rng, 64)}
    for split, rows in reviews.items():
        write_jsonl(out / "imdb" / f"{split}.jsonl", rows)
    cache = Path(os.environ.get("RLHF_CACHE", "~/.cache/rlhf")) / "tiny"  # where policy=tiny keeps it
    written = write_prompts(out / "imdb_prompts", str(out / "imdb"), str(tiny_model_path(str(cache))), seed)
    for split, prompts in written.items():  # each kept review as a prompt and its continuation: the SFT data
        kept = [r for r in reviews[split] if len(r["text"]) > MIN_REVIEW_CHARS]
        write_jsonl(out / "imdb_prompts" / f"sft_{split}.jsonl", [
            {"messages": [{"role": "user", "content": p["prompt"]},
                          {"role": "assistant", "content": r["text"].removeprefix(p["prompt"])}]}
            for r, p in zip(kept, prompts, strict=True)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, nargs="?")
    parser.add_argument("--samples", type=Path, default=None, help="write the CPU twin's data under this folder")
    parser.add_argument("--reviews", default="stanfordnlp/imdb")
    parser.add_argument("--tokenizer", default="lvwerra/gpt2-imdb")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None)
    args = parser.parse_args(argv)
    if args.samples is not None:
        write_samples(args.samples, args.seed)
        return
    if args.out is None:
        parser.error("give the output folder (or --samples)")
    args.out.mkdir(parents=True, exist_ok=True)
    written = write_prompts(args.out, args.reviews, args.tokenizer, args.seed, args.limit)
    print(f"wrote {len(written['train'])} train and {len(written['test'])} test prompts to {args.out}")


if __name__ == "__main__":
    main()
