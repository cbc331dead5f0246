"""Policy loading (LoRA, errors, saving) and the three reference-policy modes."""

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from rlhf.data.examples import build_examples
from rlhf.data.tokenize import Tokenization
from rlhf.models.logprobs import sequence_logps, token_logprobs
from rlhf.models.policy import load_policy
from rlhf.trainers.reference import make_reference

LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
ROWS = [
    {"prompt": "Tell me about the garden.", "chosen": "Happy to help with data.", "rejected": "It is a box."},
    {"prompt": "What is a bridge for?", "chosen": "First, safe information.", "rejected": "Blah near road."},
    {"prompt": "Why a rocket?", "chosen": "Best experience to create.", "rejected": "Maybe not so."},
]


def examples(tokenizer):
    return {"train": build_examples(ROWS, "preference", "pair", tokenizer, Tokenization(64), "rows")}


def perturb(model) -> None:
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))


def test_lora_trains_only_adapter_weights(tiny_path):
    policy = load_policy(tiny_path, lora=LORA)
    trainable = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert policy.has_adapter and trainable and all("lora_" in n for n in trainable)


@pytest.mark.parametrize("mode", ["disabled_adapter", "frozen_copy", "precompute"])
def test_reference_is_the_initial_policy(tiny_path, tmp_path, mode):
    """Whatever the mode, after the policy moves the reference still gives the initial policy's log-probs."""
    policy = load_policy(tiny_path, lora=LORA if mode == "disabled_adapter" else None)
    ex = examples(policy.tokenizer)
    batch = ex["train"].batch([0, 1, 2])
    with torch.no_grad():
        initial, _ = sequence_logps(policy.model, batch.concatenated())  # (2B,)
    reference = make_reference(mode, policy, ex, "pair", 1.0, tmp_path, batch_size=2)
    perturb(policy.model)
    with torch.no_grad():
        moved, _ = sequence_logps(policy.model, batch.concatenated())
    assert not torch.allclose(moved, initial)
    out = reference(batch, "train")
    torch.testing.assert_close(torch.cat([out["chosen_logps"], out["rejected_logps"]]), initial, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["frozen_copy", "precompute"])
def test_per_token_reference_of_sequences(tiny_path, tmp_path, mode):
    """Sequence batches get (N, T-1) reference log-probs equal to the initial policy's on response positions
    (the only ones log-probs are computed for), in whatever batch (and padding width) an example later lands."""
    policy = load_policy(tiny_path)
    ex = {"train": build_examples(ROWS, "preference", "sequence", policy.tokenizer, Tokenization(64), "rows",
                                  responses=("chosen", "rejected"))}
    assert len(ex["train"]) == 6 and ex["train"].rows == [0, 0, 1, 1, 2, 2]
    reference = make_reference(mode, policy, ex, "sequence", 0.8, tmp_path, batch_size=4)
    perturb(policy.model)
    for positions in ([0, 1, 2, 3, 4, 5], [5, 2]):
        batch = ex["train"].batch(positions)
        with torch.no_grad():
            initial = token_logprobs(load_policy(tiny_path).model, batch, temperature=0.8)  # (N, T-1)
        got = reference(batch, "train")["logprobs"]
        response = batch.response_mask[:, 1:]
        torch.testing.assert_close(got[response], initial[response], rtol=1e-5, atol=1e-5)
        assert torch.all(got[~batch.attention_mask[:, 1:].bool()] == 0)


def test_precomputed_reference_is_reused_not_recomputed(tiny_path, tmp_path):
    policy = load_policy(tiny_path)
    ex = examples(policy.tokenizer)
    def table(examples):
        return make_reference("precompute", policy, examples, "pair", 1.0, tmp_path, 2).tables["train"]["chosen_logps"][0]

    first = table(ex).clone()
    perturb(policy.model)  # as after training: a resumed run must not recompute from these weights
    assert torch.equal(first, table(ex))
    other = {"train": build_examples(ROWS[:2], "preference", "pair", policy.tokenizer, Tokenization(64), "rows")}
    assert not torch.allclose(table(other), first[:2])  # different data: recomputed with the current weights
    (tmp_path / "reference_outputs.json").write_text('{"fingerp')  # a record cut short: recomputed, not a crash
    assert not torch.allclose(table(ex), first)
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("mode", ["frozen_copy", "precompute"])
def test_reference_runs_under_the_training_precision(tiny_path, tmp_path, mode):
    """Under trainer.mixed_precision=bf16 the reference's log-probs are the autocast policy's (so the first
    step's log-ratios are zero), not the float32 ones; precomputed ones are keyed by the precision."""
    policy = load_policy(tiny_path)
    ex = examples(policy.tokenizer)
    batch = ex["train"].batch([0, 1, 2])
    with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        autocast, _ = sequence_logps(policy.model, batch.concatenated())
    with torch.no_grad():
        full, _ = sequence_logps(policy.model, batch.concatenated())
    assert not torch.allclose(autocast, full, rtol=0, atol=1e-6)

    def logps(precision):
        out = make_reference(mode, policy, ex, "pair", 1.0, tmp_path, 2, precision=precision)(batch, "train")
        return torch.cat([out["chosen_logps"], out["rejected_logps"]])

    torch.testing.assert_close(logps("bf16"), autocast, rtol=0, atol=1e-6)
    torch.testing.assert_close(logps("no"), full, rtol=0, atol=1e-6)  # not the bf16 tables of the same run dir
    with pytest.raises(ValueError, match="trainer.mixed_precision='fp8' is not one a reference policy can run"):
        make_reference(mode, policy, ex, "pair", 1.0, tmp_path, 2, precision="fp8")


