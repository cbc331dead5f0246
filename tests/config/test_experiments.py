"""The experiments of conf/experiment/: every stage of an experiment of stages composes and passes the settings
checks (values the experiment leaves to the command line set to a placeholder), each published setup names
its CPU twin, and the twins are counted (tests/smoke/test_experiments.py runs each)."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rlhf.config import CONF_DIR, unset_keys
from rlhf.pipeline import check_stages

EXPERIMENTS = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").rglob("*.yaml"))
TWINS = [name for name in EXPERIMENTS if name.endswith("_debug")]
# Adding or removing a twin must update this number (and tests/smoke/test_experiments.py's checks).
NUM_TWINS = 14
# The general-purpose experiments, which are not a published setup (so they have no twin).
GENERAL = {"debug", "sft_dialogues", "maxmin_rm", "sharedrep_rm", "sharedrep_proportion"}


def composed(name: str, *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", [f"experiment={name}", "run_dir=/nowhere", *overrides])
        unset = [f"{key}=/somewhere" for key in unset_keys(cfg)]
        return compose("train", [f"experiment={name}", "run_dir=/nowhere", *overrides, *unset])


def test_the_twins_are_counted():
    assert len(TWINS) == NUM_TWINS, TWINS


@pytest.mark.parametrize("name", sorted(set(EXPERIMENTS) - GENERAL - set(TWINS)))
def test_a_published_setup_names_its_twin(name):
    text = (Path(CONF_DIR) / "experiment" / f"{name}.yaml").read_text()
    twins = [twin for twin in TWINS if f"experiment={twin}" in text]
    assert twins, f"{name}: its comment names no CPU twin (experiment=<name>_debug)"


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if composed(n).stages])
def test_every_stage_composes(name):
    cfg = composed(name)
    stages = OmegaConf.to_container(cfg.stages, resolve=True)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        commands = check_stages(stages, Path("/nowhere"))
    assert list(commands) == [n for n, stage in stages.items() if stage is not None] and all(commands.values())
    # a stage reads an earlier stage's output, by path inside this run directory, or is a side-by-side
    # baseline: it starts from the first stage's policy (alol_hha_baselines)
    first_policy = [o for o in next(iter(commands.values())) if o.startswith("policy.path=")]
    for later, overrides in list(commands.items())[1:]:
        earlier = list(commands)[:list(commands).index(later)]
        reads = any(f"/nowhere/{e}/" in o for o in overrides for e in earlier)
        assert reads or (first_policy and first_policy[0] in overrides), later


def test_sharedrep_gives_each_reward_model_its_own_architecture():
    stages = composed("sharedrep_hh").stages
    maxmin, sharedrep = stages.rm_maxmin.overrides, stages.rm_sharedrep.overrides
    assert maxmin.algo == "maxmin_rm" and "policy.shared_dim" not in maxmin  # per-group heads, no shared layer
    assert sharedrep.algo == "sharedrep_rm" and sharedrep["policy.shared_dim"] == 16
    assert stages.rl_maxmin.overrides["reward.path"] == "/nowhere/rm_maxmin/model"
    assert stages.rl_sharedrep.overrides["reward.path"] == "/nowhere/rm_sharedrep/model"
    sweep = composed("sharedrep_hh", "data.proportion=0.05").stages
    assert sweep.rm_maxmin.overrides["data.proportion"] == sweep.rm_sharedrep.overrides["data.proportion"] == 0.05
