"""Tiny sequence classifiers for reward tests: the tiny Llama backbone with a seeded classification head,
saved with the project's tiny tokenizer so rewards load them by path like a hub model."""

from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, RobertaConfig, RobertaModel


def build_classifier(tiny_path: str, directory: Path, num_labels: int = 1, seed: int = 0,
                     labels: list[str] | None = None, nan_head: bool = False) -> str:
    """Save a LlamaForSequenceClassification on the tiny backbone to `directory`; its head is N(0, 1) under
    `seed` (large enough for scores to differ clearly), or all NaN with `nan_head`."""
    kwargs = {"num_labels": num_labels}
    if labels is not None:
        kwargs |= {"id2label": dict(enumerate(labels)),
                   "label2id": {name: i for i, name in enumerate(labels)}}
    model = AutoModelForSequenceClassification.from_pretrained(tiny_path, **kwargs)
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        model.score.weight.copy_(torch.randn(model.score.weight.shape, generator=generator))
        if nan_head:
            model.score.weight.fill_(float("nan"))
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(tiny_path).save_pretrained(directory)
    return str(directory)


def direct_logits(path: str, text: str | tuple[str, str], add_special_tokens: bool = True,
                  input_ids: list[int] | None = None) -> torch.Tensor:
    """(C,) logits of the saved classifier on one text (or pair, or given token ids), no padding, batch 1."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    if input_ids is None:
        pair = text if isinstance(text, tuple) else (text,)
        input_ids = tokenizer(*pair, add_special_tokens=add_special_tokens)["input_ids"]
    with torch.no_grad():
        return model(input_ids=torch.tensor([input_ids])).logits[0].float()


def build_comet_critic(tiny_path: str, directory: Path, seed: int = 0) -> str:
    """Save a COMET critic as A-LoL's conversion lays it out: a tiny RoBERTa encoder with a pooler, the tiny
    tokenizer and `custom_roberta_classification_head.pt` (dense 32 -> 512, out_proj 512 -> 1, seeded)."""
    from rlhf.rewards.comet_critic import HEAD_FILE

    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    torch.manual_seed(seed)
    config = RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=160, pad_token_id=tokenizer.pad_token_id)
    RobertaModel(config, add_pooling_layer=True).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    generator = torch.Generator().manual_seed(seed + 1)
    head = {"dense.weight": torch.randn(512, 32, generator=generator),
            "dense.bias": torch.randn(512, generator=generator),
            "out_proj.weight": torch.randn(1, 512, generator=generator) / 8, "out_proj.bias": torch.zeros(1)}
    torch.save(head, Path(directory) / HEAD_FILE)
    return str(directory)


FAKE_REMOTE_CODE = '''
import torch
from transformers import PretrainedConfig, PreTrainedModel


class FakeRMConfig(PretrainedConfig):
    model_type = "fake_scalar_rm"

    def __init__(self, vocab_size=1024, hidden_size=8, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size, self.hidden_size = vocab_size, hidden_size


class FakeScalarRM(PreTrainedModel):
    """Eurus-RM's shape of output: a regression head on each position, read at the last unmasked token."""
    config_class = FakeRMConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = torch.nn.Embedding(config.vocab_size, config.hidden_size)
        self.head = torch.nn.Linear(config.hidden_size, 1, bias=False)
        self.post_init()

    def forward(self, input_ids, attention_mask=None):
        rewards = self.head(self.embed(input_ids)).squeeze(-1)
        ends = attention_mask.cumsum(dim=1).argmax(dim=1).view(-1, 1)
        return torch.gather(rewards, 1, ends)
'''


def build_remote_code_rm(tiny_path: str, directory: Path, seed: int = 0) -> str:
    """Save a model that loads only with trust_remote_code (its code in modeling_fake_rm.py, named by the
    config's auto_map), as Eurus-RM-7b is laid out, with the tiny tokenizer and seeded weights."""
    import importlib.util
    import json

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "modeling_fake_rm.py").write_text(FAKE_REMOTE_CODE)
    spec = importlib.util.spec_from_file_location("modeling_fake_rm", directory / "modeling_fake_rm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    torch.manual_seed(seed)
    module.FakeScalarRM(module.FakeRMConfig(vocab_size=len(tokenizer))).save_pretrained(directory)
    config = json.loads((directory / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "modeling_fake_rm.FakeRMConfig", "AutoModel": "modeling_fake_rm.FakeScalarRM"}
    (directory / "config.json").write_text(json.dumps(config))
    tokenizer.save_pretrained(directory)
    return str(directory)


def build_toxichat(tiny_path: str, directory: Path, seed: int = 0) -> str:
    """Save a ToxiChat-style offensive classifier: a tiny GPT2LMHeadModel checkpoint with `off_classifier`
    (hidden -> 2) tensors added to its weights, and the tiny tokenizer."""
    from safetensors.torch import load_file, save_file
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_path)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=256,
                        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(directory)
    state = load_file(str(Path(directory) / "model.safetensors"))
    generator = torch.Generator().manual_seed(seed + 1)
    state["off_classifier.weight"] = torch.randn(2, 32, generator=generator)
    state["off_classifier.bias"] = torch.zeros(2)
    save_file(state, str(Path(directory) / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(directory)
    return str(directory)
