"""Running the real entrypoints in subprocesses, as a user would."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]


def env(cache: str, **extra: str) -> dict:
    """This environment without any wandb settings or key, with the tiny model cache of the test session."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return {**base, "RLHF_CACHE": cache, "PYTHONUNBUFFERED": "1", **extra}


def command(module: str, run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", module, f"hydra.run.dir={run_dir}", *overrides]


def run(module: str, run_dir: Path, cache: str, *overrides: str, extra_env: dict | None = None):
    result = subprocess.run(command(module, run_dir, *overrides), cwd=REPO, env=env(cache, **(extra_env or {})),
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{module} {overrides} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def train_losses(run_dir: Path) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in metrics(run_dir) if "loss" in m}


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(model_dir / "model.safetensors")


def assert_finite(values) -> None:
    assert values and all(math.isfinite(v) for v in values), values


def kill_when(module: str, run_dir: Path, cache: str, marker: Path, *overrides: str, what: str) -> None:
    """Start `module` with `overrides` in `run_dir`, SIGKILL it as soon as `marker` exists (failing if the
    run ends first: `what` names the marker in the message)."""
    import signal
    import time

    proc = subprocess.Popen(command(module, run_dir, *overrides), cwd=REPO, env=env(cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline, f"the run ended before {what}"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
