"""`rlhf-generate push_to_hub=<repo id>`: the finished dataset is pushed (private by default, token from
HF_TOKEN) and only when asked; `Dataset.push_to_hub` is replaced by a recorder, nothing leaves the machine."""

import datasets
import pytest
from hydra import compose, initialize_config_dir

from rlhf.config import CONF_DIR, BadInput
from rlhf.generate import main

TOKEN = "hf_test_0123456789abcdef"


@pytest.fixture
def pushes(monkeypatch, tiny_cache) -> list[dict]:
    """Every `Dataset.push_to_hub` call, as its rows and arguments."""
    calls = []

    def record(self, repo_id, **kwargs):
        calls.append({"rows": self.to_list(), "repo_id": repo_id, **kwargs})

    monkeypatch.setattr(datasets.Dataset, "push_to_hub", record)
    monkeypatch.setenv("RLHF_CACHE", tiny_cache)
    return calls


def generate(run_dir, *overrides: str) -> None:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("generate", overrides=[f"run_dir={run_dir}", "num_prompts=3", "mode.num_samples=2",
                                             "backend.max_new_tokens=4", *overrides])
    main(cfg)  # the undecorated task function, given a composed config


def test_nothing_is_pushed_without_the_key(pushes, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    generate(tmp_path)
    assert (tmp_path / "dataset").is_dir() and pushes == []


def test_the_finished_dataset_is_pushed_private_with_the_env_token(pushes, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    generate(tmp_path, "push_to_hub=me/tiny-samples")
    [push] = pushes
    assert push["repo_id"] == "me/tiny-samples"
    assert push["private"] is True and push["token"] == TOKEN
    assert push["rows"] == datasets.load_from_disk(str(tmp_path / "dataset")).to_list()
    assert len(push["rows"]) == 3
    # the token is in no file of the run (config.yaml included)
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and TOKEN.encode() in p.read_bytes()]

    generate(tmp_path / "public", "push_to_hub=me/tiny-samples", "push_private=false")
    assert pushes[1]["private"] is False


def test_a_push_without_token_or_with_a_bad_repo_id_fails_before_generating(pushes, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(BadInput, match="push_to_hub='me/tiny-samples' needs .* HF_TOKEN"):
        generate(tmp_path / "no_token", "push_to_hub=me/tiny-samples")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with pytest.raises(BadInput, match="push_to_hub='me/not a repo' is not a hub repository id"):
        generate(tmp_path / "bad_id", "push_to_hub='me/not a repo'")
    assert not list(tmp_path.rglob("chunks")) and pushes == []
