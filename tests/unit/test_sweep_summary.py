"""`rlhf-eval sweep=<dir>`: runs found by their .hydra/overrides.yaml, grouped over seeds, means and standard
errors checked by hand, unfinished runs named (with the SLURM job of a submitted.json), clear errors."""

import csv
import json
import math
import subprocess
import sys

import pytest
import yaml

from rlhf.eval.sweep import find_runs, summarize_sweep
from rlhf.pipeline import SHARED_MARKER
from tests.smoke.helpers import REPO

HYDRA_YAML = {"hydra": {"job": {"config": {"override_dirname": {"exclude_keys": ["launcher", "logger"]}}}}}


def make_run(sweep, overrides: list[str], metrics: dict | None, losses=(), result_file="final_metrics.json"):
    run = sweep / ",".join(o for o in overrides if not o.startswith("launcher"))
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(HYDRA_YAML))
    if metrics is not None:
        (run / result_file).write_text(json.dumps(metrics))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": v}) + "\n" for s, v in losses))
    return run


@pytest.fixture
def sweep(tmp_path):
    rewards = {("dpo", 1): 2.0, ("dpo", 2): 4.0, ("dpo", 3): 9.0, ("sft", 1): 1.0, ("sft", 2): 3.0}
    for (algo, seed), reward in rewards.items():
        make_run(tmp_path, ["launcher=slurm", f"algo={algo}", "experiment=debug", f"seed={seed}"],
                 {"eval/reward_mean": reward, "train/loss": reward / 10, "policy": "not a number"},
                 losses=[(10, reward), (20, reward / 2)])
    make_run(tmp_path, ["launcher=slurm", "algo=sft", "experiment=debug", "seed=3"], None)
    (tmp_path / ".submitit" / "123_4" / ".hydra").mkdir(parents=True)  # hidden folders are not runs
    (tmp_path / ".submitit" / "123_4" / ".hydra" / "overrides.yaml").write_text("[]")
    return tmp_path


def test_groups_average_over_seeds(sweep):
    summary = summarize_sweep(sweep)
    groups = {g["group"]: g for g in summary["groups"]}
    assert list(groups) == ["algo=dpo", "algo=sft"]
    assert summary["common_overrides"] == {"experiment": "debug"}  # launcher is excluded, seed is averaged
    dpo = groups["algo=dpo"]["metrics"]["eval/reward_mean"]
    assert dpo["n"] == 3 and dpo["mean"] == pytest.approx(5.0)
    # sample variance ((2-5)^2 + (4-5)^2 + (9-5)^2) / 2 = 13, stderr = sqrt(13 / 3)
    assert dpo["stderr"] == pytest.approx(math.sqrt(13 / 3))
    sft = groups["algo=sft"]["metrics"]["eval/reward_mean"]
    assert sft["n"] == 2 and sft["mean"] == pytest.approx(2.0) and sft["stderr"] == pytest.approx(1.0)
    assert "policy" not in groups["algo=sft"]["metrics"]  # only numbers are metrics
    assert summary["unfinished"] == ["algo=sft,experiment=debug,seed=3"]
    assert summary["metrics"] == ["eval/reward_mean", "train/loss"]


