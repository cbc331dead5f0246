"""Atomic checkpoints in a run directory, and finding the latest complete one.

A checkpoint is `checkpoints/step-NNNNNNNN/`: accelerate's state (model weights as safetensors, optimizer,
registered scheduler, RNG states of every process) plus `trainer_state.json` (step, and what the loop needs
to go on). It is written to a temporary folder and renamed into place, so a killed job never leaves a
half-written checkpoint that looks complete.
"""

import json
import os
import shutil
from pathlib import Path

from accelerate import Accelerator

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
