"""Every `rlhf-*` command in the README's bash blocks composes: its groups, options and keys exist (what
`--cfg job` checks), so a newcomer copying one gets a run, not a config error. Sweeps (`-m`) are composed
with the first value of each swept key; `<run>`-style placeholders stand for a path."""

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from rlhf.config import CONF_DIR
from tests.config.test_experiments import TWINS

README = Path(__file__).resolve().parents[2] / "README.md"
CONFIG = {"rlhf-train": "train", "rlhf-generate": "generate", "rlhf-eval": "eval"}


def readme_commands() -> list[str]:
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.split(" ", 1)[0] in CONFIG:
                commands.append(line)
    return commands


def first_of_sweep(override: str) -> str:
    key, sep, value = override.partition("=")
    if sep and "," in value and not value.startswith(("[", "{", "'", '"')):
        return f"{key}={value.split(',', 1)[0]}"
    return override


def test_the_readme_has_commands_for_every_entrypoint():
    found = readme_commands()
    assert len(found) >= 30 and {c.split(" ", 1)[0] for c in found} == set(CONFIG)


@pytest.mark.parametrize("line", readme_commands())
def test_readme_command_composes(line):
    words = shlex.split(re.sub(r"<[^>]*>", "placeholder", line), comments=True)
    entry, args = words[0], words[1:]
    sweep = "-m" in args or "--multirun" in args
    overrides = [first_of_sweep(a) if sweep else a for a in args if a not in ("-m", "--multirun")]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(CONFIG[entry], overrides=overrides, return_hydra_config=True)
    assert {"task", "policy", "backend"} <= set(cfg) and cfg.hydra.job.config_name == CONFIG[entry]


def test_the_quick_commands_are_the_twins_the_smoke_tier_runs():
    """The README's one-minute commands (`rlhf-train experiment=<twin>`) are what tests/smoke/test_experiments.py
    runs for real, one by one."""
    quick = {m.group(1) for c in readme_commands() if (m := re.fullmatch(r"rlhf-train experiment=(\w+_debug)(\s+#.*)?", c))}
    assert quick == set(TWINS)
