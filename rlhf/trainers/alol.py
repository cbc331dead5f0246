"""A-LoL's loop (Baheti et al. 2024): advantages against a reference value estimate, then offline training
on the examples with positive advantage, drawn by priority.

1. The reference policy (the initial one) answers held-out prompts that the reward evaluation does not
   use (the eval split after its first `task.num_eval_prompts`, at most `num_value_prompts`); the
   configured reward scores them.
2. A value head (`rlhf.algos.value_head`) over the reference's last-layer hidden states of a prompt is fit
   to those scores by MSE; V(x) of every train and eval prompt follows, and A = R - V(x) with R the row's
   score (`score_chosen`, and `score_rejected` for the rejected replies under `all_priority`; `score` of
   conversation and scored rows).
3. Advantages are cached in the run directory, so a resumed run reuses them (never recomputed from trained
   weights); examples are drawn with `sampling_strategy` weights and `max_steps` is scaled by the fraction
   of positive advantages.
Variants that need no advantages (nll, wbc, r_gold, r_lol) skip 1-2 and are weighted by R.
Deviation: reference rollouts use the configured backend (A-LoL decodes greedily: `backend.temperature=0`).
Hidden states of all prompts are held in memory, fine for the bundled tasks; large prompt sets would need
them recomputed per batch.
"""

import inspect
import json
import logging
import os
from contextlib import nullcontext
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from rlhf.algos.alol import ALoL
from rlhf.algos.alol_sampling import positive_fraction, sample_weights, scaled_steps
from rlhf.algos.value_head import ValueHeadAttention, fit_value_head, predict
from rlhf.data.examples import Examples
from rlhf.eval.reward_eval import BackendFactory, RewardEvaluator
from rlhf.models.policy import Policy
from rlhf.rewards.base import Reward
from rlhf.tasks.dataset import DatasetTask
from rlhf.trainers.offline import fit_offline, optimizer_steps_per_epoch, tokenised

log = logging.getLogger(__name__)


@torch.no_grad()
def prompt_hidden_states(policy: Policy, prompts: list[list[dict]], batch_size: int = 32) -> tuple[Tensor, Tensor]:
    """Last-layer hidden states of the reference (adapter off) on each prompt: (N, T, H) right-padded, mask (N, T)."""
    model, tokenizer = policy.model, policy.tokenizer
    ids = [list(tokenizer.apply_chat_template(p, tokenize=True, add_generation_prompt=True, return_dict=False))
           for p in prompts]
    T = max(map(len, ids))
    input_ids = torch.full((len(ids), T), tokenizer.pad_token_id)
    mask = torch.zeros((len(ids), T), dtype=torch.bool)
    for i, seq in enumerate(ids):
        input_ids[i, : len(seq)], mask[i, : len(seq)] = torch.tensor(seq), True
    was_training = model.train(False).training
    device, chunks = next(model.parameters()).device, []
    for start in range(0, len(ids), batch_size):
        with model.disable_adapter() if policy.has_adapter else nullcontext():
            out = model(input_ids=input_ids[start:start + batch_size].to(device),
                        attention_mask=mask[start:start + batch_size].to(device), output_hidden_states=True)
        chunks.append(out.hidden_states[-1].float().cpu())
    model.train(was_training)
    return torch.cat(chunks), mask


def estimate_advantages(policy: Policy, evaluate: RewardEvaluator, value_prompts: list[list[dict]],
                        examples: dict[str, Examples], prompts: dict[str, list[list[dict]]], max_value: float,
                        epochs: int, lr: float, seed: int) -> dict[str, Tensor]:
    """A = R - V(x) for the examples of every split (steps 1-2 of the module docstring)."""
    rollouts = evaluate.rollouts(policy, value_prompts)
    rollouts = [r | {"scores": valid} for r in rollouts if (valid := [s for s in r["scores"] if s is not None])]
    if not rollouts:
        raise ValueError("A-LoL's value estimate: no reference rollout on the held-out prompts got a valid reward")
    targets = torch.tensor([sum(r["scores"]) / len(r["scores"]) for r in rollouts])  # (M,)
    hidden, mask = prompt_hidden_states(policy, [r["prompt"] for r in rollouts])
    torch.manual_seed(seed)
    head = ValueHeadAttention(hidden.shape[-1], max_value=max_value)
    history = fit_value_head(head, hidden, mask, targets, epochs, lr, batch_size=16,
                             generator=torch.Generator().manual_seed(seed))
    log.info("value head: reference rollout reward %.3f, training MSE %.4f -> %.4f (best %.4f)",
             float(targets.mean()), history[0], history[-1], min(history))
    advantages = {}
    for split, ex in examples.items():
        values = predict(head, *prompt_hidden_states(policy, prompts[split]), batch_size=64)  # (rows,)
        advantages[split] = ex.fields["rewards"] - values[torch.tensor(ex.rows)]
    return advantages


