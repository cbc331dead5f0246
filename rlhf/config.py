"""Config helpers shared by the entrypoints: OmegaConf resolvers and the run directory's config.yaml.

Light to import (no torch, transformers or datasets at import time), so `--help` and `--cfg job` of the
entrypoints compose in about a second; the libraries load when a run starts.

Importing this module registers the resolvers:
- `${data_dir:}`: the bundled data folder of this checkout (`<repo>/data`);
- `${or_default:a,b}`: a, or b when a is empty (names the run directory of a run with no overrides).
"""

import functools
import inspect
import logging
import math
import os
import re
import shutil
import types
import typing
from pathlib import Path

import yaml
from hydra.errors import CompactHydraException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from rlhf.atomic import RunRefused, write_text
from rlhf.logging import redact

REPO_DIR = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)
CONF_DIR = str(REPO_DIR / "conf")  # absolute, so the entrypoints find it from any working directory
OmegaConf.register_new_resolver("data_dir", lambda: str(REPO_DIR / "data"), replace=True)
OmegaConf.register_new_resolver("or_default", lambda value, default: value or default, replace=True)


class BadInput(CompactHydraException):
    """A refusal of bad input: Hydra prints its message alone (HYDRA_FULL_ERROR=1: with the traceback) and the
    process exits with code 1."""


def reported(main):
    """An entrypoint whose refusals (ValueError, OSError, RunRefused: a bad setting, file, row or run
    directory, each raised with a message naming it) reach the console as that message, not a traceback;
    other errors (torch's RuntimeErrors, out of memory) keep theirs."""
    @functools.wraps(main)
    def run(cfg):
        try:
            return main(cfg)
        except (ValueError, OSError, RunRefused, FloatingPointError) as error:
            raise BadInput(f"{type(error).__name__}: {error}") from error
    return run


def build(node: DictConfig, **kwargs):
    """`hydra.utils.instantiate` with nested configs converted to plain dicts and lists, so components never
    see a DictConfig (e.g. `policy.lora` reaches peft as a dict it can serialise)."""
    return instantiate(node, _convert_="all", **kwargs)


