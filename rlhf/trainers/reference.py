"""The reference policy of preference losses, three ways.

- "precompute": one pass of the initial policy over the data before training; the log-probs are cached in
  the run directory (so a resumed run reuses them and never recomputes them from trained weights) and no
  second model is kept in memory.
- "frozen_copy": a deep copy of the initial policy, frozen, run next to the trained one.
- "disabled_adapter": the trained model itself with its LoRA adapter switched off (LoRA only).
"""

import copy
import hashlib
import json
import os
from contextlib import nullcontext
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from rlhf.data.batch import PairBatch
from rlhf.data.examples import Examples
from rlhf.models.logprobs import sequence_logps
from rlhf.models.policy import Policy

MODES = ("precompute", "frozen_copy", "disabled_adapter")


class PrecomputedReference:
    """Reference log-probs looked up by dataset row: table (N, 2) of (chosen, rejected) sums."""

    def __init__(self, tables: dict[str, Tensor]):
        self.tables = tables

    def __call__(self, batch: PairBatch, split: str) -> tuple[Tensor, Tensor]:
        rows = self.tables[split][batch.index.cpu()]  # (B, 2)
        return rows[:, 0], rows[:, 1]


class ModelReference:
    """Reference log-probs from a model, computed per batch without gradients."""

    def __init__(self, model, disable_adapter: bool):
        self.model = model
        self.disable_adapter = disable_adapter

    @torch.no_grad()
    def __call__(self, batch: PairBatch, split: str) -> tuple[Tensor, Tensor]:
        with self.model.disable_adapter() if self.disable_adapter else nullcontext():
            logps, _ = sequence_logps(self.model, batch.concatenated())
        B = batch.index.shape[0]
        return logps[:B], logps[B:]


def _fingerprint(policy: Policy, examples: dict[str, Examples]) -> str:
    h = hashlib.sha256(policy.path.encode())
    for split, ex in sorted(examples.items()):
        h.update(split.encode())
        for item in ex.items:
            for seq in item:
                h.update(json.dumps([seq.input_ids, seq.turn_ids]).encode())
    return h.hexdigest()


def precompute(policy: Policy, examples: dict[str, Examples], cache: Path, batch_size: int) -> PrecomputedReference:
    """Reference tables for every split, loaded from `cache` when it was written for the same policy and data."""
    fingerprint = _fingerprint(policy, examples)
    if cache.exists():
        tables = load_file(cache)
        if json.loads(cache.with_suffix(".json").read_text())["fingerprint"] == fingerprint:
            return PrecomputedReference(tables)
    reference = ModelReference(policy.model, disable_adapter=policy.has_adapter)
    was_training = policy.model.training
    policy.model.eval()
    device = next(policy.model.parameters()).device
    tables = {}
    for split, ex in examples.items():
        table = torch.zeros(max(ex.rows) + 1, 2)
        for start in tqdm(range(0, len(ex), batch_size), desc=f"reference log-probs ({split})", leave=False):
            batch = ex.batch(list(range(start, min(start + batch_size, len(ex))))).to(device)
            chosen, rejected = reference(batch, split)
            table[batch.index.cpu()] = torch.stack([chosen, rejected], dim=1).float().cpu()
        tables[split] = table
    policy.model.train(was_training)
    tmp = cache.with_suffix(".tmp")
    save_file(tables, tmp)
    cache.with_suffix(".json").write_text(json.dumps({"fingerprint": fingerprint}))
    os.replace(tmp, cache)
    return PrecomputedReference(tables)


def make_reference(mode: str, policy: Policy, examples: dict[str, Examples], run_dir: Path, batch_size: int):
    """The reference for `mode` (see module docstring); call before any checkpoint is loaded."""
    if mode not in MODES:
        raise ValueError(f"trainer.reference={mode!r} is not one of {MODES}")
    if mode == "precompute":
        return precompute(policy, examples, run_dir / "reference_logps.safetensors", batch_size)
    if mode == "disabled_adapter":
        if not policy.has_adapter:
            raise ValueError("trainer.reference=disabled_adapter needs a LoRA policy (set policy.lora)")
        return ModelReference(policy.model, disable_adapter=True)
    frozen = copy.deepcopy(policy.model).eval().requires_grad_(False)
    return ModelReference(frozen, disable_adapter=False)
