"""What the KV-cache users (kept dialogue caches, shared-prompt pair forwards) ask of a transformers cache."""

# attention implementations that take a 2D mask with gaps in the middle (a cache continued after padding)
GAP_MASK_ATTENTION = ("eager", "sdpa")


def plain_layers(cache) -> list | None:
    """The cache's layers when all are plain full-attention `DynamicLayer`s holding keys, else None (sliding
    window and recurrent layers keep something other than every position's keys and values)."""
    from transformers.cache_utils import DynamicLayer
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer or getattr(layer, "keys", None) is None for layer in layers):
        return None
    return layers


def cache_arg() -> str:
    """The name models and `generate` take a cache under and return it as: `cache` from transformers 5, before it
    `past_key_values`."""
    from transformers.generation.utils import GenerateDecoderOnlyOutput
    return "cache" if "cache" in GenerateDecoderOnlyOutput.__dataclass_fields__ else "past_key_values"


def attention_implementation(model) -> str | None:
    """The attention implementation of `model`'s config, looked up through wrappers that hold the model (a
    value-head policy's `.model`, DDP's `.module`); None when no config is found."""
    for _ in range(4):
        config = getattr(model, "config", None)
        if config is not None:
            return getattr(config, "_attn_implementation", None)
        model = getattr(model, "module", None) or getattr(model, "model", None)
        if model is None:
            return None
    return None
