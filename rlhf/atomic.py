"""Writing run files atomically: to a temporary file beside the target, then renamed over it, so a killed
job leaves the old file or the new one, never a half-written one; and the lock that jobs writing the same
shared file take in turn."""

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)


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


@contextmanager
def file_lock(path: Path, waiting: str | None = None) -> Iterator:
    """An exclusive lock on the file `path` (created) while the block runs, released when it ends, also if
    this process dies; yields the open lock file. `waiting`: logged when another process holds the lock."""
    with open(path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if waiting is not None:
                log.info("%s", waiting)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield lock
