"""Loading rows from a hub dataset name or a local path (jsonl/json, parquet, a saved `datasets` folder)."""

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import datasets

from rlhf.data.filters import RowFilter, apply_filters
from rlhf.data.schema import as_messages, validate_rows
from rlhf.data.sources import convert_rows

log = logging.getLogger(__name__)

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}
READ = "files read: .jsonl (one JSON object per line), .json, .parquet, a folder saved by `save_to_disk`, a hub name"


def check_json_lines(path: Path) -> None:
    """A .jsonl file is UTF-8 with one JSON object per non-empty line, and not empty; the first line that is
    not is named (its number and what is wrong) before anything else reads the file."""
    objects = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"{path} line {number} is not UTF-8 (byte {e.start + 1}: {raw[e.start:e.start + 1]!r})"
                                 ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {number} is not JSON ({e.msg} at column {e.colno}): "
                                 f"{line.strip()[:80]!r}") from None
            if not isinstance(row, dict):
                raise ValueError(f"{path} line {number} is a JSON {type(row).__name__}, not an object of columns: "
                                 f"{line.strip()[:80]!r}")
            objects += 1
    if not objects:
        raise ValueError(f"{path} holds no rows (the file is empty)")


def load_rows(path: str, split: str = "train", limit: int | None = None) -> datasets.Dataset:
    """Rows of `path`, which is a local file, a folder written by `Dataset.save_to_disk`, or a hub name
    (with its configuration after a colon, e.g. "openai/gsm8k:main").

    A local file is one split, "train": a `split` that slices it ("train[:5%]", "train[5%:]", as the tasks of
    sources with a train split only hold rows out) is applied, any other name is ignored (the file is the
    split); for a saved DatasetDict or a hub dataset it picks the split. `limit` keeps the first rows.
    """
    local = Path(path).expanduser()
    if local.suffix in LOCAL_FORMATS:
        if not local.is_file():
            raise FileNotFoundError(f"dataset file {path!r} does not exist")
        if local.suffix == ".jsonl":
            check_json_lines(local)
        try:
            rows = datasets.load_dataset(LOCAL_FORMATS[local.suffix], data_files=str(local),
                                         split=split if split.startswith("train[") else "train")
        except datasets.exceptions.DatasetGenerationError as e:
            cause = e.__cause__ or e.__context__
            raise ValueError(f"cannot read {path}: {cause or e}") from e
    elif local.is_dir():
        loaded = datasets.load_from_disk(str(local))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise KeyError(f"dataset {path!r} has no split {split!r} (it has {sorted(loaded)})")
            loaded = loaded[split]
        rows = loaded
    elif local.is_file():
        raise ValueError(f"dataset file {path!r}: {local.suffix or 'a file without a suffix'} is not read ({READ})")
    elif path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"dataset path {path!r} does not exist")
    else:  # a hub name, "<repo>:<config>" for a dataset of several configurations (openai/gsm8k:main)
        repo, _, config = path.partition(":")
        rows = datasets.load_dataset(repo, config or None, split=split)
    if limit is not None:
        rows = rows.select(range(min(limit, len(rows))))
    return rows


def source_name(path: str, split: str) -> str:
    """How messages name a dataset: a local file is its own split; a hub name (which may contain dots) or a
    saved folder is named with its split."""
    return repr(path) if Path(path).suffix in LOCAL_FORMATS else f"{path!r} (split {split!r})"


def load_validated(path: str, kind: str, split: str = "train", limit: int | None = None, format: str | None = None,
                   filters: Sequence[RowFilter] = (), task: str | None = None) -> datasets.Dataset:
    """`load_rows`, every row checked against schema `kind` (see `rlhf.data.schema`), and the `filters` of
    `task` applied (`rlhf.data.filters`). Rows of a published `format` (`rlhf.data.sources`) are converted
    first, filtered, then checked: the filters drop the rows the schema does not allow."""
    rows = load_rows(path, split, limit)
    source = source_name(path, split)
    if format is None:
        validate_rows(rows, kind, source=source)
        rows = apply_filters(rows, filters, task, source) if filters else rows
    else:
        rows = convert_rows(rows, format, kind, source)
        if filters:
            rows = apply_filters(rows, filters, task, source)
        validate_rows(rows, kind, source=source)
    return drop_identical_pairs(rows, source) if kind == "preference" else rows


def drop_identical_pairs(rows: datasets.Dataset, source: str) -> datasets.Dataset:
    """Preference rows whose chosen and rejected replies are the same carry no preference (a pairwise loss is
    constant on them): they are dropped, counted and named in the log; none left is an error."""
    same = [i for i, (c, r) in enumerate(zip(rows["chosen"], rows["rejected"])) if as_messages(c, "assistant")
            == as_messages(r, "assistant")]
    if not same:
        return rows
    if len(same) == len(rows):
        raise ValueError(f"every one of the {len(rows)} pairs of {source} has identical chosen and rejected replies")
    log.warning("dropped %d of %d pairs of %s whose chosen and rejected replies are identical (rows %s%s)",
                len(same), len(rows), source, ", ".join(map(str, same[:10])), ", ..." if len(same) > 10 else "")
    keep = sorted(set(range(len(rows))) - set(same))
    return rows.select(keep)
