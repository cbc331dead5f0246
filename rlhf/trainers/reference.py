"""The reference (or old) policy of losses that need one, three ways.

- "precompute": one pass of the initial policy over the data before training; its outputs are cached in the
  run directory under a fingerprint of policy, data, temperature and the hardware/software stack (recomputed
  when any of them changes, never from trained weights on resume), and no second model stays in memory.
  With a shared folder (`trainer.reference_cache`) they are also kept there under that fingerprint and the
  initial weights' bytes, so the jobs of a sweep over other settings compute them once.
- "frozen_copy": a deep copy of the initial policy, frozen, run next to the trained one.
- "disabled_adapter": the trained model itself with its LoRA adapter switched off (LoRA only).

Each runs under the training's `trainer.mixed_precision` (autocast, as the trained policy's forward does), so
at the first step the reference's log-probs are the policy's own; precomputed outputs are keyed by it too.

A reference returns, for a batch, the outputs named in `REFERENCE_OUTPUTS` of its kind: per example
(pairs: one number per log-prob) or per token (sequences: (N, T-1), zero on padding).
"""

import copy
import hashlib
import json
import logging
import os
import platform
from contextlib import nullcontext
from pathlib import Path

import torch
import transformers
from safetensors.torch import load_file, save_file
from torch import Tensor
from tqdm.auto import tqdm

from rlhf.atomic import file_lock
from rlhf.data.examples import Examples
from rlhf.models.policy import Policy
from rlhf.trainers.steps import OUTPUTS, PER_TOKEN_KINDS, REFERENCE_OUTPUTS, Batch

log = logging.getLogger(__name__)

MODES = ("precompute", "frozen_copy", "disabled_adapter")
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}  # trainer.mixed_precision -> autocast dtype


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of `trainer.mixed_precision` (None for "no"); other settings are refused."""
    if precision == "no":
        return None
    if precision not in AUTOCAST:
        raise ValueError(f"trainer.mixed_precision={precision!r} is not one a reference policy can run under "
                         f"(the algorithm needs one): use 'no', {' or '.join(repr(k) for k in AUTOCAST)}")
    return AUTOCAST[precision]


class ModelReference:
    """Reference outputs from a model, computed per batch without gradients."""

    def __init__(self, model, kind: str, temperature: float, disable_adapter: bool, precision: str = "no"):
        self.model, self.kind, self.temperature, self.disable_adapter = model, kind, temperature, disable_adapter
        self.dtype = autocast_dtype(precision)

    @torch.no_grad()
    def __call__(self, batch: Batch, split: str) -> dict[str, Tensor]:
        autocast = nullcontext() if self.dtype is None else \
            torch.autocast(device_type=next(self.model.parameters()).device.type, dtype=self.dtype)
        with self.model.disable_adapter() if self.disable_adapter else nullcontext(), autocast:
            outputs = OUTPUTS[self.kind](self.model, batch, self.temperature)
        if self.kind in PER_TOKEN_KINDS:  # per token: zero on padding, as the cached tables are
            outputs = {k: v * batch.attention_mask[:, 1:] for k, v in outputs.items()}
        return {name: outputs[name] for name in REFERENCE_OUTPUTS[self.kind]}


class PrecomputedReference:
    """Cached reference outputs, looked up by the batch's example index.

    tables[split][name] is (values, offsets): the outputs of index i are values[offsets[i]:offsets[i+1]], one
    number for a per-example output, the response positions' log-probs for a per-token one.
    """

    def __init__(self, tables: dict[str, dict[str, tuple[Tensor, Tensor]]], per_token: bool):
        self.tables, self.per_token = tables, per_token

    def __call__(self, batch: Batch, split: str) -> dict[str, Tensor]:
        index = batch.index.cpu()
        out = {}
        for name, (values, offsets) in self.tables[split].items():
            if not self.per_token:
                out[name] = values[offsets[index]].to(batch.index.device)  # (B,)
                continue
            table = torch.zeros(len(index), batch.input_ids.shape[1] - 1)  # (N, T-1)
            for row, i in enumerate(index.tolist()):
                part = values[offsets[i]:offsets[i + 1]]
                table[row, : len(part)] = part
            out[name] = table.to(batch.index.device)
        return out


def stack_fingerprint() -> dict:
    """What the cached outputs depend on besides weights and data: numerics differ across these."""
    return {"torch": torch.__version__, "transformers": transformers.__version__, "machine": platform.machine(),
            "cuda": torch.version.cuda, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}


def _fingerprint(policy: Policy, examples: dict[str, Examples], kind: str, temperature: float,
                 precision: str = "no") -> str:
    key = [policy.path, kind, temperature, stack_fingerprint()] + ([precision] if precision != "no" else [])
    h = hashlib.sha256(json.dumps(key).encode())
    for split, ex in sorted(examples.items()):
        h.update(split.encode())
        for item in ex.items:
            for seq in (item if isinstance(item, (tuple, list)) else [item]):
                h.update(json.dumps([seq.input_ids, seq.turn_ids]).encode())
    return h.hexdigest()


def _compute(reference: ModelReference, ex: Examples, batch_size: int, device, per_token: bool, split: str):
    parts: dict[str, dict[int, Tensor]] = {name: {} for name in REFERENCE_OUTPUTS[reference.kind]}
    for start in tqdm(range(0, len(ex), batch_size), desc=f"reference outputs ({split})", leave=False):
        batch = ex.batch(list(range(start, min(start + batch_size, len(ex))))).to(device)
        lengths = (batch.attention_mask.sum(-1) - 1).tolist() if per_token else None  # (N,) real positions
        for name, value in reference(batch, split).items():
            value = value.float().cpu()  # one copy per batch, not one per row
            for row, i in enumerate(batch.index.tolist()):
                parts[name][i] = value[row, : lengths[row]] if per_token else value[row].view(1)
    tables = {}
    for name, by_index in parts.items():
        ordered = [by_index[i] for i in range(len(by_index))]
        offsets = torch.tensor([0] + [len(p) for p in ordered]).cumsum(0)
        tables[name] = (torch.cat(ordered), offsets)
    return tables


def precompute(policy: Policy, examples: dict[str, Examples], kind: str, temperature: float, cache: Path,
               batch_size: int, shared: Path | None = None, precision: str = "no") -> PrecomputedReference:
    """Reference tables for every split, loaded from `cache` (the run's) when it was written for the same
    inputs, else from `shared` (a folder other runs use too) when a run with the same inputs and the same
    initial weights (their bytes, not their path) wrote them there, else computed and written to both. Runs
    that start together wait for the first to compute (a file lock), then read its tables."""
    per_token = kind in PER_TOKEN_KINDS
    fingerprint = _fingerprint(policy, examples, kind, temperature, precision)
    meta = cache.with_suffix(".json")
    if cache.exists() and _fingerprint_of(meta) == fingerprint:
        return PrecomputedReference(_read(cache), per_token)
    if shared is None:
        return _computed(policy, examples, kind, temperature, batch_size, cache, fingerprint, precision)
    from rlhf.rollout.chunks import weights_fingerprint

    shared = shared.expanduser()
    shared.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(f"{fingerprint}:{weights_fingerprint(policy.model)}".encode()).hexdigest()[:32]
    stored = shared / f"{key}.safetensors"
    with file_lock(shared / f"{key}.lock"):
        if stored.exists():
            log.info("reference outputs of these weights and examples: %s (trainer.reference_cache)", stored)
            tables = _read(stored)
            _write_run_cache(tables, cache, fingerprint)
            return PrecomputedReference(tables, per_token)
        reference = _computed(policy, examples, kind, temperature, batch_size, cache, fingerprint, precision)
        _write(reference.tables, stored)
    return reference


def _computed(policy: Policy, examples: dict[str, Examples], kind: str, temperature: float, batch_size: int,
              cache: Path, fingerprint: str, precision: str = "no") -> PrecomputedReference:
    """One pass of the policy over every split, written to `cache` with its fingerprint."""
    per_token = kind in PER_TOKEN_KINDS
    reference = ModelReference(policy.model, kind, temperature, disable_adapter=policy.has_adapter,
                               precision=precision)
    was_training = policy.model.training
    policy.model.eval()
    device = next(policy.model.parameters()).device
    tables = {split: _compute(reference, ex, batch_size, device, per_token, split) for split, ex in examples.items()}
    policy.model.train(was_training)
    _write_run_cache(tables, cache, fingerprint)
    return PrecomputedReference(tables, per_token)


def _write_run_cache(tables: dict[str, dict[str, tuple[Tensor, Tensor]]], cache: Path, fingerprint: str) -> None:
    """The run directory's copy, with the fingerprint it is valid for."""
    _write(tables, cache)
    meta = cache.with_suffix(".json")
    tmp = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"fingerprint": fingerprint, "stack": stack_fingerprint()}))
    os.replace(tmp, meta)


