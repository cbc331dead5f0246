"""An experiment of stages (rlhf/pipeline.py) through the real `rlhf-train`: a failing stage stops the run with its
name and keeps the stages before it; a run killed inside a stage, started again with the same command, skips
the finished stages and completes the killed one; a stage the same in several runs runs once."""

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


def shared_sft(seed) -> str:
    """An SFT stage the same in every run, and an evaluation of it that takes the run's seed."""
    return "stages=" + override_value({
        "sft": {"run": "train", "overrides": {**TRAIN, "algo": "sft"}},
        "look": {"run": "eval", "overrides": {"policy.path": "${run_dir}/sft/model", "task.num_eval_prompts": 4,
                                              "backend.max_new_tokens": 8, "seed": seed}},
    })


def test_runs_started_together_train_their_shared_stage_once(tmp_path, tiny_cache):
    runs = [tmp_path / "runs" / name for name in ("a", "b")]
    procs = [subprocess.Popen(command("rlhf.train", run, shared_sft(seed)), cwd=REPO, env=env(tiny_cache),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for seed, run in enumerate(runs)]
    logs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    homes = {(run / "sft").resolve() for run in runs}
    assert len(homes) == 1 and all((run / "sft").is_symlink() for run in runs)
    (home,) = homes
    assert home.parent == (tmp_path / "runs" / "shared_stages").resolve()
    assert sum("sft: done by another run" in log for log in logs) == 1  # the other trained it
    assert sum("sft: waiting for another run" in log for log in logs) == 1
    assert json.loads((home / "stage.json").read_text())["run"] == "train"
    looks = [(run / "look").resolve() for run in runs]
    assert looks[0] != looks[1]  # two seeds: two evaluations
    finals = [json.loads((run / "final_metrics.json").read_text()) for run in runs]
    assert finals[0]["sft/eval/reward_mean"] == finals[1]["sft/eval/reward_mean"]
    assert all("look/reward_mean" in final for final in finals)


def test_the_jobs_of_a_sweep_share_a_stage_and_the_sweep_counts_only_its_jobs(tmp_path, tiny_cache):
    from rlhf.eval.sweep import find_runs

    sweep = tmp_path / "sweep"
    out = subprocess.run([sys.executable, "-m", "rlhf.train", "-m", f"hydra.sweep.dir={sweep}", "seed=1,2",
                          shared_sft("${seed}"), "hydra.sweep.subdir=seed:${seed}"], cwd=REPO, env=env(tiny_cache), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-5000:]
    logged = out.stdout + out.stderr
    assert logged.count("stage 1/2 sft: done by another run") == 1
    runs = find_runs(sweep)
    assert sorted(r.path.name for r in runs) == ["seed:1", "seed:2"]
    assert (sweep / "seed:1" / "sft").resolve() == (sweep / "seed:2" / "sft").resolve()
    assert (sweep / "seed:1" / "sft").resolve().parent == (sweep / "shared_stages").resolve()
    assert (sweep / "seed:1" / "look").resolve() != (sweep / "seed:2" / "look").resolve()
