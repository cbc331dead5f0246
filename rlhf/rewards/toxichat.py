"""ToxiChat's offensive-language classifier as a reward: P(safe) of the reply, A-LoL's Reddit `safe` component
(`utils/attributes_utils.py`: `GPT2ForOC_S_offensive`, `get_offensive_scores`).

The classifier is a DialoGPT (GPT-2) checkpoint, saved from `GPT2LMHeadModel` with one more layer,
`off_classifier` (hidden -> 2: safe, offensive), which reads the last layer's hidden state at the eos token
that ends each utterance. Its input is the dialogue's utterances, each followed by eos, tokenised without
special tokens; the reward is the softmax probability of "safe" at the reply's eos, the last one. Batches are
right padded with an attention mask (the published code pads with eos and passes no mask; a causal model's
states before the padding are the same either way); a dialogue over `max_length` tokens loses its start (the
published code skips such a batch).

`path` is the downloaded directory (ToxiChat's `DGPT_medium_OC_S_and_SBF_offensive_e2`): its GPT-2 config and
weights (model.safetensors or pytorch_model.bin, read as tensors only) and tokenizer.
"""

from pathlib import Path

import torch
from transformers import AutoTokenizer, GPT2Model

from rlhf.models.policy import DTYPES, check_dtype
from rlhf.rewards.base import Score
from rlhf.rewards.reward_model import dialogue, resolve_device

HEAD = ("off_classifier.weight", "off_classifier.bias")


def read_head(path: str) -> dict[str, torch.Tensor]:
    """The `off_classifier` tensors of the checkpoint at `path`."""
    folder = Path(path)
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(folder / "model.safetensors"))
    elif (folder / "pytorch_model.bin").is_file():
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise FileNotFoundError(f"reward.path={path!r} holds no model.safetensors or pytorch_model.bin: the "
                                "ToxiChat classifier is read from its downloaded directory")
    missing = [name for name in HEAD if name not in state]
    if missing:
        raise ValueError(f"reward.path={path!r} has no {missing[0]!r}: it is not a ToxiChat offensive classifier "
                         "(GPT2ForOC_S_offensive)")
    return {name.removeprefix("off_classifier."): state[name] for name in HEAD}


class ToxiChatSafe:
    """P(safe) at the reply's eos under ToxiChat's offensive classifier (module docstring)."""

    def __init__(self, path: str, max_length: int = 512, batch_size: int = 16, dtype: str = "float32",
                 device: str | None = None) -> None:
        check_dtype(dtype, "reward.dtype")
        self.max_length, self.batch_size = max_length, batch_size
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.tokenizer.padding_side, self.tokenizer.truncation_side = "right", "left"  # keep the reply
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = GPT2Model.from_pretrained(path, dtype=DTYPES[dtype]).to(self.device).eval()
        head = read_head(path)
        self.head = torch.nn.Linear(head["weight"].shape[1], head["weight"].shape[0])
        self.head.load_state_dict(head)
        self.head = self.head.to(self.device, DTYPES[dtype]).eval()

    def text(self, conversation: list[dict]) -> str:
        eos = self.tokenizer.eos_token
        return "".join(m["content"] + eos for m in dialogue(conversation, "toxichat", roles=("user", "assistant")))

    @torch.inference_mode()
    def score(self, conversations: list[list[dict]], fields: list[dict] | None = None) -> list[Score]:
        texts = [self.text(c) for c in conversations]
        scores: list[Score] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            encoded = self.tokenizer(batch, add_special_tokens=False, padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt").to(self.device)
            last = encoded["attention_mask"].sum(dim=1) - 1
            states = self.model(**encoded).last_hidden_state
            logits = self.head(states[torch.arange(len(batch), device=self.device), last])
            scores.extend(torch.softmax(logits.float(), dim=-1)[:, 0].cpu().tolist())
        return scores
