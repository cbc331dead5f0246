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

Shared stages (`shared_stages`): a stage whose command is the same in several runs runs once. Its command is
its entrypoint and overrides, after a path into an earlier shared stage (`${run_dir}/sft/model`) is made the
path of that stage's shared folder; a stage whose overrides still name the run directory is the run's own.
A shared stage runs in `<shared_stages>/<stage>-<digest of its command>/`, which `<run_dir>/<stage>` links to,
under a file lock: a run that finds it running in another run waits for it, and one that finds it finished
(`stage.json` there) skips it. So the jobs of a sweep over `data.proportion` train the SFT policy, sample
and train the gold policy once per seed, and the jobs of an A-LoL sweep over the algorithms share one NLL
reference. A stage's folder begun before it was shared stays the run's own.
"""

import ctypes
import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from rlhf.atomic import RunRefused, file_lock, write_text

log = logging.getLogger(__name__)

ENTRYPOINTS = {"train": "rlhf.train", "generate": "rlhf.generate", "eval": "rlhf.eval"}
RESULT_FILES = ("final_metrics.json", "eval.json")
PLAIN = re.compile(r"[A-Za-z0-9_./:+@-]+")
SHARED_MARKER = ".shared_stages"  # in a folder of shared stages: `rlhf-eval sweep=` does not count them as runs


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
            cfg = compose(config_name=stage["run"],
                          overrides=[*overrides, f"run_dir={override_value(str(run_dir / name))}"])
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


def shared_root(setting, run_dir: str | Path) -> Path | None:
    """The folder of shared stages for the `shared_stages` setting: `auto` is `shared_stages/` in the sweep
    directory of a sweep (`-m`) and beside the run directory otherwise; null or false: none (every stage is
    the run's own); else the folder given."""
    if setting is None or setting is False:
        return None
    if not isinstance(setting, str) or not setting:
        raise ValueError(f"shared_stages={setting!r}: auto, a folder, or null (no stage shared between runs)")
    if setting != "auto":
        return Path(setting).expanduser().resolve()
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    if hydra is not None and hydra.mode == RunMode.MULTIRUN:
        return (Path(hydra.sweep.dir) / "shared_stages").resolve()
    return (Path(run_dir).resolve().parent / "shared_stages").resolve()


def _with_paths(value, moved: dict[str, str]):
    """`value` with each string that is one of `moved`'s paths, or a path under one, moved to its new place."""
    if isinstance(value, dict):
        return {k: _with_paths(v, moved) for k, v in value.items()}
    if isinstance(value, list):
        return [_with_paths(v, moved) for v in value]
    if isinstance(value, str):
        for old, new in moved.items():
            if value == old or value.startswith(old + "/"):
                return new + value[len(old):]
    return value


def _mentions(value, text: str) -> bool:
    if isinstance(value, dict):
        return any(_mentions(v, text) for v in value.values())
    if isinstance(value, list):
        return any(_mentions(v, text) for v in value)
    return isinstance(value, str) and (value == text or text + "/" in value or value.endswith(text))


def shared_stages(stages: dict, run_dir: Path, root: Path | None) -> tuple[dict, dict[str, Path | None]]:
    """The stages with their paths into earlier shared stages made the shared folders' (module docstring),
    and each stage's shared folder, or None for a stage that is the run's own."""
    canonical, homes = {}, {}
    for name, stage in stages.items():
        if stage is None:  # a stage left out
            continue
        overrides = _with_paths(stage.get("overrides") or {},
                                {str(run_dir / prev): str(home) for prev, home in homes.items() if home})
        canonical[name] = {**stage, "overrides": overrides}
        own = root is None or _mentions(overrides, str(run_dir)) or (
            (run_dir / name).exists() and not (run_dir / name).is_symlink())  # begun before it was shared
        command = json.dumps([stage.get("run"), stage_overrides(overrides)])
        homes[name] = None if own else root / f"{name}-{hashlib.sha256(command.encode()).hexdigest()[:16]}"
    return canonical, homes


def _link(folder: Path, home: Path) -> None:
    """`folder` made a link to `home` (relative, so a sweep directory moved whole keeps its links)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    if folder.is_symlink() and folder.resolve() == home.resolve():
        return
    temporary = folder.with_name(f".{folder.name}.link")
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(os.path.relpath(home, folder.parent), target_is_directory=True)
    os.replace(temporary, folder)


def run_stages(*, stages: dict, run_dir: str, resume: str = "check", num_threads: int | None = None,
               shared: str | Path | None = None) -> dict[str, float]:
    """Run the stages in order (module docstring), each under the experiment's `resume` and `num_threads`
    (where set), those whose command other runs share once in `shared`'s folders; returns and writes
    `final_metrics.json`: every stage's results as `<stage>/<metric>`."""
    run_dir, root = Path(run_dir), Path(shared) if shared is not None else None
    stages, homes = shared_stages(stages, run_dir, root)
    commands = check_stages(stages, run_dir)
    if any(homes.values()):
        root.mkdir(parents=True, exist_ok=True)
        if not (root / SHARED_MARKER).is_file():
            write_text(root / SHARED_MARKER, "stages shared by runs of rlhf-train experiments (rlhf/pipeline.py)\n")
    progress_file = run_dir / "stages.json"
    progress = json.loads(progress_file.read_text()) if progress_file.is_file() else {}
    results: dict[str, float] = {}
    for k, (name, overrides) in enumerate(commands.items(), start=1):  # the stages not left out
        folder, home = run_dir / name, homes[name]
        command = [sys.executable, "-m", ENTRYPOINTS[stages[name]["run"]], *overrides, f"resume={resume}",
                   f"hydra.run.dir={override_value(str(home or folder))}",
                   *([f"num_threads={num_threads}"] if num_threads is not None and
                     not any(o.startswith("num_threads=") for o in overrides) else [])]
        shown = " ".join(["rlhf-" + stages[name]["run"], *command[3:]])
        where = f"{k}/{len(commands)} {name}"
        if home is not None and (progress.get(name, {}).get("shared") == str(home) or not folder.exists()):
            _link(folder, home)
        if progress.get(name, {}).get("overrides") == overrides and folder.exists():  # gone: run again
            log.info("stage %s: done (%s)", where, folder)
        elif home is None:
            log.info("stage %s: %s", where, shown)
            seconds = _run_stage(command, name, k, len(commands), folder)
            progress[name] = {"overrides": overrides, "seconds": seconds}
            write_text(progress_file, json.dumps(progress, indent=2))
        else:
            _link(folder, home)
            record = {"run": stages[name]["run"], "overrides": overrides}
            seconds = _run_shared_stage(command, record, home, where, shown, name, k, len(commands), folder)
            progress[name] = {"overrides": overrides, "seconds": seconds, "shared": str(home)}
            write_text(progress_file, json.dumps(progress, indent=2))
        results |= {f"{name}/{key}": value for key, value in stage_results(folder).items()}
    write_text(run_dir / "final_metrics.json", json.dumps(results, indent=2))
    return results


def _run_shared_stage(command: list[str], record: dict, home: Path, where: str, shown: str, name: str, k: int,
                      n: int, folder: Path) -> float:
    """Run a shared stage in `home` under its lock, unless another run finished it (`stage.json` there holds
    its `record`: entrypoint and overrides); its seconds (0 when skipped)."""
    finished = home / "stage.json"
    with file_lock(home.with_name(home.name + ".lock"),
                   waiting=f"stage {where}: waiting for another run that is running it in {home}") as lock:
        if finished.is_file() and {key: value for key, value in json.loads(finished.read_text()).items()
                                   if key in record} == record:
            log.info("stage %s: done by another run (%s, shared in %s)", where, folder, home)
            return 0.0
        log.info("stage %s: %s (shared in %s)", where, shown, home)
        # the stage holds the lock too, so another run waits until it has stopped writing
        seconds = _run_stage(command, name, k, n, folder, keep=lock.fileno())
        write_text(finished, json.dumps({**record, "seconds": seconds}, indent=2))
    return seconds


def _run_stage(command: list[str], name: str, k: int, n: int, folder: Path, keep: int | None = None) -> float:
    """Run one stage's command (the fd `keep` open in it); its seconds, or RunRefused naming it."""
    started = time.monotonic()
    returncode = subprocess.run(command, preexec_fn=dies_with_this_process(),
                                pass_fds=() if keep is None else (keep,)).returncode
    if returncode != 0:
        raise RunRefused(f"stage {name} ({k} of {n}) exited with code {returncode}: its log is in {folder}; the "
                         "stages before it are kept, and the same command resumes from it")
    return round(time.monotonic() - started, 1)
