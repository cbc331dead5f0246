"""`backend=hf`: sampling with the policy's own HF `model.generate`, in-process and on the policy's weights.

Slow next to a dedicated engine but always in sync with the weights being trained, so on-policy rollouts
need no weight transfer. Prompts are formatted with the tokenizer's chat template and left-padded into
batches; sampling is seeded per call without touching the caller's RNG stream.
"""

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf.backends.base import Completion
from rlhf.backends.completions import CompletionDecoder, eos_ids, prompt_ids


class HFBackend:
    """Generates assistant turns with `model.generate`.

    temperature: 0 decodes greedily; otherwise samples with `temperature`, `top_p` (1.0 = off) and
        `top_k` (0 = off).
    stop_strings: generation of a row ends once its text contains one of them; the returned text is cut
        before it (the token that completed it stays in `token_ids`, as the model did sample it).
    seed: call i of this backend samples under `torch.manual_seed(seed + i)` (unless the call passes its own
        seed), so a fresh backend reproduces the same sequence of outputs, successive calls differ, and the
        caller's RNG is untouched.
    batch_size: prompts per `generate` call, counting each of the `num_samples` repeats.
    synced_gpus: keep generating until every process is done (DeepSpeed ZeRO-3, whose forward passes gather
        the sharded weights from all processes); set by the online loop, not a config key.
    """

    in_process_weights = True  # samples the weights being trained

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        max_new_tokens: int = 64,
        min_new_tokens: int = 0,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        stop_strings: list[str] | None = None,
        seed: int = 0,
        batch_size: int = 32,
        synced_gpus: bool = False,
    ) -> None:
        if temperature < 0:
            raise ValueError(f"backend.temperature={temperature} must be >= 0 (0 is greedy)")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; prompts are left-padded into batches")
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.stop_strings = list(stop_strings or [])
        self.seed = seed
        self.batch_size = batch_size
        self.synced_gpus = synced_gpus
        self.eos_ids = eos_ids(model.generation_config, tokenizer)  # generation stops at, and we cut at, any
        self.decode = CompletionDecoder(tokenizer, self.eos_ids, self.stop_strings)
        self.calls = 0

    def prompt_ids(self, conversation: list[dict]) -> list[int]:
        """The chat-template ids of `conversation` with the assistant generation prompt appended."""
        return prompt_ids(self.tokenizer, conversation)

    def generate(
        self, conversations: list[list[dict]], num_samples: int = 1, seed: int | None = None
    ) -> list[list[Completion]]:
        """Sample `num_samples` turns per conversation; see `Backend.generate`."""
        if num_samples < 1:
            raise ValueError(f"num_samples={num_samples} must be >= 1")
        prompts = [ids for c in conversations for ids in [self.prompt_ids(c)] * num_samples]
        was_training = self.model.training
        self.model.eval()
        # torch.manual_seed reseeds the CPU and every CUDA device, so all of them are forked (none on CPU).
        devices = list(range(torch.cuda.device_count()))
        try:
            with torch.random.fork_rng(devices=devices, device_type="cuda"), torch.no_grad():
                torch.manual_seed(self.seed + self.calls if seed is None else seed)
                rows = [
                    row
                    for start in range(0, len(prompts), self.batch_size)
                    for row in self._generate_batch(prompts[start : start + self.batch_size])
                ]
        finally:
            self.model.train(was_training)
        self.calls += 1
        completions = [self.decode(row) for row in rows]
        return [completions[i : i + num_samples] for i in range(0, len(completions), num_samples)]

    def _generate_batch(self, prompts: list[list[int]]) -> list[list[int]]:
        """Left-pad `prompts` and generate; returns each row's new ids, right-padded with pad ids where
        a row finished before the longest one."""
        pad_id = self.tokenizer.pad_token_id
        width = max(map(len, prompts))
        input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts])  # (B, T)
        attention_mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])  # (B, T)
        if self.temperature == 0:
            sampling = dict(do_sample=False)
        else:
            sampling = dict(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        output = self.model.generate(
            input_ids=input_ids.to(self.model.device),
            attention_mask=attention_mask.to(self.model.device),
            max_new_tokens=self.max_new_tokens,
            min_new_tokens=self.min_new_tokens,
            eos_token_id=self.eos_ids,
            pad_token_id=pad_id,
            stop_strings=self.stop_strings or None,
            tokenizer=self.tokenizer,
            synced_gpus=self.synced_gpus,
            **sampling,
        )  # (B, T + N), N <= max_new_tokens
        return output[:, width:].tolist()
