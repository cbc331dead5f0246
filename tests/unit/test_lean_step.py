"""rlhf.backends.lean_step: the decode step's logits are bitwise the HF forward's (Llama and Qwen2, sdpa and
eager, with and without padding, GQA), the backend takes it where it may and calls the model where not."""

import logging

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
from transformers.cache_utils import DynamicCache

from rlhf.backends.hf import HFBackend
from rlhf.backends.lean_step import LeanStep, why_not
from rlhf.models.policy import load_policy

SIZES = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=128)


def model_of(architecture: str, attention: str, kv_heads: int = 4):
    torch.manual_seed(0)
    if architecture == "llama":
        config = LlamaConfig(**SIZES, num_key_value_heads=kv_heads, attention_bias=True)
        model = LlamaForCausalLM(config)
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**SIZES, num_key_value_heads=kv_heads))
    model.config._attn_implementation = attention
    return model.eval()


def decode_logits(model, attention_mask: torch.Tensor, steps: int, lean: bool) -> torch.Tensor:
    """Greedy decode after a left-padded prompt: the (B, steps, V) logits of each decode step."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, attention_mask.shape, generator=generator)
    positions = (attention_mask.cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    out = model(input_ids=ids, attention_mask=attention_mask, position_ids=positions, use_cache=True,
                cache=DynamicCache(config=model.config), logits_to_keep=1)
    cache, mask, position = out.cache, attention_mask, positions[:, -1:]
    token, step, logits = out.logits[:, -1:].argmax(-1), LeanStep(model), []
    for _ in range(steps):
        mask, position = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1), position + 1
        if lean:
            step_logits = step(token, position, mask, cache)
        else:
            step_logits = model(input_ids=token, attention_mask=mask, position_ids=position, use_cache=True,
                                cache=cache, logits_to_keep=1).logits
        logits.append(step_logits)
        token = step_logits[:, -1:].argmax(-1)
    return torch.cat(logits, dim=1)


@pytest.mark.parametrize("architecture", ["llama", "qwen2"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("padded", [True, False])
@torch.no_grad()
def test_lean_step_logits_are_the_forwards(architecture, attention, padded):
    model = model_of(architecture, attention)
    assert why_not(model) is None
    mask = torch.ones(3, 7, dtype=torch.long)
    if padded:
        mask[0, :3], mask[2, :1] = 0, 0
    theirs = decode_logits(model, mask, steps=6, lean=False)
    ours = decode_logits(model, mask, steps=6, lean=True)
    assert torch.equal(ours, theirs)


@torch.no_grad()
def test_lean_step_with_grouped_query_attention():
    model = model_of("llama", "sdpa", kv_heads=2)
    mask = torch.ones(2, 5, dtype=torch.long)
    mask[1, :2] = 0
    assert torch.equal(decode_logits(model, mask, 5, lean=True), decode_logits(model, mask, 5, lean=False))


def test_why_not_names_what_the_lean_step_does_not_take():
    model = model_of("llama", "sdpa")
    model.config._attn_implementation = "flex_attention"
    assert why_not(model) == "attention implementation 'flex_attention'"
    model = model_of("llama", "sdpa")
    model.model.layers[1].mlp.up_proj = nn.Sequential(model.model.layers[1].mlp.up_proj)
    assert why_not(model) == "replaced linear layers (LoRA or quantised)"
    model = model_of("llama", "sdpa")
    handle = model.model.layers[0].register_forward_hook(lambda *a: None)
    assert why_not(model) == "module hooks"
    handle.remove()
    assert why_not(model) is None
    assert why_not(nn.Linear(2, 2)) == "a Linear model"


def test_backend_takes_the_lean_step_where_it_may(tiny_path, caplog):
    policy = load_policy(tiny_path)
    conversations = [[{"role": "user", "content": "Hi"}], [{"role": "user", "content": "Tell me about the tree."}]]
    lean = HFBackend(policy.model, policy.tokenizer, seed=2, max_new_tokens=10)
    plain = HFBackend(policy.model, policy.tokenizer, seed=2, max_new_tokens=10, lean_step=False)
    assert lean._lean() and not plain._lean()
    expected = plain.generate(conversations, num_samples=2)
    assert lean.generate(conversations, num_samples=2) == expected
    handle = policy.model.model.layers[0].register_forward_pre_hook(lambda *a: None)
    try:
        with caplog.at_level(logging.INFO, logger="rlhf"):
            hooked = HFBackend(policy.model, policy.tokenizer, seed=2, max_new_tokens=10)
            assert hooked.generate(conversations, num_samples=2) == expected
            hooked.generate(conversations, num_samples=2)
    finally:
        handle.remove()
    said = [r.getMessage() for r in caplog.records if "lean step does not take module hooks" in r.getMessage()]
    assert len(said) == 1  # logged once


def test_a_hub_kernel_forward_is_not_taken(tiny_path):
    """Loaded models are kernelized by default; without a kernel for the device the forwards stay the
    originals (and the lean step runs); a replaced forward stops it."""
    model = load_policy(tiny_path).model
    assert why_not(model) is None
    norm = model.model.layers[0].input_layernorm
    norm.forward = norm.forward  # an instance-level forward, as kernelize sets one
    assert why_not(model) == "hub kernels"
