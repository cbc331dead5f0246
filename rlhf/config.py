"""Config helpers shared by the entrypoints: OmegaConf resolvers and the run directory's config.yaml.

Importing this module registers the resolvers:
- `${data_dir:}`: the bundled data folder of this checkout (`<repo>/data`);
- `${or_default:a,b}`: a, or b when a is empty (names the run directory of a run with no overrides).
"""

import logging
import os
from pathlib import Path

import datasets
import transformers
import yaml
from accelerate.utils import set_seed
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from rlhf.atomic import write_text
from rlhf.logging import redact

REPO_DIR = Path(__file__).resolve().parents[1]
CONF_DIR = str(REPO_DIR / "conf")  # absolute, so the entrypoints find it from any working directory
OmegaConf.register_new_resolver("data_dir", lambda: str(REPO_DIR / "data"), replace=True)
OmegaConf.register_new_resolver("or_default", lambda value, default: value or default, replace=True)


def build(node: DictConfig, **kwargs):
    """`hydra.utils.instantiate` with nested configs converted to plain dicts and lists, so components never
    see a DictConfig (e.g. `policy.lora` reaches peft as a dict it can serialise)."""
    return instantiate(node, _convert_="all", **kwargs)


def quiet_libraries() -> None:
    """Keep the console to our own progress bars and messages: no per-file bars or INFO lines of libraries."""
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    logging.getLogger("accelerate").setLevel(logging.WARNING)
    # "Removed shared tensor ... while saving": tied input/output embeddings, saved once and re-tied on load
    logging.getLogger("accelerate.utils.other").setLevel(logging.ERROR)


def prepare_run(cfg: DictConfig) -> dict:
    """Seed Python, NumPy and torch with `cfg.seed` (before any model is built, so e.g. LoRA initialisation
    is reproducible), resolve `cfg`, write it (secrets redacted) to `<run_dir>/config.yaml` atomically, and
    return it as a dict."""
    quiet_libraries()
    set_seed(cfg.seed)
    config = redact(OmegaConf.to_container(cfg, resolve=True))
    run_dir = Path(config["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("RANK", "0")) == 0:
        write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    return config
