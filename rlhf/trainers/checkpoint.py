"""Atomic, verified checkpoints in a run directory, and finding the newest valid one.

A checkpoint is `checkpoints/step-NNNNNNNN/`: accelerate's state (model weights as safetensors, optimizer,
RNG states of every process), the loop's own objects (`extras`: the learning-rate scheduler, D2PO's
discriminator) as JSON plus safetensors, `trainer_state.json` (step, and what the loop needs to go on) and,
written last, `manifest.json`: the size and SHA-256 of every other file. It is written to a temporary folder
and renamed into place, so a killed job never leaves a half-written checkpoint that looks complete.

Resuming verifies the manifest: a checkpoint with a missing, changed or unlisted file is skipped with a warning
naming it and the newest valid one is used; a run directory whose checkpoints are all damaged is refused. Nothing
in a checkpoint is unpickled: the extras are JSON and safetensors, and accelerate reads its optimizer and RNG
files with `torch.load(weights_only=True)`, which refuses code. No object is registered with accelerate's
`register_for_checkpointing`, whose files it unpickles without that guard.

`Preemption` makes a job checkpoint when SLURM announces its end (preemption, or the time limit coming).
"""

import contextlib
import hashlib
import json
import logging
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import load as accelerate_load
from safetensors.torch import load_file, save_file

from rlhf.atomic import RunRefused, write_text

log = logging.getLogger(__name__)
PREFIX = "step-"
MANIFEST = "manifest.json"


def digest(path: Path) -> str:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 24):
            sha.update(block)
    return sha.hexdigest()


def write_manifest(folder: Path) -> None:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    listing = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": digest(p)} for p in files}
    write_text(folder / MANIFEST, json.dumps({"files": listing}, indent=1))


