"""Checkpoint folders: the manifest catches every damage, resume falls back past damaged ones, and the loop's
own state round-trips through JSON and safetensors (nothing pickled)."""

import json
import logging

import pytest
import torch
from transformers import get_scheduler

from accelerate import Accelerator

from rlhf.trainers.checkpoint import decode, encode, latest_checkpoint, problems, save_checkpoint, write_manifest


def folder(path, step: int):
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    (path / "trainer_state.json").write_text(json.dumps({"step": step}))
    (path / "sub").mkdir()
    (path / "sub" / "shard.bin").write_bytes(b"x" * 100)
    write_manifest(path)
    return path


def test_an_intact_checkpoint_has_no_problems(tmp_path):
    assert problems(folder(tmp_path / "c", 1)) == []


@pytest.mark.parametrize("damage, expected", [
    (lambda c: (c / "model.safetensors").write_bytes(b"\x00" * 10), "model.safetensors: 10 bytes, 1024 written"),
    (lambda c: (c / "trainer_state.json").write_text('{"step": 7}'), "trainer_state.json: contents changed"),
    (lambda c: (c / "sub" / "shard.bin").unlink(), "sub/shard.bin: missing"),
    (lambda c: (c / "custom_checkpoint_0.pkl").write_bytes(b"planted"), "custom_checkpoint_0.pkl: not in the manifest"),
    (lambda c: (c / "manifest.json").unlink(), "no manifest.json"),
    (lambda c: (c / "manifest.json").write_text('{"files": '), "unreadable manifest.json"),
])
def test_every_kind_of_damage_is_named(tmp_path, damage, expected):
    checkpoint = folder(tmp_path / "c", 1)
    damage(checkpoint)
    assert any(p.startswith(expected) for p in problems(checkpoint)), problems(checkpoint)


def test_resume_falls_back_to_the_newest_valid_checkpoint_and_names_the_damaged_one(tmp_path, caplog):
    root = tmp_path / "checkpoints"
    older = folder(root / "step-00000002", 2)
    newer = folder(root / "step-00000004", 4)
    assert latest_checkpoint(tmp_path) == newer
    (newer / "model.safetensors").write_bytes(b"{bad header")
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(tmp_path) == older
    assert f"{newer}: model.safetensors: 11 bytes, 1024 written" in caplog.text
    (older / "trainer_state.json").write_text('{"st')
    with pytest.raises(RuntimeError, match="no valid checkpoint to resume from; every one is damaged") as e:
        latest_checkpoint(tmp_path)
    assert str(older) in str(e.value) and str(newer) in str(e.value)
    assert latest_checkpoint(tmp_path / "elsewhere") is None  # no checkpoint at all: start from the beginning


def test_optimizer_scheduler_and_generator_states_round_trip_without_pickle():
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=2, num_training_steps=10)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    generator = torch.Generator().manual_seed(3)
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "generator": generator.get_state(), "pairs": [([{"role": "user", "content": "a"}], [])], "n": 2}
    tensors: dict = {}
    text = json.dumps(encode(state, tensors), allow_nan=False)  # plain JSON: nothing but data
    back = decode(json.loads(text), tensors)
    assert back["pairs"] == state["pairs"] and back["n"] == 2
    assert torch.equal(back["generator"], state["generator"])
    assert set(back["optimizer"]["state"]) == {0, 1}  # integer parameter ids survive JSON's string keys
    fresh = torch.nn.Linear(3, 2)
    restored = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    restored.load_state_dict(back["optimizer"])
    for new, old in zip(fresh.parameters(), model.parameters()):
        assert torch.equal(restored.state[new]["exp_avg"], optimizer.state[old]["exp_avg"])
    other = get_scheduler("cosine", restored, num_warmup_steps=2, num_training_steps=10)
    other.load_state_dict(back["scheduler"])
    assert other.get_last_lr() == scheduler.get_last_lr() and other.last_epoch == scheduler.last_epoch
    with pytest.raises(TypeError, match="cannot save a object in a checkpoint"):
        encode({"x": object()}, {})


def test_a_damaged_newer_checkpoint_never_rotates_out_the_ones_written_after_the_resume(tmp_path):
    root = tmp_path / "checkpoints"
    folder(root / "step-00000100", 100)
    damaged = folder(root / "step-00000150", 150)
    (damaged / "model.safetensors").write_bytes(b"cut")
    assert latest_checkpoint(tmp_path) == root / "step-00000100"
    save_checkpoint(Accelerator(cpu=True), tmp_path, 110, {}, keep=1)  # the resumed run goes on
    assert sorted(p.name for p in root.iterdir()) == ["damaged-step-00000150", "step-00000110"]
    assert latest_checkpoint(tmp_path) == root / "step-00000110"
