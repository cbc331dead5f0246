"""`policy=tiny`: a small Llama-architecture model with a locally trained BPE tokenizer and a chat template.

Built on first use into a cache folder keyed by its settings, saved with `save_pretrained`, and loaded back
through `load_policy`, the same path a hub model takes. Nothing is downloaded.
"""

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from rlhf.models.policy import Policy, load_policy
from rlhf.models.reward_model import load_reward_model

DATA_DIR = Path(__file__).resolve().parents[2] / "data"
SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
# Each message is "<|role|>\n{content}<|end|>\n"; generation stops at <|end|> (the eos token).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# Bump when the corpus, template or construction below changes, so cached models are rebuilt.
BUILD_VERSION = 1


CORPUS_FILES = ("dialogues_eval", "dialogues_train", "preferences_eval", "preferences_train")
CORPUS_COLUMNS = ("prompt", "chosen", "rejected", "messages")


def corpus_lines() -> list[str]:
    """Text the tokenizer is trained on: the conversations of the bundled synthetic data (a fixed set of
    files, so adding datasets does not change the tiny model)."""
    lines = []
    for name in CORPUS_FILES:
        for row in map(json.loads, (DATA_DIR / "synthetic" / f"{name}.jsonl").read_text().splitlines()):
            for column in CORPUS_COLUMNS:
                if column in row:
                    value = row[column]
                    lines.extend(m["content"] for m in (value if isinstance(value, list) else [{"content": value}]))
    return lines


def build_tiny(
    directory: Path,
    vocab_size: int,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    max_position_embeddings: int,
    build_seed: int,
) -> None:
    """Train the tokenizer, initialise the model with `build_seed`, and save both to `directory`."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus_lines(), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|bos|>",
        eos_token="<|end|>",
        pad_token="<|pad|>",
        additional_special_tokens=SPECIAL_TOKENS[3:],
    )
    fast.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(build_seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = fast.pad_token_id
    model.save_pretrained(directory, safe_serialization=True)
    fast.save_pretrained(directory)


def tiny_model_path(
    cache_dir: str,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    max_position_embeddings: int = 512,
    build_seed: int = 0,
) -> Path:
    """The cached tiny model for these settings, built (atomically) if it is not there yet."""
    spec = dict(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        build_seed=build_seed,
    )
    key = hashlib.sha256(json.dumps({**spec, "version": BUILD_VERSION}, sort_keys=True).encode()).hexdigest()
    target = Path(cache_dir).expanduser() / key[:16]
    if not (target / "config.json").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".build-"))
        build_tiny(tmp, **spec)
        try:
            os.replace(tmp, target)
        except OSError:  # another process finished the same build first
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_tiny(
    cache_dir: str,
    architecture: dict,
    path: str | None = None,
    dtype: str = "float32",
    lora: dict | None = None,
    gradient_checkpointing: bool = False,
    seed: int = 0,
) -> Policy:
    """The tiny causal LM policy. architecture: keyword arguments of `tiny_model_path`. With `path` set (e.g. a
    trained run's `model/`), that model is loaded instead of building one."""
    path = path or str(tiny_model_path(cache_dir, **architecture))
    return load_policy(path, dtype=dtype, lora=lora, gradient_checkpointing=gradient_checkpointing, seed=seed)


def load_tiny_reward_model(
    cache_dir: str,
    architecture: dict,
    path: str | None = None,
    num_groups: int = 1,
    shared_dim: int | None = None,
    freeze_backbone: bool = False,
    dtype: str = "float32",
    seed: int = 0,
    lora: dict | None = None,
) -> Policy:
    """A reward model on the tiny backbone (see `rlhf.models.reward_model.load_reward_model`)."""
    path = path or str(tiny_model_path(cache_dir, **architecture))
    return load_reward_model(path, num_groups, shared_dim, freeze_backbone, dtype=dtype, seed=seed, lora=lora)
