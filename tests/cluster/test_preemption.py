"""A training job that is stopped and started again resumes to the weights of an uninterrupted run: on SLURM
after submitit's preemption signal and after `scontrol requeue`, outside SLURM after the preemption signal.
Each time the job saves a checkpoint at the step the signal came, then stops."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.cluster.conftest import job_ids, settled
from tests.smoke.helpers import REPO, command, env, metrics, run, train_losses, weights

pytestmark = pytest.mark.slow
OVERRIDES = ["experiment=debug", "algo=dpo", "trainer.max_steps=200", "trainer.eval_every=0",
             "trainer.log_every=1", "trainer.warmup_steps=3"]
TOTAL = 200
RUN_NAME = "algo:dpo+experiment:debug+trainer.max_steps:200+trainer.warmup_steps:3"  # without the intervals
# (submitit counts a signal as a timeout, not requeued by default, once 80% of timeout_min has passed)
SLURM_JOB = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=60"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_path, tiny_cache) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    run("rlhf.train", run_dir, tiny_cache, *OVERRIDES, "trainer.checkpoint_every=0")
    return run_dir


def start(cmd: list[str], extra_env: dict, output: Path) -> subprocess.Popen:
    """Start `cmd` in the background with its stdout and stderr going to `output`."""
    with output.open("w") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=extra_env, stdout=out, stderr=subprocess.STDOUT)


def wait_until(condition, proc: subprocess.Popen, output: Path, what: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}:\n{output.read_text()[-3000:]}"
        assert time.time() < deadline, f"no {what} after {timeout}s"
        time.sleep(0.02)


def logged_step(run_dir: Path, step: int) -> bool:
    path = run_dir / "metrics.jsonl"
    return path.exists() and f'"step": {step},' in path.read_text()


def resumed_step(log: str) -> int:
    """The step of the one resume in a run's log."""
    found = re.findall(r"resumed from \S+ \(step (\d+) of \d+\)", log)
    assert len(found) == 1, f"expected one resume in the log, found {found}"
    return int(found[0])


def assert_same_run(run_dir: Path, whole: Path) -> None:
    a, b = weights(whole / "model"), weights(run_dir / "model")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run's"
    steps = [m["step"] for m in metrics(run_dir) if "loss" in m]
    assert steps == list(range(1, TOTAL + 1)), "steps logged twice or missing"
    assert train_losses(run_dir) == pytest.approx(train_losses(whole), rel=1e-6, abs=1e-7)


def submit(tmp_path: Path, cache: str, slurm: dict, *overrides: str) -> tuple[subprocess.Popen, Path]:
    """Launch one training job on SLURM through the Hydra launcher, in the background (output in
    tmp_path/launcher.log); the process and the job's run directory."""
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "rlhf.train", "-m", "launcher=slurm", f"hydra.sweep.dir={sweep}", *SLURM_JOB,
           *OVERRIDES, *overrides]
    return start(cmd, env(cache, **slurm), tmp_path / "launcher.log"), sweep / RUN_NAME


def saved(log: str) -> list[tuple[str, int]]:
    """(signal, step) of each checkpoint a signal made a run save before stopping."""
    return [(name, int(step)) for name, step in re.findall(r"(\w+): saving a checkpoint at step (\d+)", log)]


@pytest.mark.slurm
def test_preempted_then_requeued_job_resumes_to_the_uninterrupted_weights(slurm, tmp_path, tiny_cache,
                                                                          uninterrupted):
    """One training job on SLURM, stopped twice, each time with a checkpoint at the step the signal came:
    submitit's preemption signal (USR2), after which submitit requeues the job; then `scontrol requeue`,
    whose SIGTERM the job gets before SLURM kills it and runs it again. Each run finds the same run
    directory and resumes from the checkpoint the previous one saved."""
    log_file = tmp_path / "launcher.log"
    proc, run_dir = submit(tmp_path, tiny_cache, slurm, "trainer.checkpoint_every=0")
    train_log = run_dir / "train.log"  # the job's log, every run (Hydra appends)
    wait_until(lambda: logged_step(run_dir, 5), proc, log_file, "step 5")
    (job,) = job_ids(run_dir.parent)
    slurm_env = {**os.environ, **slurm}
    subprocess.run(["scancel", "--signal=USR2", job], env=slurm_env, check=True, timeout=30)
    wait_until(lambda: "resumed from" in train_log.read_text(), proc, log_file, "second run")
    preempted = resumed_step(train_log.read_text())
    wait_until(lambda: logged_step(run_dir, preempted + 5), proc, log_file, f"step {preempted + 5}")
    subprocess.run(["scontrol", "requeue", job], env=slurm_env, check=True, timeout=30)

    proc.wait(timeout=300)
    assert proc.returncode == 0, log_file.read_text()[-4000:]
    expected = [(job, "REQUEUED"), (job, "REQUEUED"), (job, "COMPLETED")]
    assert settled(job, slurm, expected) == expected
    log = train_log.read_text()
    checkpointed = saved(log)
    assert [name for name, _ in checkpointed] == ["SIGUSR2", "SIGTERM"] and "Requeued job" in log, log[-3000:]
    resumed = [int(step) for step in re.findall(r"resumed from \S+ \(step (\d+) of \d+\)", log)]
    assert resumed == [step for _, step in checkpointed] and resumed[1] < TOTAL, resumed
    assert_same_run(run_dir, uninterrupted)


def test_preemption_signal_outside_slurm_checkpoints_and_exits(tmp_path, tiny_cache, uninterrupted):
    """Without submitit, the signal's default action follows the checkpoint: the process ends, and the same
    command resumes from that step."""
    run_dir = tmp_path / "run"
    overrides = [*OVERRIDES, "trainer.checkpoint_every=0"]
    output = tmp_path / "first.log"
    proc = start(command("rlhf.train", run_dir, *overrides), env(tiny_cache), output)
    wait_until(lambda: logged_step(run_dir, 5), proc, output, "step 5")
    proc.send_signal(signal.SIGUSR2)
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGUSR2, output.read_text()[-3000:]
    ((name, step),) = saved(output.read_text())
    assert name == "SIGUSR2" and not (run_dir / "final_metrics.json").exists()
    out = run("rlhf.train", run_dir, tiny_cache, *overrides)
    assert resumed_step(out.stderr + out.stdout) == step < TOTAL
    assert_same_run(run_dir, uninterrupted)
