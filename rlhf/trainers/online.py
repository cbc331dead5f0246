"""The online loop (`trainer=online`): fresh rollouts every update, single-turn or with a simulated user.

One update, top to bottom (the loop never asks which algorithm it runs: the algorithm's `batch_kind`
says how it samples and what its loss takes, the loss's signature which tensors):
1. prompts: this process's share of the next `prompts_per_step` train openings of the task, from an
   endless sequence of epochs (each a permutation seeded by (seed, epoch)), so the step is the position;
2. sample and score (`rlhf.rollout.experience`): dialogues with the task's rules and the user simulator,
   in chunks of `generation_prompts` openings each sampled under its own seed (the rollouts do not depend on
   the number of processes); "group" and "rollout" batches take `samples_per_prompt` dialogues per
   opening (GRPO, PPO), "pair" batches REFUEL's branched pairs (two samples per prompt for one turn: OPO).
   The reward scores whole dialogues; an invalid score is counted and kept out of the advantages, and an
   update of which more than `max_failed_fraction` of the scores failed (user simulator or reward endpoint
   down) stops the run before any update from it;
3. log-probs: of the sampled tokens under the policy that sampled (before any update of this step; the
   "old" policy of ratios and REFUEL's regression) and the reference policy; values with a value head;
   the algorithm's targets over the whole batch ("rollout": PPO's GAE and whitening);
4. update: `ppo_epochs` passes over the units (groups, pairs or rollouts) in `num_minibatches` shuffled
   minibatches, one optimizer step each, split into `gradient_accumulation_steps` micro-batches;
   With a `discriminator` (D2PO, `trainer=d2po`), pairs are labelled by a reward model trained as the
   policy trains, the reward being the gold it asks about the pairs it is least sure of;
5. the KL controller (`kl_controller`: PPO's per-token KL coefficient, fixed or adaptive), metrics
   (`metrics.jsonl`: losses, `rollout/*` statistics, `time/*` per phase), evaluation on held-out
   dialogues (`rlhf.eval.dialogue_eval`), checkpoint.

Resuming: a checkpoint holds the weights, optimizer, scheduler, RNG states, the KL controller and the step;
prompts, sampling seeds and minibatch orders are functions of (seed, step), so a killed run started again
with the same command ends with the weights of an uninterrupted one.

Multi-turn credit (`credit`): by default the dialogue's reward trains every policy turn of the dialogue
("group", "rollout" batches); "turn" makes each policy turn a sample with its own reward (the reward of
the dialogue up to it, or with `forward` the multi-turn-aware score of simulated futures); "pair" batches
train the branch turn only, on the reward of the dialogue's future (REFUEL). When the policy decides when
a dialogue ends (a 20 Questions guess) the estimator stays an unbiased policy gradient only if nothing
depends on the dialogue's length through the policy's choices: credit "dialogue" with a constant
normaliser (GRPO's `dr_grpo`; `grpo` divides by the dialogue's tokens), or PPO (its value baseline depends
on the state only). Credit "turn" with GRPO normalises within (prompt, turn index) groups, whose members
are the dialogues that lasted that long: a baseline chosen by the dialogues' own lengths, biased towards
dialogues that go on (verl#7244); use it for turn-level rewards with a fixed number of turns.
"""

import copy
import json
import logging
from pathlib import Path

import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from rlhf.data.tokenize import Tokenization
from rlhf.eval.dialogue_eval import DialogueEvaluator
from rlhf.eval.reward_eval import BackendFactory
from rlhf.logging import JsonlLogger, Logger
from rlhf.models.pair_logps import PAIR_FORWARDS
from rlhf.models.policy import Policy
from rlhf.models.value_model import PolicyWithValueHead
from rlhf.rewards.base import Reward
from rlhf.rewards.discriminator import Discriminator
from rlhf.rollout.experience import BranchedPairs, ForwardScoring, GroupSampler, Rules
from rlhf.tasks.base import DialogueTask
from rlhf.trainers.checkpoint import Preemption, after_update, finish_run, latest_checkpoint, load_checkpoint
from rlhf.trainers.offline import Averages, make_accelerator, make_optimizer
from rlhf.trainers.online_update import (PromptStream, Stopwatch, call_parameters, merged_rollout_metrics,
                                         refuse_failed_rollouts, rollout_metrics, step_seed, total_units,
                                         unit_tensors, update)
