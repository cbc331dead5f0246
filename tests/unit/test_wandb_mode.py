"""Which mode the wandb logger runs in: the config's, else WANDB_MODE, else online only with a key."""

import pytest

from rlhf.logging import WandbLogger


@pytest.mark.parametrize(("config", "env", "expected"), [
    (None, {}, "offline"),
    (None, {"WANDB_API_KEY": "k"}, "online"),
    (None, {"WANDB_API_KEY": "k", "WANDB_MODE": "offline"}, "offline"),  # the environment wins over the key
    (None, {"WANDB_MODE": "disabled"}, "disabled"),
    ("online", {"WANDB_MODE": "offline"}, "online"),  # a mode the config sets wins over the environment
])
def test_mode(monkeypatch, config, env, expected):
    for key in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert WandbLogger(mode=config).mode == expected
