"""`policy.path` names a model directory, a training run directory (its model/) or a hub id."""

import pytest

from rlhf.models.policy import resolve_model_dir


def test_a_model_dir_a_run_dir_and_a_hub_id(tmp_path):
    (tmp_path / "run" / "model").mkdir(parents=True)
    (tmp_path / "run" / "model" / "config.json").write_text("{}")
    assert resolve_model_dir(str(tmp_path / "run")) == str(tmp_path / "run" / "model")
    assert resolve_model_dir(str(tmp_path / "run" / "model")) == str(tmp_path / "run" / "model")
    assert resolve_model_dir("meta-llama/Meta-Llama-3-8B-Instruct") == "meta-llama/Meta-Llama-3-8B-Instruct"


def test_what_holds_no_model_is_named(tmp_path):
    (tmp_path / "running").mkdir()
    (tmp_path / "running" / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(ValueError, match="is a run directory without a model/ yet"):
        resolve_model_dir(str(tmp_path / "running"))
    with pytest.raises(FileNotFoundError, match="holds no model"):
        resolve_model_dir(str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"policy.path='\./nowhere/model': no such directory"):
        resolve_model_dir("./nowhere/model")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        resolve_model_dir("outputs/train/run/model")
