"""Sweeps through the Hydra submitit launcher: one SLURM array job per sweep on the local cluster, and
`launcher=submitit_local` where no SLURM can be reached."""

import json
import subprocess
import sys

import pytest

from tests.cluster.conftest import job_ids, settled
from tests.smoke.helpers import REPO, env, weights

pytestmark = pytest.mark.slow
# one CPU per task, so the node's two CPUs run two tasks at once
SMALL_JOBS = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1"]


def sweep(sweep_dir, cache: str, extra_env: dict, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "rlhf.train", "-m", f"hydra.sweep.dir={sweep_dir}", *overrides]
    return subprocess.run(cmd, cwd=REPO, env=env(cache, **extra_env), capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slurm
def test_sweep_of_seeds_and_algorithms_is_one_array_job(slurm, tmp_path, tiny_path, tiny_cache):
    result = sweep(tmp_path, tiny_cache, slurm, "launcher=slurm", *SMALL_JOBS, "experiment=debug",
                   "seed=1,2", "algo=sft,dpo", "trainer.max_steps=1")
    assert result.returncode == 0, result.stderr[-4000:]
    ids = job_ids(tmp_path)
    array = ids[0].split("_")[0]
    assert ids == [f"{array}_{task}" for task in range(4)], ids
    expected = [(i, "COMPLETED") for i in ids]
    assert sorted(settled(array, slurm, expected)) == expected, "sacct does not show one array job of 4 tasks"
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [p.name for p in runs] == [f"algo:{a}+experiment:debug+seed:{s}+trainer.max_steps:1"
                                      for a in ("dpo", "sft") for s in (1, 2)]
    for run in runs:
        assert weights(run / "model"), f"{run} has no final model"
        assert json.loads((run / "final_metrics.json").read_text())["train/loss"] > 0


@pytest.mark.slurm
def test_failing_task_fails_the_sweep(slurm, tmp_path, tiny_path, tiny_cache):
    """The launcher collects each task's result; one that raised fails the sweep. (SLURM itself records the
    task as COMPLETED: Hydra's job wrapper returns the error to the launcher instead of exiting non-zero.)"""
    result = sweep(tmp_path, tiny_cache, slurm, "launcher=slurm", *SMALL_JOBS, "experiment=debug", "algo=sft",
                   "trainer.batch_size=4,100000", "trainer.max_steps=1")
    assert result.returncode != 0
    assert "fewer than one optimizer step needs" in result.stderr
    assert len(job_ids(tmp_path)) == 2
    good = tmp_path / "algo:sft+experiment:debug+trainer.batch_size:4+trainer.max_steps:1"
    bad = tmp_path / "algo:sft+experiment:debug+trainer.batch_size:100000+trainer.max_steps:1"
    assert (good / "final_metrics.json").exists() and not (bad / "final_metrics.json").exists()


def test_submitit_local_runs_without_slurm(tmp_path, tiny_path, tiny_cache):
    """No SLURM command can work here (SLURM_CONF names no file); the local submitit launcher runs the job."""
    no_slurm = {"SLURM_CONF": str(tmp_path / "no-slurm.conf")}
    result = sweep(tmp_path, tiny_cache, no_slurm, "launcher=submitit_local", "experiment=debug", "algo=sft",
                   "seed=3", "trainer.max_steps=1")
    assert result.returncode == 0, result.stderr[-4000:]
    run = tmp_path / "algo:sft+experiment:debug+seed:3+trainer.max_steps:1"
    assert weights(run / "model") and (run / "final_metrics.json").exists()
    assert (tmp_path / ".submitit").is_dir()


@pytest.mark.slurm
def test_sweep_submitted_without_waiting_is_aggregated_when_done(slurm, tmp_path, tiny_path, tiny_cache):
    """`hydra.launcher.wait=false` returns once the array is submitted (before any task has finished: each
    needs seconds to start Python and train); `rlhf-eval sweep=` then averages the finished runs over seeds."""
    result = sweep(tmp_path, tiny_cache, slurm, "launcher=slurm", "hydra.launcher.wait=false", *SMALL_JOBS,
                   "experiment=debug", "algo=sft", "seed=1,2", "trainer.max_steps=2")
    assert result.returncode == 0, result.stderr[-4000:]
    runs = [tmp_path / f"algo:sft+experiment:debug+seed:{s}+trainer.max_steps:2" for s in (1, 2)]
    assert not all((run / "final_metrics.json").exists() for run in runs), "the launcher waited for the tasks"
    [entry] = json.loads((tmp_path / "submitted.json").read_text())
    ids = [task["job_id"] for task in entry["tasks"]]
    array = ids[0].split("_")[0]
    assert ids == [f"{array}_0", f"{array}_1"] and [t["run_dir"] for t in entry["tasks"]] == [str(r) for r in runs]
    assert f"rlhf-eval sweep={tmp_path}" in result.stderr + result.stdout

    expected = [(i, "COMPLETED") for i in ids]
    assert sorted(settled(array, slurm, expected, timeout=300)) == expected
    aggregated = subprocess.run([sys.executable, "-m", "rlhf.eval", f"sweep={tmp_path}",
                                 f"hydra.run.dir={tmp_path / 'aggregation'}"], cwd=REPO, env=env(tiny_cache),
                                capture_output=True, text=True, timeout=300)
    assert aggregated.returncode == 0, aggregated.stderr[-4000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    [group] = summary["groups"]
    losses = [json.loads((run / "final_metrics.json").read_text())["train/loss"] for run in runs]
    assert group["metrics"]["train/loss"]["n"] == 2 and summary["unfinished"] == []
    assert group["metrics"]["train/loss"]["mean"] == pytest.approx(sum(losses) / 2)
