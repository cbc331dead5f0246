"""A key given where the name of its environment variable belongs is refused, and nothing keeps it."""

import pytest

from rlhf.config import check_key_names, key_name_problems


@pytest.mark.parametrize("value", ["sk-proj-abc123", "sk_live_x", "hf_AbCdEfGhIjKlMnOp", "ghp_abc",
                                   "a1b2c3d4e5f6a7b8c9d0e1f2a3b4", "my key", "OPENAI-KEY", 123])
def test_key_like_values_are_refused(value):
    config = {"user": {"client": {"api_key_env": value}}, "reward": {"judges": [{"api_key_env": value}]}}
    assert key_name_problems(config) == ["user.client.api_key_env", "reward.judges.0.api_key_env"]


@pytest.mark.parametrize("value", ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "MY_KEY_2", "together_api_key", None])
def test_variable_names_pass(value):
    assert key_name_problems({"client": {"api_key_env": value}}) == []


def test_the_run_folder_hydra_made_for_it_is_removed(tmp_path):
    fresh = tmp_path / "fresh"
    (fresh / ".hydra").mkdir(parents=True)
    (fresh / ".hydra" / "overrides.yaml").write_text("- user.client.api_key_env=sk-proj-abc123\n")
    (fresh / "train.log").write_text("")
    with pytest.raises(ValueError, match=r"user.client.api_key_env must be the NAME of the environment variable"
                                         r" holding the key") as e:
        check_key_names({"user": {"client": {"api_key_env": "sk-proj-abc123"}}}, fresh)
    assert "sk-proj-abc123" not in str(e.value) and not fresh.exists()
    used = tmp_path / "used"  # a run directory with results keeps them; only Hydra's record of this command goes
    (used / ".hydra").mkdir(parents=True)
    (used / "final_metrics.json").write_text("{}")
    with pytest.raises(ValueError):
        check_key_names({"client": {"api_key_env": "sk-proj-abc123"}}, used)
    assert (used / "final_metrics.json").exists() and not (used / ".hydra").exists()
