"""The pieces of one online update (`rlhf.trainers.online`): which prompts and seeds an update takes, the
per-unit tensors of its rollouts (old and reference log-probs, values, the algorithm's targets), the inputs
of a minibatch's loss, an optimizer step over micro-batches, and the update's statistics over processes."""

import inspect
import time
from collections import defaultdict
from contextlib import contextmanager

import torch
from accelerate.utils import gather_object

from rlhf.data.examples import Examples
from rlhf.rollout.engine import failure_kinds, refuse_failures
from rlhf.rollout.experience import Experience
from rlhf.tasks.base import DialogueTask
from rlhf.trainers.checkpoint import check_finite
from rlhf.trainers.offline import Averages, epoch_order
from rlhf.trainers.steps import OUTPUTS, PER_TOKEN_KINDS, REFERENCE_OUTPUTS, call_loss, call_with


class Stopwatch:
    """Seconds per phase of an update (`time/<phase>` in the metrics), since the last `lap`."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    def lap(self) -> dict[str, float]:
        """The seconds of each phase since the last lap, and a fresh start."""
        seconds, self.seconds = dict(self.seconds), defaultdict(float)
        return seconds

    @contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - start

    def timed(self, component, method: str, phase: str):
        """`component` with the calls of `method` counted under `phase`."""
        watch = self

        class Timed:
            def __getattr__(self, name):
                attribute = getattr(component, name)
                if name != method:
                    return attribute

                def call(*args, **kwargs):
                    with watch(phase):
                        return attribute(*args, **kwargs)
                return call
        return Timed()


def step_seed(seed: int, step: int, offset: int) -> int:
    """The sampling seed of the rollout chunk starting at prompt `offset` of update `step`."""
    return ((seed * 1_000_003 + step) * 100_003 + offset) % 2**62


class PromptStream:
    """The train openings of each update: positions step * per_step ... of an endless sequence of epochs,
    each a permutation of the task's train openings seeded by (seed, epoch)."""

    def __init__(self, task: DialogueTask, per_step: int, seed: int):
        self.openings, self.fields = task.openings("train")
        if not self.openings:
            raise ValueError(f"task {task.name!r} has no train openings to roll out")
        self.per_step, self.seed, self.orders = per_step, seed, {}

    def take(self, step: int, start: int, count: int) -> tuple[list[list[dict]], list[dict]]:
        """Openings `start` .. `start + count` of update `step`."""
        n, picked = len(self.openings), []
        for position in range(step * self.per_step + start, step * self.per_step + start + count):
            epoch, i = divmod(position, n)
            if epoch not in self.orders:
                self.orders = {epoch: epoch_order(n, self.seed, epoch)}
            picked.append(self.orders[epoch][i])
        return [self.openings[i] for i in picked], [self.fields[i] for i in picked]


@torch.no_grad()
def unit_outputs(outputs, examples: Examples, kind: str, names: tuple[str, ...], micro: int, device,
                 prefix: str) -> dict[str, torch.Tensor]:
    """The tensors `names` of `outputs(batch)` for every unit of `examples`, as `<prefix><name>`: per unit
    (U,) for pairs, per token (U, K, W) for sequence kinds (W = the longest sequence - 1, zero on padding),
    computed `micro` units at a time."""
    per_token = kind in PER_TOKEN_KINDS
    width = max(len(s.input_ids) for unit in examples.items for s in unit) - 1
    parts: dict[str, list[torch.Tensor]] = defaultdict(list)
    for start in range(0, len(examples), micro):
        positions = list(range(start, min(start + micro, len(examples))))
        batch = examples.batch(positions).to(device)
        values = outputs(batch)
        for name in names:
            value = values[name].float()
            if per_token:
                value = value * batch.attention_mask[:, 1:]
                value = torch.nn.functional.pad(value, (0, width - value.shape[1])).view(len(positions), -1, width)
            parts[prefix + name].append(value.cpu())
    return {name: torch.cat(values) for name, values in parts.items()}