def fit_alol(
    *,
    policy: Policy,
    algo: ALoL,
    task: DatasetTask,
    backend: BackendFactory,
    reward: Reward,
    run_dir: str,
    seed: int,
    tokenization,
    sampling_strategy: str | None = "good_priority",
    value_epochs: int = 10,
    value_learning_rate: float = 1e-3,
    max_value: float = 1.0,
    num_value_prompts: int = 256,
    max_steps: int | None = 100,
    **offline,
) -> dict[str, float]:
    """Steps 1-3 of the module docstring, then `fit_offline` (all other arguments are passed on).

    max_steps: None trains `epochs` passes over the train examples (A-LoL's generic script), which the
    positive fraction then scales like a step count.
    """
    responses = ("chosen", "rejected") if sampling_strategy == "all_priority" else ("chosen",)
    if sampling_strategy == "all_priority" and task.schema != "preference":
        raise ValueError(f"trainer.sampling_strategy=all_priority also draws the rejected replies of preference rows; "
                         f"task {task.name!r} has {task.schema} rows (use good_priority)")
    examples = tokenised(task, algo, policy, tokenization, responses, offline.get("tokenised_cache"))
    if "rewards" not in examples["train"].fields:
        raise ValueError(f"A-LoL weights examples by their reward: task {task.name!r} needs score_chosen"
                         f"{'/score_rejected' if len(responses) == 2 else ''} columns (or `score` for conversation and scored rows)")
    values = examples["train"].fields["rewards"]
    if algo.uses_advantages:
        if task.eval is None:
            raise ValueError("A-LoL's value estimate needs held-out prompts and a reward: set task.eval_path")
        evaluate = RewardEvaluator(backend, reward, task.eval_prompts())
        cache = Path(run_dir) / "advantages.safetensors"
        if cache.exists():
            advantages = load_file(cache)
        else:
            prompts = {split: task.prompts(split) for split in examples}
            value_prompts = task.prompts("eval")[task.num_eval_prompts:][:num_value_prompts]
            if len(value_prompts) < 8:
                raise ValueError(f"A-LoL fits its value head on held-out prompts beyond the {task.num_eval_prompts} "
                                 f"evaluation prompts; task {task.name!r} leaves {len(value_prompts)}: lower "
                                 "task.num_eval_prompts or add eval rows")
            advantages = estimate_advantages(policy, evaluate, value_prompts, examples, prompts, max_value,
                                             value_epochs, value_learning_rate, seed)
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            save_file(advantages, cache.with_suffix(".tmp"))
            os.replace(cache.with_suffix(".tmp"), cache)
        examples = {split: ex.with_fields(advantages=advantages[split]) for split, ex in examples.items()}
        values = advantages["train"]
        kept = positive_fraction(values)
        if kept == 0:
            raise ValueError(
                f"no train example of task {task.name!r} has a positive advantage A = R - V(x) (mean A "
                f"{float(values.mean()):.4f}, mean R {float(examples['train'].fields['rewards'].mean()):.4f}): "
                f"{algo.variant} would train on nothing. The value head predicts more than every row's reward; "
                f"see its fit in the log (trainer.value_epochs, trainer.value_learning_rate, trainer.max_value) or "
                f"delete {cache} to fit it again")
        if max_steps is None:  # fit_offline's defaults where the trainer config gives none
            defaults = {k: p.default for k, p in inspect.signature(fit_offline).parameters.items()}
            setting = {k: offline.get(k, defaults[k]) for k in ("epochs", "batch_size", "gradient_accumulation_steps")}
            per_epoch = optimizer_steps_per_epoch(len(examples["train"]), setting["batch_size"],
                                                  int(os.environ.get("WORLD_SIZE", 1)),
                                                  setting["gradient_accumulation_steps"])
            max_steps = max(1, setting["epochs"] * per_epoch)
        max_steps = scaled_steps(max_steps, values)
        log.info("%.1f%% of train examples have positive advantage; training %d steps", 100 * kept, max_steps)
        (Path(run_dir) / "advantages.json").write_text(json.dumps(
            {"positive_fraction": kept, "mean": float(values.mean()), "steps": max_steps}))
    weights = sample_weights(values, sampling_strategy) if sampling_strategy else None
    return fit_offline(policy=policy, algo=algo, task=task, backend=backend, reward=reward, run_dir=run_dir, seed=seed,
                       tokenization=tokenization, examples=examples, sample_weights=weights, max_steps=max_steps,
                       **offline)
