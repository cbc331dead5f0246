"""The offline training loop: a fixed dataset, an algorithm's loss, accelerate for devices and processes.

It never asks which algorithm it runs: `algo.batch_kind` picks the data pipeline and forward pass, the
signature of `algo.loss` the tensors it gets (`rlhf.trainers.steps`), `algo.needs_reference` whether a
reference policy is run. Everything a job
needs to go on after being killed is in its run directory: checkpoints (written atomically), cached
reference log-probs, `metrics.jsonl`. Running the same command again resumes from the latest checkpoint;
the data order is a function of (seed, epoch), so the position in the data is the step count. When SLURM
announces the end of a job (submitit's preemption signal; SIGTERM in a submitit job), the loop saves a
checkpoint at the next optimizer step and stops (`rlhf.trainers.checkpoint.Preemption`).

With several processes (`accelerate launch`, or a SLURM job with several tasks: `slurm_rendezvous`) each
process takes its slice of every global micro-batch; the main process alone writes metrics, the final model
and final_metrics.json, and runs the reward evaluator (under DeepSpeed ZeRO-3, whose parameters are sharded,
every process takes part in its generation).

Loops of methods with more control flow (e.g. `rlhf.trainers.alol`) prepare what they need and call
`fit_offline` with `examples` (tokenised data with extra per-example fields) and `sample_weights`.
"rollout" batches (PPO on fixed scored rollouts) train the policy with a value head
(`rlhf.models.value_model`); each batch gets one update, so the behaviour (old) policy of a batch is the
current one detached and the per-token KL penalty to the reference is what keeps the policy near it. Online
PPO, with fresh rollouts and several epochs over them, is `rlhf.trainers.online`.
"""

import json
import logging
import os
import time
from collections import defaultdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, gather_object, set_seed
from tqdm.auto import tqdm

from rlhf.data.examples import Examples
from rlhf.data.examples_cache import cached_examples
from rlhf.data.tokenize import Tokenization
from rlhf.eval.reward_eval import BackendFactory, RewardEvaluator
from rlhf.logging import JsonlLogger, Logger
from rlhf.models.pair_logps import PAIR_FORWARDS
from rlhf.models.policy import Policy
from rlhf.models.value_model import PolicyWithValueHead
from rlhf.rewards.base import Reward
from rlhf.tasks.dataset import DatasetTask
from rlhf.trainers.checkpoint import (Preemption, after_update, check_finite, finish_run, latest_checkpoint,
                                     load_checkpoint)
from rlhf.trainers.reference import make_reference
from rlhf.trainers.schedules import make_scheduler
from rlhf.trainers.steps import compute_loss, logprob_temperature

log = logging.getLogger(__name__)


GENERATIVE_KINDS = ("sequence", "pair", "group", "rollout")  # reward models are judged by held-out pair accuracy instead


def slurm_rendezvous() -> None:
    """In a submitit job of several SLURM tasks (`hydra.launcher.tasks_per_node` x `nodes` > 1) that no
    launcher has set up for torch.distributed, export MASTER_ADDR (the job's first node), MASTER_PORT (from
    the job id), RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE from the SLURM variables, so that
    `Accelerator()` joins the job's processes. Call it before anything reads RANK (the run's config.yaml is
    written by rank 0 only)."""
    if "SUBMITIT_EXECUTOR" not in os.environ or "WORLD_SIZE" in os.environ:
        return
    from submitit import JobEnvironment
    from submitit.helpers import TorchDistributedEnvironment

    if JobEnvironment().num_tasks > 1:
        # each process keeps all GPUs visible: accelerate picks cuda:LOCAL_RANK
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def make_optimizer(params: list[torch.nn.Parameter], learning_rate: float, weight_decay: float) -> torch.optim.AdamW:
    """torch's AdamW, fused (one kernel over all parameters, on CPU as on CUDA) when every parameter is a
    floating tensor, else the per-parameter loop: the same update up to float rounding (2e-7 after 17 steps),
    its step 4.7x faster on CPU for a 4.7M-parameter model (bench/adamw_step.py)."""
    fused = bool(params) and all(p.is_floating_point() for p in params)
    return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay, fused=fused)