def test_files_written(sweep):
    summarize_sweep(sweep)
    table = (sweep / "summary.md").read_text()
    assert "| algo=dpo | 3 | 5 ± 2.1 | 0.5 ± 0.21 |" in table
    assert "Unfinished (1): algo=sft,experiment=debug,seed=3" in table
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [r["group"] for r in rows] == ["algo=dpo", "algo=sft"]
    assert float(rows[1]["eval/reward_mean_mean"]) == 2.0 and rows[1]["eval/reward_mean_n"] == "2"
    assert json.loads((sweep / "summary.json").read_text())["groups"][0]["runs"] == [
        "algo=dpo,experiment=debug,seed=1", "algo=dpo,experiment=debug,seed=2", "algo=dpo,experiment=debug,seed=3"]
    png = (sweep / "summary.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000


def test_over_nothing_keeps_every_run_apart(sweep):
    summary = summarize_sweep(sweep, over=[], metrics=["train/loss"])
    assert len(summary["groups"]) == 5 and summary["metrics"] == ["train/loss"]
    assert all(g["metrics"]["train/loss"]["n"] == 1 for g in summary["groups"])


def test_unfinished_runs_name_their_slurm_job(sweep):
    (sweep / "submitted.json").write_text(json.dumps([{"time": "t", "tasks": [
        {"job_id": "77_5", "overrides": [], "run_dir": str(sweep / "algo=sft,experiment=debug,seed=3")}]}]))
    assert summarize_sweep(sweep)["unfinished"] == ["algo=sft,experiment=debug,seed=3 (SLURM job 77_5)"]


def test_eval_runs_are_read_from_eval_json(tmp_path):
    for seed, reward in ((1, 0.5), (2, 1.5)):
        make_run(tmp_path, [f"seed={seed}", "policy.path=a"], {"reward_mean": reward, "n": 8}, result_file="eval.json")
    summary = summarize_sweep(tmp_path)
    assert summary["metrics"] == ["reward_mean"]
    assert summary["groups"][0]["group"] == "all runs"
    assert summary["groups"][0]["metrics"]["reward_mean"]["mean"] == pytest.approx(1.0)


def test_the_stages_of_an_experiment_are_not_runs_of_the_sweep(tmp_path):
    for seed, reward in ((1, 0.5), (2, 1.5)):
        run = make_run(tmp_path, ["experiment=sharedrep_debug", f"seed={seed}"], {"eval_gold/reward_mean": reward})
        make_run(run, ["algo=grpo", "reward=group_rm"], {"eval/reward_mean": 99.0})  # a stage, inside its run
    summary = summarize_sweep(tmp_path)
    assert summary["metrics"] == ["eval_gold/reward_mean"]
    assert summary["groups"][0]["metrics"]["eval_gold/reward_mean"]["mean"] == pytest.approx(1.0)
    assert summary["groups"][0]["metrics"]["eval_gold/reward_mean"]["n"] == 2


def test_stages_shared_by_the_runs_are_not_runs_of_the_sweep(tmp_path):
    for seed, reward in ((1, 0.5), (2, 1.5)):
        make_run(tmp_path, ["experiment=sharedrep_debug", f"seed={seed}"], {"eval_gold/reward_mean": reward})
    shared = tmp_path / "shared_stages"
    make_run(shared, ["algo=sft"], {"eval/reward_mean": 99.0})  # one stage both runs link to
    assert len(find_runs(tmp_path)) == 3  # without its marker, it would be taken for a run
    (shared / SHARED_MARKER).write_text("")
    summary = summarize_sweep(tmp_path)
    assert summary["metrics"] == ["eval_gold/reward_mean"]
    assert summary["groups"][0]["metrics"]["eval_gold/reward_mean"]["n"] == 2


def test_clear_errors(tmp_path, sweep):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        summarize_sweep(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no runs under .*empty.*overrides.yaml"):
        summarize_sweep(tmp_path / "empty")
    with pytest.raises(KeyError, match=r"sweep_metrics \['eval/nope'\].*shared metrics: \['eval/reward_mean'"):
        summarize_sweep(sweep, metrics=["eval/nope"])
    lonely = tmp_path / "unfinished"
    make_run(lonely, ["seed=1"], None)
    with pytest.raises(RuntimeError, match="none of the 1 runs .* has finished:\n  seed=1"):
        summarize_sweep(lonely)


def test_rlhf_eval_sweep_entrypoint(sweep):
    """The aggregation's own run directory (here inside the sweep) is not taken for one of the sweep's runs."""
    result = subprocess.run([sys.executable, "-m", "rlhf.eval", f"sweep={sweep}", "sweep_over=[seed]",
                             f"hydra.run.dir={sweep / 'aggregation'}"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| algo=sft | 2 | 2 ± 1 |" in result.stdout
    assert (sweep / "summary.md").is_file() and (sweep / "aggregation" / ".hydra").is_dir()
    assert "Unfinished (1): algo=sft,experiment=debug,seed=3\n" in (sweep / "summary.md").read_text()


def test_evaluations_of_a_sweep_average_their_headline_numbers(tmp_path):
    # `rlhf-eval -m eval=win_rate policy.path=a,b seed=0,1`: each run's eval.json has its flat numbers
    for path, rates in {"a": (0.6, 0.8), "b": (0.4, 0.4)}.items():
        for seed, rate in enumerate(rates):
            make_run(tmp_path, ["eval=win_rate", f"policy.path={path}", f"seed={seed}"],
                     {"win_rate": rate, "win_rate/h=1": rate, "per_turn": [{"turn": 1}], "policy": path},
                     result_file="eval.json")
    summary = summarize_sweep(tmp_path)
    assert summary["metrics"][0] == "win_rate"
    groups = {g["group"]: g["metrics"]["win_rate"] for g in summary["groups"]}
    assert groups["policy.path=a"]["mean"] == pytest.approx(0.7) and groups["policy.path=a"]["n"] == 2
    assert groups["policy.path=b"]["stderr"] == pytest.approx(0.0)


def test_a_sweep_over_one_number_is_also_drawn_against_it(tmp_path):
    from rlhf.eval.sweep import find_runs, group_runs, numeric_axis

    for proportion, value in ((0.05, 1.0), (0.2, 3.0), (0.1, 2.0)):
        for seed in (1, 2):
            make_run(tmp_path, [f"data.proportion={proportion}", f"seed={seed}"], {"eval/group_0_mean": value + seed})
    groups, _ = group_runs(find_runs(tmp_path), ["seed"])
    assert numeric_axis(groups) == ("data.proportion", [0.05, 0.1, 0.2])
    summarize_sweep(tmp_path, metrics=["eval/group_0_mean"])
    assert (tmp_path / "summary.png").read_bytes().startswith(b"\x89PNG")
    assert numeric_axis([g for g in groups if g.label.startswith("data")][:1]) is None  # one group: no axis
