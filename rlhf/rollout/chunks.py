"""Resumable, atomic generation: work is done in chunks, each written whole or not at all.

Chunk k of the inputs is processed with its own seed (derived from the run's seed and k, never from what
ran before), and its rows land in `<run_dir>/chunks/<k>.jsonl` through an atomic rename. A killed run
leaves complete chunk files only; running the same command again reads them back and generates the rest,
so the result has no duplicated and no missing rows and equals an uninterrupted run's. The final outputs
(`dataset/` with `save_to_disk`, a `.jsonl` next to it) are written only once every chunk exists.

Chunks are reused only for the same work: `chunks/key.json` holds the mode's settings and a fingerprint of
the weights of every model taking part (policy, reward model, simulated user), so new weights at the same
`policy.path` are refused, not answered with the old rows. Failures are not results: a chunk holding a row
whose user simulator failed (endpoint down, refused key) is generated again by the next run, and a run
whose failed fraction passes `max_failed_fraction` stops with the reasons instead of writing mostly failures.
"""

import hashlib
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import datasets
import torch
from tqdm.auto import tqdm

from rlhf.atomic import RunRefused, write_jsonl, write_text

log = logging.getLogger(__name__)


def chunk_seed(seed: int, chunk: int) -> int:
    return seed * 100_003 + chunk


def weights_fingerprint(module: torch.nn.Module) -> str:
    """SHA-256 (16 hex digits) of a module's state: every tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.detach().reshape(-1).cpu().contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()[:16]


def modules_in(component, depth: int = 4) -> list[torch.nn.Module]:
    """The torch modules a component holds (a reward model's network, a local simulated user's LLM), found
    through the attributes of this package's objects, each once."""
    found: dict[int, torch.nn.Module] = {}

    def walk(obj, left: int) -> None:
        if isinstance(obj, torch.nn.Module):
            found.setdefault(id(obj), obj)
        elif left and isinstance(obj, (list, tuple)):
            for item in obj:
                walk(item, left - 1)
        elif left and type(obj).__module__.startswith("rlhf.") and hasattr(obj, "__dict__"):
            for value in vars(obj).values():
                walk(value, left - 1)

    walk(component, depth)
    return list(found.values())


def weights_key(**components) -> dict[str, list[str]]:
    """Per component (policy=, reward=, user=), the fingerprints of the modules it holds."""
    return {name: [weights_fingerprint(m) for m in modules_in(c)] for name, c in components.items() if c is not None}


def run_chunks(
    items: list,
    chunk_size: int,
    run_dir: str | Path,
    make_rows: Callable[[list, int], list[dict]],
    key: dict,
    unit: str = "item",
    models: dict | None = None,
    failed: Callable[[dict], str | None] | None = None,
    max_failed_fraction: float = 1.0,
) -> list[dict]:
    """All rows of `make_rows(items[chunk], chunk_index)` over the chunks, in order, reusing chunk files
    a previous run of the same work left in `<run_dir>/chunks/`.

    key: what identifies the work (mode, seed, settings, number of items); a run directory holding chunks
    of other work is refused rather than mixed. models: the components whose weights make the rows
    (policy=, reward=, user=), fingerprinted into the key. failed: a row's failure reason (None: it is a
    result); a saved chunk with a failed row is generated again. max_failed_fraction: stop (with the reasons)
    once more than this fraction of the rows so far failed; the chunks written stay for the next run.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size={chunk_size} must be >= 1")
    if not 0 <= max_failed_fraction <= 1:
        raise ValueError(f"mode.max_failed_fraction={max_failed_fraction} must be in [0, 1]")
    folder = Path(run_dir) / "chunks"
    folder.mkdir(parents=True, exist_ok=True)
    key = {**key, "items": len(items), "chunk_size": chunk_size}
    if models:
        key["weights"] = weights_key(**models)
    key_file = folder / "key.json"
    if key_file.exists():
        previous = json.loads(key_file.read_text())
        if previous != key:
            changed = sorted(k for k in key.keys() | previous.keys() if key.get(k) != previous.get(k))
            raise ValueError(f"{folder} holds chunks of different work (differs in {changed}); "
                             "use another run directory or delete it")
    else:
        write_text(key_file, json.dumps(key, indent=2, sort_keys=True))
    starts = range(0, len(items), chunk_size)
    rows: list[dict] = []
    failures: Counter = Counter()
    bar = tqdm(total=len(items), desc="generating", unit=unit)
    began, fresh, retried = time.perf_counter(), 0, 0
    for index, start in enumerate(starts):
        path = folder / f"{index:06d}.jsonl"
        chunk_rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else None
        if chunk_rows is not None and failed is not None and any(failed(r) for r in chunk_rows):
            chunk_rows, retried = None, retried + 1  # failures are not results: generated again
        if chunk_rows is None:
            chunk_rows = make_rows(items[start:start + chunk_size], index)
            write_jsonl(path, chunk_rows)
            fresh += len(items[start:start + chunk_size])
        rows += chunk_rows
        failures.update(reason for reason in map(failed or (lambda r: None), chunk_rows) if reason is not None)
        bar.update(len(items[start:start + chunk_size]))
        bar.set_postfix({f"{unit}s/s": f"{fresh / max(time.perf_counter() - began, 1e-9):.2f}",
                         **({"failed": sum(failures.values())} if failures else {})})
        if rows and sum(failures.values()) > max_failed_fraction * len(rows):
            bar.close()
            reasons = "\n  ".join(f"{n} x {reason}" for reason, n in failures.most_common(5))
            raise RunRefused(f"{sum(failures.values())} of {len(rows)} rows so far failed, more than "
                               f"mode.max_failed_fraction={max_failed_fraction}:\n  {reasons}\nThe {index + 1} chunks "
                               f"written are kept in {folder}; fix the cause and run again (chunks with failures "
                               "are generated again)")
    bar.close()
    if retried:
        log.info("generated %d saved chunks again: they held failed rows", retried)
    if failures:
        log.warning("%d of %d rows failed (a rerun generates their chunks again): %s", sum(failures.values()),
                    len(rows), dict(failures.most_common(5)))
    return rows


def save_dataset(rows: list[dict], target: Path) -> datasets.Dataset:
    """`rows` as a `datasets` dataset saved to `target` and as `target` + ".jsonl", both atomically."""
    dataset = datasets.Dataset.from_list(rows)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    dataset.save_to_disk(str(tmp))
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)
    write_jsonl(target.with_name(target.name + ".jsonl"), rows)
    return dataset


def save_pairs(rows: list[dict], out: Path, drop: tuple[str, ...] = ()) -> datasets.Dataset:
    """Write a pair mode's outputs: every row to `dataset/` (with its `drop_reason`), the kept rows without
    `drop_reason` and the `drop` columns to `pairs/`, and the counts (kept, dropped by reason) to
    `summary.json` and the console. Returns the full dataset."""
    dataset = save_dataset(rows, out / "dataset")
    hidden = {"drop_reason", *drop}
    kept = [{k: v for k, v in r.items() if k not in hidden} for r in rows if r["drop_reason"] is None]
    save_dataset(kept, out / "pairs")
    stats = {"pairs": len(rows), "kept": len(kept),
             "dropped": dict(Counter(r["drop_reason"] for r in rows if r["drop_reason"] is not None))}
    write_text(out / "summary.json", json.dumps(stats, indent=2))
    print(json.dumps(stats, indent=2))
    return dataset
