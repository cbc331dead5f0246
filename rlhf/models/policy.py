"""Loading a causal LM policy (hub id or local path) with its tokenizer, optional LoRA, and saving it."""

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_dtype(dtype: str, key: str) -> None:
    """Refuse a weights dtype that is not one of DTYPES, naming the config `key` (e.g. "reward.dtype")."""
    if dtype not in DTYPES:
        raise ValueError(f"{key}={dtype!r} is not one of {sorted(DTYPES)}")


@dataclass
class Policy:
    """A causal LM and its tokenizer. `model` may be a peft model when LoRA is on."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    path: str

    @property
    def has_adapter(self) -> bool:
        # peft is imported only when LoRA is configured (it takes about 2 s); without it no model is a peft one
        peft = sys.modules.get("peft")
        return peft is not None and isinstance(self.model, peft.PeftModel)

    def save(self, directory: str | Path) -> None:
        """Save in HF format (safetensors). With LoRA, the adapter goes to `adapter/` and merged weights
        to the top level, so `policy.path=<directory>` loads the trained model with no peft needed."""
        directory = Path(directory)
        model = self.model
        if self.has_adapter:
            model.save_pretrained(directory / "adapter", safe_serialization=True)
            model = model.merge_and_unload()
            self.model = model
        model.save_pretrained(directory, safe_serialization=True)
        self.tokenizer.save_pretrained(directory)


def resolve_model_dir(path: str, key: str = "policy.path") -> str:
    """The model directory `path` names: itself, or the `model/` of a training run directory. A hub id
    (`org/name`) is returned as it is; a local path that does not exist, or a training checkpoint (weights
    and optimizer state without a tokenizer or model config), is refused with what to pass instead."""
    local = Path(path).expanduser()
    if not local.exists():
        if path.startswith(("/", "./", "../", "~")) or path.count("/") > 1:
            raise FileNotFoundError(f"{key}={path!r}: no such directory (a hub id has the form org/name)")
        return path
    if (local / "config.json").is_file():
        return str(local)
    if (local / "trainer_state.json").is_file():
        raise ValueError(f"{key}={path!r} is a training checkpoint (weights and optimizer state, no tokenizer "
                         "or model config): evaluate a run's checkpoints with rlhf-eval eval=checkpoints "
                         "eval.run=<run dir>, or pass the run's model/")
    if (local / "model" / "config.json").is_file():
        return str(local / "model")
    if (local / "config.yaml").is_file():
        raise ValueError(f"{key}={path!r} is a run directory without a model/ yet (the run has not finished): "
                         "evaluate its checkpoints with rlhf-eval eval=checkpoints eval.run=<run dir>")
    raise FileNotFoundError(f"{key}={path!r} holds no model (no config.json, and no model/ of a finished run)")


def load_policy(
    path: str,
    dtype: str = "float32",
    revision: str | None = None,
    trust_remote_code: bool = False,
    lora: dict | None = None,
    gradient_checkpointing: bool = False,
    seed: int = 0,
    chat_template: str | None = None,
    tokenizer_path: str | None = None,
) -> Policy:
    """Load `path` (a hub id or a local directory) with `AutoModelForCausalLM` and `AutoTokenizer`.

    lora: keyword arguments of `peft.LoraConfig` (e.g. r, lora_alpha, lora_dropout, target_modules);
        None trains all weights.
    seed: seeds the random initialisation of the adapter, whatever else used the global RNG before.
    chat_template: a Jinja chat template for a model whose tokenizer has none (e.g. DialoGPT, `policy=dialogpt`)
        or whose template is to be replaced; it is saved with the tokenizer.
    tokenizer_path: where the tokenizer is when it is not saved with the model (e.g. COMET-distill's
        `comet-distill-tokenizer/`); None: `path`. A saved run holds both, so a trained policy needs none.
    """
    check_dtype(dtype, "policy.dtype")
    path = resolve_model_dir(path)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or path, revision=revision,
                                              trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    if tokenizer.chat_template is None:
        raise ValueError(
            f"the tokenizer of policy.path={path!r} has no chat template; conversations are formatted with "
            "the chat template, so pick a chat/instruct model, save one with a template or give policy.chat_template"
        )
    model = AutoModelForCausalLM.from_pretrained(
        path, revision=revision, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code
    )
    if gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if lora is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(task_type="CAUSAL_LM", **lora))
    return Policy(model=model, tokenizer=tokenizer, path=path)
