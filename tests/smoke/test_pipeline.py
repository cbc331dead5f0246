"""An experiment of stages (rlhf/pipeline.py) through the real `rlhf-train`: a failing stage stops the run with its
name and keeps the stages before it; a run killed inside a stage, started again with the same command, skips
the finished stages and completes the killed one."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlhf.pipeline import override_value
from tests.smoke.helpers import REPO, command, env

pytestmark = pytest.mark.slow

TRAIN = {"experiment": "debug", "trainer.eval_every": 0, "task.num_eval_prompts": 4}


def stages(policy_path: str) -> str:
    return "stages=" + override_value({
        "sft": {"run": "train", "overrides": {**TRAIN, "algo": "sft"}},
        "look": {"run": "eval", "overrides": {"policy.path": policy_path, "task.num_eval_prompts": 4,
                                              "backend.max_new_tokens": 8}},
    })


def test_stages_fail_by_name_and_resume_after_a_kill(tmp_path, tiny_cache):
    run_dir = tmp_path / "pipe line"  # a space: paths reach the stages quoted
    missing = subprocess.run(command("rlhf.train", run_dir, stages(f"{run_dir}/nothing/model")), cwd=REPO,
                             env=env(tiny_cache), capture_output=True, text=True, timeout=600)
    assert missing.returncode == 1
    assert "stage look (2 of 2) exited with code 1" in missing.stderr
    assert list(json.loads((run_dir / "stages.json").read_text())) == ["sft"]
    trained = (run_dir / "sft" / "final_metrics.json").stat().st_mtime_ns

    good = stages(f"{run_dir}/sft/model")
    proc = subprocess.Popen(command("rlhf.train", run_dir, good), cwd=REPO, env=env(tiny_cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker, deadline = run_dir / "look" / "config.yaml", time.time() + 300
    while not marker.exists():  # the stage has composed its config and is loading the policy
        assert proc.poll() is None and time.time() < deadline, "the pipeline ended before its second stage began"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the pipeline and its stage, as a job's end kills them
    proc.wait()
    assert not (run_dir / "look" / "eval.json").exists()

    out = subprocess.run(command("rlhf.train", run_dir, good), cwd=REPO, env=env(tiny_cache), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    logged = out.stdout + out.stderr
    assert "stage 1/2 sft: done" in logged and "stage 2/2 look: rlhf-eval" in logged
    assert (run_dir / "sft" / "final_metrics.json").stat().st_mtime_ns == trained  # not trained again
    final = json.loads((run_dir / "final_metrics.json").read_text())
    evaluated = json.loads((run_dir / "look" / "eval.json").read_text())
    assert final["look/reward_mean"] == evaluated["reward_mean"]
    assert final["sft/eval/reward_mean"] == json.loads((run_dir / "sft" / "final_metrics.json").read_text())[
        "eval/reward_mean"]


def children(pid: int) -> list[int]:
    return [int(c) for c in (Path("/proc") / str(pid) / "task" / str(pid) / "children").read_text().split()]


def running(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")  # a zombie has ended (nothing may reap it in a container)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_stage_ends_when_only_the_pipeline_process_is_killed(tmp_path, tiny_cache):
    run_dir = tmp_path / "pipe"
    slow = "stages=" + override_value({"sft": {"run": "train", "overrides": {**TRAIN, "algo": "sft",
                                                                             "trainer.max_steps": 10_000}}})
    proc = subprocess.Popen(command("rlhf.train", run_dir, slow), cwd=REPO, env=env(tiny_cache),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        marker, deadline = run_dir / "sft" / "config.yaml", time.time() + 300
        while not marker.exists():
            assert proc.poll() is None and time.time() < deadline, "the pipeline ended before its stage began"
            time.sleep(0.01)
        (stage,) = children(proc.pid)
        proc.send_signal(signal.SIGKILL)  # the pipeline alone, not its process group
        proc.wait()
        deadline = time.time() + 60
        while running(stage) and time.time() < deadline:
            time.sleep(0.1)
        assert not running(stage), "the stage went on running after its pipeline was killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
