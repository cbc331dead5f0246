"""rlhf/pipeline.py without running a stage: overrides written in Hydra's grammar parse back to the same value,
and a bad stage is refused, named, before anything runs."""

from pathlib import Path

import pytest
from hydra import initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from rlhf.config import CONF_DIR
from rlhf.pipeline import check_stages, override_value, shared_root, shared_stages, stage_overrides

VALUES = ["outputs/train/experiment:sharedrep_debug+seed:1/sft/model", "/a path/with spaces", "it's", "back\\slash",
          "end\\", "a\\'b", "x=y,z", "null", "true", "", None, True, False, 3, 0.001, -2, [1, "a b"],
          {"trainer.max_steps": 4, "policy.path": "/x:y/z w"}]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_an_override_parses_back_to_its_value(value):
    parsed = OverridesParser.create().parse_override(f"key={override_value(value)}").value()
    assert parsed == value and type(parsed) is type(value)


def test_a_null_under_a_tilde_deletes_the_key():
    assert stage_overrides({"~reward": None, "reward.path": None, "seed": 3}) == ["~reward", "reward.path=null",
                                                                                   "seed=3"]


def stage(run="eval", **overrides):
    return {"run": run, "overrides": overrides}


@pytest.mark.parametrize("stages, message", [
    ({}, "needs at least one"),
    ({"a b": stage()}, "stages.a b: a stage's name is its folder"),
    ({"a": stage(run="serve")}, "stages.a: a stage has `run`"),
    ({"a": {"run": "eval", "overrides": {}, "needs": "b"}}, "stages.a: a stage has `run`"),
    ({"a": stage(), "b": stage(**{"trainer.max_stepz": 3}, run="train")}, "stages.b (rlhf-train): "),
    ({"a": stage(eval="nothing")}, "stages.a (rlhf-eval): "),
    ({"a": stage(run="train", **{"trainer.learning_rate": -1.0})}, "stages.a: bad settings"),
    ({"a": stage(run="train", **{"reward": "group_rm"})}, "stages.a: missing values (??? in the config): reward.path"),
    ({"a": stage(run="train", stages={"b": stage()})}, "stages.a: a stage is one run"),
    ({"a": stage(run="generate", **{"user": "api", "user.client.api_key_env": "sk-abcdefghijklmnopqrstuvwxyz123456"})},
     "api_key_env"),
])
def test_a_bad_stage_is_refused_by_name(stages, message, tmp_path):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"), pytest.raises(ValueError) as error:
        check_stages(stages, tmp_path)
    assert message in str(error.value)
    assert "sk-abcdefghij" not in str(error.value)


def test_good_stages_become_commands_in_order(tmp_path):
    stages = {"sft": stage(run="train", algo="sft", **{"trainer.max_steps": 2}),
              "look": stage(**{"policy.path": str(tmp_path / "run dir" / "sft" / "model")})}
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        commands = check_stages(stages, Path("outputs/x:y"))
    assert list(commands) == ["sft", "look"]
    assert commands["sft"] == ["algo=sft", "trainer.max_steps=2"]
    assert commands["look"] == [f"policy.path='{tmp_path / 'run dir' / 'sft' / 'model'}'"]


def test_stages_are_shared_by_their_command_with_paths_into_shared_stages_made_the_same(tmp_path):
    def homes_of(run_dir, **changes):
        stages = {"sft": stage(run="train", algo="sft", seed=0),
                  "samples": stage(run="generate", **{"policy.path": f"{run_dir}/sft/model", "seed": 0}),
                  "notes": stage(**{"policy.path": f"{run_dir}/sft/model", "out": str(run_dir)}),
                  "look": stage(**{"policy.path": f"{run_dir}/notes/model"}),
                  "skipped": None}
        for name, overrides in changes.items():
            stages[name]["overrides"] |= overrides
        return shared_stages(stages, run_dir, tmp_path / "shared")

    (a_stages, a), (b_stages, b) = homes_of(tmp_path / "a"), homes_of(tmp_path / "b")
    assert list(a) == ["sft", "samples", "notes", "look"]  # a stage left out is neither
    assert a["sft"] == b["sft"] and a["samples"] == b["samples"] and a["sft"].parent == tmp_path / "shared"
    assert a["sft"].name.startswith("sft-") and a["sft"] != a["samples"]
    # the path into the shared SFT stage is its shared folder's, the same for both runs
    assert a_stages["samples"]["overrides"]["policy.path"] == f"{a['sft']}/model"
    assert a_stages["samples"] == b_stages["samples"]
    # a stage that names its run's directory is the run's own, and so is one reading from it
    assert a["notes"] is None and a["look"] is None
    assert a_stages["look"]["overrides"]["policy.path"] == f"{tmp_path / 'a'}/notes/model"
    # another setting is another folder, for the stage and for the stages reading from it
    _, c = homes_of(tmp_path / "c", sft={"seed": 1})
    assert c["sft"] != a["sft"] and c["samples"] != a["samples"]
    # without a folder of shared stages, or for a stage begun in the run's own folder, nothing is shared
    assert set(shared_stages({"sft": stage(run="train")}, tmp_path / "a", None)[1].values()) == {None}
    (tmp_path / "d" / "sft").mkdir(parents=True)
    _, d = homes_of(tmp_path / "d")
    assert d["sft"] is None and d["samples"] is None


def test_the_folder_of_shared_stages(tmp_path):
    assert shared_root("auto", tmp_path / "runs" / "a") == (tmp_path / "runs" / "shared_stages").resolve()
    assert shared_root(str(tmp_path / "s"), tmp_path / "a") == (tmp_path / "s").resolve()
    assert shared_root(None, tmp_path) is None and shared_root(False, tmp_path) is None
    with pytest.raises(ValueError, match="shared_stages=3: auto, a folder, or null"):
        shared_root(3, tmp_path)
