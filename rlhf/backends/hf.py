"""`backend=hf`: sampling with the policy's own HF `model.generate`, in-process and on the policy's weights.

Slow next to a dedicated engine but always in sync with the weights being trained, so on-policy rollouts
need no weight transfer. Prompts are formatted with the tokenizer's chat template and left-padded into
batches; sampling is seeded per call without touching the caller's RNG stream. Inside `continuing()` (a
multi-turn rollout), each dialogue's KV cache is kept from one turn to the next (`rlhf.backends.kv_reuse`).
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf.backends.base import Completion
from rlhf.backends.completions import CompletionDecoder, eos_ids, prompt_ids
from rlhf.backends.decode import Sampling, sample_tokens, unsupported
from rlhf.backends.kv_reuse import KeptRow, KVStore, build_cache, conversation_key, keep_rows, log
from rlhf.backends.lean_step import why_not
from rlhf.models.kv import GAP_MASK_ATTENTION, attention_implementation, cache_arg

DECODES = ("loop", "generate")


def decoder_of(model):
    """The causal LM that decodes for `model` (a value-head policy's wrapped model)."""
    from rlhf.models.value_model import PolicyWithValueHead
    return model.model if isinstance(model, PolicyWithValueHead) else model


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
    reuse_cache: inside `continuing()`, keep each row's keys and values for the next call, which then prefills
        only the ids a continued conversation adds (off: every turn prefills the whole conversation again).
        The kept caches of one call's rows stay in memory until the next call or the session's end.
    decode: "loop" samples with the backend's own decoding loop (`rlhf.backends.decode`: `generate`'s
        computation without its per-step machinery), "generate" with `model.generate`. The loop hands over
        to `generate`, logged once, for stop strings and generation-config processors it lacks.
    draw: how the loop draws a sampled id: "inverse_cdf" (one uniform per row: the distribution `generate`
        samples, with other ids) or "multinomial" (`torch.multinomial`, `generate`'s own draws, so the same ids
        as decode=generate for a seed, at the cost of one random number per vocabulary entry).
    lean_step: the loop's decode steps run `rlhf.backends.lean_step` (the model's weights without its module
        machinery, bitwise the same logits) where the model allows; elsewhere, and when off, they call the model
        (which models do not allow it, and why, is logged once).
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
        reuse_cache: bool = True,
        decode: str = "loop",
        draw: str = "inverse_cdf",
        lean_step: bool = True,
    ) -> None:
        if temperature < 0:
            raise ValueError(f"backend.temperature={temperature} must be >= 0 (0 is greedy)")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; prompts are left-padded into batches")
        if decode not in DECODES:
            raise ValueError(f"backend.decode={decode!r} is not one of {DECODES}")
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
        self.reuse_cache = reuse_cache
        self.store: KVStore | None = None
        self.last_session: dict[str, int] | None = None  # the counts of the latest `continuing()` session
        self.said_attention = False  # logged that this model's attention keeps no caches
        self.sampling = Sampling(temperature, top_k, top_p, draw)
        self.decode_loop = decode == "loop" and self._loop_allowed()
        self.lean_step = lean_step
        self.said_lean: set[str] = set()  # the reasons logged for not taking the lean step

    def _loop_allowed(self) -> bool:
        """Whether decode=loop can run: else `generate` does, and the log says why."""
        reasons = unsupported(self.model.generation_config)
        if self.stop_strings:
            reasons.append("stop_strings")
        if not callable(getattr(decoder_of(self.model), "prepare_inputs_for_generation", None)):
            reasons.append(f"a {type(self.model).__name__} model")
        if reasons:
            draws = "" if self.sampling.draw == "multinomial" or self.temperature == 0 else \
                f" (which draws with torch.multinomial, not backend.draw={self.sampling.draw})"
            log.info("backend.decode=loop hands over to generate for: %s%s", ", ".join(reasons), draws)
        return not reasons

    def _lean(self) -> bool:
        """Whether this call's decode steps can take the lean step (checked per call: hooks may come and go)."""
        if not self.lean_step:
            return False
        reason = why_not(decoder_of(self.model))
        if reason is not None and reason not in self.said_lean:
            self.said_lean.add(reason)
            log.info("backend.lean_step: the decode steps call the model (the lean step does not take %s)", reason)
        return reason is None

    @contextmanager
    def continuing(self) -> Iterator[dict[str, int] | None]:
        """A session of calls whose prompts continue the previous call's conversations (the turns of a
        rollout): each row's KV cache is kept for the next call. Yields the session's prompt-id counts
        (`CacheStats.as_dict`, filled in when it ends; also `last_session` afterwards), or None with
        `reuse_cache` off. A session opened inside another is the outer one. The weights must not change
        inside a session: the kept caches were computed with them."""
        if not self.reuse_cache:
            yield None
            return
        if self.store is not None:
            yield self.last_session
            return
        self.store, self.last_session = KVStore(), {}
        attention = attention_implementation(self.model)
        if attention not in GAP_MASK_ATTENTION:  # kept rows' masks have gaps
            self.store.enabled = False
            if not self.said_attention:
                self.said_attention = True
                log.info("backend.reuse_cache is off for attention implementation %r (needs eager or sdpa)", attention)
        try:
            yield self.last_session
        finally:
            self.last_session.update(self.store.stats.as_dict())
            self.store = None

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
        store = self.store
        if store is not None:
            found = [store.lookup(c, ids) for c, ids in zip(conversations, prompts[::num_samples])]
            reuse = [f for f in found for _ in range(num_samples)]
            for (_, shared), ids in zip(reuse, prompts):
                store.stats.reused += shared
                store.stats.prefilled += len(ids) - shared
                store.stats.rows += 1
        else:
            reuse = [(None, 0)] * len(prompts)
        keeping = store is not None and store.enabled
        was_training = self.model.training
        self.model.eval()
        # torch.manual_seed reseeds the CPU and every CUDA device, so all of them are forked (none on CPU).
        devices = list(range(torch.cuda.device_count()))
        try:
            with torch.random.fork_rng(devices=devices, device_type="cuda"), torch.no_grad():
                torch.manual_seed(self.seed + self.calls if seed is None else seed)
                completions, kept = [], []
                for start in range(0, len(prompts), self.batch_size):
                    batch, rows = self._generate_batch(prompts[start : start + self.batch_size],
                                                       reuse[start : start + self.batch_size], keeping)
                    completions += batch
                    kept.append(rows)
        finally:
            self.model.train(was_training)
        self.calls += 1
        if keeping:
            self._keep(store, conversations, num_samples, completions, kept)
        return [completions[i : i + num_samples] for i in range(0, len(completions), num_samples)]

    def _keep(self, store: KVStore, conversations: list[list[dict]], num_samples: int,
              completions: list[Completion], kept: list[list[KeptRow] | None]) -> None:
        """Replace the session's kept rows with this call's, by prompt and reply text."""
        if any(rows is None for rows in kept):
            if store.enabled:
                log.info("backend.reuse_cache: this model's cache is not made of full-attention layers only; every "
                         "turn prefills its whole conversation")
            store.enabled, store.kept = False, {}
            return
        rows = [row for chunk in kept for row in chunk]
        store.kept = {conversation_key(conversations[i // num_samples], completion.text): row
                      for i, (completion, row) in enumerate(zip(completions, rows))}

    def _generate_batch(self, prompts: list[list[int]],
                        reuse: list[tuple[KeptRow | None, int]],
                        keeping: bool) -> tuple[list[Completion], list[KeptRow] | None]:
        """Generate for `prompts`; returns their completions and, when `keeping`, each row's kept cache.

        Row i's first `reuse[i][1]` ids come from its kept cache: they are left-padded to the longest such
        prefix, and the ids after them are left-padded after it (all left-padding without reuse)."""
        pad_id = self.tokenizer.pad_token_id
        shared = [s for _, s in reuse]
        past = max(shared)
        fresh = [p[s:] for p, s in zip(prompts, shared)]
        new = max(map(len, fresh))
        width = past + new
        input_ids = torch.tensor([[pad_id] * (past - s) + p[:s] + [pad_id] * (new - len(f)) + f
                                  for p, s, f in zip(prompts, shared, fresh)])  # (B, T)
        attention_mask = torch.tensor([[0] * (past - s) + [1] * s + [0] * (new - len(f)) + [1] * len(f)
                                       for s, f in zip(shared, fresh)])  # (B, T)
        extra = {}
        if past > 0:
            extra[cache_arg()] = build_cache(reuse, past)
        if keeping:
            extra["return_dict_in_generate"] = True
        if self.decode_loop:
            sequences, cache = sample_tokens(decoder_of(self.model), input_ids.to(self.model.device),
                                      attention_mask.to(self.model.device), extra.get(cache_arg()),
                                      max_new_tokens=self.max_new_tokens, min_new_tokens=self.min_new_tokens,
                                      eos_ids=self.eos_ids, pad_id=pad_id, sampling=self.sampling,
                                      lean=self._lean(), synced=self.synced_gpus)
            return self._finish(sequences, width, prompts, attention_mask, cache if keeping else None, keeping)
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
            **extra,
        )  # (B, T + N), N <= max_new_tokens
        sequences = output.sequences if keeping else output
        return self._finish(sequences, width, prompts, attention_mask,
                            getattr(output, cache_arg()) if keeping else None, keeping)

    def _finish(self, sequences: torch.Tensor, width: int, prompts: list[list[int]], attention_mask: torch.Tensor,
                cache, keeping: bool) -> tuple[list[Completion], list[KeptRow] | None]:
        """The completions of (B, width + N) `sequences` and, when `keeping`, each row's kept cache."""
        completions = [self.decode(row) for row in sequences[:, width:].tolist()]
        if not keeping:
            return completions, None
        length = cache.get_seq_length() if cache is not None else 0
        covered = [len(p) + max(0, min(len(c.token_ids), length - width)) for p, c in zip(prompts, completions)]
        return completions, keep_rows(cache, attention_mask.to(sequences.device),
                                      [p + c.token_ids for p, c in zip(prompts, completions)], covered)
