"""Forward passes per batch kind, and the binding of their outputs to an algorithm's loss by argument name.

The loop never asks which algorithm it runs: the algorithm's `batch_kind` picks the forward pass, and its
`loss` signature says which of the available tensors it takes. Available per kind:
- "sequence": logprobs, response_mask (B, T-1); ref_logprobs (B, T-1); per-example fields (rewards, ...)
- "group":    the same for B*K responses, old_logprobs (= logprobs detached: one update per batch, as TRL
              with num_iterations=1), and rewards (B, K)
- "pair":     chosen_logps, rejected_logps, chosen_lengths, rejected_lengths (B,); ref_chosen_logps,
              ref_rejected_logps (B,), and the same as old_chosen_logps, old_rejected_logps (offline, the
              policy that produced the data is the reference); chosen_scores, rejected_scores, margins,
              group_ids (B,) when present
- "reward_pair": chosen_rewards, rejected_rewards (B, H) from a reward model with H heads; margins, group_ids
- "rollout":  group data as N = B*K single rollouts of a model with a value head: logprobs, old_logprobs,
              values, old_values (detached: one update per batch), response_mask (N, T-1); ref_logprobs;
              scores and ends_with_eos (N,); and what the algorithm's `targets` makes of them once per
              batch (PPO: advantages, returns)
Log-probs are taken at the algorithm's `temperature` when it has one (REFUEL scores at its sampling
temperature), else at 1.
"""

import inspect
from collections.abc import Callable

from torch import Tensor
from transformers import PreTrainedModel

from rlhf.data.batch import PairBatch, SequenceBatch
from rlhf.models.logprobs import response_window, token_logprobs, windowed_logprobs
from rlhf.models.pair_logps import pair_logps

Batch = SequenceBatch | PairBatch
Reference = Callable[[Batch, str], dict[str, Tensor]]


def logprob_temperature(algo) -> float:
    return getattr(algo, "temperature", 1.0)


def sequence_outputs(model: PreTrainedModel, batch: SequenceBatch, temperature: float) -> dict[str, Tensor]:
    return {"logprobs": token_logprobs(model, batch, temperature)}  # (B, T-1)


def pair_outputs(model: PreTrainedModel, batch: PairBatch, temperature: float,
                 pair_forward: str = "joint") -> dict[str, Tensor]:
    B = batch.index.shape[0]
    logps, lengths = pair_logps(model, batch, temperature, pair_forward)  # (2B,) each, chosen first
    return {"chosen_logps": logps[:B], "rejected_logps": logps[B:],
            "chosen_lengths": lengths[:B], "rejected_lengths": lengths[B:]}


def reward_outputs(model, batch: PairBatch, temperature: float) -> dict[str, Tensor]:
    B = batch.index.shape[0]
    both = batch.concatenated()
    rewards = model(input_ids=both.input_ids, attention_mask=both.attention_mask).logits.float()  # (2B, H)
    return {"chosen_rewards": rewards[:B], "rejected_rewards": rewards[B:]}


def rollout_outputs(model, batch: SequenceBatch, temperature: float) -> dict[str, Tensor]:
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_to_keep=response_window(batch))
    return {"logprobs": windowed_logprobs(out.logits, batch, temperature),  # (N, T-1)
            "values": out.values[:, :-1].float()}  # (N, T-1): value of the state each log-prob is taken in


OUTPUTS: dict[str, Callable] = {"sequence": sequence_outputs, "group": sequence_outputs, "pair": pair_outputs,
                                "reward_pair": reward_outputs, "rollout": rollout_outputs}
# the outputs a reference policy provides, passed to losses as ref_<name>
REFERENCE_OUTPUTS = {"sequence": ("logprobs",), "group": ("logprobs",), "pair": ("chosen_logps", "rejected_logps"),
                     "reward_pair": (), "rollout": ("logprobs",)}
PER_TOKEN_KINDS = ("sequence", "group", "rollout")


def loss_inputs(algo, model, batch: Batch, reference: Reference | None, split: str,
                pair_forward: str = "joint") -> tuple[dict[str, Tensor | None], dict[str, Tensor]]:
    """The tensors a loss may take for `batch`, and the metrics of computing them (the algorithm's
    `targets`, where its batch kind has them). pair_forward: how pairs run (`rlhf.models.pair_logps`)."""
    kind = algo.batch_kind
    extra = {"pair_forward": pair_forward} if kind == "pair" else {}
    inputs = OUTPUTS[kind](model, batch, logprob_temperature(algo), **extra) | batch.fields
    if kind in PER_TOKEN_KINDS:
        inputs["response_mask"] = batch.response_mask[:, 1:]  # a token's log-prob sits one position before it
    if kind in ("group", "rollout"):
        inputs["old_logprobs"] = inputs["logprobs"].detach()
    if kind == "rollout":
        inputs |= {"old_values": inputs["values"].detach(), "scores": inputs.pop("rewards").flatten(),
                   "ends_with_eos": inputs.pop("ends_with_eos").flatten()}
    ref = reference(batch, split) if reference is not None else {}
    inputs |= {f"ref_{name}": ref.get(name) for name in REFERENCE_OUTPUTS[kind]}
    if kind == "pair":
        inputs |= {f"old_{name}": ref.get(name) for name in REFERENCE_OUTPUTS[kind]}
    metrics: dict[str, Tensor] = {}
    if kind == "rollout":  # one update per batch: the batch is the whole rollout batch
        targets, metrics = call_with(algo, algo.targets, inputs)
        inputs |= targets
    return inputs, metrics


def call_loss(algo, inputs: dict[str, Tensor | None]) -> tuple[Tensor, dict[str, Tensor]]:
    """`algo.loss` with the inputs its signature names; a required one that is missing is an error that says
    what would provide it."""
    return call_with(algo, algo.loss, inputs)


def call_with(algo, method: Callable, inputs: dict[str, Tensor | None]):
    """`method` (of `algo`) with the inputs its signature names (see `call_loss`)."""
    kwargs, missing = {}, []
    for name, parameter in inspect.signature(method).parameters.items():
        if name in inputs:
            kwargs[name] = inputs[name]
        elif parameter.default is inspect.Parameter.empty:
            missing.append(name)
    if missing:
        raise ValueError(
            f"{type(algo).__name__}.{method.__name__} needs {missing}, which {algo.batch_kind} batches of this data do not "
            "provide (scores come from score_chosen/score_rejected columns, rewards from a `score` column or "
            f"the algorithm's own loop); available: {sorted(k for k, v in inputs.items() if v is not None)}"
        )
    return method(**kwargs)


def compute_loss(algo, model, batch: Batch, reference: Reference | None, split: str, pair_forward: str = "joint"):
    inputs, metrics = loss_inputs(algo, model, batch, reference, split, pair_forward)
    loss, loss_metrics = call_loss(algo, inputs)
    return loss, metrics | loss_metrics
