"""A causal LM with a scalar value head on its last hidden states: the actor-critic model PPO trains."""

from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel


class PolicyWithValueHead(nn.Module):
    """`forward` returns `.logits` (B, T, V) of the policy (or of its last positions) and `.values` (B, T),
    V(state after token t).

    Generation goes to the wrapped policy, so backends and evaluators use it like the policy itself.
    """

    def __init__(self, model: PreTrainedModel, seed: int = 0):
        super().__init__()
        self.model = model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.value_head = nn.Linear(model.config.hidden_size, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int = 0) -> SimpleNamespace:
        """`logits_to_keep`: logits of the last positions only (0: all); values are of every position."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                         logits_to_keep=logits_to_keep)
        values = self.value_head(out.hidden_states[-1].to(self.value_head.weight.dtype)).squeeze(-1)  # (B, T)
        return SimpleNamespace(logits=out.logits, values=values)

    def generate(self, *args, **kwargs):
        return self.model.generate(*args, **kwargs)

    @property
    def generation_config(self):
        return self.model.generation_config

    @property
    def device(self) -> torch.device:
        return self.model.device

    def save_pretrained(self, directory: str | Path, safe_serialization: bool = True) -> None:
        """The policy in HF format at the top level (loadable by path), the value head beside it."""
        self.model.save_pretrained(directory, safe_serialization=True)
        save_file({k: v.contiguous() for k, v in self.value_head.state_dict().items()},
                  Path(directory) / "value_head.safetensors")

    def load_value_head(self, directory: str | Path) -> None:
        self.value_head.load_state_dict(load_file(Path(directory) / "value_head.safetensors"))
