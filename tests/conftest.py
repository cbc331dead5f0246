"""Shared fixtures: the tiny policy is built once per test session into a temporary cache."""

import pytest

from rlhf.models.tiny import tiny_model_path


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tiny-cache"))


@pytest.fixture(scope="session")
def tiny_path(tiny_cache) -> str:
    """Path of a saved tiny model + tokenizer (HF format), built offline."""
    return str(tiny_model_path(tiny_cache))
