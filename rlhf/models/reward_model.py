"""Reward models to train: a sequence-classification head, or group heads on a shared backbone.

- one group, no shared projection: `AutoModelForSequenceClassification` with one label, saved in HF format
  (any scorer that loads sequence classifiers by path can use it);
- MaxMin (Chakraborty et al. 2024), `num_groups=G`: one linear head (no bias, like HF's score heads) per
  group on a shared (frozen) backbone, each head trained on its group's pairs;
- SharedRep (Mukherjee et al. 2025), `shared_dim=k`: a shared projection Linear(hidden, k) and per-group
  heads Linear(k, 1, bias=False), trained jointly on all groups with group routing.
The reward of a group model at RL time is the minimum over its heads (`rlhf.algos.reward_model`).
"""

import json
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

from rlhf.models.policy import DTYPES, Policy, check_dtype


class GroupRewardModel(nn.Module):
    """Backbone hidden state at each sequence's last real token -> (B, G) group rewards (`.logits`)."""

    def __init__(self, backbone: nn.Module, num_groups: int, shared_dim: int | None, freeze_backbone: bool):
        super().__init__()
        hidden = backbone.config.hidden_size
        self.backbone = backbone.requires_grad_(not freeze_backbone)
        self.num_groups, self.shared_dim, self.freeze_backbone = num_groups, shared_dim, freeze_backbone
        if shared_dim is None:  # no bias: Bradley-Terry sees reward differences only, where a bias cancels
            self.head = nn.Linear(hidden, num_groups, bias=False)
        else:  # SharedRep's first layer has a bias; behind tanh it does receive gradient
            self.head = nn.Sequential(nn.Linear(hidden, shared_dim), nn.Linear(shared_dim, num_groups, bias=False))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> SimpleNamespace:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # (B, T, H)
        last = attention_mask.sum(-1) - 1  # (B,) right padding: the last real token
        features = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # (B, H)
        return SimpleNamespace(logits=self.head(features.to(self.head_dtype)))  # (B, G)

    @property
    def head_dtype(self) -> torch.dtype:
        return next(self.head.parameters()).dtype

    def save_pretrained(self, directory: str | Path, safe_serialization: bool = True) -> None:
        directory = Path(directory)
        self.backbone.save_pretrained(directory / "backbone", safe_serialization=True)
        save_file({k: v.contiguous() for k, v in self.head.state_dict().items()}, directory / "heads.safetensors")
        (directory / "reward_model.json").write_text(json.dumps(
            {"num_groups": self.num_groups, "shared_dim": self.shared_dim, "freeze_backbone": self.freeze_backbone}))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "GroupRewardModel":
        directory = Path(directory)
        settings = json.loads((directory / "reward_model.json").read_text())
        model = cls(AutoModel.from_pretrained(directory / "backbone"), **settings)
        model.head.load_state_dict(load_file(directory / "heads.safetensors"))
        return model


def load_reward_model(
    path: str,
    num_groups: int = 1,
    shared_dim: int | None = None,
    freeze_backbone: bool = False,
    dtype: str = "float32",
    revision: str | None = None,
    trust_remote_code: bool = False,
    seed: int = 0,
    lora: dict | None = None,
) -> Policy:
    """A reward model to train, from the weights of a (causal or classifier) model at `path` (hub id or dir).

    The new heads are initialised under `seed`. `freeze_backbone` trains the heads only (MaxMin, SharedRep).
    lora: keyword arguments of `peft.LoraConfig` for a plain reward model (one head): the backbone gets
        adapters, the score head is trained in full (D2PO's discriminator, LoRA r 8, alpha 32).
    """
    check_dtype(dtype, "policy.dtype")
    if num_groups < 1 or (shared_dim is not None and shared_dim < 1):
        raise ValueError(f"policy.num_groups={num_groups} and policy.shared_dim={shared_dim} must be >= 1")
    if lora is not None and (num_groups != 1 or shared_dim is not None or freeze_backbone):
        raise ValueError("policy.lora adapts a plain reward model (num_groups 1, no shared_dim, backbone not "
                         "frozen); group heads train over a frozen backbone")
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    kwargs = dict(revision=revision, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if num_groups == 1 and shared_dim is None:
            model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)
            model.config.pad_token_id = tokenizer.pad_token_id
            model.base_model.requires_grad_(not freeze_backbone)
            if lora is not None:
                from peft import LoraConfig, get_peft_model

                model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", **lora))
        else:
            model = GroupRewardModel(AutoModel.from_pretrained(path, **kwargs), num_groups, shared_dim, freeze_backbone)
    return Policy(model=model, tokenizer=tokenizer, path=path)
