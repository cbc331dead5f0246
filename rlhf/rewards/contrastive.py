"""D2PO's contrastive-distillation gold: how much more likely a strong LM finds the text than a weak one.

From D2PO (Singhal et al. 2024, `src/utils/eval/rewards.py`, `contdistill` / `computelike`):

    score = mean_t log p_strong(x_t | x_<t) - mean_t log p_weak(x_t | x_<t)

with strong = OPT-1.3b and weak = OPT-125m, over the question and answer text `x = question + response`:
D2PO scores "Question: {q}\\n\\nAnswer: {r}" with both markers removed, which joins q and r with nothing in
between. Here the question is the last user message before the scored response ("" when there is none).
Each model reads the text with its own tokenizer; when the tokenizer does not start the text with its BOS
token, BOS is put first, so the first token is predicted too (OPT's tokenizer adds it itself). The mean is
over the predicted tokens, BOS excluded.

Deliberate deviations: D2PO's patched OPT forward divides each text's summed log-prob by the batch's padded
length (pad positions count as 0), so a score depended on the other texts in its batch; here each text's
mean is over its own tokens only. D2PO truncated a text longer than the model's context; here it is
`Invalid` (its reason names the model and the lengths).
"""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rlhf.models.logprobs import logprobs_of
from rlhf.models.policy import DTYPES, check_dtype
from rlhf.rewards.base import Invalid, Score, last_response


def question_and_response(conversation: list[dict]) -> str:
    """The last user message before the last assistant message, followed directly by that message."""
    response = last_response(conversation)
    last = max(i for i, message in enumerate(conversation) if message["role"] == "assistant")
    question = next((m["content"] for m in reversed(conversation[:last]) if m["role"] == "user"), "")
    return question + response


class MeanLogprob:
    """A causal LM that gives the mean per-token log-prob of texts (its own tokenizer, BOS first)."""

    def __init__(self, path: str, dtype: str, device: str, batch_size: int) -> None:
        self.path = path
        self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype])
        self.model: PreTrainedModel = model.to(device)
        self.model.eval().requires_grad_(False)
        self.device = device
        self.batch_size = batch_size
        self.max_tokens = self.model.config.max_position_embeddings

    def token_ids(self, text: str) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        bos = self.tokenizer.bos_token_id
        return ids if bos is None or (ids and ids[0] == bos) else [bos, *ids]

    @torch.no_grad()
    def mean_logprobs(self, texts: list[str]) -> list[float | Invalid]:
        encoded = [self.token_ids(text) for text in texts]
        means: list[float | Invalid] = []
        for ids in encoded:
            if len(ids) > self.max_tokens:
                means.append(Invalid(f"text is {len(ids)} tokens, over the {self.max_tokens} of {self.path}"))
            elif len(ids) < 2:
                means.append(Invalid(f"text has no token to predict for {self.path}"))
            else:
                means.append(0.0)  # filled below
        scorable = [i for i, ids in enumerate(encoded) if 2 <= len(ids) <= self.max_tokens]
        for start in range(0, len(scorable), self.batch_size):
            chunk = scorable[start:start + self.batch_size]
            width = max(len(encoded[i]) for i in chunk)
            input_ids = torch.zeros(len(chunk), width, dtype=torch.long)  # (B, T), right-padded
            attention_mask = torch.zeros(len(chunk), width, dtype=torch.long)  # (B, T)
            for row, i in enumerate(chunk):
                input_ids[row, :len(encoded[i])] = torch.tensor(encoded[i])
                attention_mask[row, :len(encoded[i])] = 1
            input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
            logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits  # (B, T, V)
            logprobs = logprobs_of(logits, input_ids)  # (B, T-1)
            mask = attention_mask[:, 1:].float()  # (B, T-1): tokens 1..n-1 of each text
            for row, mean in zip(chunk, ((logprobs * mask).sum(-1) / mask.sum(-1)).tolist()):
                means[row] = mean
        return means


class ContrastiveDistill:
    """mean_t log p_strong(text) - mean_t log p_weak(text) over question + response (module docstring).

    strong, weak: hub ids or local paths of causal LMs (D2PO: facebook/opt-1.3b minus facebook/opt-125m).
    dtype: float32 | bfloat16 | float16; device: where both models run; batch_size: texts per forward pass.
    """

    def __init__(self, strong: str, weak: str, batch_size: int = 32, dtype: str = "float32",
                 device: str = "cpu") -> None:
        check_dtype(dtype, "reward.dtype")
        if batch_size < 1:
            raise ValueError(f"reward.batch_size={batch_size} must be at least 1")
        self.strong = MeanLogprob(strong, dtype, device, batch_size)
        self.weak = MeanLogprob(weak, dtype, device, batch_size)

    def score(self, conversations: list[list[dict]], fields: list[dict] | None = None) -> list[Score]:
        texts = [question_and_response(c) for c in conversations]
        scores: list[Score] = []
        for strong, weak in zip(self.strong.mean_logprobs(texts), self.weak.mean_logprobs(texts)):
            invalid = next((s for s in (strong, weak) if isinstance(s, Invalid)), None)
            scores.append(invalid if invalid is not None else strong - weak)
        return scores
