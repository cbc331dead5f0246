"""An experiment of several stages (`stages:` in an experiment config, run by `rlhf-train experiment=<name>`):
SharedRep's SFT -> samples -> reward models -> GRPO -> per-group evaluation, 20 Questions' pairs -> DPO ->
games, D2PO's reward model -> DPO / OPO / D2PO. One command, one run directory.

Each stage is one run of an entrypoint (`run: train | generate | eval`) with its `overrides` (a mapping of
command-line keys to values, `~key: null` to delete), in `<run_dir>/<stage>/`, started as a child process,
in the order written; a stage set to null is left out (a pipeline's optional stage, which an experiment
fills in). A stage's output reaches the next by path: overrides name `${run_dir}/<stage>/model`,
resolved with the experiment's config. Before the first stage starts, every stage's config is composed and
its settings are checked, so a typo in the last stage stops the run before the first one trains.

Progress is `<run_dir>/stages.json`: each finished stage with the overrides it ran with. A finished stage run
again with the same overrides is skipped; a killed one is started again and resumes as its entrypoint does (a train
stage at its last checkpoint, a generate stage at its last chunk); a finished one whose settings changed is
refused by its entrypoint. The results of the stages (`final_metrics.json`, `eval.json`) are gathered into
the experiment's `final_metrics.json` as `<stage>/<metric>`, which `rlhf-eval sweep=` aggregates.
On Linux a stage is sent SIGTERM when the pipeline process dies (even by SIGKILL), so that a rerun never
finds the killed stage still writing to its folder: the rerun resumes the stage from what it had written.
"""

import ctypes
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from rlhf.atomic import RunRefused, write_text

log = logging.getLogger(__name__)

ENTRYPOINTS = {"train": "rlhf.train", "generate": "rlhf.generate", "eval": "rlhf.eval"}
RESULT_FILES = ("final_metrics.json", "eval.json")
PLAIN = re.compile(r"[A-Za-z0-9_./:+@-]+")


def override_value(value) -> str:
    """`value` in Hydra's override grammar: strings outside the plain set quoted, lists and mappings written
    out (so a path with spaces or a run directory's `:` and `+` reaches the stage as the same string)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{override_value(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if PLAIN.fullmatch(text) and text not in ("null", "true", "false"):
        return text
    # Hydra's quoted strings: a backslash escapes only before a quote (or the closing quote)
    quoted = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text))
    return "'" + quoted + "'"


def stage_overrides(overrides: dict) -> list[str]:
    """The command-line overrides of a stage: `key=value`, or `~key` for a key mapped to null under `~`."""
    return [key if key.startswith("~") and value is None else f"{key}={override_value(value)}"
            for key, value in overrides.items()]


def check_stages(stages: dict, run_dir: Path) -> dict[str, list[str]]:
    """Each stage's command-line overrides (in order), after composing its config (Hydra's errors name the stage) and
    checking its settings, before anything runs."""
    from hydra import compose
    from omegaconf import OmegaConf

    from rlhf.config import check_key_names, check_settings, unset_keys

    stages = {name: stage for name, stage in stages.items() if stage is not None}  # null: a stage left out
    if not stages:
        raise ValueError("stages: an experiment of stages needs at least one")
    commands = {}
    for name, stage in stages.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ValueError(f"stages.{name}: a stage's name is its folder; use letters, digits, _ and -")
        unknown = set(stage) - {"run", "overrides"}
        if unknown or stage.get("run") not in ENTRYPOINTS:
            raise ValueError(f"stages.{name}: a stage has `run` ({' | '.join(ENTRYPOINTS)}) and `overrides`; "
                             f"got {sorted(stage)} with run={stage.get('run')!r}")
        overrides = stage_overrides(stage.get("overrides") or {})
        check_key_names({"stages": {name: stage}}, run_dir)
        try:
            cfg = compose(config_name=stage["run"], overrides=[*overrides, f"run_dir={run_dir / name}"])
        except Exception as error:  # Hydra's composition errors name the key, not the stage
            raise ValueError(f"stages.{name} (rlhf-{stage['run']}): {error}") from error
        if cfg.get("stages"):
            raise ValueError(f"stages.{name}: a stage is one run, not an experiment of stages")
        missing = unset_keys(cfg)
        if missing:
            raise ValueError(f"stages.{name}: missing values (??? in the config): {', '.join(missing)}")
        try:
            check_settings(OmegaConf.to_container(cfg, resolve=True))
        except ValueError as error:
            raise ValueError(f"stages.{name}: {error}") from error
        commands[name] = overrides
    return commands


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def dies_with_this_process():
    """A `preexec_fn` that has the child sent SIGTERM when this process dies (Linux's PR_SET_PDEATHSIG; the
    child stops itself if this process died before it was set), or None where prctl is not available."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def stage_results(folder: Path) -> dict[str, float]:
    for name in RESULT_FILES:
        if (folder / name).is_file():
            loaded = json.loads((folder / name).read_text())
            return {k: v for k, v in loaded.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {}


def run_stages(*, stages: dict, run_dir: str, resume: str = "check", num_threads: int | None = None) -> dict[str, float]:
    """Run the stages in order (module docstring), each under the experiment's `resume` and `num_threads`
    (where set); returns and writes `final_metrics.json`: every stage's results as `<stage>/<metric>`."""
    run_dir = Path(run_dir)
    commands = check_stages(stages, run_dir)
    progress_file = run_dir / "stages.json"
    progress = json.loads(progress_file.read_text()) if progress_file.is_file() else {}
    results: dict[str, float] = {}
    for k, (name, overrides) in enumerate(commands.items(), start=1):  # the stages not left out
        folder = run_dir / name
        command = [sys.executable, "-m", ENTRYPOINTS[stages[name]["run"]], *overrides, f"resume={resume}",
                   f"hydra.run.dir={override_value(str(folder))}",
                   *([f"num_threads={num_threads}"] if num_threads is not None and
                     not any(o.startswith("num_threads=") for o in overrides) else [])]
        shown = " ".join(["rlhf-" + stages[name]["run"], *command[3:]])
        if progress.get(name, {}).get("overrides") == overrides:
            log.info("stage %d/%d %s: done (%s)", k, len(commands), name, folder)
        else:
            log.info("stage %d/%d %s: %s", k, len(commands), name, shown)
            started = time.monotonic()
            returncode = subprocess.run(command, preexec_fn=dies_with_this_process()).returncode
            if returncode != 0:
                raise RunRefused(f"stage {name} ({k} of {len(commands)}) exited with code {returncode}: its log is in "
                                 f"{folder}; the stages before it are kept, and the same command resumes from it")
            progress[name] = {"overrides": overrides, "seconds": round(time.monotonic() - started, 1)}
            write_text(progress_file, json.dumps(progress, indent=2))
        results |= {f"{name}/{key}": value for key, value in stage_results(folder).items()}
    write_text(run_dir / "final_metrics.json", json.dumps(results, indent=2))
    return results