def test_reference_mode_errors(tiny_path, tmp_path):
    policy = load_policy(tiny_path)
    with pytest.raises(ValueError, match="trainer.reference"):
        make_reference("bogus", policy, examples(policy.tokenizer), "pair", 1.0, tmp_path, 2)
    with pytest.raises(ValueError, match="needs a LoRA policy"):
        make_reference("disabled_adapter", policy, examples(policy.tokenizer), "pair", 1.0, tmp_path, 2)


def test_save_merges_lora_and_reloads_same_function(tiny_path, tmp_path):
    policy = load_policy(tiny_path, lora=LORA)
    perturb(policy.model)
    batch = examples(policy.tokenizer)["train"].batch([0, 1]).concatenated()
    with torch.no_grad():
        expected = policy.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    policy.save(tmp_path / "model")
    assert (tmp_path / "model" / "adapter" / "adapter_model.safetensors").exists()
    assert (tmp_path / "model" / "model.safetensors").exists()
    reloaded = load_policy(str(tmp_path / "model"))
    assert not reloaded.has_adapter
    with torch.no_grad():
        got = reloaded.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_load_errors(tiny_path, tmp_path):
    with pytest.raises(ValueError, match="policy.dtype"):
        load_policy(tiny_path, dtype="float8")
    no_template = tmp_path / "no_template"
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    tokenizer.chat_template = None
    tokenizer.save_pretrained(no_template)
    for f in Path(tiny_path).glob("*.json"):
        if f.name.startswith(("config", "generation")):
            (no_template / f.name).write_bytes(f.read_bytes())
    (no_template / "model.safetensors").write_bytes((Path(tiny_path) / "model.safetensors").read_bytes())
    (no_template / "chat_template.jinja").unlink(missing_ok=True)
    with pytest.raises(ValueError, match="no chat template"):
        load_policy(str(no_template))


def test_gradient_checkpointing_trains_the_same(tiny_path):
    """Checkpointed activations are recomputed in backward: same loss gradient as without."""
    grads = []
    for checkpointing in (False, True):
        policy = load_policy(tiny_path, gradient_checkpointing=checkpointing)
        policy.model.train()
        assert policy.model.is_gradient_checkpointing == checkpointing
        batch = examples(policy.tokenizer)["train"].batch([0, 1, 2]).concatenated()
        logps, _ = sequence_logps(policy.model, batch)
        logps.sum().backward()
        grads.append(policy.model.model.layers[0].self_attn.q_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-5, atol=1e-6)


def test_precomputed_reference_is_recomputed_when_the_stack_changes(tiny_path, tmp_path, monkeypatch):
    """Cached old-policy log-probs are keyed by the hardware/software stack (numerics differ across torch
    versions and devices, REFUEL's task.cluster): on another stack they are recomputed."""
    from rlhf.trainers import reference as module

    policy = load_policy(tiny_path)
    ex = examples(policy.tokenizer)

    def table():
        return make_reference("precompute", policy, ex, "pair", 1.0, tmp_path, 2).tables["train"]["chosen_logps"][0]

    first = table().clone()
    perturb(policy.model)
    assert torch.equal(table(), first)  # same stack: reused
    monkeypatch.setattr(module, "stack_fingerprint", lambda: {"torch": "another", "device": "gpu"})
    assert not torch.allclose(table(), first)  # another stack: recomputed (here from the moved weights)


def test_shared_reference_cache_is_keyed_by_the_weights_bytes_and_computed_once(tiny_path, tmp_path, monkeypatch):
    """trainer.reference_cache: runs with the same examples and initial weights compute the outputs once, also
    when they start together; other weights at the same path are computed afresh."""
    import threading

    from rlhf.trainers import reference as module

    computed = []
    compute = module._compute

    def counted(*args, **kwargs):
        computed.append(1)
        return compute(*args, **kwargs)

    monkeypatch.setattr(module, "_compute", counted)
    policy = load_policy(tiny_path)
    ex = examples(policy.tokenizer)
    shared = tmp_path / "shared"

    def table(run: str):
        ref = make_reference("precompute", policy, ex, "pair", 1.0, tmp_path / run, 2, str(shared))
        return ref.tables["train"]["chosen_logps"][0]

    for run in ("a", "b"):
        (tmp_path / run).mkdir()
    runs = [threading.Thread(target=table, args=(run,)) for run in ("a", "b")]  # two jobs of a sweep at once
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join()
    assert len(computed) == 1
    assert len(list(shared.glob("*.safetensors"))) == 1 and not list(shared.glob(".*.tmp"))
    first = table("a")
    assert torch.equal(table("b"), first) and len(computed) == 1  # each run reads its own copy
    (tmp_path / "c").mkdir()
    perturb(policy.model)  # other weights under the same path
    moved = table("c")
    assert len(computed) == 2 and not torch.allclose(moved, first)
