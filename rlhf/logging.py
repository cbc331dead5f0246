"""Where metrics go. Every run writes `metrics.jsonl`; a `logger=` option adds another sink.

Secrets never leave the process: configs pass through `redact` before they are saved or sent anywhere,
and API keys are read from the environment by the components that need them, never stored in a config.
"""

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Protocol

from rlhf.atomic import write_text

log = logging.getLogger(__name__)

SECRET_KEY = re.compile(r"(api_?key|token|secret|password)$", re.IGNORECASE)


def redact(config):
    """A copy of a nested dict/list config with the values of secret-looking keys replaced by '***'."""
    if isinstance(config, dict):
        return {k: "***" if SECRET_KEY.search(str(k)) and v is not None else redact(v) for k, v in config.items()}
    if isinstance(config, list):
        return [redact(v) for v in config]
    return config


class Logger(Protocol):
    def start(self, run_dir: Path, config: dict) -> None: ...
    def log(self, metrics: dict[str, float], step: int) -> None: ...
    def close(self) -> None: ...


class JsonlLogger:
    """One JSON object per logged step in `<run_dir>/metrics.jsonl`; `truncate_after` drops lines past a
    resumed checkpoint's step, so a resumed run does not log those steps twice."""

    def __init__(self, path: Path, truncate_after: int | None = None):
        self.path = path
        if truncate_after is not None and path.exists():
            lines = path.read_text().splitlines()
            kept = []
            for number, line in enumerate(lines, 1):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    if number < len(lines):
                        raise ValueError(f"{path} line {number} is not JSON (the file was edited or corrupted)")
                    log.warning("%s: dropped its last line, cut off when the run was killed", path)
                    continue
                if row["step"] <= truncate_after:
                    kept.append(line)
            write_text(path, "".join(line + "\n" for line in kept))
        self.file = path.open("a")

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.file.write(json.dumps({"step": step, **metrics}) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class NoLogger:
    """`logger=none`: metrics go to metrics.jsonl only."""

    def start(self, run_dir: Path, config: dict) -> None:
        pass

    def log(self, metrics: dict[str, float], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class WandbLogger:
    """Weights & Biases. `mode` (online | offline | disabled) when the config sets one, else `WANDB_MODE` from
    the environment, else offline when no `WANDB_API_KEY` is set (sync later with `wandb sync`).

    The run id is derived from the run directory, so a resumed or requeued job continues the same wandb run.
    """

    def __init__(self, project: str = "rlhf", entity: str | None = None, mode: str | None = None,
                 tags: list[str] | None = None):
        self.project, self.entity, self.tags = project, entity, tags
        # the config's mode, else the environment's WANDB_MODE, else online only with a key
        self.mode = mode or os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")
        self.run = None

    def start(self, run_dir: Path, config: dict) -> None:
        import wandb

        run_id = hashlib.sha256(str(run_dir.resolve()).encode()).hexdigest()[:16]
        self.run = wandb.init(project=self.project, entity=self.entity, mode=self.mode, tags=self.tags,
                              dir=str(run_dir), id=run_id, resume="allow", config=redact(config),
                              name=run_dir.name)

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()
