"""Rewards from models whose own repository code returns the score: `AutoModel` with `trust_remote_code`, e.g.
openbmb/Eurus-RM-7b (D2PO's UltraFeedback gold), whose forward returns one reward per sequence.

`ScalarModelReward` writes each single-turn conversation into `template` ({question}, {response}), tokenises it
with the model's tokenizer (its special tokens added), right pads a batch, and reads the forward's output: a
tensor of one value per sequence, (N,) or (N, 1), or an output whose `logits` or `rewards` is one. Anything else
is refused with its shape, so a model that returns per-token values is not averaged silently.

The repository's code runs only when the config says `trust_remote_code: true` (conf/reward/eurus_rm.yaml does:
the model has no other way to load).
"""

import torch
from transformers import AutoModel, AutoTokenizer

from rlhf.models.policy import DTYPES, check_dtype
from rlhf.rewards.base import Score
from rlhf.rewards.reward_model import dialogue, prepare_tokenizer, resolve_device


def fill_template(conversation: list[dict], template: str) -> str:
    """`template` with {question} (the user message) and {response} (the reply) of a single-turn conversation."""
    kept = dialogue(conversation, "template")
    if len(kept) != 2:
        raise ValueError(f"this reward's template scores single-turn conversations (one user message then the "
                         f"response); got {len(kept)} messages up to the response")
    return template.format(question=kept[0]["content"], response=kept[1]["content"])


def sequence_scores(output, batch: int) -> torch.Tensor:
    """(N,) scores from a forward's output (module docstring); raises naming the shape it got."""
    for name in ("rewards", "logits"):
        if not isinstance(output, torch.Tensor) and getattr(output, name, None) is not None:
            output = getattr(output, name)
            break
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"the reward model's forward returned {type(output).__name__}; expected a tensor of one "
                         "score per sequence (or an output with `rewards` or `logits`)")
    if output.dim() == 2 and output.shape[1] == 1:
        output = output[:, 0]
    if output.dim() == 0 and batch == 1:
        output = output.reshape(1)
    if tuple(output.shape) != (batch,):
        raise ValueError(f"the reward model's forward returned shape {tuple(output.shape)} for {batch} sequences; "
                         "expected one score per sequence")
    return output.float()


class ScalarModelReward:
    """The score the model's own forward returns for each templated conversation.

    path: hub id or local directory; template: the model's input text with {question} and {response};
    trust_remote_code: must be true for a model that ships its code (the default, false, refuses to run it);
    max_length, batch_size, pad_token, dtype, device, revision: as for the sequence-classifier rewards.
    """

    def __init__(
        self,
        path: str,
        template: str,
        trust_remote_code: bool = False,
        max_length: int = 1024,
        batch_size: int = 8,
        pad_token: str | None = None,
        dtype: str = "bfloat16",
        device: str | None = None,
        revision: str | None = None,
    ) -> None:
        if "{question}" not in template or "{response}" not in template:
            raise ValueError(f"reward.template={template!r} must contain {{question}} and {{response}}")
        check_dtype(dtype, "reward.dtype")
        self.template, self.max_length, self.batch_size = template, max_length, batch_size
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
        prepare_tokenizer(self.tokenizer, "left", batch_size, pad_token, "reward")
        self.model = AutoModel.from_pretrained(path, revision=revision, dtype=DTYPES[dtype],
                                               trust_remote_code=trust_remote_code).to(self.device).eval()

    @torch.inference_mode()
    def score(self, conversations: list[list[dict]], fields: list[dict] | None = None) -> list[Score]:
        texts = [fill_template(c, self.template) for c in conversations]
        scores: list[Score] = []
        for start in range(0, len(texts), self.batch_size):
            batch = texts[start : start + self.batch_size]
            encoded = self.tokenizer(batch, padding=len(batch) > 1, truncation=True, max_length=self.max_length,
                                     return_tensors="pt").to(self.device)
            output = self.model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"])
            scores.extend(sequence_scores(output, len(batch)).cpu().tolist())
        return scores
