"""Writing run files atomically: to a temporary file beside the target, then renamed over it, so a killed
job leaves the old file or the new one, never a half-written one."""

import json
import os
from pathlib import Path


class RunRefused(RuntimeError):
    """A run that cannot go on as asked (damaged checkpoints, mostly failed generation): its message says why
    and what to do; the entrypoints print it without a traceback."""


def write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """One JSON object per line."""
    write_text(path, "".join(json.dumps(row) + "\n" for row in rows))