def unit_tensors(model, ref, algo, examples: Examples | None, temperature: float, old_pass: bool, micro: int, device,
                 kl_controller, pair_forward: str = "joint") -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The update's per-unit tensors, and their metrics: the sampling policy's log-probs (and values) when
    `old_pass` (the units are used more than once, or for the algorithm's targets), the reference's, and the
    targets of "rollout" batches (PPO: advantages and returns over all of the update's rollouts)."""
    kind = algo.batch_kind
    per_unit: dict[str, torch.Tensor] = {}
    if examples is None:  # no unit on this process (the others have some)
        return per_unit, {}
    model.eval()
    if old_pass:
        names = REFERENCE_OUTPUTS[kind] + (("values",) if kind == "rollout" else ())
        per_unit |= unit_outputs(lambda b: OUTPUTS[kind](model, b, temperature, **pair_arg(kind, pair_forward)),
                                 examples, kind, names, micro, device, "old_")
    if ref is not None:
        per_unit |= unit_outputs(lambda b: ref(b, "train"), examples, kind, REFERENCE_OUTPUTS[ref.kind], micro,
                                 device, "ref_")
    model.train()
    if kind != "rollout":
        return per_unit, {}
    targets, metrics = rollout_targets(algo, examples, per_unit, kl_controller)
    return per_unit | targets, metrics


def pair_arg(kind: str, pair_forward: str) -> dict:
    """The outputs' `pair_forward` argument, for pair batches (the others have none)."""
    return {"pair_forward": pair_forward} if kind == "pair" else {}


def minibatch_inputs(kind: str, model, examples: Examples, positions: list[int], per_unit: dict[str, torch.Tensor],
                     temperature: float, device, pair_forward: str = "joint") -> dict[str, torch.Tensor]:
    """What a loss may take for the units `positions`: the model's outputs (with gradient), the units'
    fields, and their slices of the update's per-unit tensors (old and reference log-probs, targets)."""
    batch = examples.batch(positions).to(device)
    inputs = OUTPUTS[kind](model, batch, temperature, **pair_arg(kind, pair_forward)) | batch.fields
    for name, value in per_unit.items():
        value = value[positions]  # per unit (B,), or per token (B, K, W): cut to this minibatch's padding
        inputs[name] = (value.flatten(0, 1)[:, :batch.input_ids.shape[1] - 1] if value.ndim == 3 else value).to(device)
    if kind in PER_TOKEN_KINDS:
        inputs["response_mask"] = batch.response_mask[:, 1:]
    if kind == "rollout":
        inputs["scores"], inputs["ends_with_eos"] = inputs.pop("rewards").flatten(), inputs.pop("ends_with_eos").flatten()
    for name in REFERENCE_OUTPUTS[kind] + (("values",) if kind == "rollout" else ()):
        if f"old_{name}" not in inputs:  # each unit is used once, by weights that have not moved since sampling
            inputs[f"old_{name}"] = inputs[name].detach()
    for name in REFERENCE_OUTPUTS[kind]:
        inputs.setdefault(f"ref_{name}", None)  # no reference policy: a loss that can do without it gets None
    return inputs


def total_units(accelerator, units: int) -> int:
    """The units of an update over all processes (a collective call)."""
    if accelerator.num_processes == 1:
        return units
    count = torch.tensor([float(units)], device=accelerator.device)
    return int(accelerator.reduce(count, reduction="sum").item())


def refuse_failed_rollouts(accelerator, stats: dict[str, float], max_failed_fraction: float, step: int) -> None:
    """Stop (RunRefused, on every process alike) when more than `max_failed_fraction` of the update's scores,
    over all processes, failed for want of the user simulator or the reward endpoint (`marked_failure`):
    training on what is left would be training on whichever rollouts happened to get through. A collective
    call; the failures by kind are this process's."""
    failed = total_units(accelerator, int(stats.get("rollout/failed", 0)))
    scored = total_units(accelerator, int(stats.get("rollout/scored", 0)))
    kinds, example = failure_kinds([key.removeprefix("rollout/invalid/") for key, n in stats.items()
                                    if key.startswith("rollout/invalid/") for _ in range(int(n))])
    refuse_failures(failed, scored, max_failed_fraction, f"update {step + 1}",
                    f"trainer.max_failed_fraction={max_failed_fraction}",
                    kinds, example, "No update was made from them. Mend the endpoint and run again: the run "
                    "resumes from its last checkpoint (trainer.checkpoint_every).")


COUNTS = ("rollout/dialogues", "rollout/invalid", "rollout/scored", "rollout/failed", "rollout/too_long",
          "rollout/mismatched_turns", "rollout/ended/", "pairs/", "skipped")


def merged_rollout_metrics(accelerator, metrics: dict[str, float]) -> dict[str, float]:
    """The rollout statistics of all processes: counts summed, means weighted by each process's dialogues."""
    if accelerator.num_processes == 1:
        return metrics
    parts = gather_object([metrics])
    weights = [m.get("rollout/dialogues", 0.0) for m in parts]
    merged = {}
    for key in {k for m in parts for k in m}:
        present = [(m[key], w) for m, w in zip(parts, weights) if key in m and m[key] == m[key]]
        if key.startswith(COUNTS) or key.startswith("rollout/invalid/"):
            merged[key] = sum(v for v, _ in present)
        elif present:
            total = sum(w for _, w in present)
            merged[key] = sum(v * w for v, w in present) / total if total else sum(v for v, _ in present) / len(present)
    return merged


def call_parameters(algo) -> set[str]:
    """The inputs the algorithm's loss (and targets, where its batch kind has them) can take."""
    methods = [algo.loss] + ([algo.targets] if algo.batch_kind == "rollout" else [])
    return {name for method in methods for name in inspect.signature(method).parameters}


def rollout_targets(algo, examples: Examples, per_unit: dict[str, torch.Tensor], kl_controller):
    """The algorithm's `targets` (PPO: advantages, returns) over all of the update's rollouts, per unit."""
    batch = examples.batch(list(range(len(examples))))
    width = batch.input_ids.shape[1] - 1
    inputs = {name: value.flatten(0, 1)[:, :width] for name, value in per_unit.items()}
    inputs |= {"scores": batch.fields["rewards"].flatten(), "ends_with_eos": batch.fields["ends_with_eos"].flatten(),
               "response_mask": batch.response_mask[:, 1:]}
    if kl_controller is not None:
        inputs["kl_coef"] = kl_controller.value
    targets, metrics = call_with(algo, algo.targets, inputs)
    units = len(examples)
    return {name: value.reshape(units, -1, value.shape[-1]).cpu() for name, value in targets.items()}, metrics


def update(accelerator, model, optimizer, algo, examples: Examples, positions: list[int],
           per_unit: dict[str, torch.Tensor], temperature: float, params, max_grad_norm: float, micro_steps: int,
           kl_controller, pair_forward: str = "joint") -> dict[str, float]:
    """One optimizer step on the units `positions`, in `micro_steps` micro-batches whose losses are weighted
    by their share of the units (the minibatch's mean for losses that average over units). Returns the
    step's metrics."""
    metrics = Averages()
    for micro in torch.tensor_split(torch.tensor(positions), micro_steps):
        with accelerator.accumulate(model):
            if len(micro):
                inputs = minibatch_inputs(algo.batch_kind, model, examples, micro.tolist(), per_unit, temperature,
                                          accelerator.device, pair_forward)
                if kl_controller is not None:
                    inputs["kl_coef"] = kl_controller.value
                loss, step_metrics = call_loss(algo, inputs)
                metrics.add({"loss": loss, **step_metrics}, weight=len(micro))
                loss = loss * (len(micro) * micro_steps / len(positions))
            else:  # an empty micro-batch still takes part in the collective gradient sync
                loss = sum(p.sum() for p in params) * 0.0
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(params, max_grad_norm)
                check_finite(grad_norm, loss, "an optimizer step of this update", accelerator)
                if grad_norm is not None:
                    metrics.add({"grad_norm": grad_norm})
            optimizer.step()  # steps once the micro-batches are accumulated
            optimizer.zero_grad()
    return metrics.means()


def rollout_metrics(experience: Experience, task: DialogueTask) -> dict[str, float]:
    """Statistics of the update's rollouts: rewards, invalid scores by reason, how dialogues ended, turns,
    response tokens, responses cut at the length limit, template mismatches, the task's own metrics."""
    dialogues = experience.dialogues
    metrics = {k: float(v) for k, v in experience.stats.items()}
    turns = [reason for d in dialogues for reason in d.finish_reasons]
    metrics["rollout/dialogues"] = float(len(dialogues))
    metrics["rollout/turns_mean"] = sum(d.num_turns for d in dialogues) / max(len(dialogues), 1)
    metrics["rollout/response_tokens_mean"] = sum(len(ids) for d in dialogues for ids in d.token_ids) / max(len(turns), 1)
    metrics["rollout/truncated_fraction"] = sum(r == "length" for r in turns) / max(len(turns), 1)
    for end in ("user", "done", "max_turns", "failed"):
        metrics[f"rollout/ended/{end}"] = float(sum(d.end == end for d in dialogues))
    per_dialogue = [task.dialogue_metrics(d.messages, d.fields) for d in dialogues]
    for key in per_dialogue[0] if per_dialogue else []:
        metrics[f"rollout/{key}_mean"] = sum(m[key] for m in per_dialogue) / len(per_dialogue)
    return metrics