def problems(checkpoint: Path) -> list[str]:
    """What is wrong with a checkpoint folder (nothing: it is complete and unchanged since it was written)."""
    try:
        listing = json.loads((checkpoint / MANIFEST).read_text())["files"]
    except FileNotFoundError:
        return [f"no {MANIFEST}"]
    except (ValueError, KeyError, TypeError) as e:
        return [f"unreadable {MANIFEST} ({e})"]
    found = {str(p.relative_to(checkpoint)) for p in checkpoint.rglob("*") if p.is_file() and p.name != MANIFEST}
    wrong = [f"{name}: missing" for name in sorted(listing.keys() - found)]
    wrong += [f"{name}: not in the manifest" for name in sorted(found - listing.keys())]
    for name in sorted(listing.keys() & found):
        path, expected = checkpoint / name, listing[name]
        if path.stat().st_size != expected["bytes"]:
            wrong.append(f"{name}: {path.stat().st_size} bytes, {expected['bytes']} written")
        elif digest(path) != expected["sha256"]:
            wrong.append(f"{name}: contents changed since it was written")
    return wrong


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest checkpoint whose files match its manifest; damaged newer ones are named in a warning. None when
    there is no checkpoint; an error when there are some and none is valid (starting over would silently drop
    the run's progress)."""
    found = sorted(p for p in (run_dir / "checkpoints").glob(f"{PREFIX}*") if p.is_dir())
    damaged = []
    for checkpoint in reversed(found):
        wrong = problems(checkpoint)
        if not wrong:
            if damaged:
                log.warning("resuming from %s: newer checkpoints are damaged and were skipped:\n  %s", checkpoint,
                            "\n  ".join(damaged))
            return checkpoint
        damaged.append(f"{checkpoint}: {'; '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''}")
    if damaged:
        old = all("no manifest.json" in d for d in damaged)
        hint = ("\nCheckpoints without manifest.json were written by an earlier version, which pickled the "
                "scheduler; they cannot be resumed safely. " if old else "\n")
        raise RunRefused("no valid checkpoint to resume from; every one is damaged:\n  " + "\n  ".join(damaged) + hint
                           + f"Remove {run_dir / 'checkpoints'} to train from the start, or use another run "
                           "directory")
    return None


def encode(value, tensors: dict[str, torch.Tensor]):
    """A state dict as JSON, its tensors moved to `tensors` (saved as safetensors) and referenced by name."""
    if isinstance(value, torch.Tensor):
        name = str(len(tensors))
        tensors[name] = value.detach().cpu().contiguous().clone()
        return {"__tensor__": name}
    if isinstance(value, dict):
        return {"__items__": [[encode(k, tensors), encode(v, tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [encode(v, tensors) for v in value]}
    if isinstance(value, list):
        return [encode(v, tensors) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot save a {type(value).__name__} in a checkpoint (JSON and tensors only)")


def decode(value, tensors: dict[str, torch.Tensor]):
    """`encode`'s inverse (tensors on the CPU: `load_state_dict` of modules and optimizers moves them)."""
    if isinstance(value, list):
        return [decode(v, tensors) for v in value]
    if isinstance(value, dict):
        if "__tensor__" in value:
            return tensors[value["__tensor__"]]
        if "__tuple__" in value:
            return tuple(decode(v, tensors) for v in value["__tuple__"])
        return {decode(k, tensors): decode(v, tensors) for k, v in value["__items__"]}
    return value


def save_checkpoint(accelerator: Accelerator, run_dir: Path, step: int, state: dict, keep: int,
                    extras: dict | None = None) -> Path:
    """extras: name -> an object with `state_dict()` / `load_state_dict()` (saved by the main process)."""
    root = run_dir / "checkpoints"
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{PREFIX}{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()  # every process has written its part (RNG states, ZeRO shards)
    if accelerator.is_main_process:
        for name, obj in (extras or {}).items():
            tensors: dict[str, torch.Tensor] = {}
            (tmp / f"{name}.json").write_text(json.dumps(encode(obj.state_dict(), tensors)))
            save_file(tensors, str(tmp / f"{name}.safetensors"))
        (tmp / "trainer_state.json").write_text(json.dumps({**state, "step": step}))
        write_manifest(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for newer in [p for p in root.glob(f"{PREFIX}*") if p.name > final.name]:
            os.replace(newer, root / f"damaged-{newer.name}")  # skipped on resume: kept aside, out of rotation
            log.warning("moved %s (newer than the resumed run's checkpoints) to damaged-%s", newer, newer.name)
        for old in sorted(root.glob(f"{PREFIX}*"))[:-keep] if keep > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, extras: dict | None = None) -> dict:
    try:
        # accelerate reads the RNG states with weights_only=True but goes on without them when that fails (an
        # inexact resume, logged at INFO): read them here first, so such a file stops the resume instead
        rng = checkpoint / f"random_states_{accelerator.process_index}.pkl"
        if rng.is_file():
            accelerate_load(rng)
        else:
            log.warning("%s has no RNG state for process %d (saved with fewer processes): sampling after the "
                        "resume does not repeat an uninterrupted run's", checkpoint, accelerator.process_index)
        accelerator.load_state(str(checkpoint))
        for name, obj in (extras or {}).items():
            tensors = load_file(str(checkpoint / f"{name}.safetensors"))
            obj.load_state_dict(decode(json.loads((checkpoint / f"{name}.json").read_text()), tensors))
    except Exception as e:
        raise RunRefused(f"cannot resume from {checkpoint}: {type(e).__name__}: {str(e)[:500]}") from e
    return json.loads((checkpoint / "trainer_state.json").read_text())


class Preemption:
    """Signals that announce the end of a job, deferred to the next optimizer step so that a checkpoint is
    saved before the job ends; the requeued or re-run job resumes from it.

    - submitit's preemption signal (SIGUSR2, or `SUBMITIT_PREEMPT_SIGNAL`): SLURM sends it `signal_delay_s`
      before the time limit, a cluster may send it on preemption. submitit's handler calls the Hydra
      launcher's `checkpoint()` (a resubmission with the same overrides), requeues the job (global rank 0)
      and exits. Outside submitit the signal's default action ends the process.
    - SIGTERM, where a handler is installed (submitit's, which only logs it): SLURM sends it when it
      cancels, requeues or preempts a job, KillWait or GraceTime before SIGKILL. Elsewhere SIGTERM keeps its
      default action (torchrun stops its workers with it).

    The handlers installed here only record the signal. After each optimizer step the loop asks `requested`,
    saves a checkpoint and calls `hand_over`, which runs the handler that was there before and then ends the
    process if that handler did not.
    """

    def __init__(self):
        preemption = signal.Signals[f"SIG{os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2')}"]
        handled = [s for s in (preemption, signal.SIGTERM) if callable(signal.getsignal(s))
                   or (s == preemption and signal.getsignal(s) == signal.SIG_DFL)]
        self.previous = {s: signal.signal(s, self._record) for s in handled}
        self.received: signal.Signals | None = None

    def _record(self, signum: int, frame) -> None:
        self.received = self.received or signal.Signals(signum)

    @property
    def name(self) -> str:
        return self.received.name if self.received else "a signal to another process"

    def requested(self, accelerator: Accelerator) -> bool:
        """Whether any process got a signal (the same answer on every process: a collective call)."""
        if accelerator.num_processes == 1:
            return self.received is not None
        flag = torch.tensor([float(self.received is not None)], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)

    def release(self) -> None:
        """Put the previous handlers back; a signal that came after the last step is handed over now."""
        if self.received is not None:
            self.hand_over()
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def hand_over(self) -> None:
        """Run the previous handler of the recorded signal (submitit's requeues the job and exits; a default
        action ends the process), then end the process if it is still running."""
        name, signum, self.received = self.name, self.received, None
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        previous = self.previous.get(signum)  # None on a process that did not get the signal itself
        if callable(previous):
            previous(signum, None)
        elif previous == signal.SIG_DFL:
            signal.raise_signal(signum)
        raise SystemExit(f"stopped after a checkpoint ({name})")


def check_finite(grad_norm: torch.Tensor | None, loss: torch.Tensor, where: str, accelerator: Accelerator) -> None:
    """Stop before an optimizer step that would write non-finite weights (so no checkpoint ever holds them):
    the gradient norm (the same on every process, after the gradient sync) or, where there is none to read
    (DeepSpeed) and one process, the loss is inf or NaN. Under fp16 loss scaling an overflow is the scaler's
    to handle (it skips that step and lowers the scale), so nothing is checked."""
    if accelerator.scaler is not None:
        return
    bad = grad_norm is not None and not torch.isfinite(torch.as_tensor(grad_norm)).all()
    bad = bad or (grad_norm is None and accelerator.num_processes == 1 and not torch.isfinite(loss.detach()).all())
    if bad:
        raise FloatingPointError(
            f"non-finite {'gradient norm' if grad_norm is not None else 'loss'} at {where} "
            f"(loss {float(loss.detach()):.4g}): stopped before the step, so the weights and the last checkpoint "
            "stay finite; lower trainer.learning_rate, check the data's scores, or resume from the checkpoint")


def after_update(accelerator: Accelerator, run_dir: Path, step: int, total: int, state: dict, run_eval: Callable,
                 eval_every: int, checkpoint_every: int, keep: int, preemption: Preemption,
                 extras: dict | None = None) -> None:
    """What a training loop does after an update: evaluate every `eval_every` updates and checkpoint every
    `checkpoint_every` (0: only at the end), and on an announced end of the job checkpoint and stop."""
    if eval_every and step % eval_every == 0 and step < total:
        run_eval(step)
    periodic = bool(checkpoint_every) and step % checkpoint_every == 0 and step < total
    if periodic:
        save_checkpoint(accelerator, run_dir, step, state, keep, extras)
    if step < total and preemption.requested(accelerator):
        log.warning("%s: saving a checkpoint at step %d, then stopping", preemption.name, step)
        if not periodic:
            save_checkpoint(accelerator, run_dir, step, state, keep, extras)
        preemption.hand_over()


def finish_run(accelerator: Accelerator, run_dir: Path, total: int, state: dict, keep: int, run_eval: Callable,
               averaged: dict, save_model: Callable[[], None], sharded_model=None,
               extras: dict | None = None) -> dict[str, float]:
    """The end of a training run: the final evaluation, the last checkpoint, the model (under ZeRO-3,
    `sharded_model`'s weights are gathered on every process first), and final_metrics.json: the evaluation
    before training (`state`), the final one and the last training averages. Returns those metrics.

    The final evaluation and the averages are kept in the last checkpoint, so a run killed after it (while the
    model is saved) finishes on resume without evaluating again or losing its training averages."""
    if "final" in state:  # resumed from the last checkpoint
        final, averaged = state["final"], state["averaged"]
    else:
        final = run_eval(total)
        state |= {"final": final, "averaged": averaged}
        save_checkpoint(accelerator, run_dir, total, state, keep, extras)
    with gathered(sharded_model) if sharded_model is not None else contextlib.nullcontext():
        if accelerator.is_main_process:
            save_model()
    result = {**{f"before/{k}": v for k, v in state.get("eval_before", {}).items()}, **final,
              **{f"train/{k}": v for k, v in averaged.items()}}
    if accelerator.is_main_process:
        write_text(run_dir / "final_metrics.json", json.dumps(result, indent=2))
    return result


def gathered(model: torch.nn.Module):
    """DeepSpeed ZeRO-3: a context in which every process holds the full weights (all processes enter it)."""
    import deepspeed

    return deepspeed.zero.GatheredParameters(list(model.parameters()))