def _fingerprint_of(meta: Path) -> str | None:
    """The fingerprint the run directory's tables were written for (None: none, or an unreadable record)."""
    try:
        return json.loads(meta.read_text())["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read(path: Path) -> dict[str, dict[str, tuple[Tensor, Tensor]]]:
    tables: dict = {}
    for key, value in load_file(path).items():
        split, name, part = key.split("/")
        tables.setdefault(split, {}).setdefault(name, {})[part] = value
    return {s: {n: (p["values"], p["offsets"]) for n, p in t.items()} for s, t in tables.items()}


def _write(tables: dict[str, dict[str, tuple[Tensor, Tensor]]], path: Path) -> None:
    """Atomically: a reader sees the whole file or none."""
    flat = {f"{s}/{n}/{part}": t for s, named in tables.items() for n, (v, o) in named.items()
            for part, t in (("values", v), ("offsets", o))}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(flat, tmp)
    os.replace(tmp, path)


def make_reference(mode: str, policy: Policy, examples: dict[str, Examples], kind: str, temperature: float,
                   run_dir: Path, batch_size: int, shared: str | None = None, precision: str = "no"):
    """The reference for `mode` (see module docstring); call before any checkpoint is loaded. shared: the
    folder precomputed outputs are also kept in for other runs (`trainer.reference_cache`; None: the run's only);
    precision: the training's `trainer.mixed_precision`, which the reference's forward passes run under."""
    if mode not in MODES:
        raise ValueError(f"trainer.reference={mode!r} is not one of {MODES}")
    autocast_dtype(precision)  # refused before any pass
    if mode == "precompute":
        return precompute(policy, examples, kind, temperature, run_dir / "reference_outputs.safetensors", batch_size,
                          Path(shared) if shared else None, precision)
    if mode == "disabled_adapter":
        if not policy.has_adapter:
            raise ValueError("trainer.reference=disabled_adapter needs a LoRA policy (set policy.lora)")
        return ModelReference(policy.model, kind, temperature, disable_adapter=True, precision=precision)
    frozen = copy.deepcopy(policy.model).eval().requires_grad_(False)
    return ModelReference(frozen, kind, temperature, disable_adapter=False, precision=precision)