from rlhf.trainers.reference import ModelReference
from rlhf.trainers.schedules import make_scheduler
from rlhf.trainers.steps import logprob_temperature
from rlhf.users.base import UserSimulator

log = logging.getLogger(__name__)

ONLINE_KINDS = ("group", "rollout", "pair")
REFERENCES = ("frozen_copy", "disabled_adapter")


def fit_online(
    *,
    policy: Policy,
    algo,
    task: DialogueTask,
    backend: BackendFactory,
    user: UserSimulator,
    reward: Reward,
    tokenization: Tokenization,
    logger: Logger,
    run_dir: str,
    seed: int,
    config: dict,
    max_steps: int = 100,
    prompts_per_step: int = 8,
    samples_per_prompt: int = 4,
    generation_prompts: int | None = None,
    ppo_epochs: int = 1,
    num_minibatches: int = 1,
    gradient_accumulation_steps: int = 1,
    learning_rate: float = 1e-5,
    lr_scheduler: str = "constant",
    warmup_steps: int = 0,
    weight_decay: float = 0.0,
    max_grad_norm: float = 1.0,
    credit: str = "dialogue",
    forward: dict | None = None,
    horizon: str = "last",
    kl_controller=None,
    discriminator: Discriminator | None = None,
    reference: str = "frozen_copy",
    micro_batch_size: int = 16,
    eval_every: int = 0,
    checkpoint_every: int = 0,
    keep_checkpoints: int = 2,
    log_every: int = 1,
    mixed_precision: str = "no",
    pair_forward: str = "shared_prompt",
    max_failed_fraction: float = 0.5,
) -> dict[str, float]:
    """Train `policy` with `algo` on fresh rollouts of `task` (module docstring); returns the final metrics
    (also in final_metrics.json). prompts_per_step is global (over all processes); micro_batch_size bounds
    the units of one forward pass of the log-prob passes; pair_forward: how a pair's two replies run through
    the policy (`rlhf.models.pair_logps`: the shared prompt once by default), in the sampling policy's pass
    and in training alike."""
    kind, watch = algo.batch_kind, Stopwatch()
    if kind not in ONLINE_KINDS:
        raise ValueError(f"{type(algo).__name__} trains on {kind} batches of fixed data; the online loop trains "
                         f"algorithms of {ONLINE_KINDS} batches (GRPO, PPO, DPO/OPO, REFUEL): use trainer=offline")
    if reference not in REFERENCES:
        raise ValueError(f"trainer.reference={reference!r}: online it is one of {REFERENCES} (precompute needs "
                         "fixed data)")
    if pair_forward not in PAIR_FORWARDS:
        raise ValueError(f"trainer.pair_forward={pair_forward!r}: expected one of {', '.join(PAIR_FORWARDS)}")
    if not 0 <= max_failed_fraction <= 1:
        raise ValueError(f"trainer.max_failed_fraction={max_failed_fraction} must be in [0, 1]")
    for name, value in (("max_steps", max_steps), ("prompts_per_step", prompts_per_step), ("ppo_epochs", ppo_epochs),
                        ("num_minibatches", num_minibatches), ("micro_batch_size", micro_batch_size),
                        ("gradient_accumulation_steps", gradient_accumulation_steps)):
        if value < 1:
            raise ValueError(f"trainer.{name}={value} must be >= 1")
    if kl_controller is not None and "kl_coef" not in call_parameters(algo):
        raise ValueError(f"trainer.kl_controller sets a per-token KL coefficient, which {type(algo).__name__} "
                         "does not take")
    if discriminator is not None and kind != "pair":
        raise ValueError(f"a discriminator labels pairs; {type(algo).__name__} trains on {kind} batches")
    if kind == "pair":
        if credit != "dialogue" or forward is not None:
            raise ValueError("pair batches train the branch turn on the reward of its future (REFUEL): "
                             "trainer.credit and trainer.forward are for group and rollout batches")
        sampler = BranchedPairs(horizon, algo.keeps_ties,
                                discriminator and watch.timed(discriminator, "label", "discriminator"))
    else:
        sampler = GroupSampler(samples_per_prompt, kind == "rollout", credit,
                               ForwardScoring(**forward) if forward is not None else None)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    done = run_dir / "final_metrics.json"
    if done.exists():
        log.info("%s is complete already; delete it to train again", run_dir)
        return json.loads(done.read_text())

    accelerator = make_accelerator(gradient_accumulation_steps, mixed_precision)
    deepspeed = accelerator.state.deepspeed_plugin
    if deepspeed is not None:
        deepspeed.deepspeed_config["train_micro_batch_size_per_gpu"] = 1
        deepspeed.deepspeed_config["gradient_clipping"] = max_grad_norm
    sharded = deepspeed is not None and deepspeed.zero_stage == 3
    if sharded and task.max_turns > 1:
        raise ValueError("under DeepSpeed ZeRO-3 every process must generate in step, which dialogues of "
                         "different lengths do not: train dialogue tasks with ddp or ZeRO-2")
    world, rank = accelerator.num_processes, accelerator.process_index
    if discriminator is not None and world > 1:
        raise ValueError("the discriminator learns from one stream of pairs: train D2PO in one process")
    if prompts_per_step % world:
        raise ValueError(f"trainer.prompts_per_step={prompts_per_step} must divide among {world} processes")
    share = prompts_per_step // world
    chunk = generation_prompts or share
    if share % chunk:
        raise ValueError(f"trainer.generation_prompts={chunk} must divide the {share} prompts of each process")
    set_seed(seed)
    prompts = PromptStream(task, prompts_per_step, seed)
    temperature = logprob_temperature(algo)

    ref = None
    if algo.needs_reference:  # the initial policy, before any checkpoint is loaded
        if reference == "disabled_adapter" and not policy.has_adapter:
            raise ValueError("trainer.reference=disabled_adapter needs a LoRA policy (set policy.lora)")
        frozen = policy.model if reference == "disabled_adapter" else copy.deepcopy(policy.model).eval().requires_grad_(False)
        ref = ModelReference(frozen, "group" if kind == "rollout" else kind, temperature,
                             disable_adapter=reference == "disabled_adapter", precision=mixed_precision)
    model = PolicyWithValueHead(policy.model, seed) if kind == "rollout" else policy.model
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, learning_rate, weight_decay)
    total_updates = max_steps * ppo_epochs * num_minibatches
    scheduler = make_scheduler(lr_scheduler, optimizer, warmup_steps, total_updates)
    model, optimizer = accelerator.prepare(model, optimizer)
    extras = {"scheduler": scheduler}
    if discriminator is not None:  # its weights, optimizer, gold pairs, window and budget go with the checkpoints
        extras["discriminator"] = discriminator.to(accelerator.device)
    view = Policy(accelerator.unwrap_model(model), policy.tokenizer, policy.path)

    state: dict = {"step": 0}
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is not None:
        state = load_checkpoint(accelerator, checkpoint, extras)
        log.info("resumed from %s (step %d of %d)", checkpoint, state["step"], max_steps)
    if kl_controller is not None and "kl_controller" in state:
        kl_controller.load_state_dict(state["kl_controller"])
    main = accelerator.is_main_process
    if main:
        jsonl = JsonlLogger(run_dir / "metrics.jsonl", truncate_after=state["step"] if checkpoint else -1)
        logger.start(run_dir, config)
    evaluate = DialogueEvaluator(backend, user, reward, task, seed, log.info) if main or sharded else None

    def log_metrics(metrics: dict[str, float], step: int) -> None:
        if main:
            jsonl.log(metrics, step)
            logger.log(metrics, step)

    def run_eval(step: int) -> dict[str, float]:
        metrics = {f"eval/{k}": v for k, v in evaluate(view).items()} if evaluate is not None else {}
        log_metrics(metrics, step)
        return metrics

    rules = Rules(task.max_turns, task.reply_to_last, task.done)
    # under ZeRO-3 the processes generate in step (each forward gathers the sharded weights)
    generator = backend(model=view.model, tokenizer=policy.tokenizer, **({"synced_gpus": True} if sharded else {}))
    generator, user, reward = (watch.timed(generator, "generate", "generation"), watch.timed(user, "respond", "user"),
                               watch.timed(reward, "score", "reward"))
    old_pass = not (ppo_epochs == 1 and num_minibatches == 1) or kind == "rollout"  # else: current, detached
    step = state["step"]
    if step == 0:
        state["eval_before"] = run_eval(0)
    bar = tqdm(total=max_steps, initial=step, desc="online training", disable=not main)
    preemption = Preemption()
    averaged: dict[str, float] = {}
    while step < max_steps:
        window = Averages()
        with watch("step"):
            # 1-2. sample and score this process's share of the update's prompts, chunk by chunk
            chunks = [(*prompts.take(step, start, chunk), step_seed(seed, step, start))
                      for start in range(rank * share, (rank + 1) * share, chunk)]
            with watch("rollout"):
                experience = sampler(generator, user, reward, rules, chunks, policy.tokenizer, tokenization)
            refuse_failed_rollouts(accelerator, experience.stats, max_failed_fraction, step)
            metrics, examples = rollout_metrics(experience, task), experience.examples
            units = len(examples) if examples is not None else 0
            if total_units(accelerator, units) == 0:
                log.warning("step %d: no rollout could be trained on (%s); no update", step + 1,
                            json.dumps(experience.stats))
                metrics["skipped"] = 1.0
            else:
                # 3. log-probs of the policy that sampled and of the reference, values, the algorithm's targets
                with watch("logprobs"):
                    per_unit, target_metrics = unit_tensors(model, ref, algo, examples, temperature, old_pass,
                                                            micro_batch_size, accelerator.device, kl_controller,
                                                            pair_forward)
                    metrics |= {f"rollout/{k}": float(v) for k, v in target_metrics.items()}
                # 4. epochs x minibatches of the units: loss, backward, optimizer step
                with watch("train"):
                    for epoch in range(ppo_epochs):
                        order = torch.randperm(units, generator=torch.Generator().manual_seed(
                            step_seed(seed, step, 10_000 + epoch)))
                        for part in torch.tensor_split(order, num_minibatches):
                            if total_units(accelerator, len(part)) == 0:
                                continue  # no process has a unit for this minibatch: no step
                            window.add(update(accelerator, model, optimizer, algo, examples, part.tolist(),
                                              per_unit, temperature, params, max_grad_norm,
                                              gradient_accumulation_steps, kl_controller, pair_forward))
                            scheduler.step()
            # 5. the KL controller, on the KL of all processes' rollouts
            metrics = merged_rollout_metrics(accelerator, metrics)
            if kl_controller is not None and "rollout/kl" in metrics:
                kl_controller.update(metrics["rollout/kl"], n_steps=int(metrics["rollout/dialogues"]))
                metrics["kl_coef"] = kl_controller.value
        step += 1
        bar.update()
        averaged = window.across_processes().means()
        metrics |= averaged | {"lr": scheduler.get_last_lr()[0]} | {f"time/{k}": v for k, v in watch.lap().items()}
        if step % log_every == 0 or step == max_steps:
            log_metrics(metrics, step)
            bar.set_postfix(loss=f"{averaged.get('loss', float('nan')):.4f}",
                            reward=f"{metrics['rollout/reward_mean']:.3f}")
        if kl_controller is not None:
            state["kl_controller"] = kl_controller.state_dict()
        after_update(accelerator, run_dir, step, max_steps, state, run_eval, eval_every, checkpoint_every,
                     keep_checkpoints, preemption, extras)
    bar.close()

    if discriminator is not None:  # the reward model as trained, loadable by reward=reward_model reward.path=
        Policy(discriminator.model, discriminator.tokenizer, "").save(run_dir / "discriminator")
    result = finish_run(accelerator, run_dir, max_steps, state, keep_checkpoints, run_eval, averaged,
                        lambda: view.save(run_dir / "model"), view.model if sharded else None, extras)
    if main:
        jsonl.close()
        logger.close()
    preemption.release()
    return result