def quiet_libraries() -> None:
    """Keep the console to our own progress bars and messages: no per-file bars or INFO lines of libraries."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    # "Removed shared tensor ... while saving": tied input/output embeddings, saved once and re-tied on load
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)


# user=none's target (nobody speaks after the policy), which the entrypoints refuse where a user is needed
NO_USER = "rlhf.users.none.NoUser"
# What a run directory holds once it has results to resume from or return
RESULTS = ("checkpoints", "final_metrics.json", "chunks", "eval.json", "dataset", "dialogues")
# Settings that change where or how often things are written, not what is computed (a run directory moved
# elsewhere resumes; conf/run_dirs.yaml keeps
# them out of the run directory's name too)
UNCHECKED = ("run_dir", "logger", "launcher", "resume", "trainer.log_every", "trainer.eval_every", "trainer.checkpoint_every",
             "trainer.keep_checkpoints", "push_to_hub", "push_private", "num_threads", "trainer.reference_cache",
             "trainer.train.reference_cache", "shared_stages")


def flat(config, prefix: str = "") -> dict[str, object]:
    if isinstance(config, dict):
        return {k: v for key, value in config.items() for k, v in flat(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: config}


def check_same_settings(run_dir: Path, config: dict) -> None:
    """A run directory that already holds results resumes (or returns) them only under the settings that made
    them: a changed setting is refused, naming every key that differs, unless `resume=ignore_config_change`
    (then the old state continues under the new settings, and the log says which changed)."""
    if config.get("resume", "check") not in ("check", "ignore_config_change"):
        raise ValueError(f"resume={config['resume']!r} is not one of check, ignore_config_change")
    saved = run_dir / "config.yaml"
    if not saved.is_file() or not any((run_dir / name).exists() for name in RESULTS):
        return
    before, now = flat(yaml.safe_load(saved.read_text()) or {}), flat(config)
    changed = sorted(k for k in before.keys() | now.keys()
                     if before.get(k, "<unset>") != now.get(k, "<unset>") and not k.startswith(UNCHECKED))
    if not changed:
        return
    def shown(value) -> str:
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."

    lines = "\n  ".join(f"{k}: {shown(before.get(k, '<unset>'))} -> {shown(now.get(k, '<unset>'))}"
                         for k in changed[:40])
    more = f"\n  ... and {len(changed) - 40} more" if len(changed) > 40 else ""
    if config.get("resume") == "ignore_config_change":
        log.warning("resume=ignore_config_change: %s continues under changed settings:\n  %s%s", run_dir, lines, more)
        return
    raise ValueError(f"{run_dir} holds results made with other settings, which a resume would silently reuse:\n  "
                     f"{lines}{more}\nUse another run directory, run with the saved settings ({saved}), or pass "
                     "resume=ignore_config_change to continue the old state under the new settings")


ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
KEY_LIKE = re.compile(r"^(sk-|ghp_[A-Za-z0-9]{20}|gho_[A-Za-z0-9]{20}|xox[abp]-|AKIA[0-9A-Z]{16}$|hf_[A-Za-z0-9]{30})"
                      r"|^(?=.*[a-z])(?=.*[A-Z])(?=.*[0-9])[A-Za-z0-9_\-]{24,}$")


def key_name_problems(config, prefix: str = "") -> list[str]:
    """The `*_api_key_env` settings whose value is not the NAME of an environment variable, or looks like
    a key itself (which would then land in the run directory's name, its config and the logs)."""
    if isinstance(config, dict):
        found = []
        for key, value in config.items():
            path = f"{prefix}{key}"
            if str(key).endswith("api_key_env") and value is not None:
                if isinstance(value, str) and value.startswith("${"):
                    continue  # an interpolation: checked once resolved
                if not isinstance(value, str) or not ENV_NAME.fullmatch(value) or KEY_LIKE.search(value):
                    found.append(path)
            else:
                found += key_name_problems(value, path + ".")
        return found
    if isinstance(config, list):
        return [p for i, v in enumerate(config) for p in key_name_problems(v, f"{prefix}{i}.")]
    return []


def check_key_names(config: dict, run_dir: Path | None) -> None:
    """Refuse a key given where the name of its environment variable belongs, and remove what Hydra has
    already written of it (the run folder it made for this command, or its `.hydra/` record)."""
    wrong = key_name_problems(config)
    if not wrong:
        return
    if run_dir is not None and run_dir.is_dir():
        made_now = (run_dir / ".hydra").is_dir() and all(p.name == ".hydra" or p.suffix == ".log"
                                                         for p in run_dir.iterdir())
        shutil.rmtree(run_dir if made_now else run_dir / ".hydra", ignore_errors=True)
    raise ValueError(f"{', '.join(wrong)} must be the NAME of the environment variable holding the key (e.g. "
                     "OPENAI_API_KEY), not the key: set the variable and pass its name. It was not written to "
                     "config.yaml, and Hydra's record of this command (.hydra/) was removed; clear it from your shell "
                     "history (and a sweep directory's multirun.yaml) too")


# Ranges of settings, wherever a component takes them (checked before any data or model is loaded)
AT_LEAST_ONE = ("batch_size", "gradient_accumulation_steps", "max_steps", "epochs", "prompts_per_step",
                "samples_per_prompt", "ppo_epochs", "num_minibatches", "micro_batch_size", "chunk_size",
                "num_samples", "train_limit", "eval_limit", "num_prompts", "max_new_tokens", "max_length",
                "max_turns", "num_candidates", "iterations", "update_epochs", "num_eval_prompts", "log_every")
NULLABLE = ("max_steps", "train_limit", "eval_limit", "num_prompts", "max_length")
AT_LEAST_ZERO = ("warmup_steps", "weight_decay", "eval_every", "checkpoint_every", "keep_checkpoints", "temperature",
                 "window")
POSITIVE = ("learning_rate", "max_grad_norm")
FRACTIONS = ("max_failed_fraction", "minority_proportion", "proportion")
CHOICES = {"mixed_precision": ("no", "fp16", "bf16", "fp8"), "truncation": ("left", "right", "drop", "error"),
           "reference": ("precompute", "frozen_copy", "disabled_adapter"), "resume": ("check", "ignore_config_change"),
           "pair_forward": ("joint", "split", "shared_prompt")}


def _accepts(annotation, value) -> bool | None:
    """Whether `value` fits a simple annotation (None: not a simple one, not checked)."""
    if annotation is inspect.Parameter.empty:
        return None
    options = typing.get_args(annotation) if isinstance(annotation, types.UnionType) \
        or typing.get_origin(annotation) is typing.Union else (annotation,)
    if not set(options) <= {int, float, bool, str, type(None)}:
        return None
    return any(value is None if t is type(None) else isinstance(value, bool) if t is bool
               else isinstance(value, t) and not isinstance(value, bool) if t is int
               else isinstance(value, (int, float)) and not isinstance(value, bool) if t is float
               else isinstance(value, t) for t in options)


def _type_name(annotation) -> str:
    names = [getattr(t, "__name__", str(t)) for t in (typing.get_args(annotation) or (annotation,))]
    return " or ".join("null" if n == "NoneType" else "a number" if n == "float" else f"an {n}" if n == "int"
                       else f"a {n}" for n in names)


def setting_problems(config, path: str = "") -> list[str]:
    """What is wrong with the settings of every component in `config` (a resolved dict): a value of the wrong
    type for its parameter (`trainer.learning_rate=abc`), out of its range (`trainer.batch_size=-4`, `nan`), a
    learning-rate schedule that does not exist. Each names the full key."""
    found: list[str] = []
    if isinstance(config, list):
        return [p for i, v in enumerate(config) for p in setting_problems(v, f"{path}{i}.")]
    if not isinstance(config, dict):
        return found
    parameters: dict = {}
    if isinstance(config.get("_target_"), str):
        try:
            target = get_object(config["_target_"])
            hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
            parameters = {name: hints.get(name, inspect.Parameter.empty)
                          for name in inspect.signature(target).parameters}
        except Exception:  # an unknown target is instantiate's to report; unreadable hints are not checked
            parameters = {}
    for key, value in config.items():
        where = f"{path}{key}"
        if str(key).startswith("_"):
            continue
        if isinstance(value, (dict, list)):
            found += setting_problems(value, where + ".")
            continue
        if key in parameters and _accepts(parameters[key], value) is False:
            found.append(f"{where}={value!r} must be {_type_name(parameters[key])}")
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if number and key in AT_LEAST_ONE + AT_LEAST_ZERO + POSITIVE and not math.isfinite(value):
            found.append(f"{where}={value} must be a finite number")
        elif number and key in AT_LEAST_ONE and value < 1:
            found.append(f"{where}={value} must be >= 1{' (or null)' if key in NULLABLE else ''}")
        elif number and key in AT_LEAST_ZERO and value < 0:
            found.append(f"{where}={value} must be >= 0")
        elif number and key in POSITIVE and value <= 0:
            found.append(f"{where}={value} must be > 0")
        elif number and key in FRACTIONS and not 0 <= value <= 1:
            found.append(f"{where}={value} must be in [0, 1]")
        elif key in CHOICES and isinstance(value, str) and value not in CHOICES[key]:
            found.append(f"{where}={value!r} is not one of {list(CHOICES[key])}")
        elif key == "lr_scheduler" and isinstance(value, str):
            from rlhf.trainers.schedules import SCHEDULES, known_schedules

            known = SCHEDULES if value in SCHEDULES else known_schedules()
            if value not in known:
                found.append(f"{where}={value!r} is not a learning-rate schedule; one of {known}")
    return found


def check_settings(config: dict) -> None:
    """Refuse bad settings (`setting_problems`) and a non-integer seed, all of them in one message, before
    any work starts."""
    wrong = setting_problems({k: v for k, v in config.items() if k != "hydra"})
    seed = config.get("seed")
    prompts = config.get("num_prompts")
    if prompts is not None and not (isinstance(prompts, int) and not isinstance(prompts, bool)):
        wrong.append(f"num_prompts={prompts!r} must be an integer or null (all)")
    if "seed" in config and not (isinstance(seed, int) and not isinstance(seed, bool)):
        wrong = [f"seed={seed!r} must be an integer"] + [w for w in wrong if not w.endswith(f".seed={seed!r} must be an int")]
    if wrong:
        raise ValueError("bad settings:\n  " + "\n  ".join(wrong))


def unset_keys(config, prefix: str = "") -> list[str]:
    """The keys left `???` in a config, found without resolving it (OmegaConf.missing_keys resolves, and fails on
    an interpolation of an unset key instead of naming it)."""
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=False)
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else ()
    found = []
    for key, value in items:
        path = f"{prefix}.{key}" if prefix else str(key)
        found += [path] if value == "???" else unset_keys(value, path)
    return found


