"""Multi-process training on CPU (gloo): two processes with the same global batch reach the weights of one
process. Through `accelerate launch` with the conf/accelerate files (DDP, DeepSpeed ZeRO-2 and ZeRO-3), and
as a SLURM job of two tasks, whose processes find each other from the SLURM variables."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.cluster.conftest import job_ids
from tests.smoke.helpers import REPO, env, metrics, run, train_losses, weights

pytestmark = pytest.mark.slow
# DPO averages over pairs, so two processes with 2 pairs each take the step of one process with 4
COMMON = ["experiment=debug", "algo=dpo", "trainer.max_steps=3", "trainer.eval_every=0",
          "trainer.checkpoint_every=2"]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, tiny_path, tiny_cache) -> Path:
    run_dir = tmp_path_factory.mktemp("one-process") / "run"
    run("rlhf.train", run_dir, tiny_cache, *COMMON, "trainer.batch_size=4")
    return run_dir


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_same_training(run_dir: Path, reference: Path) -> None:
    """Weights and per-step losses of `reference` (to float tolerance: the processes sum gradients in another
    order); every process wrote its RNG state into the checkpoints, the main one alone the metrics."""
    a, b = weights(reference / "model"), weights(run_dir / "model")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
    assert train_losses(run_dir) == pytest.approx(train_losses(reference), rel=1e-5)
    assert [m["step"] for m in metrics(run_dir) if "loss" in m] == [1, 2, 3]
    final = run_dir / "checkpoints" / "step-00000003"
    assert sorted(p.name for p in final.glob("random_states_*.pkl")) == ["random_states_0.pkl",
                                                                         "random_states_1.pkl"]


@pytest.mark.parametrize("config", ["ddp", "zero2", "zero3"])
def test_accelerate_launch_of_two_processes_matches_one(tmp_path, tiny_cache, one_process, config):
    run_dir = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           f"conf/accelerate/{config}.yaml", "--num_processes", "2", "--main_process_port", str(free_port()),
           "-m", "rlhf.train", f"hydra.run.dir={run_dir}", *COMMON, "trainer.batch_size=2"]
    result = subprocess.run(cmd, cwd=REPO, env=env(tiny_cache), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    assert_same_training(run_dir, one_process)


@pytest.mark.slurm
def test_slurm_job_of_two_tasks_matches_one_process(slurm, tmp_path, tiny_cache, one_process):
    cmd = [sys.executable, "-m", "rlhf.train", "-m", "launcher=slurm", f"hydra.sweep.dir={tmp_path}",
           "hydra.launcher.tasks_per_node=2", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
           *COMMON, "trainer.batch_size=2"]
    result = subprocess.run(cmd, cwd=REPO, env=env(tiny_cache, **slurm), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    (job,) = job_ids(tmp_path)
    logs = sorted((tmp_path / ".submitit" / job).glob("*_log.out"))
    assert len(logs) == 2 and all("global_rank=" in log.read_text() for log in logs)  # one per SLURM task
    run_dir = tmp_path / "algo:dpo+experiment:debug+trainer.batch_size:2+trainer.max_steps:3"
    assert_same_training(run_dir, one_process)


# The online loop: each process rolls out its share of the prompts, in chunks seeded by their position in
# the update (so two processes sample what one process does in the same chunks), and GRPO averages over
# responses, so two processes with 2 prompts each take the step of one process with 4.
ONLINE = ["experiment=online_debug", "algo=grpo", "reward=length", "trainer.max_steps=3", "trainer.eval_every=0",
          "trainer.checkpoint_every=2", "trainer.prompts_per_step=4", "trainer.generation_prompts=2",
          "trainer.learning_rate=5e-4", "backend.min_new_tokens=4"]


@pytest.fixture(scope="module")
def online_one_process(tmp_path_factory, tiny_cache) -> Path:
    run_dir = tmp_path_factory.mktemp("online-one-process") / "run"
    run("rlhf.train", run_dir, tiny_cache, *ONLINE)
    return run_dir


@pytest.mark.parametrize("config", ["ddp", "zero2", "zero3"])
def test_online_accelerate_launch_of_two_processes_matches_one(tmp_path, tiny_cache, online_one_process, config):
    one = online_one_process
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"conf/accelerate/{config}.yaml",
           "--num_processes", "2", "--main_process_port", str(free_port()), "-m", "rlhf.train",
           f"hydra.run.dir={two}", *ONLINE]
    result = subprocess.run(cmd, cwd=REPO, env=env(tiny_cache), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    a, b = weights(one / "model"), weights(two / "model")
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)
    logged = {run_dir: [m for m in metrics(run_dir) if "loss" in m] for run_dir in (one, two)}
    for m1, m2 in zip(logged[one], logged[two], strict=True):
        assert m1["rollout/invalid"] == m2["rollout/invalid"] == 0  # equal shares: the averages agree
        for key in ("loss", "rollout/reward_mean", "rollout/dialogues", "rollout/response_tokens_mean"):
            assert m2[key] == pytest.approx(m1[key], rel=1e-5), key
