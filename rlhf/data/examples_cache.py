"""Tokenised examples kept across runs (`trainer.tokenised_cache`): the jobs of a sweep over seeds or
hyperparameters tokenise their data once.

An entry is keyed by everything tokenisation reads: the rows' content (their Arrow data, not their path), the
task schema, the batch kind and reply columns, `data.max_length` and `data.truncation`, the tokenizer's whole
state (its serialised vocabulary, merges, normalisation and post-processing, chat template, special tokens)
and the transformers and tokenizers versions, and the source of the tokenising code itself, so a changed
template, tokenizer, datum or line of code is a miss, never a stale hit. Tokenizers without a serialised
state (slow, Python ones) are tokenised every run. Entries are safetensors files written atomically; jobs
that start together wait for the first (a file lock), then read what it wrote.
"""

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import datasets
import pyarrow as pa
import torch
import transformers
from safetensors.torch import load_file, save_file

from rlhf.atomic import file_lock
from rlhf.data import examples as examples_module
from rlhf.data import tokenize as tokenize_module
from rlhf.data.examples import Examples, build_examples, collate_for
from rlhf.data.tokenize import TokenizedSequence, Tokenization

log = logging.getLogger(__name__)
FORMAT = 1
PAIR_KINDS = ("pair", "reward_pair")
GROUP_KINDS = ("group", "rollout")


def rows_digest(rows: datasets.Dataset) -> str:
    """SHA-256 of the rows' content: their Arrow table (after any selection or shuffle), as an IPC stream."""
    table = (rows.flatten_indices() if rows._indices is not None else rows).data.table
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return hashlib.sha256(sink.getvalue()).hexdigest()


def tokenizer_digest(tokenizer) -> str | None:
    """SHA-256 of everything of the tokenizer that tokenisation reads, or None for a tokenizer without a
    serialised state (not cached)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    state = {"class": type(tokenizer).__name__, "backend": backend.to_str(), "template": tokenizer.chat_template,
             "special": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
             "ids": [tokenizer.eos_token_id, tokenizer.pad_token_id, tokenizer.bos_token_id],
             "sides": [tokenizer.padding_side, tokenizer.truncation_side], "size": len(tokenizer)}
    return hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()


def _code_digest() -> str:
    digest = hashlib.sha256()
    for module in (tokenize_module, examples_module):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def cache_key(rows: datasets.Dataset, schema: str, batch_kind: str, tokenizer, spec: Tokenization,
              responses: tuple[str, ...]) -> str | None:
    tokenizer_state = tokenizer_digest(tokenizer)
    if tokenizer_state is None:
        return None
    import tokenizers
    key = {"format": FORMAT, "rows": rows_digest(rows), "schema": schema, "kind": batch_kind,
           "responses": list(responses), "spec": asdict(spec), "tokenizer": tokenizer_state, "code": _code_digest(),
           "versions": [transformers.__version__, tokenizers.__version__]}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


def cached_examples(folder: str | Path | None, rows: datasets.Dataset, schema: str, batch_kind: str, tokenizer,
                    spec: Tokenization, source: str, responses: tuple[str, ...] = ("chosen",)) -> Examples:
    """`build_examples(...)`, read from `folder` when a run tokenised the same rows the same way, else built
    and written there (folder None: built)."""
    key = cache_key(rows, schema, batch_kind, tokenizer, spec, responses) if folder is not None else None
    if key is None:
        return build_examples(rows, schema, batch_kind, tokenizer, spec, source, responses)
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{key}.safetensors"
    with file_lock(folder / f"{key}.lock"):
        if path.exists():
            log.info("tokenised %s: %s (trainer.tokenised_cache)", source, path)
            return _read(path, batch_kind, tokenizer.pad_token_id)
        examples = build_examples(rows, schema, batch_kind, tokenizer, spec, source, responses)
        _write(examples, batch_kind, path)
    return examples


def _sequences(item, batch_kind: str) -> list[TokenizedSequence]:
    return list(item) if batch_kind in PAIR_KINDS + GROUP_KINDS else [item]


def _write(examples: Examples, batch_kind: str, path: Path) -> None:
    sequences = [s for item in examples.items for s in _sequences(item, batch_kind)]
    tensors = {"input_ids": torch.tensor([i for s in sequences for i in s.input_ids], dtype=torch.int64),
               "turn_ids": torch.tensor([t for s in sequences for t in s.turn_ids], dtype=torch.int64),
               "lengths": torch.tensor([len(s.input_ids) for s in sequences], dtype=torch.int64),
               "counts": torch.tensor([len(_sequences(item, batch_kind)) for item in examples.items],
                                      dtype=torch.int64),
               "rows": torch.tensor(examples.rows, dtype=torch.int64)}
    tensors |= {f"field/{name}": value.contiguous() for name, value in examples.fields.items()}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, tmp, metadata={"dropped": str(examples.dropped), "kind": batch_kind})
    os.replace(tmp, path)


def _read(path: Path, batch_kind: str, pad_id: int) -> Examples:
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        dropped = int(f.metadata()["dropped"])
    tensors = load_file(path)
    lengths, counts = tensors["lengths"].tolist(), tensors["counts"].tolist()
    ids, turns = tensors["input_ids"].split(lengths), tensors["turn_ids"].split(lengths)
    sequences = [TokenizedSequence(i.tolist(), t.tolist()) for i, t in zip(ids, turns)]
    items, start = [], 0
    for count in counts:
        part = sequences[start:start + count]
        start += count
        items.append(tuple(part) if batch_kind in PAIR_KINDS else part if batch_kind in GROUP_KINDS else part[0])
    fields = {name[len("field/"):]: value for name, value in tensors.items() if name.startswith("field/")}
    return Examples(items, tensors["rows"].tolist(), fields, dropped, collate_for(batch_kind, pad_id))