def hydra_output_dir(cfg: DictConfig) -> Path | None:
    """The folder Hydra made for this command (where it wrote `.hydra/`), or the configured run_dir."""
    from hydra.core.hydra_config import HydraConfig

    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:  # composed outside a Hydra app
        try:
            return Path(str(cfg.run_dir))
        except Exception:
            return None


def cpu_threads(setting: int | None) -> int:
    """torch's CPU threads for `num_threads`: the setting, or (null) the CPUs this process may run on
    (`os.sched_getaffinity`), at most SLURM_CPUS_PER_TASK inside a SLURM job (a cluster that does not bind
    a job to its CPUs shows it all of the node's, and jobs sharing a node would then oversubscribe it)."""
    if setting is not None:
        if setting < 1:
            raise ValueError(f"num_threads={setting} must be >= 1 (or null: the CPUs this process may use)")
        return setting
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return min(cpus, int(slurm)) if slurm.isdigit() and int(slurm) > 0 else cpus


def set_threads(setting: int | None) -> None:
    import torch

    threads = cpu_threads(setting)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    log.info("torch uses %d CPU threads (num_threads=%s)", threads, setting)


def prepare_run(cfg: DictConfig) -> dict:
    """Seed Python, NumPy and torch with `cfg.seed` (before any model is built, so e.g. LoRA initialisation
    is reproducible), resolve `cfg`, write it (secrets redacted) to `<run_dir>/config.yaml` atomically, and
    return it as a dict."""
    check_key_names(OmegaConf.to_container(cfg, resolve=False), hydra_output_dir(cfg))  # before any other error
    quiet_libraries()
    missing = unset_keys(cfg)
    if missing:
        raise ValueError(f"missing values (??? in the config): {', '.join(missing)}; set them on the command line, "
                         f"e.g. {missing[0]}=...")
    config = redact(OmegaConf.to_container(cfg, resolve=True))
    run_dir = Path(config["run_dir"])
    check_key_names(config, run_dir)
    check_settings(config)
    from accelerate.utils import set_seed

    set_threads(config.get("num_threads"))
    set_seed(cfg.seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    check_same_settings(run_dir, config)
    if int(os.environ.get("RANK", "0")) == 0:
        write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    return config
