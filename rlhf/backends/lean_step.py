"""A decode step for Llama-family causal LMs (`LlamaForCausalLM`, `Qwen2ForCausalLM`) that runs the model's own
weights and attention function without its module machinery: one new token per row, the KV cache updated in
place, the last position's logits returned.

The HF forward of a small model spends most of a decode step in Python around the tensor work: module calls
and their hooks, keyword deprecation and output-capturing wrappers, config lookups, output dataclasses and a
fresh attention mask per step. This step does the same tensor operations in the same order and dtypes (the
RMSNorm in float32, the rotary embedding module, the configured attention function with HF's own mask,
extended by one attended position per step), so its logits are bitwise the HF forward's (the tests check it
under sdpa and eager attention, with and without padding, on both architectures).

It runs only where that holds: the listed architectures, sdpa or eager attention, full attention in every
layer, plain `nn.Linear` / `nn.Embedding` modules (no LoRA or quantised layers), no hooks on any module (no
accelerate offload, no DeepSpeed partitioning) and no forward that a hub kernel replaced. Otherwise `why_not`
says why, and the decoding loop calls the model as usual.
"""

import torch
import torch.nn.functional as F
from torch import nn

ARCHITECTURES = {"LlamaForCausalLM": ("LlamaDecoderLayer", "LlamaRMSNorm"),
                 "Qwen2ForCausalLM": ("Qwen2DecoderLayer", "Qwen2RMSNorm")}
ATTENTION = ("sdpa", "eager")


def _hooked(module: nn.Module) -> bool:
    from torch.nn.modules import module as torch_module
    if any(getattr(torch_module, name) for name in ("_global_forward_hooks", "_global_forward_pre_hooks")):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


def _kernelized(model: nn.Module) -> bool:
    """Whether `kernels` replaced the forward of a layer or function of `model` with a hub kernel (kernelizing
    without a kernel for the device keeps the original forwards, which the lean step then matches)."""
    for module in model.modules():
        wrappers = [module, *module.__dict__.get("_kernel_funcs", {}).values()]
        if any("_kernel_repo" in vars(w) or "forward" in vars(w) for w in wrappers):
            return True
    return False


def why_not(model) -> str | None:
    """Why `lean_step` cannot run `model` (a causal LM), or None when it can."""
    name = type(model).__name__
    if name not in ARCHITECTURES:
        return f"a {name} model"
    layer_class, norm_class = ARCHITECTURES[name]
    config = model.config
    attention = getattr(config, "_attn_implementation", None)
    if attention not in ATTENTION:
        return f"attention implementation {attention!r}"
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
        return "sliding-window layers"
    if _kernelized(model):
        return "hub kernels"
    inner = model.model
    if type(inner.embed_tokens) is not nn.Embedding or type(model.lm_head) is not nn.Linear:
        return "a replaced embedding or LM head"
    for layer in inner.layers:
        if type(layer).__name__ != layer_class:
            return f"a {type(layer).__name__} layer"
        projections = [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.self_attn.o_proj,
                       layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj]
        if any(type(p) is not nn.Linear for p in projections):
            return "replaced linear layers (LoRA or quantised)"
        if any(type(n).__name__ != norm_class for n in (layer.input_layernorm, layer.post_attention_layernorm)):
            return "a replaced norm"
    if type(inner.norm).__name__ != norm_class:
        return "a replaced norm"
    if _hooked(model):
        return "module hooks"
    return None


def _rms_norm(x: torch.Tensor, norm) -> torch.Tensor:
    dtype = x.dtype
    x = x.to(torch.float32)
    variance = x.pow(2).mean(-1, keepdim=True)
    return norm.weight * (x * torch.rsqrt(variance + norm.variance_epsilon)).to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LeanStep:
    """Decode steps of one generation (a fresh one per call of the decoding loop: it holds the step's mask).

    `__call__(ids, positions, attention_mask, cache)` takes the (B, 1) new ids, their (B, 1) positions, the
    (B, K) 2D mask over the cache's positions and the new one, and the cache; it returns the (B, 1, V) logits
    and appends the new keys and values to the cache."""

    def __init__(self, model):
        from transformers.masking_utils import create_causal_mask
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
        self.model, self.inner, self.create_mask = model, model.model, create_causal_mask
        self.attend = ALL_ATTENTION_FUNCTIONS.get_interface(model.config._attn_implementation, _eager_attention(model))
        self.mask, self.width = None, None  # the 4D mask of the previous step and its key length

    def _step_mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor, cache, positions: torch.Tensor):
        width = attention_mask.shape[1]
        if self.width is not None and width == self.width + 1:  # one more attended position, as HF's mask has
            if self.mask is not None:
                fill = self.mask.new_ones if self.mask.dtype == torch.bool else self.mask.new_zeros
                self.mask = torch.cat([self.mask, fill(*self.mask.shape[:-1], 1)], dim=-1)
        else:
            self.mask = self.create_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=attention_mask,
                                         cache=cache, position_ids=positions)
        self.width = width
        return self.mask

    def __call__(self, ids: torch.Tensor, positions: torch.Tensor, attention_mask: torch.Tensor, cache) -> torch.Tensor:
        inner = self.inner
        hidden = F.embedding(ids, inner.embed_tokens.weight, inner.embed_tokens.padding_idx)  # (B, 1, H)
        mask = self._step_mask(hidden, attention_mask, cache, positions)
        cos, sin = inner.rotary_emb(hidden, positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        batch, length = ids.shape
        for index, layer in enumerate(inner.layers):
            attention, mlp = layer.self_attn, layer.mlp
            residual, x = hidden, _rms_norm(hidden, layer.input_layernorm)
            shape = (batch, length, -1, attention.head_dim)
            q = F.linear(x, attention.q_proj.weight, attention.q_proj.bias).view(shape).transpose(1, 2)
            k = F.linear(x, attention.k_proj.weight, attention.k_proj.bias).view(shape).transpose(1, 2)
            v = F.linear(x, attention.v_proj.weight, attention.v_proj.bias).view(shape).transpose(1, 2)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            k, v = cache.update(k, v, index)
            out, _ = self.attend(attention, q, k, v, mask, dropout=0.0, scaling=attention.scaling)
            out = out.reshape(batch, length, -1).contiguous()
            hidden = residual + F.linear(out, attention.o_proj.weight, attention.o_proj.bias)
            residual, x = hidden, _rms_norm(hidden, layer.post_attention_layernorm)
            gate = mlp.act_fn(F.linear(x, mlp.gate_proj.weight, mlp.gate_proj.bias))
            hidden = residual + F.linear(gate * F.linear(x, mlp.up_proj.weight, mlp.up_proj.bias),
                                         mlp.down_proj.weight, mlp.down_proj.bias)
        hidden = _rms_norm(hidden[:, -1:], inner.norm)
        return F.linear(hidden, self.model.lm_head.weight, self.model.lm_head.bias)  # (B, 1, V)


def _eager_attention(model):
    """The architecture's own eager attention function."""
    import importlib
    module = importlib.import_module(type(model).__module__)
    return module.eager_attention_forward
