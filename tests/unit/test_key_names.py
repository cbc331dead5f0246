"""A key given where the name of its environment variable belongs is refused, and nothing keeps it."""

import pytest

from rlhf.config import check_key_names, key_name_problems


@pytest.mark.parametrize("value", ["sk-proj-abc123", "hf_AbCdEfGhIjKlMnOpQrStUvWxYz0123456",
                                   "ghp_AbCdEfGhIjKlMnOpQrSt12", "AKIAIOSFODNN7EXAMPLE", "Ab1Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr",
                                   "my key", "OPENAI-KEY", 123])
def test_key_like_values_are_refused(value):
    config = {"user": {"client": {"api_key_env": value}}, "reward": {"judges": [{"api_key_env": value}]}}
    assert key_name_problems(config) == ["user.client.api_key_env", "reward.judges.0.api_key_env"]


@pytest.mark.parametrize("value", ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "MY_KEY_2", "together_api_key", "HF_TOKEN",
                                   "hf_token", "my_team_openai_api_key_v2", "${oc.env:KEY_NAME}", None])
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
    mine = tmp_path / "mine"  # a folder Hydra did not make (no .hydra/) is left alone
    mine.mkdir()
    with pytest.raises(ValueError):
        check_key_names({"client": {"api_key_env": "sk-proj-abc123"}}, mine)
    assert mine.exists()
    used = tmp_path / "used"  # a run directory with results keeps them; only Hydra's record of this command goes
    (used / ".hydra").mkdir(parents=True)
    (used / "final_metrics.json").write_text("{}")
    with pytest.raises(ValueError):
        check_key_names({"client": {"api_key_env": "sk-proj-abc123"}}, used)
    assert (used / "final_metrics.json").exists() and not (used / ".hydra").exists()