def make_accelerator(gradient_accumulation_steps: int, mixed_precision: str) -> Accelerator:
    """The Accelerator of this process. Processes started by a launcher (WORLD_SIZE > 1) on a machine without
    CUDA join over gloo: accelerate would otherwise run each as a world of its own (DDP unless
    ACCELERATE_USE_CPU is set; DeepSpeed always)."""
    kwargs: dict = {}
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
            kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(backend="gloo")]
        else:
            kwargs["cpu"] = True
    return Accelerator(gradient_accumulation_steps=gradient_accumulation_steps,
                       mixed_precision=mixed_precision, **kwargs)


def epoch_order(n: int, seed: int, epoch: int, weights: torch.Tensor | None = None,
                lengths: list[int] | None = None, batch: int = 0, window: int = 0) -> list[int]:
    """The example order of an epoch, the same on every process and after every resume: a permutation, or
    with `weights` n draws with replacement in proportion to them (priority sampling).

    With `lengths` and `window` > 0 (`trainer.length_buckets`): the drawn order is cut into windows of
    `window` batches of `batch` examples, each window is sorted by length and cut into batches, and the full
    batches are shuffled (a last partial one stays last, so the batches of an epoch keep their boundaries).
    Examples of similar length share a batch, so less of it is padding; which examples an epoch sees is the
    same, only their grouping and order change."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if weights is None:
        order = torch.randperm(n, generator=generator).tolist()
    else:
        order = torch.multinomial(weights, n, replacement=True, generator=generator).tolist()
    if lengths is None or window <= 0 or batch <= 0:
        return order
    batches = []
    for start in range(0, len(order), batch * window):
        part = sorted(order[start:start + batch * window], key=lambda i: lengths[i])
        batches += [part[j:j + batch] for j in range(0, len(part), batch)]
    tail = batches.pop() if len(batches[-1]) < batch else []
    shuffled = [batches[b] for b in torch.randperm(len(batches), generator=generator).tolist()]
    return [i for b in shuffled for i in b] + tail


def example_lengths(examples: Examples) -> list[int]:
    """Each example's padded length in a batch: its sequence's, a pair's longer reply's, a group's longest."""
    return [len(item.input_ids) if hasattr(item, "input_ids") else max(len(s.input_ids) for s in item)
            for item in examples.items]


def tokenised(task: DatasetTask, algo, policy: Policy, tokenization: Tokenization,
              responses: tuple[str, ...] = ("chosen",), cache: str | None = None) -> dict[str, Examples]:
    """The task's train (and eval) rows as examples of the algorithm's batch kind (`responses`: which replies
    of a preference row become sequence examples); cache: the folder they are kept in for other runs
    (`trainer.tokenised_cache`, `rlhf.data.examples_cache`; None: tokenised every run)."""
    splits = {"train": task.train} | ({"eval": task.eval} if task.eval is not None else {})
    examples = {split: cached_examples(cache, rows, task.schema, algo.batch_kind, policy.tokenizer, tokenization,
                                       f"{task.name} {split}", responses) for split, rows in splits.items()}
    for split, ex in examples.items():
        if ex.dropped:
            log.warning("%d %s examples dropped by data.truncation=%s", ex.dropped, split, tokenization.truncation)
    return examples


class Averages:
    """Running means of metrics, each over the values where it was defined: a metric that is NaN for a batch
    (e.g. REFUEL's sign agreement when all of a batch's pairs tie) is left out of its mean, not spread."""

    def __init__(self):
        self.sums, self.counts = defaultdict(float), defaultdict(float)

    def add(self, metrics: dict, weight: float = 1.0) -> None:
        for k, v in metrics.items():
            value = float(v.detach()) if torch.is_tensor(v) else float(v)
            if value == value:  # not NaN
                self.sums[k] += value * weight
                self.counts[k] += weight

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] for k in self.sums}

    def across_processes(self) -> "Averages":
        """The running means over the values of every process (a collective call)."""
        merged = Averages()
        for sums, counts in gather_object([(dict(self.sums), dict(self.counts))]):
            for k in sums:
                merged.sums[k] += sums[k]
                merged.counts[k] += counts[k]
        return merged


def optimizer_steps_per_epoch(num_examples: int, batch_size: int, num_processes: int, accumulation: int) -> int:
    """Optimizer steps in one pass over `num_examples` (the last incomplete step left out)."""
    return num_examples // (batch_size * num_processes) // accumulation


