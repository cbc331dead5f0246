"""Multirun sweeps of the real entrypoint, with Hydra's basic launcher and with submitit (local)."""

import json
import subprocess
import sys

import pytest

from tests.smoke.helpers import REPO, env

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("launcher", ["local", "submitit_local"])
def test_multirun_sweep_writes_one_directory_per_job(tmp_path, tiny_cache, launcher):
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "rlhf.train", "-m", f"launcher={launcher}", f"hydra.sweep.dir={sweep}",
           "experiment=debug", "algo=sft", "seed=1,2", "trainer.max_steps=2"]
    result = subprocess.run(cmd, cwd=REPO, env=env(tiny_cache), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    # run directories are named from the overrides; the launcher key is left out of the name
    jobs = sorted(p.name for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert jobs == [f"algo:sft+experiment:debug+seed:{s}+trainer.max_steps:2" for s in (1, 2)]
    finals = [json.loads((sweep / job / "final_metrics.json").read_text()) for job in jobs]
    assert finals[0] != finals[1], "two seeds gave identical results"


def test_failing_job_fails_the_sweep(tmp_path, tiny_cache):
    cmd = [sys.executable, "-m", "rlhf.train", "-m", f"hydra.sweep.dir={tmp_path}", "experiment=debug",
           "algo=sft", "trainer.batch_size=4,100000", "trainer.max_steps=1"]
    result = subprocess.run(cmd, cwd=REPO, env=env(tiny_cache), capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    assert "fewer than one optimizer step needs" in result.stderr
