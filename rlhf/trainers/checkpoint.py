"""Atomic checkpoints in a run directory, and finding the latest complete one.

A checkpoint is `checkpoints/step-NNNNNNNN/`: accelerate's state (model weights as safetensors, optimizer,
registered scheduler, RNG states of every process) plus `trainer_state.json` (step, and what the loop needs
to go on). It is written to a temporary folder and renamed into place, so a killed job never leaves a
half-written checkpoint that looks complete.

`Preemption` makes a job checkpoint when SLURM announces its end (preemption, or the time limit coming).
"""

import contextlib
import json
import logging
import os
import shutil
import signal
from collections.abc import Callable
from pathlib import Path

import torch
from accelerate import Accelerator

from rlhf.atomic import write_text

log = logging.getLogger(__name__)
PREFIX = "step-"


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = sorted((run_dir / "checkpoints").glob(f"{PREFIX}*/trainer_state.json"))
    return found[-1].parent if found else None


def save_checkpoint(accelerator: Accelerator, run_dir: Path, step: int, state: dict, keep: int) -> Path:
    root = run_dir / "checkpoints"
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".tmp-{PREFIX}{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    accelerator.wait_for_everyone()  # every process has written its part (RNG states, ZeRO shards)
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps({**state, "step": step}))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(root.glob(f"{PREFIX}*"))[:-keep] if keep > 0 else []:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, checkpoint: Path) -> dict:
    accelerator.load_state(str(checkpoint))
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
                 eval_every: int, checkpoint_every: int, keep: int, preemption: Preemption) -> None:
    """What a training loop does after an update: evaluate every `eval_every` updates and checkpoint every
    `checkpoint_every` (0: only at the end), and on an announced end of the job checkpoint and stop."""
    if eval_every and step % eval_every == 0 and step < total:
        run_eval(step)
    periodic = bool(checkpoint_every) and step % checkpoint_every == 0 and step < total
    if periodic:
        save_checkpoint(accelerator, run_dir, step, state, keep)
    if step < total and preemption.requested(accelerator):
        log.warning("%s: saving a checkpoint at step %d, then stopping", preemption.name, step)
        if not periodic:
            save_checkpoint(accelerator, run_dir, step, state, keep)
        preemption.hand_over()


def finish_run(accelerator: Accelerator, run_dir: Path, total: int, state: dict, keep: int, run_eval: Callable,
               averaged: dict, save_model: Callable[[], None], sharded_model=None) -> dict[str, float]:
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
        save_checkpoint(accelerator, run_dir, total, state, keep)
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