def fit_offline(
    *,
    policy: Policy,
    algo,
    task: DatasetTask,
    tokenization: Tokenization,
    logger: Logger,
    run_dir: str,
    seed: int,
    config: dict,
    backend: BackendFactory | None = None,
    reward: Reward | None = None,
    examples: dict[str, Examples] | None = None,
    sample_weights: torch.Tensor | None = None,
    learning_rate: float = 1e-4,
    epochs: int = 1,
    max_steps: int | None = None,
    batch_size: int = 8,
    gradient_accumulation_steps: int = 1,
    lr_scheduler: str = "cosine",
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    max_grad_norm: float = 1.0,
    eval_every: int = 0,
    checkpoint_every: int = 0,
    keep_checkpoints: int = 2,
    log_every: int = 10,
    mixed_precision: str = "no",
    reference: str = "precompute",
    reference_cache: str | None = None,
    tokenised_cache: str | None = None,
    pair_forward: str = "joint",
    length_buckets: int = 0,
) -> dict[str, float]:
    """Train `policy` with `algo` on `task.train`; returns the final metrics (also in final_metrics.json).

    backend, reward: generate for and score the task's evaluation prompts before, during and after training
    (with held-out rows; none, no reward evaluation). examples: already tokenised splits (default: `tokenised(task, ...)`); sample_weights: (N,) draw
    probabilities of the train examples (default: each example once per epoch, shuffled).
    batch_size is per process; one optimizer step sees batch_size x processes x gradient_accumulation_steps
    examples. eval_every / checkpoint_every are in optimizer steps (0 = only at the end).
    reference_cache: a folder where precomputed reference outputs are also kept for other runs with the same
    examples and initial weights (None: only in the run directory). tokenised_cache: a folder where the
    tokenised examples are kept for other runs with the same rows, tokenizer and settings (None: none).
    pair_forward: how preference pairs run through the policy: "joint", "split" or "shared_prompt"
    (`rlhf.models.pair_logps`); the same losses, other speed and memory.
    length_buckets: group examples of similar length into batches, within windows of this many batches of
    the shuffled order (`epoch_order`); 0 = off.
    """
    if length_buckets < 0:
        raise ValueError(f"trainer.length_buckets={length_buckets} must be >= 0 (0 is off)")
    if pair_forward not in PAIR_FORWARDS:
        raise ValueError(f"trainer.pair_forward={pair_forward!r}: expected one of {', '.join(PAIR_FORWARDS)}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"trainer.max_steps={max_steps} must be >= 1 (or null: trainer.epochs epochs)")
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    done = run_dir / "final_metrics.json"
    if done.exists():
        log.info("%s is complete already; delete it to train again", run_dir)
        return json.loads(done.read_text())
    accelerator = make_accelerator(gradient_accumulation_steps, mixed_precision)
    deepspeed = accelerator.state.deepspeed_plugin
    if deepspeed is not None:  # no dataloader is prepared, so DeepSpeed learns these here
        deepspeed.deepspeed_config["train_micro_batch_size_per_gpu"] = batch_size
        deepspeed.deepspeed_config["gradient_clipping"] = max_grad_norm
    sharded = deepspeed is not None and deepspeed.zero_stage == 3
    set_seed(seed)
    if algo.batch_kind == "rollout":
        policy = Policy(PolicyWithValueHead(policy.model, seed), policy.tokenizer, policy.path)
    examples = examples or tokenised(task, algo, policy, tokenization, cache=tokenised_cache)
    ref = None
    if algo.needs_reference:
        with accelerator.main_process_first():  # the main process writes the cache, the others read it
            ref = make_reference(reference, policy, examples, algo.batch_kind, logprob_temperature(algo),
                                 run_dir, batch_size, reference_cache, mixed_precision)
    evaluate = None
    if algo.batch_kind in GENERATIVE_KINDS and task.eval is not None and backend is not None and reward is not None:
        evaluate = RewardEvaluator(backend, reward, task.eval_prompts())

    train = examples["train"]
    per_micro = batch_size * accelerator.num_processes
    steps_per_epoch = optimizer_steps_per_epoch(len(train), batch_size, accelerator.num_processes,
                                                gradient_accumulation_steps)
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train)} training examples are fewer than one optimizer step needs "
                         f"({per_micro * gradient_accumulation_steps}); lower trainer.batch_size")
    total = max_steps or epochs * steps_per_epoch
    log.info("training on %d %s examples of %s for %d steps (%.2f epochs) in %s", len(train), algo.batch_kind,
             task.name, total, total / steps_per_epoch, run_dir)
    model = policy.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, learning_rate, weight_decay)
    scheduler = make_scheduler(lr_scheduler, optimizer, warmup_steps, total)
    model, optimizer = accelerator.prepare(model, optimizer)
    extras = {"scheduler": scheduler}

    state: dict = {"step": 0}
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint, extras)
        log.info("resumed from %s (step %d of %d)", checkpoint, state["step"], total)
    main = accelerator.is_main_process
    if main:
        jsonl = JsonlLogger(run_dir / "metrics.jsonl", truncate_after=state["step"] if checkpoint else -1)
        logger.start(run_dir, config)
    view = Policy(accelerator.unwrap_model(model), policy.tokenizer, policy.path)
    if not (main or sharded):
        evaluate = None

    def log_metrics(metrics: dict[str, float], step: int) -> None:
        if main:
            jsonl.log(metrics, step)
            logger.log(metrics, step)

    @torch.no_grad()
    def run_eval(step: int) -> dict[str, float]:
        metrics: dict[str, float] = {}
        model.eval()
        if "eval" in examples:
            ex, averages = examples["eval"], Averages()
            for start in range(0, len(ex), batch_size):
                batch = ex.batch(list(range(start, min(start + batch_size, len(ex))))).to(accelerator.device)
                loss, m = compute_loss(algo, model, batch, ref, "eval", pair_forward)
                averages.add({f"eval/{k}": v for k, v in {"loss": loss, **m}.items()})
            metrics |= averages.means()
        if evaluate is not None:
            metrics |= {f"eval/{k}": v for k, v in evaluate(view).items()}
        model.train()
        log_metrics(metrics, step)
        return metrics

    step = state["step"]
    if step == 0 and evaluate is not None:
        state["eval_before"] = run_eval(0)
    bar = tqdm(total=total, initial=step, desc="training", disable=not accelerator.is_main_process)
    micro, window, started, tokens = step * gradient_accumulation_steps, Averages(), time.perf_counter(), 0
    preemption = Preemption()
    averaged: dict[str, float] = {}
    lengths, orders = example_lengths(train) if length_buckets else None, {}
    while step < total:
        epoch, position = divmod(micro, len(train) // per_micro)
        if epoch not in orders:
            orders = {epoch: epoch_order(len(train), seed, epoch, sample_weights, lengths, per_micro, length_buckets)}
        order = orders[epoch]
        first = position * per_micro + accelerator.process_index * batch_size
        batch = train.batch(order[first:first + batch_size]).to(accelerator.device)
        with accelerator.accumulate(model):
            loss, metrics = compute_loss(algo, model, batch, ref, "train", pair_forward)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(params, max_grad_norm)  # None: DeepSpeed has none
                check_finite(grad_norm, loss, f"optimizer step {step + 1}", accelerator)
                window.add({"grad_norm": grad_norm} if grad_norm is not None else {})
            optimizer.step()
            optimizer.zero_grad()
        window.add({"loss": loss, **metrics})
        tokens += batch.num_tokens
        micro += 1
        if micro % gradient_accumulation_steps:
            continue
        scheduler.step()
        step += 1
        bar.update()
        if step % log_every == 0 or step == total:
            elapsed = time.perf_counter() - started
            averaged = window.across_processes().means()
            log_metrics({**averaged, "lr": scheduler.get_last_lr()[0], "epoch": epoch,
                         "tokens_per_s": tokens * accelerator.num_processes / elapsed}, step)
            bar.set_postfix(loss=f"{averaged['loss']:.4f}")
            window, started, tokens = Averages(), time.perf_counter(), 0
        after_update(accelerator, run_dir, step, total, state, run_eval, eval_every, checkpoint_every,
                     keep_checkpoints, preemption, extras)
    bar.close()

    result = finish_run(accelerator, run_dir, total, state, keep_checkpoints, run_eval, averaged,
                        lambda: view.save(run_dir / "model"), view.model if sharded else None, extras)
    if main:
        jsonl.close()
        logger.close()
    preemption.release()
    return result
